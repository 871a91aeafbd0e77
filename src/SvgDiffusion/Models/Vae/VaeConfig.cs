using System.Text.Json.Serialization;
using SvgDiffusion.Models.Autoencoder;

namespace SvgDiffusion.Models.Vae;

/// <summary>
/// The KL autoencoder of LDM / Stable Diffusion under its config names: <c>ddconfig</c> shapes the
/// encoder and the decoder (z_channels, double_z, ch, ch_mult, ...), <c>embed_dim</c> is the latent's
/// channel count after <c>quant_conv</c>.
/// </summary>
public sealed record VaeConfig
{
    public DecoderConfig Ddconfig { get; init; } = new();
    public int EmbedDim { get; init; } = 4;

    [JsonIgnore] public int ImageSize => Ddconfig.Resolution;
    [JsonIgnore] public int LatentSize => Ddconfig.LatentResolution;
    /// <summary>Pixels per latent cell.</summary>
    [JsonIgnore] public int Stride => 1 << (Ddconfig.NumResolutions - 1);

    public VaeConfig Validate(string source)
    {
        Ddconfig.Validate(source);
        if (!Ddconfig.DoubleZ) throw new SvgdException($"{source}: a KL autoencoder needs ddconfig double_z true (mean and log-variance)");
        if (EmbedDim <= 0) throw new SvgdException($"{source}: embed_dim must be positive");
        return this;
    }
}
