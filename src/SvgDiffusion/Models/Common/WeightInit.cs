namespace SvgDiffusion.Models.Common;

/// <summary>
/// Lets a checkpoint loader build a model without drawing its initial weights: every parameter is
/// overwritten by a strict state-dict load (missing keys are an error), so the random draws are wasted.
/// For SVG-XL they are most of the load: 6.7 s of 2-core time for nn.Linear's own draw, a copy and
/// DiT's Xavier pass over 675M weights. Inside <see cref="SkipForLoad"/>, <see cref="PackedLinear"/>
/// allocates its weights uninitialised and <see cref="Diffusion.DiT"/> skips its initialisation.
/// </summary>
public static class WeightInit
{
    [ThreadStatic] static int _skipping;

    /// <summary>Whether models built on this thread now leave their weights uninitialised.</summary>
    public static bool Skipping => _skipping > 0;

    /// <summary>Until disposed, models built on this thread skip their random initialisation; only for a strict load straight after.</summary>
    public static IDisposable SkipForLoad()
    {
        _skipping++;
        return new Scope();
    }

    sealed class Scope : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            _skipping--;
        }
    }
}
