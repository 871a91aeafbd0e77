using System.CommandLine;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Dinov3;

namespace SvgDiffusion.Cli.Commands;

/// <summary>How every model-loading command learns the architecture: a named preset or a JSON config.</summary>
internal sealed class ModelOptions
{
    public Option<string?> Preset { get; }
    public Option<string?> Config { get; }
    public Option<string?> Section { get; } = new("--section") { Description = "Sub-dictionary of a nested checkpoint to load (e.g. ema, state_dict, model); default: the state dict itself, else ema, state_dict, model, in that order." };
    public Option<string?> StripPrefix { get; } = new("--strip-prefix") { Description = "Remove this prefix from every key (keys without it are dropped), e.g. 'encoder.' to take the DINOv3 inside an SVG autoencoder checkpoint." };

    public ModelOptions(string presetHelp)
    {
        Preset = new Option<string?>("--preset") { Description = presetHelp };
        Config = new Option<string?>("--config") { Description = "JSON file with the architecture's hyper-parameters (reference names such as embed_dim, depth, num_heads, ffn, ffn_ratio; unknown keys ignored)." };
    }

    public IEnumerable<Option> All => new Option[] { Preset, Config, Section, StripPrefix };

    public Dinov3Config? Dinov3(ParseResult p)
    {
        string? preset = p.GetValue(Preset), config = p.GetValue(Config);
        if (preset != null && config != null) throw new SvgdException("give either --preset or --config, not both");
        if (preset != null) return Dinov3Presets.Get(preset);
        if (config != null)
        {
            // An SVG autoencoder config names its DINOv3 under "dino"; a DINOv3 config is the object itself.
            return ConfigJson.Load<Dinov3Config>(config, section: "dino").Validate(config);
        }
        return null;
    }
}
