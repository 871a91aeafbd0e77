using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

public sealed record PrecisionRecallResult(double Precision, double Recall, int K, long RealCount, long FakeCount);

/// <summary>
/// Improved precision and recall (Kynkäänniemi et al. 2019). Each set's manifold is the union of balls
/// around its points with radius the distance to the k-th nearest other point of the same set.
/// Precision: the fraction of generated points inside the real manifold (how many samples look real);
/// recall: the fraction of real points inside the generated manifold (how much of the data is covered).
/// </summary>
public static class PrecisionRecall
{
    public static PrecisionRecallResult Compute(Tensor real, Tensor fake, int k = 3, int chunk = 1024)
    {
        if (real.dim() != 2 || fake.dim() != 2 || real.shape[1] != fake.shape[1])
            throw new SvgdException($"precision/recall needs [N, D] real and [M, D] generated features, got {Checkpoints.Checkpoint.Shape(real.shape)} and {Checkpoints.Checkpoint.Shape(fake.shape)}");
        if (k < 1 || real.shape[0] <= k || fake.shape[0] <= k)
            throw new SvgdException($"precision/recall with k = {k} needs more than {k} real and generated samples, got {real.shape[0]} and {fake.shape[0]}");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var r = real.to(ScalarType.Float64);
        var f = fake.to(ScalarType.Float64);
        var realRadii = KthNeighbourDistance(r, k, chunk);
        var fakeRadii = KthNeighbourDistance(f, k, chunk);
        double precision = Covered(f, r, realRadii, chunk);
        double recall = Covered(r, f, fakeRadii, chunk);
        return new PrecisionRecallResult(precision, recall, k, real.shape[0], fake.shape[0]);
    }

    /// <summary>Distance from each point to its k-th nearest neighbour in the same set (itself excluded).</summary>
    static Tensor KthNeighbourDistance(Tensor x, int k, int chunk)
    {
        var parts = new List<Tensor>();
        for (long s = 0; s < x.shape[0]; s += chunk)
        {
            var d = torch.cdist(x.narrow(0, s, Math.Min(chunk, x.shape[0] - s)), x);
            // The smallest distance is the point to itself (0); the (k+1)-th smallest is the k-th neighbour.
            parts.Add(d.kthvalue(k + 1, 1).values);
        }
        return torch.cat(parts, 0);
    }

    /// <summary>The fraction of <paramref name="query"/> points within radius[j] of some manifold point j.</summary>
    static double Covered(Tensor query, Tensor manifold, Tensor radii, int chunk)
    {
        long inside = 0;
        for (long s = 0; s < query.shape[0]; s += chunk)
        {
            using var scope = torch.NewDisposeScope();
            var d = torch.cdist(query.narrow(0, s, Math.Min(chunk, query.shape[0] - s)), manifold);
            inside += (d <= radii.unsqueeze(0)).any(1).sum().item<long>();
        }
        return (double)inside / query.shape[0];
    }
}
