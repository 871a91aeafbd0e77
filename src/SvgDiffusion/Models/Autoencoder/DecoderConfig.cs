using System.Text.Json.Serialization;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// The LDM conv decoder's <c>ddconfig</c>, under its own names. <c>double_z</c> and <c>in_channels</c>
/// only shape the LDM encoder, which SVG replaces by DINO; they are kept so released configs read as they are.
/// </summary>
public sealed record DecoderConfig
{
    public int Ch { get; init; } = 128;
    public IReadOnlyList<int> ChMult { get; init; } = new[] { 1, 1, 2, 2, 4 };
    public int NumResBlocks { get; init; } = 2;
    /// <summary>Feature-map sizes (in pixels per side, relative to <see cref="Resolution"/>) that get self-attention.</summary>
    public IReadOnlyList<int> AttnResolutions { get; init; } = new[] { 16 };
    public int ZChannels { get; init; } = 392;
    public int Resolution { get; init; } = 256;
    public int OutCh { get; init; } = 3;
    public int InChannels { get; init; } = 3;
    public bool DoubleZ { get; init; } = true;
    public double Dropout { get; init; } = 0.0;

    [JsonIgnore] public int NumResolutions => ChMult.Count;
    /// <summary>Side of the latent the decoder is laid out for: each level but the first doubles it.</summary>
    [JsonIgnore] public int LatentResolution => Resolution >> (NumResolutions - 1);

    public DecoderConfig Validate(string source)
    {
        if (Ch <= 0 || ZChannels <= 0 || OutCh <= 0 || Resolution <= 0 || NumResBlocks < 0)
            throw new SvgdException($"{source}: decoder ch, z_channels, out_ch and resolution must be positive, num_res_blocks >= 0");
        if (ChMult.Count == 0 || ChMult.Any(m => m <= 0)) throw new SvgdException($"{source}: decoder ch_mult must be a non-empty list of positive numbers");
        // GroupNorm(32) runs on every level's width.
        foreach (int c in ChMult.Select(m => m * Ch).Append(Ch))
            if (c % 32 != 0) throw new SvgdException($"{source}: decoder width {c} (ch x ch_mult) is not a multiple of the 32 normalisation groups");
        if (Resolution % (1 << (NumResolutions - 1)) != 0)
            throw new SvgdException($"{source}: decoder resolution {Resolution} is not divisible by 2^{NumResolutions - 1}");
        if (Dropout is < 0 or >= 1) throw new SvgdException($"{source}: decoder dropout must be in [0, 1)");
        return this;
    }
}
