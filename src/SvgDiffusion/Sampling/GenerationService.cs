using System.Diagnostics;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Sampling;

/// <summary>What a generation produced: latents in the model's space, images in [-1, 1] when decoded, and how to lay them out.</summary>
public sealed class GenerationResult : IDisposable
{
    public required Tensor Latents { get; init; }
    public Tensor? Images { get; init; }
    public required int[] Labels { get; init; }
    /// <summary>One name per grid row (one row per class), or null.</summary>
    public IReadOnlyList<string>? RowNames { get; init; }
    /// <summary>Images per grid row when there are no row names; 0 for a square grid.</summary>
    public int Columns { get; init; }
    public TimeSpan Elapsed { get; init; }

    /// <summary>The images as one grid [3, H, W]: labelled rows, a strip or a square.</summary>
    public Tensor Grid()
    {
        if (Images is null) throw new SvgdException("nothing was decoded");
        if (RowNames != null) return BitmapFont.LabelledRows(Images, RowNames);
        int n = (int)Images.shape[0];
        return ImageFiles.Grid(Images, Columns > 0 ? Columns : (int)Math.Ceiling(Math.Sqrt(n)));
    }

    public void Dispose()
    {
        Latents.Dispose();
        Images?.Dispose();
    }
}

/// <summary>
/// The one generation code path of the CLI, the server and the tests: a DiT (with its latent statistics and,
/// for images, its autoencoder) loaded once, and requests turned into images. Noise of sample i depends only
/// on (seed, i), so a request's results do not depend on the batch size or on what else was asked.
/// Not thread-safe: a caller with several clients queues them (the server runs one request at a time).
/// </summary>
public sealed class GenerationService
{
    public DiT Model { get; }
    public ILatentAutoencoder? Autoencoder { get; }
    public LatentStatistics? Statistics { get; }
    public ClassLabels Classes { get; }
    /// <summary>The precision the networks run in (see <see cref="SvgGenerator.SetPrecision"/>).</summary>
    public ScalarType Precision { get; }
    /// <summary>Image edits with the same autoencoder, or null without one.</summary>
    public SemanticEditor? Editor { get; }
    /// <summary>Samples per solver pass (results do not depend on it); 0, the default, picks it from the latent grid (<see cref="PassSize"/>).</summary>
    public int BatchSize
    {
        get => _batchSize;
        set => _batchSize = value >= 0 ? value : throw new SvgdException($"batch size must be positive (or 0: automatic), got {value}");
    }
    int _batchSize;

    /// <summary>Latent tokens per solver pass that the automatic batch aims for (twice that many rows with guidance).</summary>
    public const int TokensPerPass = 4096;

    /// <summary>
    /// Samples per pass on an h x w grid: <see cref="BatchSize"/> when set, else as many as make
    /// <see cref="TokensPerPass"/> tokens, at least 16 (16 at 256 px). Each DiT op has a fixed cost per
    /// call, which dominates on small grids: the bundled model's 80 samples (4x4 grids) took 125 passes
    /// of 26 ms in batches of 16 and take 25 of 92 ms in one batch (2 cores, bf16).
    /// </summary>
    public int PassSize(int gridH, int gridW) => BatchSize > 0 ? BatchSize : Math.Max(16, TokensPerPass / Math.Max(1, gridH * gridW));

    public GenerationService(DiT model, ILatentAutoencoder? autoencoder, LatentStatistics? statistics, IReadOnlyList<string>? classNames, ScalarType precision)
    {
        if (autoencoder != null && autoencoder.LatentChannels != model.Config.InChannels)
            throw new SvgdException($"the autoencoder makes {autoencoder.LatentChannels}-channel latents but the DiT models {model.Config.InChannels}");
        if (statistics != null && statistics.Channels != model.Config.InChannels)
            throw new SvgdException($"the latent statistics have {statistics.Channels} channels, the DiT {model.Config.InChannels}");
        Model = model;
        Autoencoder = autoencoder;
        Statistics = statistics;
        Classes = new ClassLabels(model.Config.NumClasses, classNames);
        Precision = precision;
        // Once, here: converting the weights is not free, and a bf16 DiT cannot go back (see DiT.SetComputePrecision).
        model.SetComputePrecision(precision);
        autoencoder?.Module.to(precision);
        // Editing splits the latent into semantic and detail channels: SVG autoencoders only, not the VAE baseline.
        Editor = autoencoder is SvgAutoencoder svg ? new SemanticEditor(svg, precision) : null;
    }

    /// <summary>
    /// The colour transparent pixels of an input image are composited onto: the background the model was trained
    /// on (<c>svgd.background</c> in the DiT's metadata, written by <c>svgd export --background</c>), or null
    /// (alpha dropped, as PIL's convert("RGB")).
    /// </summary>
    public (byte R, byte G, byte B)? Background { get; init; }

    /// <summary>Metadata key of <see cref="Background"/>: "r,g,b".</summary>
    public const string BackgroundMetadataKey = "svgd.background";

    /// <summary>Validates a request against this model (see <see cref="GenerationRequest.Resolve"/>) and its loaded precision.</summary>
    public GenerationPlan Plan(GenerationRequest request, GenerationLimits limits, string prefix = "", bool unconditionalByDefault = false, string classesField = "classes")
    {
        var plan = request.Resolve(Classes, limits, prefix, unconditionalByDefault, classesField);
        if (plan.Precision is ScalarType p && p != Precision)
            throw new SvgdException($"{prefix}precision {request.Precision} means {Runtime.Precision.Name(p)} here, but the model is loaded in {Runtime.Precision.Name(Precision)}; leave {prefix}precision out or restart with that precision");
        return plan;
    }

    SvgGenerator Generator(Transport.Sampler sampler, Transport.GuidanceSchedule guidance, int? gridH = null, int? gridW = null) =>
        new SvgGenerator(Model, sampler, guidance, Statistics, Autoencoder)
        {
            GridH = gridH ?? Model.Config.InputSize,
            GridW = gridW ?? Model.Config.InputSize,
        }.SetPrecision(Precision);

    /// <summary>Units of work <see cref="Generate"/> reports: a solver step of one sample, and the decoding of one.</summary>
    public static long Work(int count, int steps, bool decode) => (long)count * steps + (decode ? count : 0);

    /// <summary>
    /// Refuses, before sampling, a run whose latents and images would not fit in the memory this machine has
    /// available (<see cref="Runtime.ResourceBudget"/>): every result is kept until the grid is made, the latents
    /// twice (passes and their concatenation), the images three times (passes, concatenation, grid). The CLI and
    /// the server reach this through <see cref="Generate"/>, <see cref="Vary"/> and <see cref="InterpolateSeeds"/>.
    /// </summary>
    /// <param name="option">The field that sets the count ("n", "frames"), named with <paramref name="prefix"/>.</param>
    public void EnsureFits(int count, int gridH, int gridW, bool decode, string prefix = "", string option = "n")
    {
        Runtime.ResourceBudget.RequireMemory($"{count:N0} {(option == "frames" ? "frames" : "samples")} kept until written",
            EstimatedBytes(count, gridH, gridW, decode), prefix + option);
    }

    /// <summary>Peak bytes a run of <paramref name="count"/> samples keeps (see <see cref="EnsureFits"/>), plus one pass's activations.</summary>
    public long EstimatedBytes(int count, int gridH, int gridW, bool decode)
    {
        int side = Autoencoder?.ImageSize ?? 0;
        long latent = 4L * Model.Config.InChannels * gridH * gridW, image = decode ? 4L * 3 * side * side : 0;
        // One pass: the DiT's widest activations (MLP 4x hidden, twice the rows with guidance) over its tokens, about 24 values per token channel.
        long pass = 24L * 4 * 2 * PassSize(gridH, gridW) * gridH * gridW * Model.Config.HiddenSize;
        return (long)count * (2 * latent + 3 * image) + pass;
    }

    /// <summary>
    /// Samples the plan's labels from noise (drawn from the seed, or <paramref name="initialNoise"/> tokens
    /// [B, T, C] on a <paramref name="grid"/>), and decodes them when <paramref name="decode"/>.
    /// </summary>
    /// <param name="progress">Told (done, total) in units of <see cref="Work"/>.</param>
    public GenerationResult Generate(GenerationPlan plan, bool decode = true, Tensor? initialNoise = null, (int H, int W)? grid = null,
        Action<long, long>? progress = null, CancellationToken cancel = default)
    {
        if (decode && Autoencoder == null) throw new SvgdException("decoding needs an autoencoder");
        int count = plan.Count;
        if (initialNoise is not null && initialNoise.shape[0] != count)
            throw new SvgdException($"the initial noise holds {initialNoise.shape[0]} samples but {count} labels were given");
        var (h, w) = grid ?? (Model.Config.InputSize, Model.Config.InputSize);
        EnsureFits(count, h, w, decode, plan.Prefix);
        var generator = Generator(plan.Sampler, plan.Guidance, h, w);
        return Run(generator, plan, count, decode, progress, cancel, (s, m) =>
            initialNoise is not null ? initialNoise.narrow(0, s, m).alias() : torch.stack(Enumerable.Range(s, m).Select(i => generator.Noise(plan.Seed, i)).ToArray()),
            startTime: 0, rowNames: plan.Rows > 0 ? RowNames(plan) : null, columns: 0);
    }

    /// <summary>
    /// SDEdit variations of one image: its latent is moved along the flow's straight path towards noise
    /// (sample i's, from the seed) to the start time of <paramref name="strength"/> (<see cref="StartTime"/>), and the
    /// DiT integrates it back to t = 1 under the plan's labels. Strength 1 starts from pure noise (plain sampling);
    /// small strengths keep the layout and change details.
    /// </summary>
    public GenerationResult Vary(Tensor rgb, double strength, GenerationPlan plan, Action<long, long>? progress = null, CancellationToken cancel = default)
    {
        var editor = Editor ?? throw new SvgdException(Autoencoder == null ? "variations need an autoencoder" : "variations need an SVG autoencoder (this one is a VAE)");
        GenerationRequest.ValidateStrength(strength);
        double t = StartTime(strength, plan.Sampler.TimestepShift);
        EnsureFits(plan.Count, Model.Config.InputSize, Model.Config.InputSize, decode: true, plan.Prefix);
        var generator = Generator(plan.Sampler, plan.Guidance);
        using var start = generator.Encode(editor.Prepare(new[] { rgb }));
        if (start.shape[2] != generator.GridH || start.shape[3] != generator.GridW)
            throw new SvgdException($"the autoencoder's {start.shape[2]}x{start.shape[3]} latent grid does not match the DiT's {generator.GridH}x{generator.GridW}");
        using var x1 = DiT.LatentToTokens(start);
        return Run(generator, plan, plan.Count, decode: true, progress, cancel, (s, m) =>
        {
            using var scope = torch.NewDisposeScope();
            var z0 = torch.stack(Enumerable.Range(s, m).Select(i => generator.Noise(plan.Seed, i)).ToArray());
            // t = 0 is plain sampling: the noise itself, so the result matches Generate bit for bit.
            var xt = t == 0 ? z0 : (1 - t) * z0 + t * x1.expand(m, -1, -1);
            return xt.MoveToOuterDisposeScope();
        }, startTime: t, rowNames: null, columns: 0);
    }

    /// <summary>
    /// The flow time an SDEdit run of <paramref name="strength"/> starts from: the point of the sampling schedule
    /// (shifted by <paramref name="shift"/>) after a fraction 1 - strength of it, which is what strength means in
    /// diffusers' img2img (strength 0.5 skips the first half of the schedule). The sampler spends most of its
    /// schedule near noise (shift 0.15), where the image's content is decided; a straight t = 1 - strength left
    /// strength 0.5 at t = 0.5, after the content was decided, and returned copies of the input.
    /// </summary>
    public static double StartTime(double strength, double shift) => RectifiedFlow.Shift(1 - strength, shift);

    /// <summary>
    /// Recolouring, SVG's own edit: keeps <paramref name="sourceRgb"/>'s semantic (frozen-encoder) channels and
    /// generates only its residual (colour, texture) channels with the DiT, by inpainting in channel space
    /// (<see cref="Transport.ChannelInpainting"/>): at every solver step the semantic channels are replaced by the
    /// source's, moved to the current flow time. The residual channels start from <paramref name="likeRgb"/>'s
    /// (or, without one, the source's own) noised to the start time of <paramref name="strength"/> (as in
    /// <see cref="Vary"/>), so the colours come from the reference and the DiT fits them to the source's shape;
    /// the two images need not be aligned. Strength 1 starts the residual channels from pure noise (colours
    /// drawn afresh under the plan's labels). Sample i's noise depends on (seed, i).
    /// </summary>
    /// <param name="holdSemantic">False: no inpainting, every channel is free (SDEdit of the mixed latent: the ablation that shows what holding the semantic channels does).</param>
    public GenerationResult Recolor(Tensor sourceRgb, Tensor? likeRgb, double strength, GenerationPlan plan, Action<long, long>? progress = null, CancellationToken cancel = default,
        bool holdSemantic = true)
    {
        var editor = Editor ?? throw new SvgdException(Autoencoder == null ? "recolouring needs an autoencoder" : "recolouring needs an SVG autoencoder (this one is a VAE, whose latent has no semantic channels)");
        if (!editor.Autoencoder.Config.HasResidual) throw new SvgdException("recolouring needs residual channels; this autoencoder has frozen features only");
        GenerationRequest.ValidateStrength(strength);
        double t = StartTime(strength, plan.Sampler.TimestepShift);
        EnsureFits(plan.Count, Model.Config.InputSize, Model.Config.InputSize, decode: true, plan.Prefix);
        var generator = Generator(plan.Sampler, plan.Guidance);
        var inputs = likeRgb is null ? new[] { sourceRgb } : new[] { sourceRgb, likeRgb };
        using var encoded = generator.Encode(editor.Prepare(inputs));
        if (encoded.shape[2] != generator.GridH || encoded.shape[3] != generator.GridW)
            throw new SvgdException($"the autoencoder's {encoded.shape[2]}x{encoded.shape[3]} latent grid does not match the DiT's {generator.GridH}x{generator.GridW}");
        int semantic = editor.SemanticChannels, channels = (int)encoded.shape[1];
        using var tokens = DiT.LatentToTokens(encoded);
        using var source = tokens.narrow(0, 0, 1);
        using var start = torch.cat(new[] { source.narrow(2, 0, semantic), tokens.narrow(0, tokens.shape[0] - 1, 1).narrow(2, semantic, channels - semantic) }, 2);
        using var noise = torch.stack(Enumerable.Range(0, plan.Count).Select(i => generator.Noise(plan.Seed, i)).ToArray());
        using var known = source.expand(plan.Count, -1, -1).contiguous();
        using var inpainting = new Transport.ChannelInpainting(known, noise, Transport.ChannelInpainting.Leading(semantic, channels));
        return Run(generator, plan, plan.Count, decode: true, progress, cancel, (s, m) =>
        {
            using var scope = torch.NewDisposeScope();
            var z0 = noise.narrow(0, s, m);
            var xt = t == 0 ? z0.clone() : (1 - t) * z0 + t * start.expand(m, -1, -1);
            return xt.MoveToOuterDisposeScope();
        }, startTime: t, rowNames: null, columns: 0, constraint: holdSemantic ? s => (x, time) => inpainting.Apply(x, time, s) : null);
    }

    /// <summary>
    /// <paramref name="frames"/> samples of one label whose noises walk the sphere from sample 0 of
    /// <paramref name="seedA"/> to sample 0 of <paramref name="seedB"/>: a smooth morph between two samples.
    /// The plan's first label is used for every frame.
    /// </summary>
    public GenerationResult InterpolateSeeds(long seedA, long seedB, int frames, GenerationPlan plan, Action<long, long>? progress = null, CancellationToken cancel = default)
    {
        if (plan.Labels.Distinct().Count() != 1) throw new SvgdException($"an interpolation between two seeds samples one class, got {plan.Labels.Distinct().Count()}");
        if (frames < 2) throw new SvgdException($"{plan.Prefix}frames must be at least 2 (both ends of the path), got {frames}");
        EnsureFits(frames, Model.Config.InputSize, Model.Config.InputSize, Autoencoder != null, plan.Prefix, "frames");
        var generator = Generator(plan.Sampler, plan.Guidance);
        using var a = generator.Noise(seedA, 0);
        using var b = generator.Noise(seedB, 0);
        using var path = LatentPath.Slerp(a, b, LatentPath.Fractions(frames));
        var framePlan = plan with { Labels = Enumerable.Repeat(plan.Labels[0], frames).ToArray(), Rows = 0 };
        return Run(generator, framePlan, frames, decode: Autoencoder != null, progress, cancel, (s, m) => path.narrow(0, s, m).alias(),
            startTime: 0, rowNames: null, columns: frames);
    }

    GenerationResult Run(SvgGenerator generator, GenerationPlan plan, int count, bool decode, Action<long, long>? progress, CancellationToken cancel,
        Func<int, int, Tensor> start, double startTime, IReadOnlyList<string>? rowNames, int columns, Func<int, Func<Tensor, double, Tensor>>? constraint = null)
    {
        cancel.ThrowIfCancellationRequested();
        var sw = Stopwatch.StartNew();
        long total = Work(count, plan.Sampler.Steps, decode), done = 0;
        progress?.Invoke(0, total);
        var latents = new List<Tensor>();
        var images = new List<Tensor>();
        try
        {
            int batch = PassSize(generator.GridH, generator.GridW);
            for (int s = 0; s < count; s += batch)
            {
                using var scope = torch.NewDisposeScope();
                int m = Math.Min(batch, count - s);
                var z = start(s, m);
                var latent = generator.SampleLatents(z, plan.Labels.Skip(s).Take(m).ToList(), _ => progress?.Invoke(done += m, total), startTime, cancel, constraint?.Invoke(s));
                latents.Add(latent.MoveToOuterDisposeScope());
                if (decode)
                {
                    cancel.ThrowIfCancellationRequested();
                    images.Add(generator.Decode(latent).MoveToOuterDisposeScope());
                    progress?.Invoke(done += m, total);
                }
            }
            return new GenerationResult
            {
                Latents = torch.cat(latents, 0),
                Images = decode ? torch.cat(images, 0) : null,
                Labels = plan.Labels,
                RowNames = rowNames,
                Columns = columns,
                Elapsed = sw.Elapsed,
            };
        }
        finally
        {
            foreach (var t in latents.Concat(images)) t.Dispose();
        }
    }

    IReadOnlyList<string> RowNames(GenerationPlan plan)
    {
        int perRow = plan.Count / plan.Rows;
        return Enumerable.Range(0, plan.Rows).Select(r => Classes.Name(plan.Labels[r * perRow])).ToList();
    }
}
