using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary>What a latent or noise tensor read from a file must be before it is decoded or sampled from.</summary>
internal static class LatentInput
{
    /// <summary>
    /// Refuses an empty batch and integer or boolean tensors (latents are real numbers: an int64 tensor is a
    /// label file or a mistake); warns when a latent's grid is not the <paramref name="trainedGrid"/> the model
    /// was trained on, which a fully convolutional decoder runs but was never taught.
    /// </summary>
    public static void Check(Tensor t, string path, string key, int? trainedGrid, Action<string> warn)
    {
        if (!t.is_floating_point())
            throw new SvgdException($"{path}: '{key}' holds {t.dtype} values; latents and noise must be floating point (float32, bfloat16, float16 or float64)");
        if (t.dim() >= 1 && t.shape[0] == 0)
            throw new SvgdException($"{path}: '{key}' has shape {Checkpoint.Shape(t.shape)}: an empty batch, nothing to do");
        if (trainedGrid is int g && t.dim() == 4 && (t.shape[2] != g || t.shape[3] != g))
            warn($"{path}: '{key}' is a {t.shape[2]}x{t.shape[3]} latent grid; this autoencoder was trained on {g}x{g}, so the images may not look like its training data");
    }
}
