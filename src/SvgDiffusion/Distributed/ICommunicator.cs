using static TorchSharp.torch;

namespace SvgDiffusion.Distributed;

/// <summary>
/// The processes of one job and the collective operations between them. Every rank must call the
/// same collectives in the same order; a rank that stops calling them leaves the others waiting, so
/// failures that only some ranks see end the whole job (<see cref="Abort"/>).
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>This process's index in [0, <see cref="Size"/>); rank 0 writes every file and log.</summary>
    int Rank { get; }
    int Size { get; }
    bool IsRoot => Rank == 0;
    /// <summary>The engine, for the first line of a run (e.g. "MPICH 4.0.2").</summary>
    string Engine { get; }

    /// <summary>Sums a contiguous CPU float32 or float64 tensor over all ranks, in place.</summary>
    void AllreduceSum(Tensor values);

    /// <summary>Sums values over all ranks, in place.</summary>
    void AllreduceSum(double[] values);

    /// <summary>Overwrites a contiguous CPU tensor (any dtype) with rank <paramref name="root"/>'s copy.</summary>
    void Broadcast(Tensor values, int root = 0);

    /// <summary>Rank <paramref name="root"/>'s bytes on every rank (<paramref name="data"/> is ignored elsewhere).</summary>
    byte[] Broadcast(byte[]? data, int root = 0);

    /// <summary>Every rank's bytes, in rank order, on every rank.</summary>
    byte[][] Allgather(byte[] data);

    /// <summary>Every rank's bytes in rank order on <paramref name="root"/>; an empty array elsewhere.</summary>
    byte[][] Gather(byte[] data, int root = 0);

    void Barrier();

    /// <summary>Ends every process of the job with <paramref name="code"/> (never returns).</summary>
    void Abort(int code);
}
