namespace SvgDiffusion.Training;

/// <summary>Hyper-parameters of autoencoder training (reference values as defaults; batch sized for a CPU).</summary>
public sealed record AutoencoderTrainingConfig
{
    public int Steps { get; init; } = 1000;
    public int BatchSize { get; init; } = 8;
    public double LearningRate { get; init; } = 1e-4;
    public double Beta1 { get; init; } = 0.5;
    public double Beta2 { get; init; } = 0.9;
    /// <summary>LPIPS weight; ignored when no LPIPS weights are supplied.</summary>
    public double PerceptualWeight { get; init; } = 1.0;
    /// <summary>Step from which the PatchGAN terms are on (the reference: 5001).</summary>
    public int DiscStart { get; init; } = 5001;
    /// <summary>Multiplies the adaptive generator weight (the reference: 0.5).</summary>
    public double DiscWeight { get; init; } = 0.5;
    public int DiscLayers { get; init; } = 3;
    /// <summary>Weight of the VAE's KL term (LDM's kl_weight: 1e-6); unused by SVG autoencoders, which have none.</summary>
    public double KlWeight { get; init; } = 1e-6;
    public long Seed { get; init; } = 0;
    public int CheckpointEvery { get; init; } = 500;
    public int SampleEvery { get; init; } = 500;

    public AutoencoderTrainingConfig Validate()
    {
        if (Steps < 0 || BatchSize <= 0) throw new SvgdException("training needs steps >= 0 and a positive batch size");
        // Written as !(x > 0) so NaN, which fails every comparison, is refused too.
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new SvgdException($"learning rate must be positive and finite, got {LearningRate}");
        if (!(Beta1 >= 0 && Beta1 < 1) || !(Beta2 >= 0 && Beta2 < 1)) throw new SvgdException($"Adam betas must be in [0, 1), got ({Beta1}, {Beta2})");
        if (!(DiscWeight >= 0) || double.IsInfinity(DiscWeight)) throw new SvgdException($"discriminator weight must be >= 0 and finite, got {DiscWeight}");
        if (!(PerceptualWeight >= 0) || double.IsInfinity(PerceptualWeight)) throw new SvgdException($"perceptual weight must be >= 0 and finite, got {PerceptualWeight}");
        if (!(KlWeight >= 0) || double.IsInfinity(KlWeight)) throw new SvgdException($"KL weight must be >= 0 and finite, got {KlWeight}");
        if (DiscStart < 0 || CheckpointEvery < 0 || SampleEvery < 0) throw new SvgdException("disc start, checkpoint and sample intervals must be >= 0");
        return this;
    }
}
