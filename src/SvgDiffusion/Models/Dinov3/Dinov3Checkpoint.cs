using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Dinov3;

public enum Dinov3Layout { Official, HuggingFace }

/// <summary>Loads DINOv3 weights from either released layout, in any supported container.</summary>
public static class Dinov3Checkpoint
{
    public const string ConfigMetadataKey = "svgd.dinov3_config";

    public static Dinov3Layout DetectLayout(IReadOnlyDictionary<string, Tensor> sd, string source)
    {
        if (sd.ContainsKey("patch_embed.proj.weight")) return Dinov3Layout.Official;
        if (sd.ContainsKey("embeddings.patch_embeddings.weight")) return Dinov3Layout.HuggingFace;
        throw new SvgdException($"{source}: unknown DINOv3 layout: neither 'patch_embed.proj.weight' (official) nor 'embeddings.patch_embeddings.weight' (Hugging Face) is present (first keys: {string.Join(", ", sd.Keys.Take(4))})");
    }

    /// <summary>
    /// Loads a model. The architecture comes from <paramref name="config"/> when given, else from
    /// config metadata saved in the file, a Hugging Face <c>config.json</c> beside it, or the shapes
    /// in the checkpoint. Either way the checkpoint's shapes are checked against it.
    /// </summary>
    /// <param name="warn">Told when the head count had to be assumed (no config and no rope periods in the file).</param>
    public static DinoVisionTransformer Load(string path, Dinov3Config? config = null, string? section = null, string? stripPrefix = null, Action<string>? warn = null)
    {
        var ckpt = Checkpoint.Open(path);
        var sd = ckpt.StateDict(section, stripPrefix);
        return FromStateDict(sd, path, config ?? ConfigFromMetadata(ckpt) ?? HuggingFaceConfigBeside(path), warn);
    }

    public static DinoVisionTransformer FromStateDict(IReadOnlyDictionary<string, Tensor> sd, string source, Dinov3Config? config = null, Action<string>? warn = null)
    {
        var layout = DetectLayout(sd, source);
        var official = layout == Dinov3Layout.HuggingFace ? FromHuggingFace(sd, source) : new Dictionary<string, Tensor>(sd);
        var inferred = Infer(official, source);
        if (config == null && !official.ContainsKey("rope_embed.periods"))
            warn?.Invoke($"{source}: the file does not record the number of attention heads; assuming {inferred.NumHeads} (64-wide heads, as in every released DINOv3). Pass --preset or --config if that is wrong.");
        config = config == null ? inferred : CheckAgainst(config, inferred, official, source);
        DinoVisionTransformer model;
        // Every weight comes from the file (the load below is strict), so none is drawn first.
        using (WeightInit.SkipForLoad()) model = new DinoVisionTransformer(config);
        if (layout == Dinov3Layout.HuggingFace)
        {
            // Transformers recomputes fp32 frequencies; keep that so HF weights reproduce HF outputs.
            official["rope_embed.periods"] = model.Rope.Periods.clone();
            model.Rope.UseInverseFrequency = true;
        }
        if (!official.ContainsKey("rope_embed.periods")) official["rope_embed.periods"] = model.Rope.Periods.clone();
        foreach (var key in official.Keys.Where(k => k.EndsWith(".attn.qkv.bias_mask")).ToList())
        {
            // Checkpoints saved before DINOv3's init ran hold NaN here; the defined mask is q,v on, k off.
            if (!torch.isfinite(official[key]).all().item<bool>())
                official[key] = LinearKMaskedBias.StandardMask(official[key].shape[0]);
        }
        StateDictLoader.Load(model, official, source);
        model.eval();
        return model;
    }

    static Dinov3Config? ConfigFromMetadata(Checkpoint ckpt) =>
        ckpt.Metadata.TryGetValue(ConfigMetadataKey, out var json)
            ? ConfigJson.ParseText<Dinov3Config>(json, $"{ckpt.Path} metadata").Validate(ckpt.Path)
            : null;

    /// <summary>Hugging Face repositories keep <c>config.json</c> beside <c>model.safetensors</c>.</summary>
    static Dinov3Config? HuggingFaceConfigBeside(string path)
    {
        string cfgPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".", "config.json");
        if (!File.Exists(cfgPath)) return null;
        JsonObject? o;
        try { o = JsonNode.Parse(File.ReadAllText(cfgPath)) as JsonObject; }
        catch (System.Text.Json.JsonException) { return null; }
        if (o?["model_type"]?.GetValue<string>() != "dinov3_vit") return null;
        int hidden = o["hidden_size"]!.GetValue<int>();
        int inter = o["intermediate_size"]!.GetValue<int>();
        bool gated = o["use_gated_mlp"]?.GetValue<bool>() ?? false;
        return new Dinov3Config
        {
            EmbedDim = hidden,
            Depth = o["num_hidden_layers"]!.GetValue<int>(),
            NumHeads = o["num_attention_heads"]!.GetValue<int>(),
            Ffn = gated ? "swiglu" : "mlp",
            // The ratio only matters through FfnHidden; for SwiGLU, 1.5 * inter / hidden rounds back to inter.
            FfnRatio = gated ? 1.5 * inter / hidden : (double)inter / hidden,
            PatchSize = o["patch_size"]?.GetValue<int>() ?? 16,
            NStorageTokens = o["num_register_tokens"]?.GetValue<int>() ?? 4,
            RopeBase = o["rope_theta"]?.GetValue<double>() ?? 100.0,
            LayerNormEps = o["layer_norm_eps"]?.GetValue<double>() ?? 1e-5,
        }.Validate(cfgPath);
    }

    /// <summary>Renames Hugging Face <c>DINOv3ViTModel</c> keys to the official layout.</summary>
    public static Dictionary<string, Tensor> FromHuggingFace(IReadOnlyDictionary<string, Tensor> hf, string source)
    {
        var o = new Dictionary<string, Tensor>();
        Tensor Need(string k) => hf.TryGetValue(k, out var t) ? t : throw new SvgdException($"{source}: missing key '{k}'");
        var consumed = new HashSet<string>();
        void Map(string from, string to, Func<Tensor, Tensor>? f = null)
        {
            if (!hf.TryGetValue(from, out var t)) return;
            o[to] = f == null ? t : f(t);
            consumed.Add(from);
        }
        Map("embeddings.cls_token", "cls_token");
        Map("embeddings.mask_token", "mask_token", t => t.reshape(1, -1));
        Map("embeddings.register_tokens", "storage_tokens");
        Map("embeddings.patch_embeddings.weight", "patch_embed.proj.weight");
        Map("embeddings.patch_embeddings.bias", "patch_embed.proj.bias");
        Map("norm.weight", "norm.weight");
        Map("norm.bias", "norm.bias");
        var layerIds = hf.Keys.Where(k => k.StartsWith("layer.")).Select(k => int.Parse(k.Split('.')[1])).Distinct().OrderBy(i => i);
        foreach (int i in layerIds)
        {
            string a = $"layer.{i}.", b = $"blocks.{i}.";
            foreach (var n in new[] { "norm1", "norm2" })
            {
                Map(a + n + ".weight", b + n + ".weight");
                Map(a + n + ".bias", b + n + ".bias");
            }
            Map(a + "layer_scale1.lambda1", b + "ls1.gamma");
            Map(a + "layer_scale2.lambda1", b + "ls2.gamma");
            Map(a + "attention.o_proj.weight", b + "attn.proj.weight");
            Map(a + "attention.o_proj.bias", b + "attn.proj.bias");
            var q = Need(a + "attention.q_proj.weight");
            var k = Need(a + "attention.k_proj.weight");
            var v = Need(a + "attention.v_proj.weight");
            o[b + "attn.qkv.weight"] = torch.cat(new[] { q, k, v }, 0);
            var qb = Need(a + "attention.q_proj.bias");
            var kb = hf.TryGetValue(a + "attention.k_proj.bias", out var kbias) ? kbias : torch.zeros_like(qb);
            var vb = Need(a + "attention.v_proj.bias");
            o[b + "attn.qkv.bias"] = torch.cat(new[] { qb, kb, vb }, 0);
            o[b + "attn.qkv.bias_mask"] = LinearKMaskedBias.StandardMask(qb.shape[0] * 3);
            consumed.UnionWith(new[] { "q_proj.weight", "k_proj.weight", "v_proj.weight", "q_proj.bias", "k_proj.bias", "v_proj.bias" }.Select(s => a + "attention." + s));
            if (hf.ContainsKey(a + "mlp.gate_proj.weight"))
            {
                foreach (var s in new[] { "weight", "bias" })
                {
                    Map(a + "mlp.gate_proj." + s, b + "mlp.w1." + s);
                    Map(a + "mlp.up_proj." + s, b + "mlp.w2." + s);
                    Map(a + "mlp.down_proj." + s, b + "mlp.w3." + s);
                }
            }
            else
            {
                foreach (var s in new[] { "weight", "bias" })
                {
                    Map(a + "mlp.up_proj." + s, b + "mlp.fc1." + s);
                    Map(a + "mlp.down_proj." + s, b + "mlp.fc2." + s);
                }
            }
        }
        // Anything not understood stays under its own name so the loader reports it as unexpected.
        foreach (var (k, t) in hf) if (!consumed.Contains(k)) o[k] = t;
        return o;
    }

    /// <summary>What the official-layout state dict itself says about the architecture.</summary>
    static Dinov3Config Infer(IReadOnlyDictionary<string, Tensor> sd, string source)
    {
        var w = sd["patch_embed.proj.weight"];
        if (w.dim() != 4) throw new SvgdException($"{source}: patch_embed.proj.weight has shape {Checkpoint.Shape(w.shape)}, expected 4 dimensions");
        int d = (int)w.shape[0];
        int depth = sd.Keys.Where(k => k.StartsWith("blocks.")).Select(k => int.Parse(k.Split('.')[1])).DefaultIfEmpty(-1).Max() + 1;
        bool swiglu = sd.ContainsKey("blocks.0.mlp.w1.weight");
        int hidden = sd.TryGetValue(swiglu ? "blocks.0.mlp.w1.weight" : "blocks.0.mlp.fc1.weight", out var f) ? (int)f.shape[0] : 4 * d;
        int regs = sd.TryGetValue("storage_tokens", out var st) ? (int)st.shape[1] : 0;
        // The official file stores head_dim/4 periods; without them assume the released 64-wide heads.
        int heads = sd.TryGetValue("rope_embed.periods", out var per) && per.shape[0] > 0 ? d / (4 * (int)per.shape[0]) : Math.Max(1, d / 64);
        return new Dinov3Config
        {
            EmbedDim = d, Depth = depth, NumHeads = heads, Ffn = swiglu ? "swiglu" : "mlp",
            FfnRatio = swiglu ? 1.5 * hidden / d : (double)hidden / d,
            PatchSize = (int)w.shape[2], InChans = (int)w.shape[1], NStorageTokens = regs,
        }.Validate(source);
    }

    static Dinov3Config CheckAgainst(Dinov3Config cfg, Dinov3Config seen, IReadOnlyDictionary<string, Tensor> sd, string source)
    {
        var problems = new List<string>();
        if (cfg.EmbedDim != seen.EmbedDim) problems.Add($"embed_dim {cfg.EmbedDim} vs {seen.EmbedDim} in the file");
        if (cfg.Depth != seen.Depth) problems.Add($"depth {cfg.Depth} vs {seen.Depth} blocks in the file");
        if (cfg.PatchSize != seen.PatchSize) problems.Add($"patch_size {cfg.PatchSize} vs {seen.PatchSize} in the file");
        if (cfg.Ffn != seen.Ffn) problems.Add($"ffn '{cfg.Ffn}' vs '{seen.Ffn}' in the file");
        else if (cfg.FfnHidden != seen.FfnHidden) problems.Add($"ffn hidden width {cfg.FfnHidden} (ffn_ratio {cfg.FfnRatio}) vs {seen.FfnHidden} in the file");
        if (cfg.NStorageTokens != seen.NStorageTokens) problems.Add($"n_storage_tokens {cfg.NStorageTokens} vs {seen.NStorageTokens} in the file");
        if (sd.TryGetValue("rope_embed.periods", out var per) && per.shape[0] != cfg.HeadDim / 4)
            problems.Add($"num_heads {cfg.NumHeads} gives head dim {cfg.HeadDim}, but the file's rope periods imply {per.shape[0] * 4}");
        if (problems.Count > 0) throw new SvgdException($"{source}: config does not match the checkpoint: {string.Join("; ", problems)}");
        return cfg;
    }

    /// <summary>Saves in the official layout as safetensors, with the config in the header.</summary>
    public static void Save(DinoVisionTransformer model, string path)
    {
        var meta = new Dictionary<string, string> { [ConfigMetadataKey] = ConfigJson.Serialize(model.Config), ["format"] = "pt" };
        SafeTensors.Save(path, model.state_dict(), meta);
    }
}
