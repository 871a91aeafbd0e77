namespace SvgDiffusion.Models.Autoencoder;

/// <summary>Where the statistics that map residual features onto the DINO feature scale come from.</summary>
public enum AlignmentMode
{
    /// <summary>The reference behaviour: statistics of the batch being encoded, so a latent depends on its batch-mates.</summary>
    Batch,
    /// <summary>Running statistics kept with the model: every image gets the same latent whatever its batch.</summary>
    Stored,
    /// <summary>No alignment (the reference with <c>use_outnorm: false</c>, the ablation without it).</summary>
    None,
}

/// <summary>The <c>alignment</c> config section.</summary>
public sealed record AlignmentConfig
{
    public AlignmentMode Mode { get; init; } = AlignmentMode.Batch;
    /// <summary>Added to the residual standard deviation, as the reference does, not inside a square root.</summary>
    public double Eps { get; init; } = 1e-6;
    /// <summary>Weight of a new batch in the running statistics updated during training.</summary>
    public double Momentum { get; init; } = 0.1;

    public AlignmentConfig Validate(string source)
    {
        if (Eps < 0) throw new SvgdException($"{source}: alignment eps must be >= 0");
        if (Momentum is <= 0 or > 1) throw new SvgdException($"{source}: alignment momentum must be in (0, 1]");
        return this;
    }
}
