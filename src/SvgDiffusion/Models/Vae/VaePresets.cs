using SvgDiffusion.Models.Autoencoder;

namespace SvgDiffusion.Models.Vae;

/// <summary>
/// The VAE baselines of the study, at the SVG latent's grid (stride 8 at 32 px: 4x4) and with the SVG
/// decoder's width, so the two latent spaces differ in how they are made, not in decoder capacity.
/// </summary>
public static class VaePresets
{
    /// <summary>Stable Diffusion's VAE shape: stride 8, 4 channels.</summary>
    public const string SdLike32 = "vae-f8c4-32px";
    /// <summary>Stride 8 with the SVG latent's 136 channels (its dimension: 4x4x136).</summary>
    public const string SvgSized32 = "vae-f8c136-32px";

    static VaeConfig Small(int channels) => new()
    {
        Ddconfig = new DecoderConfig
        {
            Ch = 64, ChMult = new[] { 1, 1, 2, 2 }, NumResBlocks = 1, AttnResolutions = new[] { 4 },
            ZChannels = channels, Resolution = 32, InChannels = 3, OutCh = 3, DoubleZ = true, Dropout = 0.0,
        },
        EmbedDim = channels,
    };

    public static readonly IReadOnlyDictionary<string, VaeConfig> All = new Dictionary<string, VaeConfig>(StringComparer.OrdinalIgnoreCase)
    {
        [SdLike32] = Small(4),
        [SvgSized32] = Small(136),
    };

    public static IEnumerable<string> Names => All.Keys;
    public static bool Contains(string name) => All.ContainsKey(name);
    public static VaeConfig Get(string name) =>
        All.TryGetValue(name, out var c) ? c : throw new SvgdException($"unknown VAE preset '{name}' (known: {string.Join(", ", Names)})");
}
