using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Sampling;

/// <summary>
/// The generation pipeline: noise -> DiT + solver (with guidance) -> de-normalised SVG latent -> decoder.
/// Sample i's noise depends only on (seed, i), so any subset of a run can be regenerated at any batch size.
/// </summary>
public sealed class SvgGenerator(DiT model, Sampler sampler, GuidanceSchedule guidance, LatentStatistics? statistics = null, ILatentAutoencoder? autoencoder = null)
{
    public DiT Model => model;
    public Sampler Sampler => sampler;
    public GuidanceSchedule Guidance => guidance;
    public ILatentAutoencoder? Autoencoder => autoencoder;
    public int GridH { get; init; } = model.Config.InputSize;
    public int GridW { get; init; } = model.Config.InputSize;

    /// <summary>The precision of the DiT's blocks and the decoder (see <see cref="SetPrecision"/>).</summary>
    public ScalarType Precision { get; private set; } = ScalarType.Float32;

    /// <summary>
    /// Runs the DiT blocks and the decoder in <paramref name="dtype"/>. The noise, the sampler's state and
    /// update, the latent statistics and all outputs stay fp32, so a seed gives the same noise in every
    /// precision and the difference between precisions is only the networks' rounding.
    /// </summary>
    public SvgGenerator SetPrecision(ScalarType dtype)
    {
        model.SetComputePrecision(dtype);
        autoencoder?.Module.to(dtype);
        Precision = dtype;
        return this;
    }

    /// <summary>Noise tokens [T, C] of sample <paramref name="index"/>.</summary>
    public Tensor Noise(long seed, long index)
    {
        using var g = new Generator((ulong)((seed * 1_000_003L + index) & long.MaxValue));
        return Sampler.Noise(new long[] { (long)GridH * GridW, model.Config.InChannels }, g);
    }

    /// <summary>Label of sample <paramref name="index"/> when labels are drawn uniformly at random.</summary>
    public int RandomLabel(long seed, long index)
    {
        using var g = new Generator((ulong)((seed * 7_368_787L + index * 31L + 17L) & long.MaxValue));
        using var r = torch.randint(0, model.Config.NumClasses, new long[] { 1 }, generator: g);
        return (int)r.item<long>();
    }

    /// <summary>Latents [B, C, h, w] in the model's (normalised) space from noise tokens [B, T, C].</summary>
    /// <param name="startTime">Flow time of <paramref name="noise"/>: 0 for pure noise; above 0 it is a noised latent (SDEdit).</param>
    /// <param name="constraint">Applied to the tokens at the start and after every step (see <see cref="Sampler.Sample(DiT, Tensor, Tensor, Tensor?, GuidanceSchedule?, Action{int}?, double, CancellationToken, Func{Tensor, double, Tensor}?)"/>).</param>
    public Tensor SampleLatents(Tensor noise, IReadOnlyList<int> labels, Action<int>? onStep = null, double startTime = 0, CancellationToken cancel = default,
        Func<Tensor, double, Tensor>? constraint = null)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var cond = torch.tensor(labels.Select(l => (long)l).ToArray());
        var nul = torch.full(labels.Count, model.NullLabel, dtype: ScalarType.Int64);
        var tokens = sampler.Sample(model, noise, cond, nul, guidance, onStep, startTime, cancel, constraint);
        Runtime.Finite.Output(tokens, "the sampled latents");
        return DiT.TokensToLatent(tokens, GridH, GridW).MoveToOuterDisposeScope();
    }

    /// <summary>Latents [B, C, h, w] in the model's space (normalised when statistics are set) of images [B, 3, H, W] in [-1, 1].</summary>
    public Tensor Encode(Tensor images)
    {
        if (autoencoder == null) throw new SvgdException("encoding needs an autoencoder");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var z = (autoencoder is SvgAutoencoder svg ? svg.Encode(SvgAutoencoder.ToEncoderInput(images).to(Precision)) : autoencoder.EncodeImages(images.to(Precision))).to(ScalarType.Float32);
        Runtime.Finite.Output(z, "the encoded latents");
        return (statistics != null ? statistics.Normalize(z) : z).MoveToOuterDisposeScope();
    }

    /// <summary>Images in [-1, 1] from latents in the model's space (de-normalised first when statistics are set).</summary>
    public Tensor Decode(Tensor latents)
    {
        if (autoencoder == null) throw new SvgdException("decoding needs an autoencoder");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var z = statistics != null ? statistics.Denormalize(latents) : latents;
        // Checked before the clamp: clamp keeps NaN, but would hide Inf as a saturated pixel.
        var images = autoencoder.Decode(z.to(Precision)).to(ScalarType.Float32);
        return Runtime.Finite.Output(images, "the decoded images").clamp(-1, 1).MoveToOuterDisposeScope();
    }
}
