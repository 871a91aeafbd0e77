using static TorchSharp.torch;

namespace SvgDiffusion.Transport;

/// <summary>
/// Second-order steps: an Euler predictor to t1, then the average of the velocities at both ends. Two
/// model evaluations per step. A cfg_star step that replaces the velocity moves with that velocity alone.
/// </summary>
public sealed class HeunSampler(int steps, double timestepShift = Sampler.DefaultShift) : Sampler(steps, timestepShift)
{
    protected override Tensor Step(GuidedVelocity field, Tensor x, int step, float t0, float t1)
    {
        float dt = t1 - t0;
        var v0 = field.At(x, t0, step);
        if (field.Overrides(step)) return x + dt * v0;
        var predicted = x + dt * v0;
        var v1 = field.At(predicted, t1, step);
        return x + dt * 0.5f * (v0 + v1);
    }
}
