using System.Text.Json.Serialization;

namespace SvgDiffusion.Models.Dinov3;

/// <summary>
/// DINOv3 ViT hyper-parameters under the reference names (<c>embed_dim</c>, <c>ffn</c>, <c>n_storage_tokens</c>, ...).
/// </summary>
public sealed record Dinov3Config
{
    public int EmbedDim { get; init; } = 384;
    public int Depth { get; init; } = 12;
    public int NumHeads { get; init; } = 6;
    /// <summary><c>mlp</c> (exact GELU) or <c>swiglu</c>.</summary>
    public string Ffn { get; init; } = "mlp";
    public double FfnRatio { get; init; } = 4.0;
    public int PatchSize { get; init; } = 16;
    public int InChans { get; init; } = 3;
    /// <summary>Register tokens between the class token and the patch tokens.</summary>
    public int NStorageTokens { get; init; } = 4;
    public double RopeBase { get; init; } = 100.0;
    public double LayerNormEps { get; init; } = 1e-5;
    public double LayerscaleInit { get; init; } = 1e-5;

    [JsonIgnore] public int HeadDim => EmbedDim / NumHeads;
    [JsonIgnore] public bool IsSwiGlu => Ffn == "swiglu";

    /// <summary>FFN width: SwiGLU keeps the parameter count of a ratio-r MLP (x2/3) rounded up to 8, as DINOv3 does.</summary>
    [JsonIgnore]
    public int FfnHidden
    {
        get
        {
            int hidden = (int)(EmbedDim * FfnRatio);
            if (!IsSwiGlu) return hidden;
            int d = (int)(hidden * 2.0 / 3.0);
            return (d + 7) / 8 * 8;
        }
    }

    public Dinov3Config Validate(string source)
    {
        if (EmbedDim <= 0 || Depth <= 0 || NumHeads <= 0 || PatchSize <= 0)
            throw new SvgdException($"{source}: embed_dim, depth, num_heads and patch_size must be positive");
        if (EmbedDim % NumHeads != 0) throw new SvgdException($"{source}: embed_dim {EmbedDim} is not divisible by num_heads {NumHeads}");
        if (HeadDim % 4 != 0) throw new SvgdException($"{source}: head dimension {HeadDim} must be a multiple of 4 for 2-D RoPE");
        if (Ffn is not ("mlp" or "swiglu")) throw new SvgdException($"{source}: ffn must be 'mlp' or 'swiglu', not '{Ffn}'");
        if (NStorageTokens < 0) throw new SvgdException($"{source}: n_storage_tokens must be >= 0");
        return this;
    }
}

/// <summary>The released DINOv3 ViT variants (LVD-1689M), by the names of their checkpoints.</summary>
public static class Dinov3Presets
{
    public static readonly IReadOnlyDictionary<string, Dinov3Config> All = new Dictionary<string, Dinov3Config>(StringComparer.OrdinalIgnoreCase)
    {
        ["vits16"] = new() { EmbedDim = 384, Depth = 12, NumHeads = 6, Ffn = "mlp", FfnRatio = 4 },
        ["vits16plus"] = new() { EmbedDim = 384, Depth = 12, NumHeads = 6, Ffn = "swiglu", FfnRatio = 6 },
        ["vitb16"] = new() { EmbedDim = 768, Depth = 12, NumHeads = 12, Ffn = "mlp", FfnRatio = 4 },
        ["vitl16"] = new() { EmbedDim = 1024, Depth = 24, NumHeads = 16, Ffn = "mlp", FfnRatio = 4 },
        ["vith16plus"] = new() { EmbedDim = 1280, Depth = 32, NumHeads = 20, Ffn = "swiglu", FfnRatio = 6 },
    };

    static readonly Dictionary<string, string> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["ViT-S/16"] = "vits16", ["ViT-S+/16"] = "vits16plus", ["ViT-B/16"] = "vitb16",
        ["ViT-L/16"] = "vitl16", ["ViT-H+/16"] = "vith16plus",
    };

    public static IEnumerable<string> Names => All.Keys;

    public static Dinov3Config Get(string name)
    {
        string key = name.StartsWith("dinov3_", StringComparison.OrdinalIgnoreCase) ? name[7..] : name;
        if (Aliases.TryGetValue(key, out var canonical)) key = canonical;
        return All.TryGetValue(key, out var c) ? c
            : throw new SvgdException($"unknown DINOv3 preset '{name}' (known: {string.Join(", ", Names)})");
    }
}
