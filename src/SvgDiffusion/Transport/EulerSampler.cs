using static TorchSharp.torch;

namespace SvgDiffusion.Transport;

/// <summary>First-order steps x += (t1 - t0) v(x, t0): one model evaluation per step, what SVG samples with.</summary>
public sealed class EulerSampler(int steps, double timestepShift = Sampler.DefaultShift) : Sampler(steps, timestepShift)
{
    protected override Tensor Step(GuidedVelocity field, Tensor x, int step, float t0, float t1)
    {
        float dt = t1 - t0;
        return x + dt * field.At(x, t0, step);
    }
}
