using SvgDiffusion.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Common;

/// <summary>
/// Training-mode BatchNorm of a batch split over processes (what PyTorch calls SyncBatchNorm): mean and
/// variance of the whole global batch from per-channel sums over all ranks, and gradients through those
/// statistics summed over ranks (<see cref="GlobalSum"/>), so each rank computes its shard of the
/// single-process result. Running statistics move exactly as nn.BatchNorm moves them.
/// </summary>
public static class GlobalBatchNorm
{
    /// <summary><paramref name="bn"/>'s training forward of <paramref name="x"/> [B, C, H, W] over the global batch.</summary>
    public static Tensor Forward(BatchNorm bn, Tensor x, ICommunicator comm)
    {
        if (x.dim() != 4 || x.shape[1] != bn.num_features)
            throw new SvgdException($"BatchNorm of {bn.num_features} channels got {Checkpoint(x)}");
        using var scope = torch.NewDisposeScope();
        long c = x.shape[1];
        var dims = new long[] { 0, 2, 3 };
        var counts = new[] { (double)(x.shape[0] * x.shape[2] * x.shape[3]) };
        comm.AllreduceSum(counts);
        double n = counts[0];
        // float64 sums: E[x^2] - E[x]^2 is exact enough in double for any activation scale.
        var x64 = x.to(ScalarType.Float64);
        var sums = GlobalSum.Of(torch.cat(new[] { x64.sum(dims), x64.square().sum(dims) }), comm);
        var mean = sums.narrow(0, 0, c) / n;
        var variance = sums.narrow(0, c, c) / n - mean.square();
        var invStd = (variance + bn.eps).rsqrt();
        var shape = new long[] { 1, c, 1, 1 };
        var y = (x - mean.to(x.dtype).view(shape)) * invStd.to(x.dtype).view(shape);
        if (bn.weight is Parameter w) y = y * w.view(shape);
        if (bn.bias is Parameter b) y = y + b.view(shape);
        if (bn.track_running_stats && bn.running_mean is Tensor rm && bn.running_var is Tensor rv)
        {
            using var _ = torch.no_grad();
            bn.num_batches_tracked?.add_(1);
            double m = bn.momentum ?? 1.0 / bn.num_batches_tracked!.item<long>();
            rm.mul_(1 - m).add_(mean.detach().to(rm.dtype), alpha: m);
            // Running variance is unbiased, as nn.BatchNorm keeps it.
            rv.mul_(1 - m).add_((variance.detach() * (n / Math.Max(1, n - 1))).to(rv.dtype), alpha: m);
        }
        return y.MoveToOuterDisposeScope();
    }

    static string Checkpoint(Tensor x) => SvgDiffusion.Checkpoints.Checkpoint.Shape(x.shape);
}
