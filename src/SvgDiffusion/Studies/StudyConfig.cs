using SvgDiffusion.Config;

namespace SvgDiffusion.Studies;

/// <summary>
/// A comparison of latent spaces at one shared budget: every arm trains its own autoencoder, then the
/// same DiT with the same batch, learning rate, steps and seeds on its latents, and is scored by the
/// same evaluator. Read from JSON (snake_case); paths are relative to the current directory.
/// </summary>
public sealed record StudyConfig
{
    public string Name { get; init; } = "study";
    /// <summary>Class-folder training images (autoencoder, latent cache, probe training set when <see cref="ProbeTrainImages"/> is unset).</summary>
    public string TrainImages { get; init; } = "";
    /// <summary>Class-folder test images: reconstruction metrics and the probe's evaluation set.</summary>
    public string TestImages { get; init; } = "";
    /// <summary>Class-folder images the samples are compared with (FD-evaluator, precision/recall).</summary>
    public string ReferenceImages { get; init; } = "";
    /// <summary>Training set of the linear probe (default: <see cref="TrainImages"/>).</summary>
    public string? ProbeTrainImages { get; init; }
    /// <summary>Images whose FD-evaluator against the reference is the floor a perfect generator would reach with as many samples.</summary>
    public string? BaselineImages { get; init; }
    /// <summary>Checkpoints, caches and logs: not committed, rebuilt by the command from the seeds.</summary>
    public string WorkDir { get; init; } = "";
    /// <summary>Per-arm metrics.json and grids, plots and results.md: small, committed.</summary>
    public string ResultsDir { get; init; } = "";
    /// <summary>Evaluator weights (default: the committed Fashion-MNIST evaluator).</summary>
    public string? Evaluator { get; init; }
    public long Seed { get; init; } = 0;
    public StudyAutoencoderBudget Autoencoder { get; init; } = new();
    public StudyDiTBudget Dit { get; init; } = new();
    public StudyEvaluation Evaluation { get; init; } = new();
    public StudyProbe Probe { get; init; } = new();
    public IReadOnlyList<StudyArm> Arms { get; init; } = Array.Empty<StudyArm>();

    public static StudyConfig Load(string path) => ConfigJson.Load<StudyConfig>(path).Validate(path);

    public StudyConfig Validate(string source)
    {
        void Need(bool ok, string what) { if (!ok) throw new SvgdException($"{source}: {what}"); }
        Need(TrainImages != "" && TestImages != "" && ReferenceImages != "", "needs train_images, test_images and reference_images");
        Need(WorkDir != "" && ResultsDir != "", "needs work_dir and results_dir");
        Need(Arms.Count > 0, "needs at least one arm");
        foreach (var a in Arms)
        {
            Need(a.Name != "" && a.Name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'), $"arm name '{a.Name}' must be letters, digits, '-' or '_'");
            Need((a.Preset != null) != (a.AutoencoderFrom != null), $"arm '{a.Name}': give exactly one of preset (train an autoencoder) or autoencoder_from (reuse another arm's)");
            if (a.AutoencoderFrom is string from) Need(Arms.Any(b => b.Name == from && b.Preset != null), $"arm '{a.Name}': autoencoder_from '{from}' is not an arm with a preset");
            if (a.Preset != null) Need(IsKnownPreset(a.Preset), $"arm '{a.Name}': unknown autoencoder preset '{a.Preset}'");
            Need(a.LatentNormalization is null or "channel" or "global", $"arm '{a.Name}': latent_normalization must be channel or global");
        }
        Need(Arms.Select(a => a.Name).Distinct().Count() == Arms.Count, "arm names must be unique");
        Need(Dit.Checkpoints.Count > 0 && Dit.Checkpoints.All(s => s > 0 && s <= Dit.Steps) && Dit.Checkpoints.Contains(Dit.Steps),
            $"dit.checkpoints must be positive, at most dit.steps ({Dit.Steps}), and include it");
        Need(Dit.LatentNormalization is "channel" or "global", "dit.latent_normalization must be channel or global");
        Need(Evaluation.Samples >= 10 && Evaluation.BatchSize > 0 && Evaluation.Steps > 0, "evaluation needs samples >= 10, a positive batch size and steps");
        Need(Evaluation.SweepSteps.Count > 0 && Evaluation.SweepSteps.All(s => s > 0) && Evaluation.SweepCfg.Count > 0 && Evaluation.SweepCfg.All(c => c >= 1),
            "evaluation.sweep_steps must be positive and evaluation.sweep_cfg at least 1");
        Need(Autoencoder.Steps >= 0 && Autoencoder.BatchSize > 0 && Dit.Steps > 0 && Dit.BatchSize > 0, "autoencoder and dit need steps and positive batch sizes");
        Models.Diffusion.DiTPresets.Get(Dit.Preset);
        return this;
    }

    static bool IsKnownPreset(string p) =>
        Models.Autoencoder.SvgAutoencoderPresets.Names.Contains(p) || Models.Vae.VaePresets.Names.Contains(p);
}

/// <summary>One latent space under test.</summary>
public sealed record StudyArm
{
    public string Name { get; init; } = "";
    /// <summary>Legend and table label.</summary>
    public string? Label { get; init; }
    /// <summary>Autoencoder preset (SVG or VAE) trained for this arm.</summary>
    public string? Preset { get; init; }
    /// <summary>Reuse another arm's trained autoencoder (e.g. to vary only the DiT's latent normalisation).</summary>
    public string? AutoencoderFrom { get; init; }
    /// <summary>Overrides <see cref="StudyDiTBudget.LatentNormalization"/> for this arm.</summary>
    public string? LatentNormalization { get; init; }
    public string Title => Label ?? Name;
}

/// <summary>Autoencoder training, shared by every arm (the train-autoencoder options of the same names).</summary>
public sealed record StudyAutoencoderBudget
{
    public int Steps { get; init; } = 600;
    public int BatchSize { get; init; } = 32;
    public double Lr { get; init; } = 2e-4;
    public int DiscStart { get; init; } = 1_000_000;
    public double KlWeight { get; init; } = 1e-6;
    public int CheckpointEvery { get; init; } = 100;
}

/// <summary>Diffusion training, shared by every arm.</summary>
public sealed record StudyDiTBudget
{
    public string Preset { get; init; } = "svg-xs";
    public int Steps { get; init; } = 1000;
    public int BatchSize { get; init; } = 128;
    public double Lr { get; init; } = 2e-4;
    public double Ema { get; init; } = 0.999;
    public double Shift { get; init; } = 0.4;
    public int CheckpointEvery { get; init; } = 250;
    /// <summary>Steps at which the EMA model is sampled and scored (log-spaced; the last is the step count).</summary>
    public IReadOnlyList<int> Checkpoints { get; init; } = new[] { 125, 250, 500, 1000 };
    /// <summary>channel: per-channel mean/std before diffusion (the reference); global: one mean and std for all channels.</summary>
    public string LatentNormalization { get; init; } = "channel";
    /// <summary>Images per latent-cache shard (the unit of resumption).</summary>
    public int CacheShardImages { get; init; } = 4096;
}

/// <summary>How samples are scored.</summary>
public sealed record StudyEvaluation
{
    /// <summary>Samples per score, balanced over the classes.</summary>
    public int Samples { get; init; } = 1000;
    public int BatchSize { get; init; } = 100;
    /// <summary>Euler steps and guidance of the training-curve scores.</summary>
    public int Steps { get; init; } = 25;
    public double Cfg { get; init; } = 1.0;
    /// <summary>Sampling-time shift (the reference's 0.15).</summary>
    public double Shift { get; init; } = Transport.Sampler.DefaultShift;
    public IReadOnlyList<int> SweepSteps { get; init; } = new[] { 1, 2, 5, 10, 25 };
    public IReadOnlyList<double> SweepCfg { get; init; } = new[] { 1.0, 1.5 };
    /// <summary>k of the k-NN manifolds of precision/recall.</summary>
    public int K { get; init; } = 3;
    /// <summary>Test images reconstructed for PSNR/SSIM/rFD (0: all).</summary>
    public int ReconstructionImages { get; init; } = 0;
}

/// <summary>The linear probe on each latent (flattened, batch-normalised).</summary>
public sealed record StudyProbe
{
    public int Epochs { get; init; } = 30;
    public double Lr { get; init; } = 1e-3;
}
