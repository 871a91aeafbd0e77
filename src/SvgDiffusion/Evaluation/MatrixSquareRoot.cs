using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// Principal square root of a general (not necessarily symmetric) real square matrix in float64, the
/// quantity <c>scipy.linalg.sqrtm</c> returns. Computed from the eigendecomposition A = V diag(w) V⁻¹ as
/// V diag(√w) V⁻¹ with complex arithmetic and the principal branch of √, so negative or complex
/// eigenvalues (numerical noise in products of covariance matrices) give the same complex result scipy
/// gives. The trace of the root is Σ √wᵢ independent of how well-conditioned V is.
/// </summary>
public static class MatrixSquareRoot
{
    /// <summary>The root (complex128) and the principal square roots of the eigenvalues (complex128).</summary>
    public readonly record struct Result(Tensor Root, Tensor EigenvalueRoots);

    /// <summary>√A as complex128 [n,n]; <paramref name="a"/> is any real or complex [n,n] tensor.</summary>
    public static Tensor Sqrtm(Tensor a)
    {
        var r = Compute(a);
        r.EigenvalueRoots.Dispose();
        return r.Root;
    }

    public static Result Compute(Tensor a)
    {
        if (a.dim() != 2 || a.shape[0] != a.shape[1])
            throw new SvgdException($"matrix square root needs a square matrix, got {Checkpoints.Checkpoint.Shape(a.shape)}");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var x = a.dtype is ScalarType.ComplexFloat64 or ScalarType.ComplexFloat32 ? a.to(ScalarType.ComplexFloat64) : a.to(ScalarType.Float64);
        var (w, v) = torch.linalg.eig(x.cpu());
        var s = torch.sqrt(w);
        // Root = (V diag(s)) V⁻¹, i.e. the solution X of X V = V diag(s); solved as Vᵀ Xᵀ = (V diag(s))ᵀ.
        var vs = v * s.unsqueeze(0);
        var root = torch.linalg.solve(v.transpose(0, 1), vs.transpose(0, 1)).transpose(0, 1).contiguous();
        return new Result(root.MoveToOuterDisposeScope(), s.MoveToOuterDisposeScope());
    }
}
