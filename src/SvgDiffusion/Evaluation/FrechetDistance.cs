using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>The distance and its parts, as pytorch-fid sums them.</summary>
/// <param name="Distance">d² = MeanTerm + TraceSigma1 + TraceSigma2 − 2·TraceCovMean.</param>
/// <param name="MeanTerm">‖μ₁ − μ₂‖².</param>
/// <param name="TraceSigma1">Tr(Σ₁).</param>
/// <param name="TraceSigma2">Tr(Σ₂).</param>
/// <param name="TraceCovMean">Tr(Re √(Σ₁Σ₂)).</param>
/// <param name="AddedEps">True when the first square root was not finite and eps·I was added to both covariances.</param>
/// <param name="MaxImaginaryDiagonal">Largest |Im| on the diagonal of the square root.</param>
public sealed record FrechetDistanceResult(double Distance, double MeanTerm, double TraceSigma1, double TraceSigma2,
    double TraceCovMean, bool AddedEps, double MaxImaginaryDiagonal);

/// <summary>
/// Fréchet distance between two Gaussians, d² = ‖μ₁−μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr(√(Σ₁Σ₂)), in float64 with
/// pytorch-fid's conventions: the square root of the non-symmetric product Σ₁·Σ₂ as scipy's <c>sqrtm</c>
/// (see <see cref="MatrixSquareRoot"/>); when it is not finite, a retry with eps·I added to both
/// covariances; an error when the diagonal of the root has an imaginary part above 1e-3 (otherwise the
/// real part is used).
/// </summary>
public static class FrechetDistance
{
    public const double DefaultEps = 1e-6;
    /// <summary>pytorch-fid's <c>np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)</c>.</summary>
    public const double ImaginaryTolerance = 1e-3;

    public static double Compute(FidStatistics a, FidStatistics b, double eps = DefaultEps, Action<string>? warn = null) =>
        ComputeDetailed(a.Mu, a.Sigma, b.Mu, b.Sigma, eps, warn).Distance;

    public static double Compute(Tensor mu1, Tensor sigma1, Tensor mu2, Tensor sigma2, double eps = DefaultEps, Action<string>? warn = null) =>
        ComputeDetailed(mu1, sigma1, mu2, sigma2, eps, warn).Distance;

    /// <param name="warn">Told when the eps fallback is used (pytorch-fid prints the same notice).</param>
    public static FrechetDistanceResult ComputeDetailed(Tensor mu1, Tensor sigma1, Tensor mu2, Tensor sigma2, double eps = DefaultEps, Action<string>? warn = null)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var m1 = AtLeast1d(mu1); var m2 = AtLeast1d(mu2);
        var s1 = AtLeast2d(sigma1); var s2 = AtLeast2d(sigma2);
        if (!m1.shape.SequenceEqual(m2.shape))
            throw new SvgdException($"Frechet distance: mean vectors have different lengths ({m1.shape[0]} vs {m2.shape[0]}); the statistics come from different feature extractors");
        if (!s1.shape.SequenceEqual(s2.shape))
            throw new SvgdException($"Frechet distance: covariances have different dimensions ({Checkpoints.Checkpoint.Shape(s1.shape)} vs {Checkpoints.Checkpoint.Shape(s2.shape)})");
        long d = m1.shape[0];
        if (s1.dim() != 2 || s1.shape[0] != d || s1.shape[1] != d)
            throw new SvgdException($"Frechet distance: covariance {Checkpoints.Checkpoint.Shape(s1.shape)} does not fit a mean of length {d}");

        foreach (var (t, name) in new[] { (m1, "mu1"), (s1, "sigma1"), (m2, "mu2"), (s2, "sigma2") })
            if (!torch.isfinite(t).all().item<bool>())
                throw new SvgdException($"Frechet distance: {name} contains NaN or infinite values");

        var diff = m1 - m2;
        double meanTerm = diff.dot(diff).item<double>();
        double tr1 = s1.trace().item<double>();
        double tr2 = s2.trace().item<double>();

        bool addedEps = false;
        var covmean = TrySqrtm(s1.matmul(s2));
        if (covmean is null)
        {
            warn?.Invoke($"Frechet distance: the product of the covariances is singular; adding {eps:g} to the diagonal of both covariance estimates");
            var offset = torch.eye(d, dtype: ScalarType.Float64) * eps;
            covmean = TrySqrtm((s1 + offset).matmul(s2 + offset))
                ?? throw new SvgdException("Frechet distance: the square root of the covariance product is not finite even with eps added to the diagonals");
            addedEps = true;
        }
        double maxImagDiag = covmean.diagonal().imag.abs().max().item<double>();
        if (maxImagDiag > ImaginaryTolerance)
        {
            double maxImag = covmean.imag.abs().max().item<double>();
            throw new SvgdException($"Frechet distance: the square root of the covariance product has an imaginary component {maxImag:g4} (diagonal up to {maxImagDiag:g4} > {ImaginaryTolerance:g}); the covariances are not positive semi-definite");
        }
        double trCovmean = covmean.real.trace().item<double>();
        double dist = meanTerm + tr1 + tr2 - 2 * trCovmean;
        return new FrechetDistanceResult(dist, meanTerm, tr1, tr2, trCovmean, addedEps, maxImagDiag);
    }

    /// <summary>The root, or null when it is not finite or the eigensolver fails (scipy would give NaN/inf there).</summary>
    static Tensor? TrySqrtm(Tensor product)
    {
        Tensor root;
        try { root = MatrixSquareRoot.Sqrtm(product); }
        catch (System.Runtime.InteropServices.ExternalException) { return null; }
        if (torch.isfinite(root).all().item<bool>()) return root;
        root.Dispose();
        return null;
    }

    static Tensor AtLeast1d(Tensor t)
    {
        var x = t.to(ScalarType.Float64);
        return x.dim() == 0 ? x.reshape(1) : x;
    }

    static Tensor AtLeast2d(Tensor t)
    {
        var x = t.to(ScalarType.Float64);
        return x.dim() switch { 0 => x.reshape(1, 1), 1 => x.unsqueeze(0), _ => x };
    }
}
