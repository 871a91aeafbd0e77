namespace SvgDiffusion.Models.Dinov3;

/// <summary>Multiply-add count of one forward pass (2 FLOPs each), for benchmark peak fractions.</summary>
public static class Dinov3Flops
{
    public static double PerImage(Dinov3Config c, int height, int width)
    {
        double n = (double)(height / c.PatchSize) * (width / c.PatchSize);
        double t = 1 + c.NStorageTokens + n, d = c.EmbedDim, h = c.FfnHidden;
        double patch = 2 * n * c.InChans * c.PatchSize * c.PatchSize * d;
        double attn = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d;
        double ffn = (c.IsSwiGlu ? 3 : 2) * 2 * t * d * h;
        return patch + c.Depth * (attn + ffn);
    }
}
