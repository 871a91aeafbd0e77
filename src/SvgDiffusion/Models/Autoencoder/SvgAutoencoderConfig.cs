using System.Text.Json.Serialization;
using SvgDiffusion.Models.Dinov3;
using SvgDiffusion.Models.ResNet;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// The whole SVG autoencoder: frozen DINOv3 (<c>dino</c>), residual ViT (<c>residual_vit</c>), conv
/// decoder (<c>decoder</c>), the <c>alignment</c> of the residual features, and <c>mask_ratio</c>.
/// </summary>
public sealed record SvgAutoencoderConfig
{
    /// <summary>Which frozen encoder gives the semantic channels: <c>dinov3</c> (the paper's; section <c>dino</c>)
    /// or <c>resnet18</c> (the ImageNet ResNet-18 shipped in NuGet; section <c>resnet</c>).</summary>
    public string FrozenEncoder { get; init; } = "dinov3";
    /// <summary>What the frozen encoder sees: <c>rgb</c> (the image, as the paper) or <c>luminance</c> (its grey
    /// image, so colour can live only in the residual channels). The residual encoder and the decoder always see RGB.</summary>
    public string FrozenInput { get; init; } = "rgb";
    [JsonIgnore] public bool LuminanceInput => FrozenInput == "luminance";
    public Dinov3Config Dino { get; init; } = Dinov3Presets.Get("vits16plus");
    public ResNet18Config Resnet { get; init; } = new();
    public ResidualEncoderConfig ResidualVit { get; init; } = new();
    public DecoderConfig Decoder { get; init; } = new();
    public AlignmentConfig Alignment { get; init; } = new();
    /// <summary>Training only: the chance that a sample's whole residual map is replaced by the learned mask token,
    /// which teaches the decoder to cope with DINO features alone.</summary>
    public double MaskRatio { get; init; } = 0.1;

    /// <summary>Latent channels: DINO's, then the residual ones.</summary>
    [JsonIgnore] public bool IsResNet => FrozenEncoder == "resnet18";
    /// <summary>Channels of the frozen encoder's patch features.</summary>
    [JsonIgnore] public int SemanticDim => IsResNet ? Resnet.FeatureDim : Dino.EmbedDim;
    /// <summary>Pixels per latent cell.</summary>
    [JsonIgnore] public int SemanticStride => IsResNet ? Resnet.Stage : Dino.PatchSize;
    [JsonIgnore] public int LatentChannels => SemanticDim + ResidualVit.OutputDim;
    /// <summary>False for the ablation with frozen features only (residual_vit output_dim 0).</summary>
    [JsonIgnore] public bool HasResidual => ResidualVit.OutputDim > 0;

    public SvgAutoencoderConfig Validate(string source)
    {
        if (FrozenEncoder is not ("dinov3" or "resnet18"))
            throw new SvgdException($"{source}: frozen_encoder must be 'dinov3' or 'resnet18', not '{FrozenEncoder}'");
        if (FrozenInput is not ("rgb" or "luminance"))
            throw new SvgdException($"{source}: frozen_input must be 'rgb' or 'luminance', not '{FrozenInput}'");
        if (IsResNet) Resnet.Validate(source); else Dino.Validate(source);
        ResidualVit.Validate(source);
        Decoder.Validate(source);
        Alignment.Validate(source);
        if (MaskRatio is < 0 or > 1) throw new SvgdException($"{source}: mask_ratio must be in [0, 1]");
        if (Decoder.ZChannels != LatentChannels)
            throw new SvgdException($"{source}: decoder z_channels {Decoder.ZChannels} must equal the {FrozenEncoder} feature channels {SemanticDim} + residual_vit output_dim {ResidualVit.OutputDim} = {LatentChannels}");
        if (ResidualVit.PatchSize != SemanticStride)
            throw new SvgdException($"{source}: residual_vit patch_size {ResidualVit.PatchSize} must equal the {FrozenEncoder} stride {SemanticStride} so both token grids coincide");
        if (Decoder.LatentResolution != ResidualVit.GridSize)
            throw new SvgdException($"{source}: decoder resolution {Decoder.Resolution} with {Decoder.NumResolutions} levels is laid out for a {Decoder.LatentResolution}x{Decoder.LatentResolution} latent, but {ResidualVit.ImageSize}px images give {ResidualVit.GridSize}x{ResidualVit.GridSize}");
        return this;
    }
}
