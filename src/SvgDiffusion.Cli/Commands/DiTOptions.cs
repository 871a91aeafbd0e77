using System.CommandLine;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Sampling;
using SvgDiffusion.Transport;

namespace SvgDiffusion.Cli.Commands;

/// <summary>The DiT and its sampler, shared by the commands that generate.</summary>
internal sealed class DiTOptions
{
    public Option<string> Model { get; } = new("--model") { Description = "SVG diffusion transformer: the released .pt ({\"ema\": ...}), or a .safetensors written by svgd (its EMA weights).", Required = true };
    public Option<string?> Preset { get; } = new("--dit-preset") { Description = $"DiT architecture: {string.Join(", ", DiTPresets.Names)} (default: the file's config, else inferred from its shapes)." };
    public Option<string?> Config { get; } = new("--dit-config") { Description = "DiT architecture as JSON (the reference's names, e.g. its 'model' section)." };
    public Option<string?> Section { get; } = new("--section") { Description = "Which weights of a checkpoint holding several: ema (default where present) or model." };
    public Option<string?> Stats { get; } = new("--stats") { Description = "Latent normalisation statistics (the released dinov3_sp_stats.pt, or from 'svgd latent-stats'); default: those stored in --model." };
    public Option<bool> NoStats { get; } = new("--no-stats") { Description = "Sample directly in the model's space: no de-normalisation before decoding." };
    public Option<int> Steps { get; } = new("--steps") { Description = "Solver steps (SVG works in as few as 5).", DefaultValueFactory = _ => 25 };
    public Option<double> Cfg { get; } = new("--cfg") { Description = "Classifier-free guidance scale (1: none).", DefaultValueFactory = _ => 1.5 };
    public Option<string> Guidance { get; } = new("--guidance") { Description = "Guidance schedule: constant, late, linear, early-<t>, cfg_star-<k>-<r> (the first k steps move with -r * v_uncond).", DefaultValueFactory = _ => "constant" };
    public Option<double> Shift { get; } = new("--shift") { Description = "Timestep shift of the sampling schedule (reference: 0.15).", DefaultValueFactory = _ => Sampler.DefaultShift };
    public Option<string> Solver { get; } = new("--sampler") { Description = "ODE solver: euler or heun.", DefaultValueFactory = _ => "euler" };
    public Option<long> Seed { get; } = new("--seed") { Description = "Seed; sample i's noise (and random label) depends on (seed, i) only.", DefaultValueFactory = _ => 0 };
    public Option<bool> AllowLarge { get; } = new(Runtime.ResourceBudget.OverrideOption) { Description = $"Lift the ceilings on --steps ({GenerationLimits.CliMaxSteps:N0}) and --frames ({MaxFrames:N0}); memory is still checked against what is available." };

    /// <summary>Most frames interpolate makes without --allow-large.</summary>
    public const int MaxFrames = 1000;

    /// <summary>The CLI's limits, lifted by --allow-large.</summary>
    public GenerationLimits Limits(ParseResult p) => p.GetValue(AllowLarge) ? GenerationLimits.CliLarge : GenerationLimits.Cli;

    public IEnumerable<Option> All => Loading.Concat(Sampling);
    /// <summary>Which model and statistics: for a command that takes its sampling settings elsewhere (serve: per request).</summary>
    public IEnumerable<Option> Loading => new Option[] { Model, Preset, Config, Section, Stats, NoStats };
    public IEnumerable<Option> Sampling => new Option[] { Steps, Cfg, Guidance, Shift, Solver, Seed, AllowLarge };

    /// <summary>The sampling options as the library's request, validated there (<see cref="GenerationRequest"/>) with the options' spelling.</summary>
    public GenerationRequest Request(ParseResult p, string? classes = null, string? labels = null, int n = GenerationRequest.DefaultN, string? precision = null) => new()
    {
        Classes = classes != null ? ClassLabels.Split(classes, "--classes").ToList() : null,
        Labels = labels != null ? ClassLabels.Split(labels, "--labels").ToList() : null,
        N = n,
        Steps = p.GetValue(Steps),
        Cfg = p.GetValue(Cfg),
        Guidance = p.GetValue(Guidance)!,
        Sampler = p.GetValue(Solver)!,
        Shift = p.GetValue(Shift),
        Seed = p.GetValue(Seed),
        Precision = precision,
    };

    /// <summary>--model (a model folder or bundled model's name stands for its DiT file), or <paramref name="fallback"/> where the command has a default model.</summary>
    public string ModelPath(ParseResult p, string? fallback = null) =>
        (p.GetValue(Model) is string v ? ModelFolder.Resolve(v)?.DiTPath ?? v : null) ?? fallback ?? throw new SvgdException("--model is required");

    public DiT LoadModel(ParseResult p, string? path = null)
    {
        string? pr = p.GetValue(Preset), cf = p.GetValue(Config);
        if (pr != null && cf != null) throw new SvgdException("give either --dit-preset or --dit-config, not both");
        DiTConfig? config = pr != null ? DiTPresets.Get(pr) : cf != null ? SvgDiffusion.Config.ConfigJson.Load<DiTConfig>(cf, "model").Validate(cf) : null;
        var dit = DiTCheckpoint.Load(path ?? ModelPath(p), config, p.GetValue(Section));
        dit.eval();
        return dit;
    }

    public Sampler CreateSampler(ParseResult p) => Sampler.Create(p.GetValue(Solver)!, p.GetValue(Steps), p.GetValue(Shift));
    public GuidanceSchedule CreateGuidance(ParseResult p) => GuidanceSchedule.Parse(p.GetValue(Cfg), p.GetValue(Guidance)!);

    public LatentStatistics? LoadStatistics(ParseResult p, int channels, string? modelPath = null, string? defaultStats = null)
    {
        if (p.GetValue(NoStats)) return null;
        modelPath ??= ModelPath(p);
        defaultStats ??= p.GetValue(Model) is string v ? ModelFolder.Resolve(v)?.StatisticsPath : null;
        string path = p.GetValue(Stats) ?? defaultStats ?? modelPath;
        LatentStatistics stats;
        try { stats = LatentStatistics.Load(path); }
        catch (SvgdException) when (p.GetValue(Stats) == null && defaultStats == null)
        {
            throw new SvgdException($"{modelPath}: holds no latent statistics; give --stats (e.g. the released dinov3_sp_stats.pt) or --no-stats");
        }
        if (stats.Channels != channels) throw new SvgdException($"{path}: statistics have {stats.Channels} channels, the model {channels}");
        return stats;
    }
}
