using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>What one training step gets from an autoencoder's encoder: the latent to decode and, for a VAE, the KL term.</summary>
public sealed record TrainingEncoding(Tensor Latent, Tensor? Kl);

/// <summary>
/// An image autoencoder whose latents the diffusion model is trained on: the SVG autoencoder (frozen
/// semantic features + residual channels) or the KL-regularised VAE baseline. Caching, diffusion
/// training, sampling and evaluation go through this, so every latent space is treated alike.
/// </summary>
public interface ILatentAutoencoder : IDisposable
{
    /// <summary>"svg" or "vae".</summary>
    string Kind { get; }
    /// <summary>Side of the (square) images it encodes and decodes.</summary>
    int ImageSize { get; }
    int LatentChannels { get; }
    /// <summary>Side of the latent grid.</summary>
    int LatentSize { get; }
    Decoder Decoder { get; }
    nn.Module Module { get; }

    /// <summary>Latents [B, C, h, w] of images [B, 3, S, S] in [-1, 1]; deterministic in eval mode (a VAE gives its posterior mean).</summary>
    Tensor EncodeImages(Tensor images);
    /// <summary>Images (nominally in [-1, 1], not clamped) from latents.</summary>
    Tensor Decode(Tensor latent);

    /// <summary>The encoding of a training step; sample k's random draws (masking, posterior noise) come from the k-th
    /// stream of <paramref name="draws"/>, so a data-parallel shard draws what one process would for the same samples.</summary>
    TrainingEncoding EncodeForTraining(Tensor images, Distributed.SampleRandom draws);
    /// <summary>The parameters autoencoder training updates (never a frozen encoder's).</summary>
    IEnumerable<Parameter> TrainableParameters();
    /// <summary>Tensors and header entries that make a file from which <see cref="AutoencoderFile.Load"/> rebuilds this model.</summary>
    (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) ToFile();
}
