namespace SvgDiffusion.Distributed;

/// <summary>
/// The shard of a global batch this process computes, in force for one training step. The few places
/// where samples of a batch meet — batch statistics (PatchGAN BatchNorm, latent alignment) and draws
/// made inside modules (dropout) — read it, so the step computes what one process with the whole batch would.
/// Outside a step (inference, tests of single modules) there is none and modules behave as always.
/// </summary>
public sealed class GlobalBatch : IDisposable
{
    [ThreadStatic] static GlobalBatch? _current;

    /// <summary>The batch of the step running on this thread, or null.</summary>
    public static GlobalBatch? Current => _current;

    readonly GlobalBatch? _previous;

    public ICommunicator Comm { get; }
    /// <summary>Samples in the whole batch, over all ranks.</summary>
    public int Size { get; }
    /// <summary>Global index of this rank's first sample.</summary>
    public int First { get; }
    /// <summary>This rank's samples.</summary>
    public int Count { get; }
    /// <summary>Per-sample streams for dropout inside the model; null: dropout draws from torch's global generator.</summary>
    public SampleRandom? Dropout { get; }

    /// <summary>True when the batch is split over more than one process.</summary>
    public bool IsSharded => Comm.Size > 1;

    GlobalBatch(ICommunicator comm, int size, int first, int count, SampleRandom? dropout)
    {
        Comm = comm;
        Size = size;
        First = first;
        Count = count;
        Dropout = dropout;
        _previous = _current;
    }

    /// <summary>Makes this rank's shard of a batch current until disposed.</summary>
    public static GlobalBatch Enter(ICommunicator comm, int size, int first, int count, SampleRandom? dropout = null)
    {
        var b = new GlobalBatch(comm, size, first, count, dropout);
        _current = b;
        return b;
    }

    /// <summary>The contiguous part [first, first + count) of a batch of <paramref name="size"/> that
    /// <paramref name="rank"/> of <paramref name="ranks"/> computes; parts differ by at most one sample.</summary>
    public static (int First, int Count) Shard(int size, int rank, int ranks)
    {
        int first = (int)((long)size * rank / ranks), next = (int)((long)size * (rank + 1) / ranks);
        return (first, next - first);
    }

    public void Dispose()
    {
        if (ReferenceEquals(_current, this)) _current = _previous;
    }
}
