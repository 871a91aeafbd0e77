using System.Globalization;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;

namespace SvgDiffusion.Training;

/// <summary>
/// A training run's peak memory, estimated before anything is built: parameters times the bytes each costs
/// in the set-up (weights, gradients, optimiser moments, EMA, compute copies) plus activations times the
/// batch, plus the process's own (runtime, libtorch, kernels).
/// </summary>
/// <param name="Setup">What is trained and how ("DiT svg-xl, fp32, AdamW + EMA").</param>
/// <param name="Parameters">Parameters of every model the run holds (trained and frozen).</param>
/// <param name="BytesPerParameter">Average bytes per parameter over those models.</param>
/// <param name="ActivationBytesPerSample">Activations (and their gradients) kept for the backward, per sample.</param>
/// <param name="Batch">Samples per step in this process.</param>
public sealed record MemoryEstimate(string Setup, long Parameters, double BytesPerParameter, long ActivationBytesPerSample, int Batch)
{
    public long StateBytes => (long)Math.Ceiling(Parameters * BytesPerParameter);
    public long ActivationBytes => ActivationBytesPerSample * Batch;
    public long PeakBytes => TrainingMemory.ProcessBytes + StateBytes + ActivationBytes;

    /// <summary>"DiT svg-xl, fp32 ...: 675,795,984 params x 20 B = 12.6 GiB, 1 x 1.0 GiB activations, about 14.1 GiB in all".</summary>
    public override string ToString() =>
        $"{Setup}: {Parameters.ToString("N0", CultureInfo.InvariantCulture)} params x {BytesPerParameter.ToString("0.#", CultureInfo.InvariantCulture)} B = {ResourceBudget.Gib(StateBytes)}, " +
        $"{Batch} x {ResourceBudget.Gib(ActivationBytesPerSample)} activations, about {ResourceBudget.Gib(PeakBytes)} in all";

    /// <summary>
    /// Refuses the run (one line naming <paramref name="option"/>) when its peak does not fit in available memory
    /// beside what this process holds already (its resident set counts towards the peak).
    /// </summary>
    public void Require(string option) => ResourceBudget.RequireMemory($"{Setup} at batch {Batch}", PeakBytes, option, ProcessMemory.ResidentBytes());

    /// <summary>Why the run does not fit (the line <see cref="Require"/> would throw), or null when it does.</summary>
    public string? Shortfall(string option)
    {
        try
        {
            Require(option);
            return null;
        }
        catch (SvgdException e)
        {
            return e.Message;
        }
    }
}

/// <summary>The estimates of <see cref="MemoryEstimate"/> for each trainer, from its configuration alone.</summary>
public static class TrainingMemory
{
    /// <summary>
    /// Refuses a run whose estimated peak (<paramref name="estimate"/> of a batch size) does not fit: naming
    /// <paramref name="modelOption"/> when even one sample does not, else <c>--batch-size</c>.
    /// </summary>
    public static void Require(Func<int, MemoryEstimate> estimate, int batch, string modelOption)
    {
        estimate(1).Require(modelOption);
        estimate(Math.Max(1, batch)).Require("--batch-size");
    }

    /// <summary>The process before any model: .NET, libtorch and its OpenMP team, the kernels (measured 0.4 GB resident).</summary>
    public const long ProcessBytes = 512L << 20;

    /// <summary>
    /// Bytes per DiT parameter in training: the fp32 weight, its gradient and AdamW's two moments (16), the EMA copy
    /// (4) where kept, and for bf16 mixed precision the bf16 compute copy (2) — its gradients are moved into the
    /// master's one at a time, so those two are never both whole (<see cref="MixedPrecision"/>).
    /// </summary>
    public static double DiTBytesPerParameter(bool bf16Mixed, bool ema) => 16 + (ema ? 4 : 0) + (bf16Mixed ? 2 : 0);

    /// <summary>
    /// Bytes per token, layer and hidden channel that autograd keeps for the backward of a DiT block (with the
    /// backward's own temporaries at its peak): fitted to the measured heap growth of training steps (svg-s and
    /// svg-xl, fp32 and bf16 mixed).
    /// </summary>
    public const double DiTActivationBytesFp32 = 160, DiTActivationBytesBf16 = 120;

    public static MemoryEstimate DiT(DiTConfig c, int batch, bool bf16Mixed, bool ema = true, string? name = null)
    {
        long tokens = (long)c.InputSize * c.InputSize / ((long)c.PatchSize * c.PatchSize);
        long activations = (long)((bf16Mixed ? DiTActivationBytesBf16 : DiTActivationBytesFp32) * c.Depth * tokens * c.HiddenSize);
        string setup = $"DiT {name ?? $"{c.Depth}x{c.HiddenSize}"} training, {(bf16Mixed ? "bf16 mixed" : "fp32")}, AdamW{(ema ? " + EMA" : "")}";
        return new MemoryEstimate(setup, DiTParameters(c), DiTBytesPerParameter(bf16Mixed, ema), activations, batch);
    }

    /// <summary>
    /// DiT inference as the bench and the samplers run it: fp32 weights and their packed copy (8 bytes a parameter),
    /// or bf16 weights and their packed copy, built from fp32 (4); activations of a forward without autograd.
    /// </summary>
    public static MemoryEstimate DiTInference(DiTConfig c, int batch, bool bf16, string? name = null)
    {
        long tokens = (long)c.InputSize * c.InputSize / ((long)c.PatchSize * c.PatchSize);
        long activations = (long)(InferenceActivationBytes * tokens * Math.Max(c.HiddenSize, c.MlpHidden));
        return new MemoryEstimate($"DiT {name ?? $"{c.Depth}x{c.HiddenSize}"} inference, {(bf16 ? "bf16" : "fp32")}", DiTParameters(c), bf16 ? 4 : 8, activations, batch);
    }

    /// <summary>Bytes per token and (widest) channel live at once in a DiT forward without autograd (a few layer outputs, fp32).</summary>
    const double InferenceActivationBytes = 32;

    /// <summary>Parameters of a <see cref="Models.Diffusion.DiT"/> of this configuration, counted from its layer shapes.</summary>
    public static long DiTParameters(DiTConfig c)
    {
        long h = c.HiddenSize, m = c.MlpHidden, tokens = (long)c.InputSize * c.InputSize;
        static long Linear(long i, long o) => i * o + o;
        long block = Linear(h, 6 * h) + Linear(h, 3 * h) + Linear(h, h) + Linear(h, m) + Linear(m, h) + (c.QkNorm ? 4L * c.HeadDim : 0);
        long labels = (c.NumClasses + (c.ClassDropoutProb > 0 ? 1 : 0)) * h;
        return tokens * h + Linear(c.InChannels, h) + Linear(TimestepEmbedder.FrequencyEmbeddingSize, h) + Linear(h, h) + labels
               + c.Depth * block + Linear(h, 2 * h) + Linear(h, c.OutChannels);
    }

    /// <summary>
    /// Autoencoder (or VAE) training: trained parameters cost weight, gradient and Adam's two moments (16 bytes),
    /// frozen ones (the semantic encoder, LPIPS) their weight (4); activations per image scale with its pixels.
    /// </summary>
    public static MemoryEstimate Autoencoder(string name, long trainable, long frozen, int imageSize, int batch, bool bf16Mixed)
    {
        long total = trainable + frozen;
        double perParam = total == 0 ? 0 : (16.0 * trainable + 4.0 * frozen) / total;
        long pixels = (long)imageSize * imageSize;
        long activations = (long)(pixels * (bf16Mixed ? AutoencoderBytesPerPixelBf16 : AutoencoderBytesPerPixelFp32));
        return new MemoryEstimate($"autoencoder {name} training, {(bf16Mixed ? "bf16 mixed" : "fp32")}, Adam", total, perParam, activations, batch);
    }

    /// <summary>Autoencoder activations per image pixel (decoder, LPIPS and discriminator forward and backward), fitted to measured runs.</summary>
    const double AutoencoderBytesPerPixelFp32 = 12_000, AutoencoderBytesPerPixelBf16 = 8_000;

    /// <summary>The evaluation classifier: weight, gradient and AdamW's moments per parameter; activations per image pixel.</summary>
    public static MemoryEstimate Evaluator(long parameters, int imageSize, int batch) =>
        new("evaluator training, fp32, AdamW", parameters, 16, (long)imageSize * imageSize * EvaluatorBytesPerPixel, batch);

    const long EvaluatorBytesPerPixel = 4_000;
}
