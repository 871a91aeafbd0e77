using System.Text.Json.Serialization;
using SvgDiffusion.Models.Dinov3;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// The whole SVG autoencoder: frozen DINOv3 (<c>dino</c>), residual ViT (<c>residual_vit</c>), conv
/// decoder (<c>decoder</c>), the <c>alignment</c> of the residual features, and <c>mask_ratio</c>.
/// </summary>
public sealed record SvgAutoencoderConfig
{
    public Dinov3Config Dino { get; init; } = Dinov3Presets.Get("vits16plus");
    public ResidualEncoderConfig ResidualVit { get; init; } = new();
    public DecoderConfig Decoder { get; init; } = new();
    public AlignmentConfig Alignment { get; init; } = new();
    /// <summary>Training only: the chance that a sample's whole residual map is replaced by the learned mask token,
    /// which teaches the decoder to cope with DINO features alone.</summary>
    public double MaskRatio { get; init; } = 0.1;

    /// <summary>Latent channels: DINO's, then the residual ones.</summary>
    [JsonIgnore] public int LatentChannels => Dino.EmbedDim + ResidualVit.OutputDim;

    public SvgAutoencoderConfig Validate(string source)
    {
        Dino.Validate(source);
        ResidualVit.Validate(source);
        Decoder.Validate(source);
        Alignment.Validate(source);
        if (MaskRatio is < 0 or > 1) throw new SvgdException($"{source}: mask_ratio must be in [0, 1]");
        if (Decoder.ZChannels != LatentChannels)
            throw new SvgdException($"{source}: decoder z_channels {Decoder.ZChannels} must equal DINO embed_dim {Dino.EmbedDim} + residual_vit output_dim {ResidualVit.OutputDim} = {LatentChannels}");
        if (ResidualVit.PatchSize != Dino.PatchSize)
            throw new SvgdException($"{source}: residual_vit patch_size {ResidualVit.PatchSize} must equal the DINO patch size {Dino.PatchSize} so both token grids coincide");
        if (Decoder.LatentResolution != ResidualVit.GridSize)
            throw new SvgdException($"{source}: decoder resolution {Decoder.Resolution} with {Decoder.NumResolutions} levels is laid out for a {Decoder.LatentResolution}x{Decoder.LatentResolution} latent, but {ResidualVit.ImageSize}px images give {ResidualVit.GridSize}x{ResidualVit.GridSize}");
        return this;
    }
}
