using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// The fixed 2-D sine-cosine position table of MAE and DiT. Being a formula rather than learned, it can be
/// produced for any latent grid, which is what lets one model run at grid sizes it was not trained on.
/// </summary>
public static class SinCosPositionEmbedding
{
    /// <summary>
    /// [h*w, dim] for a row-major grid of <paramref name="height"/> rows and <paramref name="width"/> columns.
    /// The first half of the channels encodes the column and the second half the row (the reference builds
    /// its grid with <c>meshgrid(w, h)</c>); each half is sines then cosines of 1/10000^(2i/(dim/2)) frequencies.
    /// Computed in float64 and rounded once, as the numpy original is, so stored tables are reproduced bit for bit.
    /// </summary>
    public static Tensor Create(int dim, int height, int width)
    {
        if (dim % 4 != 0) throw new SvgdException($"2-D sin-cos position embedding needs a width divisible by 4, got {dim}");
        if (height <= 0 || width <= 0) throw new SvgdException($"position grid must be positive, got {height}x{width}");
        int quarter = dim / 4, half = dim / 2;
        var omega = new double[quarter];
        for (int i = 0; i < quarter; i++) omega[i] = 1.0 / Math.Pow(10000.0, i / (double)quarter);
        var values = new float[(long)height * width * dim];
        for (int r = 0; r < height; r++)
        for (int c = 0; c < width; c++)
        {
            long row = ((long)r * width + c) * dim;
            for (int i = 0; i < quarter; i++)
            {
                double ac = c * omega[i], ar = r * omega[i];
                values[row + i] = (float)Math.Sin(ac);
                values[row + quarter + i] = (float)Math.Cos(ac);
                values[row + half + i] = (float)Math.Sin(ar);
                values[row + half + quarter + i] = (float)Math.Cos(ar);
            }
        }
        return torch.tensor(values, new long[] { (long)height * width, dim });
    }
}
