using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Distributed;

/// <summary>A job of one process: every collective is the identity, and MPI is never loaded.</summary>
public sealed class SingleProcess : ICommunicator
{
    public static readonly SingleProcess Instance = new();

    public int Rank => 0;
    public int Size => 1;
    public string Engine => "single process";

    public void AllreduceSum(Tensor values) => CheckBuffer(values);
    public void AllreduceSum(double[] values) { }
    public void Broadcast(Tensor values, int root = 0) => CheckRoot(root);

    public byte[] Broadcast(byte[]? data, int root = 0)
    {
        CheckRoot(root);
        return data ?? throw new ArgumentNullException(nameof(data), "the root's bytes");
    }

    public byte[][] Allgather(byte[] data) => new[] { data };

    public byte[][] Gather(byte[] data, int root = 0)
    {
        CheckRoot(root);
        return new[] { data };
    }

    public void Barrier() { }
    public void Abort(int code) => Environment.Exit(code);
    public void Dispose() { }

    static void CheckRoot(int root)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), $"rank {root} does not exist in a job of one process");
    }

    internal static void CheckBuffer(Tensor t)
    {
        if (t.device_type != DeviceType.CPU || !t.is_contiguous() || t.dtype is not (ScalarType.Float32 or ScalarType.Float64))
            throw new ArgumentException($"allreduce needs a contiguous CPU float32/float64 tensor, got {t.dtype} on {t.device}");
    }
}
