using System.CommandLine;
using SvgDiffusion.Config;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary>How commands find an SVG autoencoder: the checkpoint, its architecture and where its DINOv3 comes from.</summary>
internal sealed class AutoencoderOptions
{
    public Option<string> Autoencoder { get; } = new("--autoencoder") { Description = "SVG autoencoder checkpoint: the released Lightning .ckpt, or a .safetensors written by svgd.", Required = true };
    public Option<string?> Preset { get; }
    public Option<string?> Config { get; }

    /// <param name="prefix">Prefixes the architecture options where the command has its own --preset/--config (e.g. "autoencoder-").</param>
    public AutoencoderOptions(string prefix = "")
    {
        Preset = new($"--{prefix}preset") { Description = $"Autoencoder architecture: {string.Join(", ", SvgAutoencoderPresets.Names)} (default: the config saved in the file, else {SvgAutoencoderPresets.DinoV3ViTSPlus16})." };
        Config = new($"--{prefix}config") { Description = "Autoencoder JSON config with sections dino, residual_vit, decoder, alignment, mask_ratio (reference names; unknown keys ignored)." };
    }
    public Option<string?> Encoder { get; } = new("--encoder") { Description = "Take the frozen DINOv3 from this file (official .pth or Hugging Face safetensors) instead of the autoencoder checkpoint." };

    public IEnumerable<Option> All => new Option[] { Autoencoder, Preset, Config, Encoder };

    public SvgAutoencoderConfig? ResolveConfig(ParseResult p)
    {
        string? preset = p.GetValue(Preset), config = p.GetValue(Config);
        if (preset != null && config != null) throw new SvgdException("give either --preset or --config, not both");
        if (preset != null) return SvgAutoencoderPresets.Get(preset);
        return config != null ? ConfigJson.Load<SvgAutoencoderConfig>(config).Validate(config) : null;
    }

    /// <summary>An SVG autoencoder: for commands that work on its parts (alignment, frozen features).</summary>
    /// <summary>--autoencoder as a file: a model folder or bundled model's name becomes its autoencoder file.</summary>
    public string? ResolvedPath(ParseResult p) =>
        p.GetValue(Autoencoder) is string v ? Sampling.ModelFolder.Resolve(v, "--autoencoder")?.AutoencoderPath ?? v : null;

    public SvgAutoencoder Load(ParseResult p, string? path = null)
    {
        string file = path ?? ResolvedPath(p) ?? throw new SvgdException("--autoencoder is required");
        if (AutoencoderFile.IsVae(file)) throw new SvgdException($"{file}: is a VAE; this command needs an SVG autoencoder");
        var model = SvgAutoencoderCheckpoint.Load(file, ResolveConfig(p), p.GetValue(Encoder));
        model.eval();
        return model;
    }

    /// <summary>Either kind of autoencoder (SVG or the VAE baseline), for commands that only encode and decode.</summary>
    /// <param name="decodeOnly">Leave out the frozen encoder (commands that only decode).</param>
    public ILatentAutoencoder LoadAny(ParseResult p, string? path = null, bool decodeOnly = false)
    {
        string file = path ?? ResolvedPath(p) ?? throw new SvgdException("--autoencoder is required");
        var model = AutoencoderFile.Load(file, ResolveConfig(p), p.GetValue(Encoder), decodeOnly);
        model.Module.eval();
        return model;
    }

    public static AlignmentMode ParseAlignment(string s) => s.ToLowerInvariant() switch
    {
        "batch" => AlignmentMode.Batch,
        "stored" => AlignmentMode.Stored,
        "none" => AlignmentMode.None,
        _ => throw new SvgdException($"--alignment must be batch, stored or none, not '{s}'"),
    };

    public static Option<string?> AlignmentOption() => new("--alignment")
    {
        Description = "Alignment statistics: 'batch' (the reference: each batch's own, so a latent depends on its batch-mates) or 'stored' (saved with the model, batch-independent; see 'svgd calibrate'). Default: the model's config.",
    };

    /// <summary>Images of a folder or file as [-1, 1] batches at the autoencoder's input size (shorter side resized, centre crop).</summary>
    public static (ImageFolder Folder, Func<int, int, Tensor> Batch) Images(string path, int size)
    {
        var folder = new ImageFolder(path);
        return (folder, (start, n) => folder.CenterBatch(Enumerable.Range(start, n), size));
    }
}
