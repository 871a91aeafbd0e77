using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// Loads and saves SVG diffusion transformers: released <c>{"ema": state_dict}</c> files, training
/// checkpoints (<c>{"model", "ema", "opt", ...}</c>, EMA preferred), flat state dicts, and this port's
/// safetensors (config in the header), including its training checkpoints (<c>ema.*</c> and <c>model.*</c>
/// keys in one file, EMA preferred).
/// </summary>
public static class DiTCheckpoint
{
    public const string ConfigMetadataKey = "svgd.dit_config";

    /// <summary>Key prefixes of this port's training checkpoints (<c>ema.*</c>, <c>model.*</c> in one flat safetensors), EMA first.</summary>
    public static readonly string[] PrefixSections = { "ema", "model" };

    /// <param name="config">Architecture; when null, the config saved in the file, else inferred from the tensor shapes.</param>
    /// <param name="section">Sub-dictionary to read (<c>ema</c>, <c>model</c>, ...); null picks EMA weights when present.
    /// In a flat safetensors (a training checkpoint of this port) it is a key prefix.</param>
    public static DiT Load(string path, DiTConfig? config = null, string? section = null)
    {
        var ckpt = Checkpoint.Open(path);
        var sd = ckpt.Format == CheckpointFormat.SafeTensors ? FlatSection(ckpt, section) : ckpt.StateDict(section);
        // Weights saved from a DistributedDataParallel wrapper carry its attribute name.
        if (sd.Count > 0 && sd.Keys.All(k => k.StartsWith("module.", StringComparison.Ordinal)))
            sd = sd.ToDictionary(kv => kv.Key["module.".Length..], kv => kv.Value);
        return FromStateDict(sd, path, config ?? ConfigFromMetadata(ckpt));
    }

    /// <summary>
    /// The weights of a flat safetensors: keys under <c>section.</c> when a section is named, else under the
    /// first of <see cref="PrefixSections"/> that holds a DiT (when the file has no unprefixed one), else all keys.
    /// </summary>
    static Dictionary<string, Tensor> FlatSection(Checkpoint ckpt, string? section)
    {
        var all = ckpt.StateDict();
        string? prefix = section is { Length: > 0 } ? section.TrimEnd('.') + "."
            : all.ContainsKey("ln1.weight") ? null
            : PrefixSections.Select(p => p + ".").FirstOrDefault(p => all.ContainsKey(p + "ln1.weight"));
        if (prefix == null) return all;
        var sub = all.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);
        if (sub.Count == 0)
        {
            var prefixes = all.Keys.Where(k => k.Contains('.')).Select(k => k[..k.IndexOf('.')]).Distinct().Take(8);
            throw new SvgdException($"{ckpt.Path}: no tensors under '{prefix}' (key prefixes: {string.Join(", ", prefixes)})");
        }
        return sub;
    }

    public static DiT FromStateDict(IReadOnlyDictionary<string, Tensor> sd, string source, DiTConfig? config = null)
    {
        var inferred = Infer(sd, source);
        config = config == null ? inferred : CheckAgainst(config.Validate(source), inferred, source);
        DiT model;
        // Every weight comes from the file (the load below is strict), so none is drawn first.
        using (WeightInit.SkipForLoad()) model = new DiT(config);
        try { StateDictLoader.Load(model, sd, source); }
        catch { model.Dispose(); throw; }
        model.eval();
        return model;
    }

    /// <summary>Saves the state dict (reference key names) as safetensors, with the config in the header so the file loads alone.</summary>
    /// <param name="dtype">Store floating-point weights in this precision (e.g. Float16 for a compact bundled model).</param>
    /// <param name="metadata">Extra header entries (e.g. class names).</param>
    public static void Save(DiT model, string path, ScalarType? dtype = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var meta = new Dictionary<string, string> { [ConfigMetadataKey] = ConfigJson.Serialize(model.Config), ["format"] = "pt" };
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) meta[k] = v;
        using var scope = torch.NewDisposeScope();
        var tensors = model.state_dict().ToDictionary(kv => kv.Key, kv => dtype is ScalarType d && kv.Value.dtype.IsFloatingPoint() ? kv.Value.to(d) : kv.Value);
        SafeTensors.Save(path, tensors, meta);
    }

    static DiTConfig? ConfigFromMetadata(Checkpoint ckpt) =>
        ckpt.Metadata.TryGetValue(ConfigMetadataKey, out var json)
            ? ConfigJson.ParseText<DiTConfig>(json, $"{ckpt.Path} metadata").Validate(ckpt.Path)
            : null;

    static readonly string[] RequiredKeys = { "ln1.weight", "t_embedder.mlp.0.weight", "y_embedder.embedding_table.weight", "final_layer.linear.weight" };

    /// <summary>
    /// The architecture the tensors imply. The head count is exact with qk-norm (the norms are one head
    /// wide); without it, the preset with that width decides. class_dropout_prob is not recorded in the
    /// weights; a null-label row is assumed, as every released model has one.
    /// </summary>
    public static DiTConfig Infer(IReadOnlyDictionary<string, Tensor> sd, string source)
    {
        var absent = RequiredKeys.Where(k => !sd.ContainsKey(k)).ToList();
        if (absent.Count > 0)
            throw new SvgdException($"{source}: not an SVG diffusion transformer checkpoint: no {string.Join(", ", absent.Select(k => $"'{k}'"))}{Guess(sd)} (first keys: {string.Join(", ", sd.Keys.Take(4))})");
        var ln1 = sd["ln1.weight"];
        var table = sd["y_embedder.embedding_table.weight"];
        var final = sd["final_layer.linear.weight"];
        if (ln1.dim() != 2 || table.dim() != 2 || final.dim() != 2)
            throw new SvgdException($"{source}: ln1, y_embedder.embedding_table and final_layer.linear weights must be matrices, got {Checkpoint.Shape(ln1.shape)}, {Checkpoint.Shape(table.shape)}, {Checkpoint.Shape(final.shape)}");
        int hidden = (int)ln1.shape[0], inCh = (int)ln1.shape[1];
        int depth = sd.Keys.Where(k => k.StartsWith("blocks.", StringComparison.Ordinal))
            .Select(k => int.TryParse(k.Split('.')[1], out int i) ? i : -1).DefaultIfEmpty(-1).Max() + 1;
        if (depth == 0) throw new SvgdException($"{source}: the checkpoint has no transformer blocks ('blocks.N.*')");
        long outCh = final.shape[0];
        bool learnSigma = outCh == 2L * inCh;
        if (!learnSigma && outCh != inCh)
            throw new SvgdException($"{source}: final_layer.linear has {outCh} outputs for {inCh} input channels; expected {inCh} or {2 * inCh} (learn_sigma)");
        int inputSize = 16;
        if (sd.TryGetValue("pos_embed", out var pos))
        {
            if (pos.dim() < 2 || pos.shape[^1] != hidden)
                throw new SvgdException($"{source}: pos_embed has shape {Checkpoint.Shape(pos.shape)}, expected [1, T, {hidden}]");
            long tokens = pos.shape[^2];
            inputSize = (int)Math.Round(Math.Sqrt(tokens));
            if ((long)inputSize * inputSize != tokens)
                throw new SvgdException($"{source}: pos_embed has {tokens} positions, which is not a square grid");
        }
        bool qkNorm = sd.TryGetValue("blocks.0.attn.q_norm.weight", out var qn);
        int heads = qkNorm && qn!.shape[0] > 0 && hidden % qn.shape[0] == 0 ? hidden / (int)qn.shape[0] : DiTPresets.HeadsForWidth(hidden);
        double mlpRatio = sd.TryGetValue("blocks.0.mlp.fc1.weight", out var fc1) ? fc1.shape[0] / (double)hidden : 4.0;
        return new DiTConfig
        {
            InputSize = inputSize, PatchSize = 1, InChannels = inCh, HiddenSize = hidden, Depth = depth, NumHeads = heads,
            MlpRatio = mlpRatio, ClassDropoutProb = 0.1, NumClasses = (int)table.shape[0] - 1, LearnSigma = learnSigma, QkNorm = qkNorm,
        }.Validate(source);
    }

    static DiTConfig CheckAgainst(DiTConfig cfg, DiTConfig seen, string source)
    {
        var problems = new List<string>();
        void Check<T>(string name, T want, T got) where T : IEquatable<T>
        {
            if (!want.Equals(got)) problems.Add($"{name} {want} vs {got} in the file");
        }
        Check("hidden_size", cfg.HiddenSize, seen.HiddenSize);
        Check("in_channels", cfg.InChannels, seen.InChannels);
        Check("depth", cfg.Depth, seen.Depth);
        Check("learn_sigma", cfg.LearnSigma, seen.LearnSigma);
        Check("qk_norm", cfg.QkNorm, seen.QkNorm);
        Check("input_size", cfg.InputSize, seen.InputSize);
        Check("mlp hidden width", cfg.MlpHidden, seen.MlpHidden);
        Check("label embedding rows", cfg.EmbeddingRows, seen.EmbeddingRows);
        if (cfg.QkNorm && seen.QkNorm) Check("num_heads", cfg.NumHeads, seen.NumHeads);
        if (problems.Count > 0) throw new SvgdException($"{source}: config does not match the checkpoint: {string.Join("; ", problems)}");
        return cfg;
    }

    static string Guess(IReadOnlyDictionary<string, Tensor> sd)
    {
        if (sd.ContainsKey("patch_embed.proj.weight") || sd.ContainsKey("embeddings.patch_embeddings.weight")) return "; it looks like a DINOv3 encoder";
        if (sd.Keys.Any(k => k.StartsWith("extra_vit.", StringComparison.Ordinal) || k.StartsWith("decoder.", StringComparison.Ordinal))) return "; it looks like an SVG autoencoder";
        if (sd.ContainsKey("x_embedder.proj.weight")) return "; it looks like a DiT/SiT with a patch-embedding convolution, not SVG's linear token embedding";
        return "";
    }
}
