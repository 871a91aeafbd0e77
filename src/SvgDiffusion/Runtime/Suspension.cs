namespace SvgDiffusion.Runtime;

/// <summary>
/// A process-wide "use libtorch instead" switch for one of our kernels, held while any
/// <see cref="Suspend"/> handle is undisposed: benchmarks and tests compare the two paths with it.
/// </summary>
internal sealed class Suspension
{
    int _count;

    public bool Active => Volatile.Read(ref _count) > 0;

    public IDisposable Suspend()
    {
        Interlocked.Increment(ref _count);
        return new Resume(this);
    }

    sealed class Resume(Suspension owner) : IDisposable
    {
        int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) Interlocked.Decrement(ref owner._count); }
    }
}
