using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// Streaming first and second moments of features in float64 (sum, sum of outer products, count): the
/// statistics of 50,000 samples without keeping their features, mergeable across resumable shards.
/// </summary>
public sealed class FeatureMoments : IDisposable
{
    public Tensor Sum { get; }
    public Tensor OuterSum { get; }
    public long Count { get; private set; }
    public long Dim => Sum.shape[0];

    public FeatureMoments(long dim)
    {
        Sum = torch.zeros(dim, dtype: ScalarType.Float64).DetachFromDisposeScope();
        OuterSum = torch.zeros(new[] { dim, dim }, dtype: ScalarType.Float64).DetachFromDisposeScope();
    }

    FeatureMoments(Tensor sum, Tensor outer, long count)
    {
        Sum = sum.DetachFromDisposeScope();
        OuterSum = outer.DetachFromDisposeScope();
        Count = count;
    }

    public void Add(Tensor features)
    {
        if (features.dim() != 2 || features.shape[1] != Dim)
            throw new SvgdException($"features must be [N, {Dim}], got {Checkpoint.Shape(features.shape)}");
        using var scope = torch.NewDisposeScope();
        var x = features.detach().cpu().to(ScalarType.Float64);
        Sum.add_(x.sum(new long[] { 0 }));
        OuterSum.add_(x.transpose(0, 1).matmul(x));
        Count += x.shape[0];
    }

    public void Merge(FeatureMoments other)
    {
        if (other.Dim != Dim) throw new SvgdException($"cannot merge {other.Dim}-d moments into {Dim}-d ones");
        Sum.add_(other.Sum);
        OuterSum.add_(other.OuterSum);
        Count += other.Count;
    }

    /// <summary>μ and the unbiased covariance (Σxxᵀ − nμμᵀ)/(n−1).</summary>
    public FidStatistics ToStatistics(Action<string>? warn = null, string source = "features")
    {
        if (Count < 2) throw new SvgdException($"{source}: a covariance needs at least 2 samples, got {Count}");
        if (Count < Dim) warn?.Invoke($"{source}: {Count} samples for {Dim}-dimensional features; the covariance is rank-deficient, so the distance is biased and unstable. Use at least {Dim} samples.");
        var mu = (Sum / Count).DetachFromDisposeScope();
        var sigma = ((OuterSum - Count * torch.outer(mu, mu)) / (Count - 1)).DetachFromDisposeScope();
        return new FidStatistics(mu, sigma, null, source);
    }

    public void Save(string path) => SafeTensors.Save(path, new Dictionary<string, Tensor>
    {
        ["sum"] = Sum, ["outer_sum"] = OuterSum, ["count"] = torch.tensor(new[] { Count }),
    });

    public static FeatureMoments Load(string path)
    {
        var t = SafeTensors.Load(path);
        if (!t.ContainsKey("sum") || !t.ContainsKey("outer_sum") || !t.ContainsKey("count"))
            throw new SvgdException($"{path}: not a feature-moments shard (needs sum, outer_sum, count)");
        return new FeatureMoments(t["sum"], t["outer_sum"], t["count"].item<long>());
    }

    public void Dispose() { Sum.Dispose(); OuterSum.Dispose(); }
}
