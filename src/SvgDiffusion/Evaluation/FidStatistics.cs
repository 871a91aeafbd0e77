using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// The Gaussian FID compares: mean μ [D] and covariance Σ [D,D] of feature vectors, both float64, plus
/// optionally the activations [N,D] they came from. Computed as numpy does in pytorch-fid and the ADM
/// evaluator (<c>np.mean(axis=0)</c>, <c>np.cov(rowvar=False)</c>: centred, XᵀX·1/(N−1)), except that the
/// mean is also taken in float64 when the features are float32 (numpy keeps it in float32; the difference
/// is far below anything FID resolves).
/// </summary>
public sealed class FidStatistics : IDisposable
{
    /// <summary>Mean, float64 [D].</summary>
    public Tensor Mu { get; }
    /// <summary>Covariance, float64 [D,D].</summary>
    public Tensor Sigma { get; }
    /// <summary>The features the statistics came from, [N,D], when kept or stored in the file.</summary>
    public Tensor? Activations { get; }
    public long Dim => Mu.shape[0];

    /// <param name="source">Names the origin in error messages.</param>
    public FidStatistics(Tensor mu, Tensor sigma, Tensor? activations = null, string source = "FID statistics")
    {
        if (mu.dim() != 1) throw new SvgdException($"{source}: mu must be a vector, got shape {Checkpoint.Shape(mu.shape)}");
        long d = mu.shape[0];
        if (sigma.dim() != 2 || sigma.shape[0] != d || sigma.shape[1] != d)
            throw new SvgdException($"{source}: sigma has shape {Checkpoint.Shape(sigma.shape)} but mu has {d} entries (expected [{d}, {d}])");
        if (activations is not null && (activations.dim() != 2 || activations.shape[1] != d))
            throw new SvgdException($"{source}: activations have shape {Checkpoint.Shape(activations.shape)}, expected [N, {d}]");
        Mu = mu.dtype == ScalarType.Float64 ? mu : mu.to(ScalarType.Float64);
        Sigma = sigma.dtype == ScalarType.Float64 ? sigma : sigma.to(ScalarType.Float64);
        Activations = activations;
    }

    /// <summary>Statistics of <paramref name="features"/> [N,D] (any float dtype).</summary>
    /// <param name="keepActivations">Keep a float32 copy of the features in <see cref="Activations"/>.</param>
    /// <param name="warn">Told when N &lt; D: the covariance is then rank-deficient (at most N−1) and FID is biased and unstable; pytorch-fid warns the same way.</param>
    public static FidStatistics FromFeatures(Tensor features, bool keepActivations = false, Action<string>? warn = null, string source = "features")
    {
        if (features.dim() != 2)
            throw new SvgdException($"{source}: features must be [N, D], got {Checkpoint.Shape(features.shape)}");
        long n = features.shape[0], d = features.shape[1];
        if (n < 2) throw new SvgdException($"{source}: a covariance needs at least 2 samples, got {n}");
        if (!features.dtype.IsFloatingPoint())
            throw new SvgdException($"{source}: features must be floating point, got {features.dtype}");
        if (n < d)
            warn?.Invoke($"{source}: {n} samples for {d}-dimensional features; the covariance is rank-deficient (rank <= {n - 1}), so FID will be biased and unstable. Use at least {d} samples.");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var x = features.detach().cpu().to(ScalarType.Float64);
        var mu = x.mean(new long[] { 0 });
        var centred = x - mu;
        var sigma = centred.transpose(0, 1).matmul(centred) * (1.0 / (n - 1));
        var acts = keepActivations ? features.detach().cpu().to(ScalarType.Float32).clone() : null;
        mu.MoveToOuterDisposeScope();
        sigma.MoveToOuterDisposeScope();
        acts?.MoveToOuterDisposeScope();
        return new FidStatistics(mu, sigma, acts, source);
    }

    /// <summary>Reads μ and Σ (and activations when asked and present) from a pytorch-fid or ADM <c>.npz</c>.</summary>
    /// <remarks>
    /// Activations are <c>activations</c>, or <c>arr_0</c> when that is a float [N,D] array; in ADM reference
    /// batches <c>arr_0</c> holds the images (uint8 [N,H,W,3]) and is left unread.
    /// </remarks>
    public static FidStatistics Load(string path, bool loadActivations = false)
    {
        using var npz = NpzArchive.Open(path);
        if (!npz.Contains("mu") || !npz.Contains("sigma"))
            throw new SvgdException($"{path}: not FID statistics: no 'mu' and 'sigma' arrays (arrays: {(npz.Names.Count == 0 ? "none" : string.Join(", ", npz.Names))})");
        using var scope = torch.NewDisposeScope();
        var mu = npz.Read("mu");
        var sigma = npz.Read("sigma");
        if (!mu.dtype.IsFloatingPoint() || !sigma.dtype.IsFloatingPoint())
            throw new SvgdException($"{path}: mu and sigma must be floating point (got {mu.dtype}, {sigma.dtype})");
        if (mu.dim() != 1) throw new SvgdException($"{path}: mu has shape {Checkpoint.Shape(mu.shape)}, expected a vector");
        Tensor? acts = null;
        if (loadActivations)
        {
            foreach (var name in new[] { "activations", "arr_0" })
            {
                if (!npz.Contains(name)) continue;
                var h = npz.Header(name);
                bool fits = h.Shape.Length == 2 && h.Shape[1] == mu.shape[0] && h.Dtype.IsFloatingPoint();
                if (name == "activations" && !fits)
                    throw new SvgdException($"{path}: 'activations' has shape {Checkpoint.Shape(h.Shape)} and dtype {h.Descr}, expected float [N, {mu.shape[0]}]");
                if (fits) { acts = npz.Read(name); break; }
            }
        }
        var stats = new FidStatistics(mu.to(ScalarType.Float64), sigma.to(ScalarType.Float64), acts, path);
        stats.Mu.MoveToOuterDisposeScope();
        stats.Sigma.MoveToOuterDisposeScope();
        stats.Activations?.MoveToOuterDisposeScope();
        return stats;
    }

    /// <summary>Writes an <c>.npz</c> with <c>mu</c>, <c>sigma</c> (and <c>activations</c> when present and asked), atomically.</summary>
    public void Save(string path, bool includeActivations = false)
    {
        var arrays = new List<KeyValuePair<string, Tensor>> { new("mu", Mu), new("sigma", Sigma) };
        if (Runtime.Finite.FirstBad(arrays) is string bad) throw new SvgdException($"not writing {path}: '{bad}' holds NaN or Inf values (the features were not finite)");
        if (includeActivations && Activations is not null) arrays.Add(new("activations", Activations));
        Npz.Save(path, arrays);
    }

    public void Dispose()
    {
        Mu.Dispose();
        Sigma.Dispose();
        Activations?.Dispose();
    }
}
