using SvgDiffusion.Evaluation;

namespace SvgDiffusion.Studies;

/// <summary>What one arm measured: written to results_dir/&lt;arm&gt;/metrics.json when the arm finishes.</summary>
public sealed record StudyArmResult
{
    public string Arm { get; init; } = "";
    public string Label { get; init; } = "";
    public string? Preset { get; init; }
    public string? AutoencoderFrom { get; init; }
    public string LatentNormalization { get; init; } = "channel";
    /// <summary>[C, h, w] of one latent.</summary>
    public IReadOnlyList<long> LatentShape { get; init; } = Array.Empty<long>();
    /// <summary>The settings that produced this arm; a rerun with other settings refuses to reuse it.</summary>
    public string Fingerprint { get; init; } = "";
    public StudyAutoencoderResult Autoencoder { get; init; } = new();
    public StudyReconstruction Reconstruction { get; init; } = new();
    public StudyProbeResult Probe { get; init; } = new();
    public StudyDiTResult Dit { get; init; } = new();
    /// <summary>FD-evaluator and friends of the EMA model at each evaluated training step (the training-efficiency curve).</summary>
    public IReadOnlyList<StudyPoint> TrainingCurve { get; init; } = Array.Empty<StudyPoint>();
    /// <summary>The last checkpoint sampled with each step count, without and with guidance.</summary>
    public IReadOnlyList<StudyPoint> SamplingSweep { get; init; } = Array.Empty<StudyPoint>();
    /// <summary>Seconds of every stage this arm ran (an autoencoder trained by another arm counts there), null where unmeasured.</summary>
    public double? WallSeconds { get; init; }
    public string FinishedUtc { get; init; } = "";
}

public sealed record StudyAutoencoderResult
{
    public int Steps { get; init; }
    public long TrainableParameters { get; init; }
    /// <summary>Null when the checkpoint was trained before the study recorded times (resumed complete).</summary>
    public double? Seconds { get; init; }
    public double? StepsPerSecond { get; init; }
}

public sealed record StudyReconstruction
{
    public int Images { get; init; }
    public double Psnr { get; init; }
    public double Ssim { get; init; }
    /// <summary>FD-evaluator between the originals and their reconstructions.</summary>
    public double RfdEvaluator { get; init; }
    public double Seconds { get; init; }
}

public sealed record StudyProbeResult
{
    public int TrainImages { get; init; }
    public int TestImages { get; init; }
    public int FeatureDim { get; init; }
    public double Top1 { get; init; }
    public double Top5 { get; init; }
    public double Seconds { get; init; }
}

public sealed record StudyDiTResult
{
    public string Preset { get; init; } = "";
    public long Parameters { get; init; }
    public int Steps { get; init; }
    public int CachedLatents { get; init; }
    public double? CacheSeconds { get; init; }
    /// <summary>Optimisation time only (sampling for the curve excluded).</summary>
    public double TrainSeconds { get; init; }
    public double StepsPerSecond { get; init; }
    public double FinalLoss { get; init; }
}

/// <summary>One score: training step, sampling steps and guidance, and the evaluator's numbers.</summary>
public sealed record StudyPoint
{
    public int TrainingStep { get; init; }
    public int SamplingSteps { get; init; }
    public double Cfg { get; init; }
    public double FdEvaluator { get; init; }
    public double ClassAccuracy { get; init; }
    public double Precision { get; init; }
    public double Recall { get; init; }
    public double Seconds { get; init; }
    /// <summary>Cumulative optimisation seconds when this checkpoint was reached (training curve only).</summary>
    public double? TrainSeconds { get; init; }

    public static StudyPoint From(SampleScore s, int trainingStep, int samplingSteps, double cfg, double? trainSeconds = null) => new()
    {
        TrainingStep = trainingStep, SamplingSteps = samplingSteps, Cfg = cfg, FdEvaluator = s.FdEvaluator, ClassAccuracy = s.ClassAccuracy,
        Precision = s.Precision, Recall = s.Recall, Seconds = s.Seconds, TrainSeconds = trainSeconds,
    };
}

/// <summary>What real data scores against the same reference: the floor no generator can beat at this sample count.</summary>
public sealed record StudyBaseline
{
    public string Images { get; init; } = "";
    public int Count { get; init; }
    public double FdEvaluator { get; init; }
    public double ClassAccuracy { get; init; }
    public double Precision { get; init; }
    public double Recall { get; init; }
}
