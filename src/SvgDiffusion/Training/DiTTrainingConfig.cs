namespace SvgDiffusion.Training;

/// <summary>
/// Hyper-parameters of diffusion-transformer training. Defaults are the reference's (AdamW lr 1e-4,
/// betas (0.9, 0.999), no weight decay, EMA 0.9999, no clipping, training time shift 0.4) except the
/// batch size, which is sized for a CPU (the reference: 256).
/// </summary>
public sealed record DiTTrainingConfig
{
    public int Steps { get; init; } = 10_000;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 1e-4;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double WeightDecay { get; init; } = 0.0;
    /// <summary>The EMA copy moves by (1 - decay) towards the model after every step.</summary>
    public double EmaDecay { get; init; } = 0.9999;
    /// <summary>Maximum global gradient norm; 0 turns clipping off (the reference).</summary>
    public double GradClip { get; init; } = 0.0;
    /// <summary>Training time shift s: t' = s t / (1 + (s - 1) t) of uniform t.</summary>
    public double TimestepShift { get; init; } = 0.4;
    public long Seed { get; init; } = 0;
    public int CheckpointEvery { get; init; } = 1000;
    public int SampleEvery { get; init; } = 1000;

    public DiTTrainingConfig Validate()
    {
        if (Steps < 0 || BatchSize <= 0) throw new SvgdException("training needs steps >= 0 and a positive batch size");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new SvgdException($"learning rate must be positive, got {LearningRate}");
        // Written as !(in range) so NaN, which fails every comparison, is refused too.
        if (!(Beta1 >= 0 && Beta1 < 1) || !(Beta2 >= 0 && Beta2 < 1)) throw new SvgdException($"Adam betas must be in [0, 1), got ({Beta1}, {Beta2})");
        if (!(WeightDecay >= 0) || double.IsInfinity(WeightDecay)) throw new SvgdException($"weight decay must be >= 0, got {WeightDecay}");
        if (!(EmaDecay >= 0 && EmaDecay <= 1)) throw new SvgdException($"EMA decay must be in [0, 1], got {EmaDecay}");
        if (!(GradClip >= 0) || double.IsInfinity(GradClip)) throw new SvgdException($"gradient clipping must be >= 0 (0 = off), got {GradClip}");
        if (!(TimestepShift > 0) || double.IsInfinity(TimestepShift)) throw new SvgdException($"timestep shift must be positive, got {TimestepShift}");
        if (CheckpointEvery < 0 || SampleEvery < 0) throw new SvgdException("checkpoint and sample intervals must be >= 0 (0 = never)");
        return this;
    }
}
