using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Common;

/// <summary>
/// The conv stacks' elementwise steps, in place when autograd is off. Together with disposing each
/// activation once consumed, this keeps a decoder pass's peak memory to a few activations instead of
/// all of them (which, on a VM whose fresh memory costs seconds per GB to touch, is also system time).
/// </summary>
public static class Activation
{
    static bool Tracked(Tensor t) => torch.is_grad_enabled() && t.requires_grad;

    /// <summary>SiLU of <paramref name="t"/>, which the caller hands over: overwritten, or disposed once the result exists.</summary>
    public static Tensor Swish(Tensor t)
    {
        if (!Tracked(t)) return t.silu_();
        var s = functional.silu(t);
        t.Dispose();
        return s;
    }

    /// <summary><c>h + other</c>, with <paramref name="h"/> handed over: written in place, or disposed once the sum exists.</summary>
    public static Tensor Add(Tensor h, Tensor other)
    {
        if (!Tracked(h) && !Tracked(other)) return h.add_(other);
        var sum = h + other;
        h.Dispose();
        return sum;
    }
}
