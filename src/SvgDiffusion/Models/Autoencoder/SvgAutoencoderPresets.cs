using SvgDiffusion.Models.Dinov3;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>The released SVG autoencoders, by name.</summary>
public static class SvgAutoencoderPresets
{
    /// <summary>DINOv3 ViT-S+/16 with 8 residual channels at 256x256: latents 16x16x392.</summary>
    public const string DinoV3ViTSPlus16 = "svg-dinov3-vits16plus";

    public static readonly IReadOnlyDictionary<string, SvgAutoencoderConfig> All = new Dictionary<string, SvgAutoencoderConfig>(StringComparer.OrdinalIgnoreCase)
    {
        [DinoV3ViTSPlus16] = new()
        {
            Dino = Dinov3Presets.Get("vits16plus"),
            ResidualVit = new() { Layers = 6, Heads = 8, Hidden = 384, Mlp = 1536, ImageSize = 256, PatchSize = 16, OutputDim = 8, LayerNormEps = 1e-6 },
            Decoder = new()
            {
                Ch = 128, ChMult = new[] { 1, 1, 2, 2, 4 }, NumResBlocks = 2, AttnResolutions = new[] { 16 },
                ZChannels = 392, Resolution = 256, InChannels = 3, OutCh = 3, DoubleZ = true, Dropout = 0.0,
            },
            Alignment = new() { Mode = AlignmentMode.Batch, Eps = 1e-6 },
            MaskRatio = 0.1,
        },
        // Sized to train on 2 CPU cores in minutes (Fashion-MNIST, CIFAR-like data); batch-independent alignment.
        ["svg-resnet18-32px"] = new()
        {
            FrozenEncoder = "resnet18",
            Resnet = new() { Stage = 8, Mean = "channel" },
            ResidualVit = new() { Layers = 4, Heads = 4, Hidden = 128, Mlp = 512, ImageSize = 32, PatchSize = 8, OutputDim = 8, LayerNormEps = 1e-6 },
            Decoder = new()
            {
                Ch = 64, ChMult = new[] { 1, 1, 2, 2 }, NumResBlocks = 1, AttnResolutions = new[] { 4 },
                ZChannels = 136, Resolution = 32, InChannels = 3, OutCh = 3, DoubleZ = true, Dropout = 0.0,
            },
            Alignment = new() { Mode = AlignmentMode.Stored, Eps = 1e-6 },
            MaskRatio = 0.1,
        },
    };

    public static IEnumerable<string> Names => All.Keys;

    /// <summary>Small colour model: the ImageNet ResNet-18 (stride 8, layer2) at 64x64, latents 8x8x136 (the emoji model).</summary>
    public const string ResNet18Small64 = "svg-resnet18-64px";

    /// <summary><see cref="ResNet18Small64"/> whose frozen encoder sees the luminance image only (<c>frozen_input: luminance</c>):
    /// colour can reach the latent only through the 8 residual channels.</summary>
    public const string ResNet18Small64Luminance = "svg-resnet18-64px-luminance";

    /// <summary>Ablation of <see cref="ResNet18Small32"/> without distribution alignment: the residual channels enter the latent at their own scale.</summary>
    public const string ResNet18Small32NoAlignment = "svg-resnet18-32px-noalign";
    /// <summary>Ablation of <see cref="ResNet18Small32"/> with frozen features only: no residual branch, latents 4x4x128.</summary>
    public const string ResNet18Small32FrozenOnly = "svg-resnet18-32px-frozen";

    /// <summary>Small CPU model: the ImageNet ResNet-18 (stride 8, layer2) at 32x32, latents 4x4x136.</summary>
    public const string ResNet18Small32 = "svg-resnet18-32px";

    static SvgAutoencoderPresets()
    {
        var full = All[ResNet18Small32];
        var all = (Dictionary<string, SvgAutoencoderConfig>)All;
        // The same networks at 64x64: an 8x8 grid of 128 frozen + 8 residual channels; the decoder starts at 8x8.
        all[ResNet18Small64] = full with
        {
            ResidualVit = full.ResidualVit with { ImageSize = 64 },
            Decoder = full.Decoder with { Resolution = 64, AttnResolutions = new[] { 8 } },
        };
        all[ResNet18Small64Luminance] = all[ResNet18Small64] with { FrozenInput = "luminance" };
        all[ResNet18Small32NoAlignment] = full with { Alignment = full.Alignment with { Mode = AlignmentMode.None } };
        all[ResNet18Small32FrozenOnly] = full with
        {
            ResidualVit = full.ResidualVit with { OutputDim = 0 },
            Decoder = full.Decoder with { ZChannels = full.Resnet.FeatureDim },
            MaskRatio = 0,
        };
    }

    public static SvgAutoencoderConfig Get(string name) =>
        All.TryGetValue(name, out var c) ? c
            : throw new SvgdException($"unknown SVG autoencoder preset '{name}' (known: {string.Join(", ", Names)})");
}
