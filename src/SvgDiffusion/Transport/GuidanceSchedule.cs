using System.Globalization;

namespace SvgDiffusion.Transport;

public enum GuidanceMode { Constant, Late, Linear, Early, CfgStar }

/// <summary>
/// Classifier-free guidance: v = v_u + w (v_c - v_u), pushing the conditional velocity v_c further from
/// the unconditional v_u. The mode decides how the weight w varies over the flow time t (0 = noise, 1 = data):
/// <list type="bullet">
/// <item><c>constant</c>: w everywhere.</item>
/// <item><c>late</c>: w only where t &gt; 0.5, plain conditional velocity before; guidance then sharpens
/// details without collapsing the diversity of the coarse layout chosen early.</item>
/// <item><c>linear</c>: the weight grows linearly with t, 1 + (w - 1) t: none at pure noise, all of w at the data.</item>
/// <item><c>early-&lt;t0&gt;</c>: w only where t &lt; t0 (e.g. <c>early-0.3</c>), plain conditional velocity after.</item>
/// <item><c>cfg_star-&lt;k&gt;-&lt;r&gt;</c>: as constant, except that the first k steps move with v = -r v_u
/// (CFG-Zero*'s zero-init for r = 0: the first step's velocity is zero, because the velocity estimated
/// at pure noise is the least accurate one). The evaluation script of SVG uses <c>cfg_star-1-0</c>.</item>
/// </list>
/// Guidance is off (the conditional velocity alone, every mode ignored) when w = 1 or no null labels are given.
/// </summary>
public sealed record GuidanceSchedule
{
    public double Scale { get; }
    public GuidanceMode Mode { get; }
    /// <summary>t0 of <c>early-t0</c>.</summary>
    public double Threshold { get; }
    /// <summary>k of <c>cfg_star-k-r</c>.</summary>
    public int OverrideSteps { get; }
    /// <summary>r of <c>cfg_star-k-r</c>.</summary>
    public double OverrideFactor { get; }

    GuidanceSchedule(double scale, GuidanceMode mode, double threshold, int overrideSteps, double overrideFactor)
    {
        Scale = scale; Mode = mode; Threshold = threshold; OverrideSteps = overrideSteps; OverrideFactor = overrideFactor;
    }

    /// <summary>The largest |r| of <c>cfg_star-k-r</c>: -r v_u with r = 1e300 overflows the first steps' latents.</summary>
    public const double MaxOverrideFactor = 100;

    public static GuidanceSchedule None { get; } = new(1.0, GuidanceMode.Constant, 0, 0, 0);

    public static GuidanceSchedule Constant(double scale) => new(CheckScale(scale), GuidanceMode.Constant, 0, 0, 0);

    /// <summary>Parses a mode as the reference writes it: <c>constant</c>, <c>late</c>, <c>linear</c>, <c>early-0.3</c>, <c>cfg_star-1-0</c>.</summary>
    public static GuidanceSchedule Parse(double scale, string mode)
    {
        CheckScale(scale);
        string m = (mode ?? "").Trim().ToLowerInvariant();
        switch (m)
        {
            case "constant" or "": return new(scale, GuidanceMode.Constant, 0, 0, 0);
            case "late": return new(scale, GuidanceMode.Late, 0.5, 0, 0);
            case "linear": return new(scale, GuidanceMode.Linear, 0, 0, 0);
        }
        var parts = m.Split('-');
        if (parts[0] == "early" && parts.Length == 2 && TryNumber(parts[1], out double t0) && t0 is >= 0 and <= 1)
            return new(scale, GuidanceMode.Early, t0, 0, 0);
        if (parts[0] is "cfg_star" or "cfgstar" && parts.Length == 3
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int k) && TryNumber(parts[2], out double r) && Math.Abs(r) <= MaxOverrideFactor)
            return new(scale, GuidanceMode.CfgStar, 0, k, r);
        throw new SvgdException($"unknown guidance mode '{mode}' (known: constant, late, linear, early-<t0> with t0 in [0, 1], cfg_star-<steps>-<factor> with factor in [0, 100])");
    }

    /// <summary>Whether guidance applies at all, given whether null labels were supplied.</summary>
    public bool IsActive(bool haveNullLabels) => haveNullLabels && Scale != 1.0;

    /// <summary>The guidance weight at flow time t; 1 means the conditional velocity alone.</summary>
    public double WeightAt(double t) => Mode switch
    {
        GuidanceMode.Late => t > Threshold ? Scale : 1.0,
        GuidanceMode.Early => t < Threshold ? Scale : 1.0,
        GuidanceMode.Linear => 1.0 + (Scale - 1.0) * t,
        _ => Scale,
    };

    /// <summary>For <c>cfg_star</c>: whether step <paramref name="step"/> (0-based) moves with -r v_u instead of the guided velocity.</summary>
    public bool OverridesStep(int step) => Mode == GuidanceMode.CfgStar && step < OverrideSteps;

    public override string ToString() => Mode switch
    {
        GuidanceMode.Early => $"cfg {Scale} early-{Threshold.ToString(CultureInfo.InvariantCulture)}",
        GuidanceMode.CfgStar => $"cfg {Scale} cfg_star-{OverrideSteps}-{OverrideFactor.ToString(CultureInfo.InvariantCulture)}",
        _ => $"cfg {Scale} {Mode.ToString().ToLowerInvariant()}",
    };

    static double CheckScale(double scale) =>
        double.IsFinite(scale) ? scale : throw new SvgdException($"guidance scale must be finite, got {scale}");

    static bool TryNumber(string s, out double v) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out v) && double.IsFinite(v);
}
