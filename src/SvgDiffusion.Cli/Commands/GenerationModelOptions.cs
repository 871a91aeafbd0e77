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
        DiT.Model.Description += " Default: the bundled Fashion-MNIST model (with its autoencoder and statistics).";
        Autoencoder.Autoencoder.Required = false;
        Autoencoder.Autoencoder.Description += " Default with the bundled model: its autoencoder.";
    }

    /// <summary>Options to load the models, and the sampling options unless <paramref name="sampling"/> is false.</summary>
    public IEnumerable<Option> Options(bool sampling = true) =>
        (sampling ? DiT.All : DiT.Loading).Concat(Autoencoder.All);

    public bool IsBundled(ParseResult p) => p.GetValue(DiT.Model) == null;

    /// <summary>
    /// Loads the models and wraps them in the library's <see cref="GenerationService"/>, in precision
    /// <paramref name="dtype"/>. Without <paramref name="needAutoencoder"/> an autoencoder is loaded only when given.
    /// With <paramref name="decodeOnly"/> its frozen encoder is left out (sampling never encodes).
    /// </summary>
    public LoadedGenerationModel Load(ParseResult p, CliContext cli, ScalarType dtype, bool needAutoencoder = true, bool loadAutoencoder = true, bool decodeOnly = false)
    {
        bool bundled = IsBundled(p);
        if (bundled) BundledModel.EnsurePresent();
        string modelPath = DiT.ModelPath(p, bundled ? BundledModel.DiTPath : null);
        string? aePath = loadAutoencoder ? p.GetValue(Autoencoder.Autoencoder) ?? (bundled ? BundledModel.AutoencoderPath : null) : null;
        if (needAutoencoder && aePath == null) throw new SvgdException("decoding needs --autoencoder");
        if (bundled) cli.Console.MarkupLine($"bundled model [bold]{BundledModel.Name}[/] ({Markup.Escape(BundledModel.Directory)})");
        DiT? dit = null;
        LatentStatistics? stats = null;
        ILatentAutoencoder? ae = null;
        try
        {
            dit = DiT.LoadModel(p, modelPath);
            stats = DiT.LoadStatistics(p, dit.Config.InChannels, modelPath, bundled ? BundledModel.StatisticsPath : null);
            ae = aePath != null ? Autoencoder.LoadAny(p, aePath, decodeOnly) : null;
            var service = new GenerationService(dit, ae, stats, BundledModel.ClassNames(modelPath), dtype);
            return new LoadedGenerationModel(service, bundled ? BundledModel.Name : Path.GetFileName(modelPath));
        }
        catch
        {
            dit?.Dispose(); stats?.Dispose(); ae?.Dispose();
            throw;
        }
    }

    /// <summary>The autoencoder alone (mix, interpolating images): --autoencoder, else the bundled one.</summary>
    public SvgAutoencoder LoadAutoencoderOnly(ParseResult p, CliContext cli)
    {
        string? path = p.GetValue(Autoencoder.Autoencoder);
        if (path == null)
        {
            BundledModel.EnsurePresent();
            path = BundledModel.AutoencoderPath;
            cli.Console.MarkupLine($"bundled autoencoder [bold]{BundledModel.Name}[/] ({Markup.Escape(BundledModel.Directory)})");
        }
        return Autoencoder.Load(p, path);
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
