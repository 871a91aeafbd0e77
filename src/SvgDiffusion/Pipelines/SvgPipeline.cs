using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Pipelines;

/// <summary>
/// The library's one small entry point, in the spirit of diffusers' pipelines: load a model folder (a bundled
/// model's name or a folder written by <c>svgd export</c>) with <see cref="FromPretrained"/>, then generate,
/// vary, recolour, mix, encode and decode with image files in and <see cref="SvgImages"/> out. A thin layer over
/// <see cref="GenerationService"/> and its <see cref="SemanticEditor"/>, which do the work for the CLI and the
/// studio too: the same arguments give the same images as the matching <c>svgd</c> command.
/// Not thread-safe, as the service is not.
/// </summary>
/// <example>
/// <code>
/// using var pipe = SvgPipeline.FromPretrained("fashion-mnist");
/// using var samples = pipe.Generate(classes: new[] { "sneaker", "bag" }, perClass: 4, seed: 1);
/// samples.Save("samples.png");
/// </code>
/// </example>
public sealed class SvgPipeline : IDisposable
{
    readonly ModelFolder _folder;
    bool _disposed;

    SvgPipeline(ModelFolder folder, GenerationService service)
    {
        _folder = folder;
        Service = service;
    }

    /// <summary>
    /// Loads a model: a bundled model by name (<see cref="ModelFolder.BundledNames"/>, e.g. "fashion-mnist") or a
    /// folder written by <c>svgd export</c>, in <paramref name="precision"/> auto (bf16 where the CPU has native
    /// bf16, else fp32, as the CLI's <c>--precision auto</c>), fp32 or bf16. Anything else is one
    /// <see cref="SvgdException"/> line.
    /// </summary>
    public static SvgPipeline FromPretrained(string nameOrFolder, string precision = "auto")
    {
        ArgumentNullException.ThrowIfNull(nameOrFolder);
        // The request's own check, so the refusal is the one the CLI and the server give.
        var dtype = new GenerationRequest { Precision = precision ?? "auto" }.ResolvePrecision()!.Value;
        var folder = ModelFolder.Resolve(nameOrFolder, "model")
            ?? throw new SvgdException($"model {nameOrFolder}: a file, not a model folder; give a bundled model ({string.Join(", ", ModelFolder.BundledNames)}) or a folder written by 'svgd export'");
        return new SvgPipeline(folder, folder.Load(dtype));
    }

    /// <summary>The service underneath, for what this class does not cover (labels per sample, samplers, guidance schedules, progress).</summary>
    public GenerationService Service { get; }

    /// <summary>The model's name: the bundled name or the folder's.</summary>
    public string Name => _folder.Name;

    /// <summary>The folder the model was loaded from.</summary>
    public string Directory => _folder.Directory;

    /// <summary>The class names the model stores, or its indices ("0", "1", ...) when it stores none.</summary>
    public IReadOnlyList<string> ClassNames =>
        Service.Classes.Names ?? Enumerable.Range(0, Service.Classes.NumClasses).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList();

    /// <summary>Side of the square images the model makes (and that inputs are resized and centre-cropped to).</summary>
    public int ImageSize => Service.Autoencoder!.ImageSize;

    /// <summary>The precision the networks run in.</summary>
    public ScalarType Precision => Service.Precision;

    /// <summary>How large a request may be: the CLI's limits (a million samples, 1,000 steps), without its hints about options.</summary>
    public GenerationLimits Limits { get; set; } = new(GenerationLimits.Cli.MaxSamples, GenerationLimits.CliMaxSteps);

    /// <summary>
    /// Samples <paramref name="perClass"/> images of each class in <paramref name="classes"/> (names or indices;
    /// null: every class), one row per class, as <c>svgd sample</c> does. Sample i's noise depends only on
    /// (<paramref name="seed"/>, i).
    /// </summary>
    public SvgImages Generate(IEnumerable<string>? classes = null, int perClass = GenerationRequest.DefaultN, int steps = GenerationRequest.DefaultSteps,
        double cfg = GenerationRequest.DefaultCfg, long seed = 0)
    {
        var service = Live();
        var request = new GenerationRequest
        {
            Classes = classes?.ToList() ?? ClassNames.Select((_, i) => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList(),
            N = perClass,
            Steps = steps,
            Cfg = cfg,
            Seed = seed,
        };
        return SvgImages.From(service.Generate(Plan(request)));
    }

    /// <summary>
    /// <paramref name="n"/> SDEdit variations of an image file (<c>svgd vary</c>): its latent is noised to where the
    /// last <paramref name="strength"/> of the schedule starts and integrated back, towards class
    /// <paramref name="cls"/> (null: unconditional).
    /// </summary>
    public SvgImages Vary(string imagePath, double strength = GenerationRequest.DefaultStrength, int n = 4, string? cls = null,
        int steps = GenerationRequest.DefaultSteps, long seed = 0)
    {
        var service = Live();
        var plan = Plan(Request(cls, n, steps, seed), editing: true);
        using var rgb = LoadRgb(imagePath);
        return SvgImages.From(service.Vary(rgb, strength, plan));
    }

    /// <summary>
    /// Recolours an image file (<c>svgd recolor</c>): its semantic channels are kept and the residual (colour,
    /// texture) channels regenerated, starting from <paramref name="likePath"/>'s colours and/or steered to class
    /// <paramref name="cls"/>; give at least one of the two.
    /// </summary>
    public SvgImages Recolor(string imagePath, string? likePath = null, string? cls = null, double strength = GenerationRequest.DefaultRecolorStrength,
        int n = 1, int steps = GenerationRequest.DefaultSteps, long seed = 0)
    {
        var service = Live();
        if (likePath == null && cls == null) throw new SvgdException("give likePath (an image to take the colours from) or cls (new colours of a class), or both");
        var plan = Plan(Request(cls, n, steps, seed), editing: true);
        using var source = LoadRgb(imagePath);
        using var like = likePath != null ? LoadRgb(likePath) : null;
        return SvgImages.From(service.Recolor(source, like, strength, plan));
    }

    /// <summary>What <paramref name="semanticPath"/> shows with the colour and texture of <paramref name="detailPath"/> (<c>svgd mix</c>): one image.</summary>
    public SvgImages Mix(string semanticPath, string detailPath)
    {
        var editor = Editor("mixing");
        using var a = LoadRgb(semanticPath);
        using var b = LoadRgb(detailPath);
        return new SvgImages(editor.Mix(a, b));
    }

    /// <summary>The SVG latent [1, C, h, w] of an image file, unnormalised (the space <c>svgd encode</c> writes and <see cref="Decode"/> reads).</summary>
    public Tensor Encode(string imagePath)
    {
        var editor = Editor("encoding");
        using var rgb = LoadRgb(imagePath);
        using var input = editor.Prepare(new[] { rgb });
        return editor.Encode(input);
    }

    /// <summary>Images of unnormalised SVG latents [B, C, h, w] (or one [C, h, w]), as <c>svgd decode</c> makes them.</summary>
    public SvgImages Decode(Tensor latents)
    {
        ArgumentNullException.ThrowIfNull(latents);
        var editor = Editor("decoding");
        int c = editor.Autoencoder.Config.LatentChannels;
        if (latents.dim() is not (3 or 4) || latents.shape[latents.dim() == 4 ? 1 : 0] != c)
            throw new SvgdException($"decoding needs latents [B, {c}, h, w], got {Checkpoints.Checkpoint.Shape(latents.shape)}");
        using var batch = latents.dim() == 3 ? latents.unsqueeze(0) : latents.alias();
        return new SvgImages(editor.Decode(batch.to(ScalarType.Float32)));
    }

    GenerationRequest Request(string? cls, int n, int steps, long seed) =>
        new() { Classes = cls != null ? new[] { cls } : null, N = n, Steps = steps, Seed = seed };

    GenerationPlan Plan(GenerationRequest request, bool editing = false) =>
        editing ? Service.Plan(request, Limits, unconditionalByDefault: true, classesField: "class") : Service.Plan(request, Limits);

    Tensor LoadRgb(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var rgba = ImageFiles.LoadRgba(path);
        return ImageFiles.ToRgb(rgba, Service.Background);
    }

    SemanticEditor Editor(string what) =>
        Live().Editor ?? throw new SvgdException($"{what} needs an SVG autoencoder; model '{Name}' has a VAE");

    GenerationService Live() => _disposed ? throw new ObjectDisposedException(nameof(SvgPipeline)) : Service;

    /// <summary>Frees the networks.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Service.Model.Dispose();
        Service.Autoencoder?.Dispose();
        Service.Statistics?.Dispose();
    }
}

/// <summary>
/// Images a <see cref="SvgPipeline"/> made: [B, 3, S, S] in [-1, 1], with the grid's row names when there is one
/// row per class. Disposing frees them.
/// </summary>
public sealed class SvgImages : IDisposable
{
    /// <summary>Takes ownership of <paramref name="images"/> [B, 3, S, S] in [-1, 1].</summary>
    public SvgImages(Tensor images, IReadOnlyList<string>? rowNames = null, int columns = 0)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new SvgdException($"images must be [B, 3, S, S], got {Checkpoints.Checkpoint.Shape(images.shape)}");
        Images = images;
        RowNames = rowNames;
        Columns = columns;
    }

    internal static SvgImages From(GenerationResult result)
    {
        using (result)
            return new SvgImages(result.Images!.alias(), result.RowNames, result.Columns);
    }

    /// <summary>All images, [B, 3, S, S] in [-1, 1].</summary>
    public Tensor Images { get; }

    /// <summary>One name per grid row (one row per class), or null.</summary>
    public IReadOnlyList<string>? RowNames { get; }

    /// <summary>Images per grid row without row names; 0: a square grid.</summary>
    public int Columns { get; }

    public int Count => (int)Images.shape[0];

    /// <summary>Image <paramref name="i"/>, [3, S, S] in [-1, 1] (a view: dispose it, the images stay).</summary>
    public Tensor this[int i] => i >= 0 && i < Count ? Images[i] : throw new ArgumentOutOfRangeException(nameof(i), $"image {i} of {Count}");

    /// <summary>The image alone when there is one, else the grid (labelled rows, or a square), [3, H, W] in [-1, 1].</summary>
    public Tensor Grid()
    {
        if (Count == 1) return Images[0];
        if (RowNames != null) return BitmapFont.LabelledRows(Images, RowNames);
        return ImageFiles.Grid(Images, Columns > 0 ? Columns : (int)Math.Ceiling(Math.Sqrt(Count)));
    }

    /// <summary>Writes <see cref="Grid"/> as a PNG (the folder is created); returns the path.</summary>
    public string Save(string pngPath)
    {
        ArgumentNullException.ThrowIfNull(pngPath);
        using var picture = Grid();
        ImageFiles.SavePng(picture, pngPath);
        return pngPath;
    }

    /// <summary>Writes one PNG per image into <paramref name="folder"/> (000.png, 001.png, ...; with the row's name when there are rows); returns the paths.</summary>
    public IReadOnlyList<string> SaveEach(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        System.IO.Directory.CreateDirectory(folder);
        var paths = new List<string>(Count);
        int perRow = RowNames is { Count: > 0 } rows ? Count / rows.Count : 0;
        for (int i = 0; i < Count; i++)
        {
            string name = perRow > 0 ? $"{i:D3}-{Safe(RowNames![i / perRow])}.png" : $"{i:D3}.png";
            string path = Path.Combine(folder, name);
            using var image = Images[i];
            ImageFiles.SavePng(image, path);
            paths.Add(path);
        }
        return paths;
    }

    static string Safe(string name) => string.Concat(name.Select(ch => char.IsLetterOrDigit(ch) || ch is '-' or '_' ? ch : '_'));

    public void Dispose() => Images.Dispose();
}
