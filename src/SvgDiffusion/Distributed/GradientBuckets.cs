using System.Diagnostics;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Distributed;

/// <summary>
/// Sums the gradients of a fixed list of parameters over the ranks through a few large flat buffers:
/// one allreduce per bucket instead of one per tensor, so per-call latency is paid a handful of times a
/// step however many tensors the model has. Each rank's loss is its shard's share of the global-batch
/// mean, so the sum is the gradient of the global-batch loss.
/// </summary>
public sealed class GradientBuckets : IDisposable
{
    /// <summary>64 MiB of float32: large enough that bandwidth, not latency, sets the time.</summary>
    public const long DefaultBucketElements = 16L << 20;

    readonly ICommunicator _comm;
    readonly List<(Tensor Flat, List<(string Name, Parameter P, long Offset)> Members)> _buckets = new();
    readonly Stopwatch _watch = new();

    /// <summary>Bytes each rank sends into the allreduce per step.</summary>
    public long Bytes { get; }
    /// <summary>Allreduces run so far.</summary>
    public int Calls { get; private set; }
    /// <summary>Time spent packing, reducing and unpacking gradients so far.</summary>
    public TimeSpan Elapsed => _watch.Elapsed;
    public int BucketCount => _buckets.Count;

    public GradientBuckets(ICommunicator comm, IEnumerable<(string Name, Parameter Parameter)> parameters, long bucketElements = DefaultBucketElements)
    {
        if (bucketElements <= 0) throw new ArgumentOutOfRangeException(nameof(bucketElements));
        _comm = comm;
        var members = new List<(string, Parameter, long)>();
        long filled = 0, total = 0;
        void Close()
        {
            if (members.Count == 0) return;
            _buckets.Add((torch.empty(filled, dtype: ScalarType.Float32), members));
            members = new List<(string, Parameter, long)>();
            filled = 0;
        }
        foreach (var (name, p) in parameters)
        {
            if (p.dtype != ScalarType.Float32 || p.device_type != DeviceType.CPU)
                throw new SvgdException($"data-parallel training needs float32 CPU parameters; '{name}' is {p.dtype} on {p.device}");
            long n = p.numel();
            if (filled > 0 && filled + n > bucketElements) Close();
            members.Add((name, p, filled));
            filled += n;
            total += n;
        }
        Close();
        Bytes = total * sizeof(float);
    }

    /// <summary>Replaces every gradient by its sum over the ranks. A parameter without a gradient counts as zeros;
    /// it must lack one on every rank (the ranks run the same graph), else the ranks would step differently.</summary>
    public void AllreduceSum()
    {
        if (_comm.Size == 1) return;
        _watch.Start();
        try
        {
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            foreach (var (flat, members) in _buckets)
            {
                foreach (var (_, p, off) in members)
                {
                    var slot = flat.narrow(0, off, p.numel());
                    if (p.grad is Tensor g) slot.copy_(g.reshape(-1));
                    else slot.zero_();
                }
                _comm.AllreduceSum(flat);
                Calls++;
                foreach (var (name, p, off) in members)
                {
                    var slot = flat.narrow(0, off, p.numel());
                    if (p.grad is Tensor g) g.copy_(slot.view(g.shape));
                    else if (slot.ne(0).any().item<bool>())
                        throw new InvalidOperationException($"'{name}' has no gradient on rank {_comm.Rank} but has one on another rank");
                }
            }
        }
        finally
        {
            _watch.Stop();
        }
    }

    public void Dispose()
    {
        foreach (var (flat, _) in _buckets) flat.Dispose();
        _buckets.Clear();
    }
}
