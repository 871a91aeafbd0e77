using SvgDiffusion.Evaluation.Probes;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// Measures of an edit that should keep the shape and change the colour, on images on a plain background:
/// the IoU of two foreground masks, the mean foreground colour, and a hue histogram (12 hue bins weighted by
/// saturation, plus one achromatic bin weighted by 1 - saturation, so black, grey and white count too)
/// compared by total-variation distance.
/// </summary>
public static class ShapeAndColour
{
    public const int HueBins = 12;

    /// <summary>IoU of the foregrounds of two images [3, H, W] in [0, 1] (1 when both are empty).</summary>
    public static double ForegroundIoU(Tensor a01, Tensor b01, (double R, double G, double B) background)
    {
        using var scope = torch.NewDisposeScope();
        var ma = ColourProbe.Foreground(a01.unsqueeze(0), background) > 0.5;
        var mb = ColourProbe.Foreground(b01.unsqueeze(0), background) > 0.5;
        double inter = (ma & mb).sum().item<long>(), union = (ma | mb).sum().item<long>();
        return union == 0 ? 1 : inter / union;
    }

    /// <summary>Mean RGB [3] (0-1) of an image's foreground; the background colour when it has none.</summary>
    public static double[] MeanColour(Tensor image01, (double R, double G, double B) background)
    {
        using var scope = torch.NewDisposeScope();
        var m = ColourProbe.Foreground(image01.unsqueeze(0), background)[0];
        double n = m.sum().item<float>();
        if (n == 0) return new[] { background.R, background.G, background.B };
        return Enumerable.Range(0, 3).Select(c => (double)(image01[c] * m[0]).sum().item<float>() / n).ToArray();
    }

    /// <summary>The foreground's hue histogram [HueBins + 1], summing to 1.</summary>
    public static double[] HueHistogram(Tensor image01, (double R, double G, double B) background)
    {
        using var scope = torch.NewDisposeScope();
        var x = image01.unsqueeze(0);
        var m = ColourProbe.Foreground(x, background)[0, 0];
        var (h, s) = ColourProbe.HueSaturation(x);
        var bins = (h[0] / (2 * Math.PI) * HueBins).floor().clamp(0, HueBins - 1).to(ScalarType.Int64);
        var hist = new double[HueBins + 1];
        var hv = bins.flatten().data<long>().ToArray();
        var sv = s[0].flatten().data<float>().ToArray();
        var mv = m.flatten().data<float>().ToArray();
        for (int i = 0; i < hv.Length; i++)
        {
            if (mv[i] == 0) continue;
            hist[hv[i]] += sv[i];
            hist[HueBins] += 1 - sv[i];
        }
        double total = hist.Sum();
        if (total == 0) { hist[HueBins] = 1; return hist; }
        return hist.Select(v => v / total).ToArray();
    }

    /// <summary>Total-variation distance of two histograms (0 same, 1 disjoint).</summary>
    public static double Distance(double[] a, double[] b) => 0.5 * a.Zip(b, (x, y) => Math.Abs(x - y)).Sum();

    /// <summary>Euclidean distance of two colours.</summary>
    public static double ColourDistance(double[] a, double[] b) => Math.Sqrt(a.Zip(b, (x, y) => (x - y) * (x - y)).Sum());
}
