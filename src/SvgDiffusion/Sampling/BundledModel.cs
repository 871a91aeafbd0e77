namespace SvgDiffusion.Sampling;

/// <summary>
/// The small SVG model committed under <c>models/fashion-mnist</c> (ResNet-18 frozen encoder, trained on
/// Fashion-MNIST with this project's own commands) and copied next to the CLI at build time, so
/// <c>./svgd sample</c> produces real images on a fresh machine with no downloads.
/// </summary>
public static class BundledModel
{
    public const string Name = "fashion-mnist";
    public const string ClassNamesMetadataKey = "svgd.class_names";

    public static string Directory => Path.Combine(AppContext.BaseDirectory, "models", Name);
    public static string DiTPath => Path.Combine(Directory, "dit.safetensors");
    public static string AutoencoderPath => Path.Combine(Directory, "autoencoder.safetensors");
    public static string StatisticsPath => Path.Combine(Directory, "latent-stats.safetensors");

    public static void EnsurePresent()
    {
        foreach (var p in new[] { DiTPath, AutoencoderPath, StatisticsPath })
            if (!File.Exists(p)) throw new SvgdException($"{p}: the bundled model is missing from the build output (models/{Name} in the repository); pass --model and --autoencoder");
    }

    /// <summary>Class names saved in a model's metadata (JSON array), or null.</summary>
    public static IReadOnlyList<string>? ClassNames(string modelPath)
    {
        if (!Checkpoints.SafeTensors.LooksLikeSafeTensors(modelPath)) return null;
        var meta = Checkpoints.SafeTensors.ReadHeader(modelPath).Metadata;
        if (!meta.TryGetValue(ClassNamesMetadataKey, out var json)) return null;
        try { return System.Text.Json.JsonSerializer.Deserialize<string[]>(json); }
        catch (System.Text.Json.JsonException e)
        { throw new SvgdException($"{modelPath}: metadata '{ClassNamesMetadataKey}' is not a JSON array of strings ({e.Message.Split('\n')[0]})"); }
    }
}
