using SvgDiffusion.Models.Diffusion;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Transport;

/// <summary>
/// An ODE solver for the rectified flow, integrating from noise (t = 0) to data (t = 1) over the shifted
/// schedule <see cref="RectifiedFlow.Schedule"/>. Deterministic given the initial noise.
/// </summary>
public abstract class Sampler
{
    /// <summary>The reference sampler's shift: most steps are spent near the noise end.</summary>
    public const double DefaultShift = 0.15;

    public int Steps { get; }
    public double TimestepShift { get; }

    protected Sampler(int steps, double timestepShift)
    {
        if (steps < 1) throw new SvgdException($"sampling needs at least one step, got {steps}");
        if (!(timestepShift > 0) || double.IsInfinity(timestepShift)) throw new SvgdException($"timestep shift must be positive, got {timestepShift}");
        Steps = steps;
        TimestepShift = timestepShift;
    }

    /// <summary>By the reference's names: <c>euler</c> or <c>heun</c>.</summary>
    public static Sampler Create(string method, int steps, double timestepShift = DefaultShift) => method.Trim().ToLowerInvariant() switch
    {
        "euler" => new EulerSampler(steps, timestepShift),
        "heun" => new HeunSampler(steps, timestepShift),
        _ => throw new SvgdException($"unknown sampler '{method}' (known: euler, heun)"),
    };

    /// <summary>The [Steps + 1] times the solver visits.</summary>
    public Tensor Times() => RectifiedFlow.Schedule(Steps, TimestepShift);

    /// <summary>
    /// The times of a run that starts part-way along the flow, at <paramref name="startTime"/> (SDEdit: an image's
    /// latent noised to that time): the shifted schedule laid onto [startTime, 1], so the steps keep their
    /// relative spacing. A start of 0 is <see cref="Times()"/> exactly.
    /// </summary>
    public float[] Times(double startTime)
    {
        if (!(startTime >= 0 && startTime < 1)) throw new SvgdException($"a sampling run starts at a flow time in [0, 1), got {startTime}");
        using var t = Times();
        var times = t.data<float>().ToArray();
        if (startTime == 0) return times;
        return times.Select(x => (float)(startTime + (1 - startTime) * x)).ToArray();
    }

    /// <summary>Standard normal noise to start from, drawn from <paramref name="generator"/> so runs can be repeated.</summary>
    public static Tensor Noise(long[] shape, Generator? generator = null, Device? device = null) =>
        torch.randn(shape, dtype: ScalarType.Float32, device: device, generator: generator);

    /// <summary>Integrates the flow from <paramref name="z"/> at t = <paramref name="startTime"/> (0: pure noise) to t = 1.</summary>
    /// <param name="z">[B, ...] initial noise (tokens or latents, whatever <paramref name="model"/> takes), or the point on the path at <paramref name="startTime"/>.</param>
    /// <param name="cond">[B] class labels.</param>
    /// <param name="nullLabels">[B] null labels for guidance (usually all num_classes); null for none.</param>
    /// <param name="onStep">Told the number of each finished step (1-based), for progress reporting.</param>
    /// <param name="cancel">Checked before every step: a server drops the work of a client that went away.</param>
    /// <param name="constraint">Applied to the start and after every step with the time reached, (x, t) -> x':
    /// inpainting (<see cref="ChannelInpainting.Apply"/>); null for none.</param>
    public Tensor Sample(VelocityField model, Tensor z, Tensor cond, Tensor? nullLabels = null, GuidanceSchedule? guidance = null, Action<int>? onStep = null,
        double startTime = 0, CancellationToken cancel = default, Func<Tensor, double, Tensor>? constraint = null)
    {
        var field = new GuidedVelocity(model, cond, nullLabels, guidance);
        var times = Times(startTime);
        var x = constraint != null ? constraint(z, startTime) : z.alias();
        try
        {
            for (int i = 0; i < Steps; i++)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                var next = Step(field, x, i, times[i], times[i + 1]);
                // The last step lands on t = 1 exactly, whatever the float schedule's rounding.
                if (constraint != null) next = constraint(next, i == Steps - 1 ? 1.0 : times[i + 1]);
                next = next.MoveToOuterDisposeScope();
                x.Dispose();
                x = next;
                onStep?.Invoke(i + 1);
            }
        }
        catch
        {
            x.Dispose();
            throw;
        }
        return x;
    }

    /// <summary>Samples with a DiT (tokens [B, T, C] or latents [B, C, h, w]).</summary>
    public Tensor Sample(DiT model, Tensor z, Tensor cond, Tensor? nullLabels = null, GuidanceSchedule? guidance = null, Action<int>? onStep = null,
        double startTime = 0, CancellationToken cancel = default, Func<Tensor, double, Tensor>? constraint = null) =>
        Sample((x, t, y) => model.Velocity(x, t, y), z, cond, nullLabels, guidance, onStep, startTime, cancel, constraint);

    /// <summary>One step from <paramref name="t0"/> to <paramref name="t1"/>.</summary>
    protected abstract Tensor Step(GuidedVelocity field, Tensor x, int step, float t0, float t1);

    public override string ToString() => $"{GetType().Name.Replace("Sampler", "").ToLowerInvariant()}, {Steps} steps, shift {TimestepShift}";
}
