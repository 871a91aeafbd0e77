namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// SVG diffusion transformers by name. <c>svg-b</c>, <c>svg-l</c> and <c>svg-xl</c> are the paper's
/// models; <c>svg-s</c> (12 x 384, 6 heads), <c>svg-xs</c> (6 x 256, 4 heads) and <c>svg-tiny</c> (4 x 128, 4 heads) are this port's
/// small variants for CPU experiments and tests. All take the released autoencoder's 16x16x392 latents
/// and the 1000 ImageNet classes, with learn_sigma and qk-norm as released.
/// </summary>
public static class DiTPresets
{
    static DiTConfig Make(int depth, int hidden, int heads) => new()
    {
        InputSize = 16, PatchSize = 1, InChannels = 392, HiddenSize = hidden, Depth = depth, NumHeads = heads,
        MlpRatio = 4.0, ClassDropoutProb = 0.1, NumClasses = 1000, LearnSigma = true, QkNorm = true,
    };

    public static readonly IReadOnlyDictionary<string, DiTConfig> All = new Dictionary<string, DiTConfig>(StringComparer.OrdinalIgnoreCase)
    {
        ["svg-tiny"] = Make(4, 128, 4),
        ["svg-xs"] = Make(6, 256, 4),
        ["svg-s"] = Make(12, 384, 6),
        ["svg-b"] = Make(12, 768, 12),
        ["svg-l"] = Make(24, 1024, 16),
        ["svg-xl"] = Make(28, 1152, 16),
    };

    static readonly Dictionary<string, string> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["SVG-T"] = "svg-tiny", ["SVG-B"] = "svg-b", ["SVG-L"] = "svg-l", ["SVG-XL"] = "svg-xl",
        ["SVG-S"] = "svg-s", ["tiny"] = "svg-tiny", ["s"] = "svg-s", ["b"] = "svg-b", ["l"] = "svg-l", ["xl"] = "svg-xl",
    };

    public static IEnumerable<string> Names => All.Keys;

    public static DiTConfig Get(string name)
    {
        string key = Aliases.TryGetValue(name, out var canonical) ? canonical : name;
        return All.TryGetValue(key, out var c) ? c
            : throw new SvgdException($"unknown DiT preset '{name}' (known: {string.Join(", ", Names)})");
    }

    /// <summary>
    /// Head count for a width, for checkpoints that do not record it (those without qk-norm): the presets'
    /// choice where a preset has that width, else 64-wide heads.
    /// </summary>
    public static int HeadsForWidth(int hidden)
    {
        var match = All.Values.FirstOrDefault(c => c.HiddenSize == hidden);
        if (match != null) return match.NumHeads;
        return hidden % 64 == 0 ? hidden / 64 : 1;
    }
}
