using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Vae;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>Loads either kind of autoencoder from a file: a VAE by its <c>svgd.vae_config</c> header entry, anything else as SVG.</summary>
public static class AutoencoderFile
{
    public static bool IsVae(string path) =>
        SafeTensors.LooksLikeSafeTensors(path) && SafeTensors.ReadHeader(path).Metadata.ContainsKey(KlAutoencoder.ConfigMetadataKey);

    /// <param name="svgConfig">Architecture of an SVG file (see <see cref="SvgAutoencoderCheckpoint.Load"/>); refused for a VAE file.</param>
    /// <param name="decodeOnly">An SVG autoencoder without its frozen encoder, for decoding only (a VAE loads whole: it is small).</param>
    public static ILatentAutoencoder Load(string path, SvgAutoencoderConfig? svgConfig = null, string? encoderPath = null, bool decodeOnly = false)
    {
        if (!File.Exists(path)) throw new SvgdException($"{path}: autoencoder file not found");
        if (!IsVae(path)) return SvgAutoencoderCheckpoint.Load(path, svgConfig, encoderPath, decodeOnly);
        if (svgConfig != null || encoderPath != null)
            throw new SvgdException($"{path}: a VAE file carries its own architecture and has no frozen encoder; drop --preset/--config/--encoder");
        var meta = SafeTensors.ReadHeader(path).Metadata;
        var config = ConfigJson.ParseText<VaeConfig>(meta[KlAutoencoder.ConfigMetadataKey], $"{path} metadata '{KlAutoencoder.ConfigMetadataKey}'").Validate(path);
        var model = new KlAutoencoder(config);
        StateDictLoader.Load(model, SafeTensors.Load(path), path,
            k => k.StartsWith("loss.", StringComparison.Ordinal) || k.StartsWith("optimizer.", StringComparison.Ordinal));
        model.eval();
        return model;
    }

    /// <summary>The model alone (no training state), atomically, with what reloads it in the header.</summary>
    public static void Save(ILatentAutoencoder model, string path)
    {
        var (tensors, meta) = model.ToFile();
        SafeTensors.Save(path, tensors, meta);
    }
}
