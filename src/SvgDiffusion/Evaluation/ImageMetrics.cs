using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>Reconstruction metrics per image, on images in [0, 1] ([B, 3, H, W]).</summary>
public static class ImageMetrics
{
    /// <summary>10 log10(1 / MSE) per image, data range 1.</summary>
    public static Tensor Psnr(Tensor a, Tensor b)
    {
        using var scope = torch.NewDisposeScope();
        var mse = (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).pow(2).flatten(1).mean(new long[] { 1 });
        return (10.0 * torch.log10(1.0 / mse.clamp_min(1e-20))).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// SSIM with an 11x11 gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, population
    /// (not sample) covariances, averaged over the valid region and the channels: the convention of
    /// torchmetrics and of skimage with <c>gaussian_weights=True, use_sample_covariance=False</c>.
    /// </summary>
    public static Tensor Ssim(Tensor a, Tensor b, int windowSize = 11, double sigma = 1.5)
    {
        using var scope = torch.NewDisposeScope();
        var x = a.to(ScalarType.Float64);
        var y = b.to(ScalarType.Float64);
        long c = x.shape[1];
        if (x.shape[2] < windowSize || x.shape[3] < windowSize)
            throw new SvgdException($"SSIM needs images of at least {windowSize}x{windowSize}, got {x.shape[2]}x{x.shape[3]}");
        var coords = torch.arange(windowSize, dtype: ScalarType.Float64) - (windowSize - 1) / 2.0;
        var g = torch.exp(-(coords * coords) / (2 * sigma * sigma));
        g = g / g.sum();
        var window = (g.unsqueeze(1) * g.unsqueeze(0)).expand(c, 1, windowSize, windowSize).contiguous().to(x.device);
        Tensor Filter(Tensor t) => SvgDiffusion.Runtime.Convolution.Conv2d(t, window, groups: c);
        var muX = Filter(x); var muY = Filter(y);
        var sxx = Filter(x * x) - muX * muX;
        var syy = Filter(y * y) - muY * muY;
        var sxy = Filter(x * y) - muX * muY;
        const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
        var map = (2 * muX * muY + c1) * (2 * sxy + c2) / ((muX * muX + muY * muY + c1) * (sxx + syy + c2));
        return map.flatten(1).mean(new long[] { 1 }).MoveToOuterDisposeScope();
    }
}
