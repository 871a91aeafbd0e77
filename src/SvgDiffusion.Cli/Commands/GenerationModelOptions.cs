using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Sampling;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary>
/// The DiT, latent statistics and autoencoder of the commands that generate (sample, vary, interpolate,
/// serve): the bundled Fashion-MNIST model when --model is not given, with its autoencoder and statistics.
/// </summary>
internal sealed class GenerationModelOptions
{
    public DiTOptions DiT { get; } = new();
    public AutoencoderOptions Autoencoder { get; } = new();

    public GenerationModelOptions()
    {
        DiT.Model.Required = false;
        DiT.Model.Description = "The model: a bundled one by name (fashion-mnist, emoji), a folder written by 'svgd export' (with its autoencoder and statistics), or a DiT file (the released .pt, or a .safetensors written by svgd). Default: fashion-mnist.";
        Autoencoder.Autoencoder.Required = false;
        Autoencoder.Autoencoder.Description += " Default with a model folder or bundled model: its autoencoder.";
    }

    /// <summary>Options to load the models, and the sampling options unless <paramref name="sampling"/> is false.</summary>
    public IEnumerable<Option> Options(bool sampling = true) =>
        (sampling ? DiT.All : DiT.Loading).Concat(Autoencoder.All);

    public bool IsBundled(ParseResult p) => p.GetValue(DiT.Model) == null;

    /// <summary>The model folder --model names (the default bundled model without it), or null for a plain DiT file.</summary>
    public ModelFolder? Folder(ParseResult p) =>
        p.GetValue(DiT.Model) is string m ? ModelFolder.Resolve(m) : ModelFolder.Bundled(BundledModel.Name);

    /// <summary>
    /// Loads the models and wraps them in the library's <see cref="GenerationService"/>, in precision
    /// <paramref name="dtype"/>. Without <paramref name="needAutoencoder"/> an autoencoder is loaded only when given.
    /// With <paramref name="decodeOnly"/> its frozen encoder is left out (sampling never encodes).
    /// </summary>
    public LoadedGenerationModel Load(ParseResult p, CliContext cli, ScalarType dtype, bool needAutoencoder = true, bool loadAutoencoder = true, bool decodeOnly = false)
    {
        var folder = Folder(p);
        string modelPath = folder?.DiTPath ?? DiT.ModelPath(p);
        string? aePath = loadAutoencoder ? p.GetValue(Autoencoder.Autoencoder) ?? folder?.AutoencoderPath : null;
        if (needAutoencoder && aePath == null) throw new SvgdException("decoding needs --autoencoder");
        if (folder != null) cli.Console.MarkupLine($"model [bold]{Markup.Escape(folder.Name)}[/] ({Markup.Escape(folder.Directory)})");
        DiT? dit = null;
        LatentStatistics? stats = null;
        ILatentAutoencoder? ae = null;
        try
        {
            dit = DiT.LoadModel(p, modelPath);
            stats = DiT.LoadStatistics(p, dit.Config.InChannels, modelPath, folder?.StatisticsPath);
            ae = aePath != null ? Autoencoder.LoadAny(p, aePath, decodeOnly) : null;
            var service = new GenerationService(dit, ae, stats, BundledModel.ClassNames(modelPath), dtype) { Background = ModelFolder.ReadBackground(modelPath) };
            return new LoadedGenerationModel(service, folder?.Name ?? Path.GetFileName(modelPath));
        }
        catch
        {
            dit?.Dispose(); stats?.Dispose(); ae?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The autoencoder alone (mix, interpolating images): --autoencoder (a file, a model folder or a bundled
    /// model's name), else the default bundled one; with the training background of its model, if known.
    /// </summary>
    public (SvgAutoencoder Autoencoder, (byte R, byte G, byte B)? Background) LoadAutoencoderOnly(ParseResult p, CliContext cli)
    {
        string? path = p.GetValue(Autoencoder.Autoencoder);
        var folder = path == null ? ModelFolder.Bundled(BundledModel.Name) : ModelFolder.Resolve(path, "--autoencoder");
        if (folder != null)
        {
            path = folder.AutoencoderPath;
            cli.Console.MarkupLine($"autoencoder of [bold]{Markup.Escape(folder.Name)}[/] ({Markup.Escape(folder.Directory)})");
        }
        return (Autoencoder.Load(p, path!), folder?.Background);
    }
}

/// <summary>A loaded model and the service over it; disposing frees the networks.</summary>
internal sealed class LoadedGenerationModel(GenerationService service, string name) : IDisposable
{
    public GenerationService Service => service;
    public string Name => name;

    public void Dispose()
    {
        service.Model.Dispose();
        service.Autoencoder?.Dispose();
        service.Statistics?.Dispose();
    }
}
