using System.Globalization;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Sampling;

/// <summary>
/// How far a caller lets one request go: the CLI allows large runs (and points to sample-eval beyond them),
/// a server keeps every request small enough to share one model fairly.
/// </summary>
/// <param name="Hint">Appended to the "too many samples" error: where to go instead.</param>
/// <param name="StepsHint">Appended to the "too many steps" error.</param>
public sealed record GenerationLimits(int MaxSamples, int MaxSteps, string Hint = "", string StepsHint = "")
{
    /// <summary>Solver steps the CLI runs without <see cref="Runtime.ResourceBudget.OverrideOption"/>: rectified flow
    /// needs 5-50, and the reference samplers stop at 1,000; 100,001 steps is a typo that would run for hours.</summary>
    public const int CliMaxSteps = 1000;

    /// <summary>The CLI's: a million samples (memory is checked separately), up to <see cref="CliMaxSteps"/> steps.</summary>
    public static GenerationLimits Cli { get; } = new(1_000_000, CliMaxSteps, "; use 'svgd sample-eval' for large sets", $"; pass {Runtime.ResourceBudget.OverrideOption} if you mean it");

    /// <summary>The CLI's with <see cref="Runtime.ResourceBudget.OverrideOption"/>: any number of steps.</summary>
    public static GenerationLimits CliLarge { get; } = Cli with { MaxSteps = int.MaxValue };
}

/// <summary>
/// One generation request as a user states it, with the CLI's option names: classes (indices or names, n
/// samples each) or per-sample labels, or n samples with random labels; steps, sampler, cfg and guidance
/// mode, shift, seed and precision. Every front end (CLI, HTTP API, tests) validates it here and nowhere
/// else, so a value means the same thing and is refused with the same sentence everywhere.
/// </summary>
public sealed record GenerationRequest
{
    /// <summary>Class indices or names; <see cref="N"/> samples each, one grid row per class.</summary>
    public IReadOnlyList<string>? Classes { get; init; }
    /// <summary>The label of every sample (indices, names or "null"), instead of <see cref="Classes"/>.</summary>
    public IReadOnlyList<string>? Labels { get; init; }
    /// <summary>Samples per class with <see cref="Classes"/>; otherwise the number of samples (random labels).</summary>
    public int N { get; init; } = DefaultN;
    public int Steps { get; init; } = DefaultSteps;
    public double Cfg { get; init; } = DefaultCfg;
    public string Guidance { get; init; } = "constant";
    public string Sampler { get; init; } = "euler";
    public double Shift { get; init; } = Transport.Sampler.DefaultShift;
    public long Seed { get; init; }
    /// <summary>auto, fp32 or bf16; null: whatever precision the model is loaded in.</summary>
    public string? Precision { get; init; }

    public const int DefaultN = 8, DefaultSteps = 25;
    public const double DefaultCfg = 1.5;

    /// <summary>
    /// The ranges of the real-valued fields. Wider than any useful value, and narrow enough that the float32
    /// schedule and the guided velocities stay finite: a shift of 1e-320 makes the last time 0/0, a cfg of
    /// 1e30 overflows the latents, and either would only show as "sampled latents hold NaN" after the work.
    /// </summary>
    public const double MinShift = 1e-3, MaxShift = 1e3, MaxCfg = 100, MinStrength = 1e-3;
    public static readonly string[] Samplers = { "euler", "heun" };

    /// <summary>
    /// The checks that need no model: counts, ranges, names of sampler, guidance mode and precision. Run
    /// before loading anything, so a typo costs nothing. <paramref name="prefix"/> turns a field into the
    /// caller's spelling of it ("--" on the command line, "" in JSON).
    /// </summary>
    public void Validate(GenerationLimits limits, string prefix = "")
    {
        if (Classes != null && Labels != null) throw new SvgdException($"give either {prefix}classes or {prefix}labels, not both");
        if (Labels == null)
        {
            if (N <= 0) throw new SvgdException($"{prefix}n must be a positive whole number, got {N}");
            if (N > limits.MaxSamples) throw new SvgdException($"{prefix}n {N} is more than {limits.MaxSamples:N0} samples{limits.Hint}");
        }
        if (Steps <= 0) throw new SvgdException($"{prefix}steps must be a positive whole number, got {Steps}");
        if (Steps > limits.MaxSteps) throw new SvgdException($"{prefix}steps {Steps} is more than the limit of {limits.MaxSteps:N0}{limits.StepsHint}");
        CheckRange($"{prefix}cfg", Cfg, 0, MaxCfg);
        CheckRange($"{prefix}shift", Shift, MinShift, MaxShift);
        if (!Samplers.Contains((Sampler ?? "").Trim().ToLowerInvariant()))
            throw new SvgdException($"{prefix}sampler must be {string.Join(" or ", Samplers)}, not '{Sampler}'");
        try { GuidanceSchedule.Parse(Cfg, Guidance); }
        catch (SvgdException e) { throw new SvgdException($"{prefix}guidance: {e.Message}"); }
        ResolvePrecision(prefix);
    }

    /// <summary>
    /// Everything a run needs, checked against the model's classes: per-sample labels (random ones drawn
    /// from the seed when neither classes nor labels are given, unless <paramref name="unconditionalByDefault"/>),
    /// grid rows, solver, guidance schedule and precision (null: the model's).
    /// </summary>
    /// <param name="classesField">The caller's name for <see cref="Classes"/> (vary and interpolate take one "class").</param>
    public GenerationPlan Resolve(ClassLabels classes, GenerationLimits limits, string prefix = "", bool unconditionalByDefault = false, string classesField = "classes")
    {
        Validate(limits, prefix);
        int[] labels;
        int rows = 0;
        if (Labels != null)
        {
            labels = classes.ResolveAll(Labels, $"{prefix}labels", allowNull: true);
            if (labels.Length > limits.MaxSamples) throw new SvgdException($"{prefix}labels gives {labels.Length} samples, more than {limits.MaxSamples:N0}{limits.Hint}");
        }
        else if (Classes != null)
        {
            var cls = classes.ResolveAll(Classes, $"{prefix}{classesField}");
            if ((long)N * cls.Length > limits.MaxSamples)
                throw new SvgdException($"{prefix}n {N} per class for {cls.Length} classes is more than {limits.MaxSamples:N0} samples{limits.Hint}");
            labels = cls.SelectMany(c => Enumerable.Repeat(c, N)).ToArray();
            rows = cls.Length;
        }
        else if (unconditionalByDefault)
            labels = Enumerable.Repeat(classes.NullLabel, N).ToArray();
        else
            labels = RandomLabels(N, classes.NumClasses, Seed);
        var sampler = Transport.Sampler.Create(Sampler, Steps, Shift);
        var guidance = GuidanceSchedule.Parse(Cfg, Guidance);
        return new GenerationPlan(this, labels, rows, sampler, guidance, ResolvePrecision(prefix)) { Prefix = prefix };
    }

    /// <summary>The SDEdit strength the CLI and the studio start from: visibly new samples that keep the source's shape
    /// (strength is the fraction of the sampling schedule run, <see cref="GenerationService.StartTime"/>).</summary>
    public const double DefaultStrength = 0.3;

    /// <summary>Default strength of a recolouring (<see cref="GenerationService.Recolor"/>): the residual channels are regenerated over this part of the schedule.</summary>
    public const double DefaultRecolorStrength = 0.1;

    /// <summary>An SDEdit strength (how far towards noise an image is moved): 1 is pure noise; below <see cref="MinStrength"/> the start time rounds to the end.</summary>
    public static void ValidateStrength(double strength, string prefix = "") => CheckRange($"{prefix}strength", strength, MinStrength, 1);

    /// <summary>
    /// A real-valued field: finite (NaN passes no comparison, so it is named explicitly; 1e400 reads as
    /// infinity) and in [min, max]. A subnormal shift or strength is below its minimum; a subnormal cfg is 0.
    /// </summary>
    public static void CheckRange(string field, double value, double min, double max)
    {
        if (!double.IsFinite(value) || value < min || value > max)
            throw new SvgdException($"{field} must be a finite number in {Range(min, max)}, got {Num(value)}");
    }

    /// <summary>"[min, max]" as the refusals write it.</summary>
    public static string Range(double min, double max) => $"[{Num(min)}, {Num(max)}]";

    /// <summary>The resolved precision, or null when the request leaves it to the loaded model.</summary>
    public ScalarType? ResolvePrecision(string prefix = "")
    {
        if (Precision == null) return null;
        try { return Runtime.Precision.Resolve(Precision, allowFp64: false); }
        catch (SvgdException) { throw new SvgdException($"{prefix}precision must be one of auto, fp32, bf16, not '{Precision}'"); }
    }

    /// <summary>n labels drawn uniformly from the seed (the same draw for the same seed everywhere).</summary>
    public static int[] RandomLabels(int n, int numClasses, long seed)
    {
        using var g = new Generator((ulong)(seed & long.MaxValue) ^ 0x5eed);
        using var r = torch.randint(0, numClasses, new long[] { n }, generator: g);
        return r.data<long>().Select(x => (int)x).ToArray();
    }

    static string Num(double v) => v.ToString(CultureInfo.InvariantCulture);
}

/// <summary>A validated <see cref="GenerationRequest"/>: one label per sample, the grid's rows (one per class; 0: a square grid), solver and guidance.</summary>
public sealed record GenerationPlan(GenerationRequest Request, int[] Labels, int Rows, Sampler Sampler, GuidanceSchedule Guidance, ScalarType? Precision)
{
    /// <summary>How the caller spells the request's fields ("--" on the command line), for errors raised later.</summary>
    public string Prefix { get; init; } = "";
    public int Count => Labels.Length;
    public long Seed => Request.Seed;
}
