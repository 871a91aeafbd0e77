using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>
/// Per-op autocast for the project's convolutions (libtorch's autocast is not reachable from TorchSharp):
/// inside <see cref="Enter"/>, <see cref="Convolution.Conv2d"/> rounds fp32 inputs, weights and bias to
/// the autocast dtype, runs the bf16 kernel and widens the result back to fp32. The weights stay fp32
/// parameters (the cast is differentiable, so their gradients arrive in fp32 for an fp32 optimiser), and
/// every op between convolutions (norms, activations, losses) sees fp32 as without autocast.
/// Scoped to the calling thread: a training step's forward and its backward run there.
/// </summary>
public static class Autocast
{
    [ThreadStatic] static ScalarType? _dtype;

    /// <summary>The dtype convolutions compute in on this thread, or null when autocast is off.</summary>
    public static ScalarType? Current => _dtype;

    /// <summary>Turns autocast to <paramref name="dtype"/> on (null: off) until the result is disposed.</summary>
    public static IDisposable Enter(ScalarType? dtype)
    {
        if (dtype is not (null or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"autocast is to bf16 or fp16, not {dtype}", nameof(dtype));
        var previous = _dtype;
        _dtype = dtype;
        return new Restore(previous);
    }

    sealed class Restore(ScalarType? previous) : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            _dtype = previous;
        }
    }
}
