using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Vae;

/// <summary>
/// The VAE posterior: a Gaussian with diagonal covariance whose mean and log-variance are the two halves
/// of the encoder's output channels. Log-variance is clamped to [-30, 20] as in LDM, so an untrained or
/// diverging encoder cannot produce infinite or zero variances.
/// </summary>
public sealed class DiagonalGaussian : IDisposable
{
    public Tensor Mean { get; }
    public Tensor LogVar { get; }
    public Tensor Std { get; }

    /// <param name="moments">[B, 2C, h, w]: mean, then log-variance.</param>
    public DiagonalGaussian(Tensor moments)
    {
        if (moments.dim() != 4 || moments.shape[1] % 2 != 0)
            throw new SvgdException($"posterior moments must be [B, 2C, h, w], got {Checkpoints.Checkpoint.Shape(moments.shape)}");
        var parts = moments.chunk(2, 1);
        Mean = parts[0].contiguous();
        LogVar = parts[1].clamp(-30.0, 20.0);
        parts[0].Dispose();
        parts[1].Dispose();
        Std = (LogVar * 0.5).exp();
    }

    /// <summary>The reparameterised draw mean + std * eps (eps ~ N(0, I) from <paramref name="generator"/>): differentiable in mean and std.</summary>
    public Tensor Sample(Generator? generator = null)
    {
        using var eps = torch.randn(Mean.shape, dtype: Mean.dtype, device: Mean.device, generator: generator);
        return Mean + Std * eps;
    }

    /// <summary>mean + std * <paramref name="eps"/> for given standard-normal noise of the posterior's shape.</summary>
    public Tensor Sample(Tensor eps) => Mean + Std * eps;

    /// <summary>KL(q || N(0, I)) per sample, summed over channels and positions: 0.5 sum(mu^2 + var - 1 - logvar).</summary>
    public Tensor Kl()
    {
        using var scope = torch.NewDisposeScope();
        var kl = 0.5 * (Mean.square() + LogVar.exp() - 1.0 - LogVar).sum(new long[] { 1, 2, 3 });
        return kl.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        Mean.Dispose(); LogVar.Dispose(); Std.Dispose();
    }
}
