using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Dinov3;
using SvgDiffusion.Models.Encoders;
using SvgDiffusion.Models.ResNet;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>Loads SVG autoencoders saved in the reference layout (the released Lightning checkpoint).</summary>
public static class SvgAutoencoderCheckpoint
{
    const string DinoPrefix = "encoder.";
    public const string ConfigMetadataKey = "svgd.svg_autoencoder_config";

    /// <summary>
    /// Loads <c>{"state_dict": {encoder.*, extra_vit.*, mask_token, decoder.*, ...}}</c> (or the same keys
    /// at the top level). Training-only entries (<c>loss.*</c>) and the reference's unused <c>norm_vit.*</c>
    /// are ignored; alignment statistics and the mask token are optional.
    /// </summary>
    /// <param name="config">Architecture; when null, the config saved in the file's metadata, else the released preset.</param>
    /// <param name="encoderPath">A separate checkpoint for the frozen encoder (DINOv3 in either layout; ResNet-18 as
    /// .onnx or safetensors), preferred over <c>encoder.*</c> weights in the file. DINOv3 needs one or the other;
    /// ResNet-18 otherwise comes from the ONNX file shipped with the build.</param>
    /// <param name="decodeOnly">Skip the frozen encoder (a <see cref="DecodeOnlyEncoder"/> stands in): for sampling, which
    /// only decodes. Its weights in the file are then not read.</param>
    public static SvgAutoencoder Load(string path, SvgAutoencoderConfig? config = null, string? encoderPath = null, bool decodeOnly = false)
    {
        var ckpt = Checkpoint.Open(path);
        config ??= ckpt.Metadata.TryGetValue(ConfigMetadataKey, out var json)
            ? Config.ConfigJson.ParseText<SvgAutoencoderConfig>(json, $"{path} metadata").Validate($"{path} metadata")
            : SvgAutoencoderPresets.Get(SvgAutoencoderPresets.DinoV3ViTSPlus16);
        var sd = ckpt.StateDict(ckpt.Sections().Any(s => s.Name == "state_dict") ? "state_dict" : null);
        if ((config.HasResidual && !sd.Keys.Any(k => k.StartsWith("extra_vit.", StringComparison.Ordinal))) || !sd.Keys.Any(k => k.StartsWith("decoder.", StringComparison.Ordinal)))
            throw new SvgdException($"{path}: not an SVG autoencoder checkpoint: no 'extra_vit.*' and 'decoder.*' weights{Guess(sd)} (first keys: {string.Join(", ", sd.Keys.Take(4))})");

        bool inFile = sd.Keys.Any(k => k.StartsWith(DinoPrefix, StringComparison.Ordinal));
        IFrozenEncoder frozen;
        if (decodeOnly)
            frozen = new DecodeOnlyEncoder(config.FrozenEncoder, config.SemanticDim, config.SemanticStride);
        else if (config.IsResNet)
        {
            frozen = encoderPath != null ? ResNet18Encoder.Load(encoderPath, config.Resnet)
                : inFile ? ResNet18FromState(Strip(sd, DinoPrefix), config, path)
                : ResNet18Encoder.FromOnnx(config.Resnet);
        }
        else if (encoderPath != null)
            frozen = Dinov3Checkpoint.Load(encoderPath, config.Dino);
        else if (inFile)
            frozen = Dinov3Checkpoint.FromStateDict(Strip(sd, DinoPrefix), $"{path} (encoder.*)", config.Dino);
        else
            throw new SvgdException($"{path}: holds no frozen DINOv3 weights (encoder.*); give the DINOv3 checkpoint separately");

        var model = new SvgAutoencoder(config, frozen);
        var full = sd.Where(kv => !kv.Key.StartsWith(DinoPrefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value);
        // The encoder is already loaded; listing its own tensors lets one loader check everything else.
        foreach (var (k, t) in ((nn.Module)frozen).state_dict()) full[DinoPrefix + k] = t;
        // Absent from released files: the mask token when trained without masking, and the statistics
        // of this port's stored alignment mode. The model's initial values stand in.
        foreach (var (k, t) in model.state_dict())
            if ((k == "mask_token" || k.StartsWith("alignment.", StringComparison.Ordinal)) && !full.ContainsKey(k))
                full[k] = t.clone();
        StateDictLoader.Load(model, full, path, k => k.StartsWith("loss.", StringComparison.Ordinal) || k.StartsWith("norm_vit.", StringComparison.Ordinal) || k.StartsWith("optimizer.", StringComparison.Ordinal));
        model.eval();
        return model;
    }

    /// <summary>Saves in the reference layout (<c>state_dict</c> keys), as safetensors with the config in the
    /// header and alignment statistics included, so the file alone reloads the model.</summary>
    /// <param name="includeFrozenEncoder">False leaves out <c>encoder.*</c>: for a ResNet-18 model, which reloads it
    /// from the ONNX file every build ships, this keeps the file to the trained parts.</param>
    /// <param name="dtype">Store floating-point weights in this precision (e.g. Float16 for a compact bundled model).</param>
    public static void Save(SvgAutoencoder model, string path, bool includeFrozenEncoder = true, ScalarType? dtype = null)
    {
        if (!includeFrozenEncoder && !model.Config.IsResNet)
            throw new SvgdException("only a ResNet-18 autoencoder can be saved without its frozen encoder (DINOv3 weights are not shipped)");
        if (includeFrozenEncoder && model.SemanticEncoder is DecodeOnlyEncoder)
            throw new SvgdException($"{path}: this autoencoder was loaded to decode only; load it whole to save it with its frozen encoder");
        using var scope = torch.NewDisposeScope();
        var tensors = model.state_dict()
            .Where(kv => includeFrozenEncoder || !kv.Key.StartsWith(DinoPrefix, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key, kv => dtype is ScalarType d && kv.Value.dtype.IsFloatingPoint() && !kv.Key.StartsWith("alignment.", StringComparison.Ordinal) ? kv.Value.to(d) : kv.Value);
        SafeTensors.Save(path, tensors, new Dictionary<string, string>
        {
            ["format"] = "pt",
            [ConfigMetadataKey] = Config.ConfigJson.Serialize(model.Config),
        });
    }

    static ResNet18Encoder ResNet18FromState(Dictionary<string, Tensor> sd, SvgAutoencoderConfig config, string path)
    {
        var enc = new ResNet18Encoder(config.Resnet);
        StateDictLoader.Load(enc, sd, $"{path} (encoder.*)");
        enc.eval();
        return enc;
    }

    static Dictionary<string, Tensor> Strip(IReadOnlyDictionary<string, Tensor> sd, string prefix) =>
        sd.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);

    static string Guess(IReadOnlyDictionary<string, Tensor> sd)
    {
        if (sd.ContainsKey("patch_embed.proj.weight") || sd.ContainsKey("embeddings.patch_embeddings.weight")) return "; it looks like a DINOv3 encoder";
        if (sd.Keys.Any(k => k.StartsWith("x_embedder.", StringComparison.Ordinal) || k.StartsWith("t_embedder.", StringComparison.Ordinal))) return "; it looks like a diffusion transformer";
        return "";
    }
}
