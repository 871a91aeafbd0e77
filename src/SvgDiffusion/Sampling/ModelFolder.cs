namespace SvgDiffusion.Sampling;

/// <summary>
/// A complete model as <c>svgd export</c> writes it: <c>dit.safetensors</c> (weights, config, class names,
/// training background), <c>autoencoder.safetensors</c> and <c>latent-stats.safetensors</c> in one folder. The
/// models bundled with the build (<see cref="BundledNames"/>: <c>fashion-mnist</c>, <c>emoji</c>) are found by
/// name, any other folder by its path, as diffusers' <c>from_pretrained</c> takes a name or a directory.
/// </summary>
public sealed record ModelFolder(string Name, string Directory)
{
    public const string DiTFile = "dit.safetensors";
    public const string AutoencoderFile = "autoencoder.safetensors";
    public const string StatisticsFile = "latent-stats.safetensors";

    public string DiTPath => Path.Combine(Directory, DiTFile);
    public string AutoencoderPath => Path.Combine(Directory, AutoencoderFile);
    public string StatisticsPath => Path.Combine(Directory, StatisticsFile);

    /// <summary>Where the bundled models are copied at build time: models/ beside the program.</summary>
    public static string BundledRoot => Path.Combine(AppContext.BaseDirectory, "models");

    /// <summary>Names of the complete models under <see cref="BundledRoot"/>, sorted.</summary>
    public static IReadOnlyList<string> BundledNames =>
        System.IO.Directory.Exists(BundledRoot)
            ? System.IO.Directory.GetDirectories(BundledRoot).Where(d => File.Exists(Path.Combine(d, DiTFile))).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToList()
            : Array.Empty<string>();

    /// <summary>The bundled model <paramref name="name"/>, all of its files present.</summary>
    public static ModelFolder Bundled(string name)
    {
        var folder = new ModelFolder(name, Path.Combine(BundledRoot, name));
        if (!System.IO.Directory.Exists(folder.Directory))
            throw new SvgdException($"no bundled model '{name}' (bundled: {string.Join(", ", BundledNames)})");
        return folder.EnsurePresent();
    }

    /// <summary>
    /// What a <c>--model</c> value names: a folder holding dit.safetensors, or (when no file or folder of that
    /// name exists) a bundled model's name; null for a plain checkpoint file, which the caller loads as it is.
    /// </summary>
    public static ModelFolder? Resolve(string value, string option = "--model")
    {
        if (System.IO.Directory.Exists(value))
        {
            var folder = new ModelFolder(Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(value))), value);
            if (!File.Exists(folder.DiTPath))
                throw new SvgdException($"{option} {value}: a folder without {DiTFile}; give a model folder written by 'svgd export', a checkpoint file or a bundled model ({string.Join(", ", BundledNames)})");
            return folder.EnsurePresent();
        }
        if (File.Exists(value)) return null;
        if (!value.Contains('/') && !value.Contains('\\') && BundledNames.Contains(value, StringComparer.Ordinal)) return Bundled(value);
        throw new SvgdException($"{option} {value}: no such file, folder or bundled model (bundled: {string.Join(", ", BundledNames)})");
    }

    /// <summary>Throws, naming the file, unless all three files are there.</summary>
    public ModelFolder EnsurePresent()
    {
        foreach (var p in new[] { DiTPath, AutoencoderPath, StatisticsPath })
            if (!File.Exists(p)) throw new SvgdException($"{p}: missing from the model folder '{Name}' (it needs {DiTFile}, {AutoencoderFile} and {StatisticsFile})");
        return this;
    }

    /// <summary>
    /// Loads the folder's DiT, autoencoder (SVG or VAE) and statistics, in evaluation mode, into a service in
    /// <paramref name="precision"/>, with the folder's class names and training background, as the CLI loads a
    /// bundled model. The caller owns the networks (dispose the service's Model, Autoencoder and Statistics).
    /// </summary>
    public GenerationService Load(TorchSharp.torch.ScalarType precision)
    {
        EnsurePresent();
        Models.Diffusion.DiT? dit = null;
        Models.Autoencoder.ILatentAutoencoder? ae = null;
        Models.Autoencoder.LatentStatistics? stats = null;
        try
        {
            dit = Models.Diffusion.DiTCheckpoint.Load(DiTPath);
            dit.eval();
            ae = Models.Autoencoder.AutoencoderFile.Load(AutoencoderPath);
            ae.Module.eval();
            stats = Models.Autoencoder.LatentStatistics.Load(StatisticsPath);
            return new GenerationService(dit, ae, stats, BundledModel.ClassNames(DiTPath), precision) { Background = Background };
        }
        catch
        {
            dit?.Dispose(); ae?.Dispose(); stats?.Dispose();
            throw;
        }
    }

    /// <summary>The background the model was trained on (<see cref="GenerationService.BackgroundMetadataKey"/> in its DiT), or null.</summary>
    public (byte R, byte G, byte B)? Background => ReadBackground(DiTPath);

    /// <summary>The training background stored in a DiT file's metadata ("r,g,b"), or null.</summary>
    public static (byte R, byte G, byte B)? ReadBackground(string ditPath)
    {
        if (!Checkpoints.SafeTensors.LooksLikeSafeTensors(ditPath)) return null;
        var meta = Checkpoints.SafeTensors.ReadHeader(ditPath).Metadata;
        if (!meta.TryGetValue(GenerationService.BackgroundMetadataKey, out var s)) return null;
        return Data.Emoji.EmojiImportOptions.ParseColour(s, $"{ditPath}: metadata '{GenerationService.BackgroundMetadataKey}'");
    }
}
