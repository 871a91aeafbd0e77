using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;

namespace SvgDiffusion.Evaluation;

/// <summary>Forward-pass FLOPs (2 per multiply-add) of the matrix work, for fractions of the matmul peak.</summary>
public static class Flops
{
    /// <summary>One DiT forward of one sample over a grid of <paramref name="tokens"/> tokens.</summary>
    public static double DiT(DiTConfig c, int tokens)
    {
        double t = tokens, h = c.HiddenSize;
        double perBlock = 2 * t * h * 3 * h + 2 * 2 * t * t * h + 2 * t * h * h + 2 * 2 * t * h * c.MlpHidden + 2 * h * 6 * h;
        double embed = 2 * t * c.InChannels * h + 2 * (256 * h + h * h);
        double final = 2 * h * 2 * h + 2 * t * h * c.OutChannels;
        return embed + c.Depth * perBlock + final;
    }

    /// <summary>One decoder forward of one latent.</summary>
    public static double Decoder(DecoderConfig c)
    {
        double Conv(int cin, int cout, int k, int res) => 2.0 * k * k * cin * cout * res * res;
        double Block(int cin, int cout, int res) => Conv(cin, cout, 3, res) + Conv(cout, cout, 3, res) + (cin != cout ? Conv(cin, cout, 1, res) : 0);
        double Attn(int ch, int res) => 4 * Conv(ch, ch, 1, res) + 2.0 * 2 * Math.Pow(res * res, 2) * ch;
        int r = c.LatentResolution;
        int blockIn = c.Ch * c.ChMult[^1];
        double total = Conv(c.ZChannels, blockIn, 3, r) + 2 * Block(blockIn, blockIn, r) + Attn(blockIn, r);
        for (int level = c.NumResolutions - 1; level >= 0; level--)
        {
            int blockOut = c.Ch * c.ChMult[level];
            for (int j = 0; j <= c.NumResBlocks; j++)
            {
                total += Block(blockIn, blockOut, r);
                blockIn = blockOut;
                if (c.AttnResolutions.Contains(r)) total += Attn(blockIn, r);
            }
            if (level != 0) { r *= 2; total += Conv(blockIn, blockIn, 3, r); }
        }
        return total + Conv(blockIn, c.OutCh, 3, r);
    }
}
