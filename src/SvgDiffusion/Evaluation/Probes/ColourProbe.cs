using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation.Probes;

/// <summary>How much of an image's colour each half of the SVG latent carries (R² of a ridge probe on held-out images).</summary>
public sealed record ColourProbeResult(double SemanticR2, double ResidualR2, double BothR2, int Train, int Test, int SemanticDim, int ResidualDim);

/// <summary>
/// Where an SVG latent keeps colour: a linear (ridge) probe from the grid-averaged semantic (frozen-encoder)
/// channels, from the residual channels and from both, to the mean foreground hue of each image: the
/// saturation-weighted circular mean (mean of S cos H, mean of S sin H over foreground pixels, HSV). The
/// foreground is every pixel that differs from the background by more than <see cref="ForegroundThreshold"/>
/// in some channel (the emoji data is composited onto a plain background). R² is measured on a held-out set
/// (another artist's images). If the frozen features predict hue as well as the residual channels do, an
/// edit that keeps the semantic channels keeps the colour too; see <c>frozen_input: luminance</c>.
/// </summary>
public static class ColourProbe
{
    /// <summary>A pixel is foreground when some channel differs from the background by more than this (of 1).</summary>
    public const double ForegroundThreshold = 0.1;

    /// <summary>Foreground masks [B, 1, H, W] (0/1) of images [B, 3, H, W] in [0, 1] on <paramref name="background"/> (0-1 per channel).</summary>
    public static Tensor Foreground(Tensor images01, (double R, double G, double B) background)
    {
        using var scope = torch.NewDisposeScope();
        var bg = torch.tensor(new[] { (float)background.R, (float)background.G, (float)background.B }).view(1, 3, 1, 1);
        return ((images01 - bg).abs().amax(new long[] { 1 }, keepdim: true) > ForegroundThreshold).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// [B, 2]: the mean over each image's foreground of (S cos H, S sin H), HSV saturation and hue of images
    /// [B, 3, H, W] in [0, 1]; (0, 0) for an image with no foreground or no saturated pixel.
    /// </summary>
    public static Tensor MeanHue(Tensor images01, Tensor foreground)
    {
        using var scope = torch.NewDisposeScope();
        var (h, s) = HueSaturation(images01);
        var w = foreground.squeeze(1);
        var count = w.sum(new long[] { 1, 2 }).clamp_min(1);
        var c = (s * torch.cos(h) * w).sum(new long[] { 1, 2 }) / count;
        var sn = (s * torch.sin(h) * w).sum(new long[] { 1, 2 }) / count;
        return torch.stack(new[] { c, sn }, 1).MoveToOuterDisposeScope();
    }

    /// <summary>HSV hue (radians, [0, 2 pi)) and saturation ([0, 1]) of images [B, 3, H, W] in [0, 1]: two [B, H, W] tensors.</summary>
    public static (Tensor Hue, Tensor Saturation) HueSaturation(Tensor images01)
    {
        using var scope = torch.NewDisposeScope();
        var r = images01.select(1, 0); var g = images01.select(1, 1); var b = images01.select(1, 2);
        var max = images01.amax(new long[] { 1 }); var min = images01.amin(new long[] { 1 });
        var delta = max - min;
        var safe = delta.clamp_min(1e-8);
        var hr = ((g - b) / safe).remainder(6);
        var hg = (b - r) / safe + 2;
        var hb = (r - g) / safe + 4;
        var hue = torch.where(max == r, hr, torch.where(max == g, hg, hb)) * (Math.PI / 3);
        hue = torch.where(delta > 1e-8, hue, torch.zeros_like(hue));
        var sat = torch.where(max > 1e-8, delta / max.clamp_min(1e-8), torch.zeros_like(max));
        return (hue.MoveToOuterDisposeScope(), sat.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Ridge regression fitted on (<paramref name="xTrain"/>, <paramref name="yTrain"/>) with standardised features
    /// and penalty <paramref name="lambda"/> times the number of training rows; the R² on the test set, averaged
    /// over the targets (1 - residual sum of squares / total sum of squares about the test mean).
    /// </summary>
    public static double RidgeR2(Tensor xTrain, Tensor yTrain, Tensor xTest, Tensor yTest, double lambda = 1e-3)
    {
        using var scope = torch.NewDisposeScope();
        var xt = xTrain.to(ScalarType.Float64); var xs = xTest.to(ScalarType.Float64);
        var yt = yTrain.to(ScalarType.Float64); var ys = yTest.to(ScalarType.Float64);
        var mu = xt.mean(new long[] { 0 }, keepdim: true);
        // Explicit dimension arrays: a bare 0 converts to the ScalarType of sum's other overload.
        var sd = (xt - mu).pow(2).mean(new long[] { 0 }, keepdim: true).sqrt().clamp_min(1e-8);
        xt = (xt - mu) / sd; xs = (xs - mu) / sd;
        var ymu = yt.mean(new long[] { 0 }, keepdim: true);
        long d = xt.shape[1];
        var a = xt.T.matmul(xt) + torch.eye(d, dtype: ScalarType.Float64) * (lambda * xt.shape[0]);
        var w = torch.linalg.solve(a, xt.T.matmul(yt - ymu));
        var pred = xs.matmul(w) + ymu;
        var ssRes = (ys - pred).pow(2).sum(new long[] { 0 });
        var ssTot = (ys - ys.mean(new long[] { 0 }, keepdim: true)).pow(2).sum(new long[] { 0 }).clamp_min(1e-12);
        return 1 - (ssRes / ssTot).mean().to(ScalarType.Float64).item<double>();
    }

    /// <summary>Grid-averaged semantic [N, D] and residual [N, R] channels and mean hues [N, 2] of every image of a folder.</summary>
    public static (Tensor Semantic, Tensor Residual, Tensor Hue) Extract(SvgAutoencoder autoencoder, ImageFolder folder, (double R, double G, double B) background,
        int batchSize = 64, Action<int>? progress = null)
    {
        int size = autoencoder.ImageSize, d = autoencoder.Config.SemanticDim;
        var sem = new List<Tensor>(); var res = new List<Tensor>(); var hue = new List<Tensor>();
        var dtype = autoencoder.Decoder.parameters().First().dtype;
        for (int start = 0; start < folder.Count; start += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            using var _ = torch.inference_mode();
            int n = Math.Min(batchSize, folder.Count - start);
            var x = folder.CenterBatch(Enumerable.Range(start, n), size);
            var z = autoencoder.Encode(SvgAutoencoder.ToEncoderInput(x).to(dtype)).to(ScalarType.Float32).mean(new long[] { 2, 3 });
            var unit = (x + 1) / 2;
            sem.Add(z.narrow(1, 0, d).MoveToOuterDisposeScope());
            res.Add(z.narrow(1, d, z.shape[1] - d).MoveToOuterDisposeScope());
            hue.Add(MeanHue(unit, Foreground(unit, background)).MoveToOuterDisposeScope());
            progress?.Invoke(n);
        }
        var result = (torch.cat(sem, 0), torch.cat(res, 0), torch.cat(hue, 0));
        foreach (var t in sem.Concat(res).Concat(hue)) t.Dispose();
        return result;
    }

    /// <summary>The probe: fitted on <paramref name="train"/>, R² on <paramref name="test"/>.</summary>
    public static ColourProbeResult Run(SvgAutoencoder autoencoder, ImageFolder train, ImageFolder test, (double R, double G, double B) background,
        double lambda = 1e-3, Action<int>? progress = null)
    {
        if (!autoencoder.Config.HasResidual) throw new SvgdException("the colour probe compares the semantic and residual channels; this autoencoder has no residual channels");
        var (st, rt, ht) = Extract(autoencoder, train, background, progress: progress);
        var (ss, rs, hs) = Extract(autoencoder, test, background, progress: progress);
        using var __ = new DisposeList(st, rt, ht, ss, rs, hs);
        using var bt = torch.cat(new[] { st, rt }, 1);
        using var bs = torch.cat(new[] { ss, rs }, 1);
        return new ColourProbeResult(RidgeR2(st, ht, ss, hs, lambda), RidgeR2(rt, ht, rs, hs, lambda), RidgeR2(bt, ht, bs, hs, lambda),
            train.Count, test.Count, (int)st.shape[1], (int)rt.shape[1]);
    }

    sealed class DisposeList(params Tensor[] tensors) : IDisposable
    {
        public void Dispose() { foreach (var t in tensors) t.Dispose(); }
    }
}
