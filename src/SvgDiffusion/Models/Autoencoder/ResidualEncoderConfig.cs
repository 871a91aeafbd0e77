using System.Text.Json.Serialization;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// Hyper-parameters of the residual ViT, under the names of the <c>residual_vit</c> config section.
/// Defaults are the released SVG branch (a torchvision ViT shrunk to 6 layers of width 384).
/// </summary>
public sealed record ResidualEncoderConfig
{
    public int Layers { get; init; } = 6;
    public int Heads { get; init; } = 8;
    public int Hidden { get; init; } = 384;
    public int Mlp { get; init; } = 1536;
    /// <summary>The learned position table has one entry per patch of this size, so inputs must match it.</summary>
    public int ImageSize { get; init; } = 256;
    public int PatchSize { get; init; } = 16;
    /// <summary>Residual channels appended to the DINO channels of the latent; 0 leaves the residual branch out
    /// (the ablation with frozen features only).</summary>
    public int OutputDim { get; init; } = 8;
    public double LayerNormEps { get; init; } = 1e-6;
    /// <summary>Training-only regularisation of the reference (torchvision's dropout and attention_dropout).</summary>
    public double Dropout { get; init; } = 0.1;
    public double AttentionDropout { get; init; } = 0.1;

    [JsonIgnore] public int GridSize => ImageSize / PatchSize;
    [JsonIgnore] public int NumPatches => GridSize * GridSize;

    public ResidualEncoderConfig Validate(string source)
    {
        if (Layers <= 0 || Heads <= 0 || Hidden <= 0 || Mlp <= 0 || ImageSize <= 0 || PatchSize <= 0 || OutputDim < 0)
            throw new SvgdException($"{source}: residual_vit layers, heads, hidden, mlp, image_size and patch_size must be positive, output_dim >= 0");
        if (Hidden % Heads != 0) throw new SvgdException($"{source}: residual_vit hidden {Hidden} is not divisible by heads {Heads}");
        if (ImageSize % PatchSize != 0) throw new SvgdException($"{source}: residual_vit image_size {ImageSize} is not a multiple of patch_size {PatchSize}");
        if (Dropout is < 0 or >= 1 || AttentionDropout is < 0 or >= 1) throw new SvgdException($"{source}: residual_vit dropout must be in [0, 1)");
        return this;
    }
}
