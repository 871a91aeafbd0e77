using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Diffusion;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Transport;

/// <summary>One training-loss evaluation: the mean loss, each sample's MSE, and the (shifted) times used.</summary>
public sealed record FlowLoss(Tensor Loss, Tensor Mse, Tensor T) : IDisposable
{
    public void Dispose()
    {
        Loss.Dispose(); Mse.Dispose(); T.Dispose();
    }
}

/// <summary>
/// Rectified flow as SVG trains it: straight paths z_t = (1 - t) z0 + t x1 from Gaussian noise z0 (t = 0)
/// to data x1 (t = 1), and a network regressed onto their constant velocity x1 - z0.
/// </summary>
public sealed class RectifiedFlow
{
    /// <summary>The reference's training shift: s = 0.4 &lt; 1 moves training times towards the noise end.</summary>
    public const double DefaultTrainingShift = 0.4;

    public double TimestepShift { get; }

    public RectifiedFlow(double timestepShift = DefaultTrainingShift)
    {
        if (!(timestepShift > 0) || double.IsInfinity(timestepShift))
            throw new SvgdException($"timestep shift must be positive, got {timestepShift}");
        TimestepShift = timestepShift;
    }

    /// <summary>
    /// t' = s t / (1 + (s - 1) t): a monotone warp of [0, 1] onto itself. With s &lt; 1 more of the time
    /// (and, for sampling schedules, more of the steps) goes to the noisy end, where the coarse structure
    /// of the high-dimensional SVG latents is decided. s = 1 is the identity.
    /// </summary>
    public static Tensor Shift(Tensor t, double s)
    {
        if (s == 1.0) return t.clone();
        using var scope = torch.NewDisposeScope();
        return (s * t / (1 + (s - 1) * t)).MoveToOuterDisposeScope();
    }

    public static double Shift(double t, double s) => s == 1.0 ? t : s * t / (1 + (s - 1) * t);

    /// <summary>
    /// [steps + 1] float32 times from 0 (noise) to 1 (data): a float32 linspace, shifted in float64 and
    /// rounded once, which is how the reference's schedule comes out bit for bit.
    /// </summary>
    public static Tensor Schedule(int steps, double shift)
    {
        if (steps < 1) throw new SvgdException($"sampling needs at least one step, got {steps}");
        if (!(shift > 0) || double.IsInfinity(shift)) throw new SvgdException($"timestep shift must be positive, got {shift}");
        using var scope = torch.NewDisposeScope();
        var t = torch.linspace(0, 1, steps + 1, dtype: ScalarType.Float32).to(ScalarType.Float64);
        return Shift(t, shift).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>The point at time t (broadcast over all but the batch dimension) on the path from z0 to x1.</summary>
    public static Tensor Interpolate(Tensor z0, Tensor x1, Tensor t)
    {
        using var scope = torch.NewDisposeScope();
        var tb = t.to(x1.dtype).reshape(BroadcastShape(t.shape[0], x1.dim()));
        return ((1 - tb) * z0 + tb * x1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The training loss for given data, noise and uniform times (before the shift). The model sees the
    /// shifted time; the MSE is per sample over all other dimensions, the loss their mean.
    /// </summary>
    /// <param name="x1">[B, ...] clean latents.</param>
    /// <param name="z0">Noise shaped like x1.</param>
    /// <param name="tUniform">[B] times in [0, 1] before the shift.</param>
    public FlowLoss Loss(VelocityField model, Tensor x1, Tensor z0, Tensor tUniform, Tensor y)
    {
        if (!x1.shape.SequenceEqual(z0.shape))
            throw new SvgdException($"data {Checkpoint.Shape(x1.shape)} and noise {Checkpoint.Shape(z0.shape)} must have the same shape");
        if (tUniform.dim() != 1 || tUniform.shape[0] != x1.shape[0])
            throw new SvgdException($"times must be [{x1.shape[0]}], got {Checkpoint.Shape(tUniform.shape)}");
        using var scope = torch.NewDisposeScope();
        var t = Shift(tUniform.to(x1.dtype), TimestepShift);
        var zt = Interpolate(z0, x1, t);
        var target = x1 - z0;
        var v = model(zt, t, y);
        if (!v.shape.SequenceEqual(x1.shape))
            throw new SvgdException($"the model's velocity {Checkpoint.Shape(v.shape)} does not match the data {Checkpoint.Shape(x1.shape)}");
        var dims = Enumerable.Range(1, (int)x1.dim() - 1).Select(i => (long)i).ToArray();
        var mse = (v - target).square().mean(dims);
        var loss = mse.mean();
        return new FlowLoss(loss.MoveToOuterDisposeScope(), mse.MoveToOuterDisposeScope(), t.MoveToOuterDisposeScope());
    }

    /// <summary>The loss of a DiT; its label dropout (training mode) draws from <paramref name="generator"/>.</summary>
    public FlowLoss Loss(DiT model, Tensor x1, Tensor z0, Tensor tUniform, Tensor y, Generator? generator = null) =>
        Loss((x, t, l) => model.Velocity(x, t, l, generator: generator), x1, z0, tUniform, y);

    /// <summary>A training step's loss with fresh randomness: t ~ U(0, 1) per sample and z0 ~ N(0, I), both from <paramref name="generator"/>.</summary>
    public FlowLoss RandomLoss(VelocityField model, Tensor x1, Tensor y, Generator? generator = null)
    {
        using var scope = torch.NewDisposeScope();
        var t = torch.rand(x1.shape[0], dtype: x1.dtype, device: x1.device, generator: generator);
        var z0 = torch.randn(x1.shape, dtype: x1.dtype, device: x1.device, generator: generator);
        var r = Loss(model, x1, z0, t, y);
        return new FlowLoss(r.Loss.MoveToOuterDisposeScope(), r.Mse.MoveToOuterDisposeScope(), r.T.MoveToOuterDisposeScope());
    }

    public FlowLoss RandomLoss(DiT model, Tensor x1, Tensor y, Generator? generator = null) =>
        RandomLoss((x, t, l) => model.Velocity(x, t, l, generator: generator), x1, y, generator);

    static long[] BroadcastShape(long batch, long dims)
    {
        var s = new long[dims];
        Array.Fill(s, 1L);
        s[0] = batch;
        return s;
    }
}
