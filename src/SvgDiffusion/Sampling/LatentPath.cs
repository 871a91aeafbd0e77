using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Sampling;

/// <summary>
/// Paths between two points of a latent space. Gaussian noise lives near a sphere of radius sqrt(d), and a
/// straight line between two noises passes well inside it (at the midpoint the norm drops by about 1/sqrt(2)),
/// where the sampler never saw its inputs: noise is interpolated on the sphere. Encoded latents have no such
/// shell, and the decoder is trained on them as they are: they are interpolated on straight lines.
/// </summary>
public static class LatentPath
{
    /// <summary><paramref name="frames"/> fractions 0, 1/(frames-1), ..., 1 (a single frame: 0).</summary>
    public static double[] Fractions(int frames)
    {
        if (frames < 1) throw new SvgdException($"a path needs at least one frame, got {frames}");
        return Enumerable.Range(0, frames).Select(i => frames == 1 ? 0.0 : (double)i / (frames - 1)).ToArray();
    }

    /// <summary>(1 - a) x + a y for each fraction a: [F, ...] from x and y shaped alike.</summary>
    public static Tensor Lerp(Tensor x, Tensor y, IReadOnlyList<double> fractions)
    {
        CheckShapes(x, y);
        using var scope = torch.NewDisposeScope();
        var frames = fractions.Select(a => a == 0 ? x.clone() : a == 1 ? y.clone() : (1 - a) * x + a * y).ToArray();
        return torch.stack(frames).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Spherical interpolation of x and y (flattened, in float64): sin((1 - a) w) / sin w x + sin(a w) / sin w y, w the
    /// angle between them. Endpoints are returned exactly; nearly parallel inputs fall back to a straight line.
    /// </summary>
    public static Tensor Slerp(Tensor x, Tensor y, IReadOnlyList<double> fractions)
    {
        CheckShapes(x, y);
        using var scope = torch.NewDisposeScope();
        var a = x.to(ScalarType.Float64).flatten();
        var b = y.to(ScalarType.Float64).flatten();
        double cos = (torch.dot(a, b) / (a.norm() * b.norm())).item<double>();
        double omega = Math.Acos(Math.Clamp(cos, -1.0, 1.0));
        double sin = Math.Sin(omega);
        var frames = fractions.Select(f =>
        {
            if (f == 0) return x.clone();
            if (f == 1) return y.clone();
            var z = sin < 1e-6 ? (1 - f) * a + f * b : Math.Sin((1 - f) * omega) / sin * a + Math.Sin(f * omega) / sin * b;
            return z.view(x.shape).to(x.dtype);
        }).ToArray();
        return torch.stack(frames).MoveToOuterDisposeScope();
    }

    static void CheckShapes(Tensor x, Tensor y)
    {
        if (!x.shape.SequenceEqual(y.shape))
            throw new SvgdException($"cannot interpolate between shapes {Checkpoints.Checkpoint.Shape(x.shape)} and {Checkpoints.Checkpoint.Shape(y.shape)}");
    }
}
