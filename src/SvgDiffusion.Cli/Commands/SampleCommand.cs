using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Sampling;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class SampleCommand
{
    public static Command Create(CliContext cli)
    {
        var ditOptions = new DiTOptions();
        ditOptions.Model.Required = false;
        ditOptions.Model.Description += " Default: the bundled Fashion-MNIST model (with its autoencoder and statistics).";
        var ae = new AutoencoderOptions();
        ae.Autoencoder.Required = false;
        var classes = new Option<string?>("--classes") { Description = "Comma-separated class indices; --n samples each, one grid row per class." };
        var labels = new Option<string?>("--labels") { Description = "Comma-separated label of every sample (instead of --classes); num_classes is the null (unconditional) label." };
        var n = new Option<int>("--n") { Description = $"Samples per class with --classes; otherwise the number of samples, with uniformly random labels (at most {MaxSamples:N0}; the bundled model without --n: one row of 8 per class).", DefaultValueFactory = _ => 8 };
        var output = new Option<string?>("--out") { Description = "PNG grid of the decoded samples." }.OutputFile();
        var outDir = new Option<string?>("--out-dir") { Description = "Folder for one PNG per sample." };
        var batch = new Option<int>("--batch-size") { Description = "Samples per solver pass.", DefaultValueFactory = _ => 16 };
        var initNoise = new Option<string?>("--init-noise") { Description = "Start from this noise (safetensors; tokens [B, T, C] or a latent [B, C, h, w]) instead of drawing it." };
        var key = new Option<string>("--key") { Description = "Name of the tensor in --init-noise.", DefaultValueFactory = _ => "z" };
        var latentOut = new Option<string?>("--latent-out") { Description = "Also write the sampled latents [B, C, h, w] in the model's (normalised) space, before de-normalisation." };
        var noDecode = new Option<bool>("--no-decode") { Description = "Stop after sampling (with --latent-out); no autoencoder needed." };
        var precision = PrecisionOption.Create();
        var cmd = new Command("sample", "Generate images: sample SVG latents with the DiT (rectified flow, Euler/Heun, classifier-free guidance) and decode them.")
        { classes, labels, n, output, outDir, batch, initNoise, key, latentOut, noDecode, precision };
        foreach (var o in ditOptions.All.Concat(ae.All)) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var console = cli.Console;
            if (p.GetValue(n) > MaxSamples) throw new SvgdException($"--n {p.GetValue(n)} is more than {MaxSamples:N0} samples; use 'svgd sample-eval' for large sets");
            bool bundled = p.GetValue(ditOptions.Model) == null;
            if (bundled) BundledModel.EnsurePresent();
            string modelPath = ditOptions.ModelPath(p, bundled ? BundledModel.DiTPath : null);
            string? aePath = p.GetValue(ae.Autoencoder) ?? (bundled ? BundledModel.AutoencoderPath : null);
            bool decode = !p.GetValue(noDecode);
            string? gridOut = p.GetValue(output) ?? (bundled && p.GetValue(outDir) == null ? "samples.png" : null);
            if (decode && gridOut == null && p.GetValue(outDir) == null) throw new SvgdException("give --out (grid) and/or --out-dir (one PNG each), or --no-decode with --latent-out");
            if (!decode && p.GetValue(latentOut) == null) throw new SvgdException("--no-decode needs --latent-out");
            if (decode && aePath == null) throw new SvgdException("decoding needs --autoencoder (or use --no-decode with --latent-out)");
            if (bundled) console.MarkupLine($"bundled model [bold]{BundledModel.Name}[/] ({Markup.Escape(BundledModel.Directory)})");
            using var dit = ditOptions.LoadModel(p, modelPath);
            var dc = dit.Config;
            var solver = ditOptions.CreateSampler(p);
            var schedule = ditOptions.CreateGuidance(p);

            var classNames = BundledModel.ClassNames(modelPath);
            // The bundled model's default is a row per class; an explicit --n without --classes is the total, as the help says.
            bool nGiven = p.GetResult(n) is { Implicit: false };
            string? classArg = p.GetValue(classes) ?? (bundled && p.GetValue(labels) == null && !nGiven ? string.Join(",", Enumerable.Range(0, dc.NumClasses)) : null);
            var (labelList, rows) = Labels(classArg, p.GetValue(labels), p.GetValue(n), dc.NumClasses, p.GetValue(ditOptions.Seed));
            int count = labelList.Length;
            int h = dc.InputSize, w = dc.InputSize;
            Tensor? given = null;
            if (p.GetValue(initNoise) is string noisePath)
            {
                string k = p.GetValue(key)!;
                given = SafeTensors.Load(noisePath, new[] { k })[k].to(ScalarType.Float32);
                if (given.dim() == 4) { (h, w) = ((int)given.shape[2], (int)given.shape[3]); given = DiT.LatentToTokens(given); }
                if (given.dim() != 3 || given.shape[2] != dc.InChannels)
                    throw new SvgdException($"{noisePath}: '{k}' must be tokens [B, T, {dc.InChannels}] or a latent [B, {dc.InChannels}, h, w], got {Checkpoint.Shape(given.shape)}");
                if (given.shape[1] != (long)h * w) { int side = (int)Math.Round(Math.Sqrt(given.shape[1])); (h, w) = (side, side); }
                if (given.shape[0] != count)
                {
                    if (p.GetValue(labels) != null || p.GetValue(classes) != null)
                        throw new SvgdException($"{noisePath}: '{k}' holds {given.shape[0]} samples but {count} labels were given");
                    count = (int)given.shape[0];
                    labelList = Enumerable.Range(0, count).Select(i => labelList[i % labelList.Length]).ToArray();
                }
            }

            using var norm = ditOptions.LoadStatistics(p, dc.InChannels, modelPath, bundled ? BundledModel.StatisticsPath : null);
            using var aeModel = decode ? ae.LoadAny(p, aePath) : null;
            if (aeModel != null && aeModel.LatentChannels != dc.InChannels)
                throw new SvgdException($"the autoencoder makes {aeModel.LatentChannels}-channel latents but the DiT models {dc.InChannels}");

            // Every latent and image is kept until the grid is written: refuse what cannot fit before sampling, not at the end.
            long bytes = (long)count * 4 * ((long)dc.InChannels * h * w + (aeModel != null ? 3L * aeModel.ImageSize * aeModel.ImageSize : 0));
            long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
            if (bytes > available / 2)
                throw new SvgdException($"--n: {count} samples need about {bytes / (1 << 20):N0} MiB kept in memory, more than half of the {available / (1 << 20):N0} MiB available; sample in smaller runs (--seed/--n) or use 'svgd sample-eval'");
            var dtype = PrecisionOption.Parse(p, precision);
            console.MarkupLine($"DiT {dc.Depth}x{dc.HiddenSize}, {count} samples, {Markup.Escape(solver.ToString())}, {Markup.Escape(schedule.ToString())}, {Runtime.Precision.Name(dtype)}");
            int bs = p.GetValue(batch);
            long seedValue = p.GetValue(ditOptions.Seed);
            var generator = new SvgGenerator(dit, solver, schedule, norm, aeModel) { GridH = h, GridW = w }.SetPrecision(dtype);
            var latents = new List<Tensor>();
            var images = new List<Tensor>();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            console.Progress().AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("sampling", maxValue: (double)count * solver.Steps + (decode ? count : 0));
                    for (int s = 0; s < count; s += bs)
                    {
                        using var scope = torch.NewDisposeScope();
                        int m = Math.Min(bs, count - s);
                        var z = given is not null ? given.narrow(0, s, m) : torch.stack(Enumerable.Range(s, m).Select(i => generator.Noise(seedValue, i)).ToArray());
                        var latent = generator.SampleLatents(z, labelList.Skip(s).Take(m).ToList(), _ => task.Increment(m));
                        latents.Add(latent.MoveToOuterDisposeScope());
                        if (aeModel != null)
                        {
                            images.Add(generator.Decode(latent).MoveToOuterDisposeScope());
                            task.Increment(m);
                        }
                    }
                });
            double secs = sw.Elapsed.TotalSeconds;
            if (p.GetValue(latentOut) is string lo)
            {
                using var all = torch.cat(latents, 0);
                SafeTensors.Save(lo, new Dictionary<string, Tensor> { ["latent"] = all, ["labels"] = torch.tensor(labelList.Select(l => (long)l).ToArray()) },
                    new Dictionary<string, string> { ["svgd.command"] = "sample", ["svgd.space"] = "normalised (before de-normalisation)" });
                console.MarkupLine($"wrote latents to [bold]{Markup.Escape(lo)}[/]");
            }
            if (images.Count > 0)
            {
                using var all = torch.cat(images, 0);
                if (p.GetValue(outDir) is string dir)
                    for (int i = 0; i < count; i++) ImageFiles.SavePng(all[i], Path.Combine(dir, $"{i:D6}-class{labelList[i]}.png"));
                if (gridOut is string gridPath)
                {
                    // One labelled row per class when classes were asked for; a square grid otherwise.
                    var rowNames = rows > 0 ? labelList.Where((_, i) => i % (count / rows) == 0).Select(l => classNames != null && l < classNames.Count ? classNames[l] : l.ToString()).ToList() : null;
                    using var grid = rowNames != null ? BitmapFont.LabelledRows(all, rowNames) : ImageFiles.Grid(all, (int)Math.Ceiling(Math.Sqrt(count)));
                    ImageFiles.SavePng(grid, gridPath);
                    console.MarkupLine($"wrote [bold]{Markup.Escape(gridPath)}[/]");
                }
                if (p.GetValue(outDir) is string d2) console.MarkupLine($"wrote {count} PNGs under [bold]{Markup.Escape(d2)}[/]");
            }
            console.MarkupLine($"{count} samples in {secs:F1} s ({secs / count:F2} s per image)");
            return 0;
        }));
        return cmd;
    }

    /// <summary>More samples than this are refused before any work; 'svgd sample-eval' streams larger sets.</summary>
    internal const int MaxSamples = 1_000_000;

    /// <summary>Per-sample labels and the number of grid rows (one per class with --classes; 0 for a square grid).</summary>
    internal static (int[] Labels, int Rows) Labels(string? classes, string? labels, int n, int numClasses, long seed)
    {
        if (classes != null && labels != null) throw new SvgdException("give either --classes or --labels, not both");
        int[] Parse(string s, string what, int max) =>
            s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x =>
                int.TryParse(x, out int v) && v >= 0 && v <= max ? v
                    : throw new SvgdException($"{what}: '{x}' is not a class index in 0..{max}")).ToArray();
        if (labels != null)
        {
            var list = Parse(labels, "--labels", numClasses);
            return list.Length <= MaxSamples ? (list, 0) : throw new SvgdException($"--labels gives {list.Length} samples, more than {MaxSamples:N0}");
        }
        if (n <= 0) throw new SvgdException("--n must be positive");
        if (n > MaxSamples) throw new SvgdException($"--n {n} is more than {MaxSamples:N0} samples; use 'svgd sample-eval' for large sets");
        if (classes != null)
        {
            var cls = Parse(classes, "--classes", numClasses - 1);
            if ((long)n * cls.Length > MaxSamples) throw new SvgdException($"--n {n} per class for {cls.Length} classes is more than {MaxSamples:N0} samples; use 'svgd sample-eval' for large sets");
            return (cls.SelectMany(c => Enumerable.Repeat(c, n)).ToArray(), cls.Length);
        }
        using var g = new Generator((ulong)(seed & long.MaxValue) ^ 0x5eed);
        using var r = torch.randint(0, numClasses, new long[] { n }, generator: g);
        return (r.data<long>().Select(x => (int)x).ToArray(), 0);
    }
}
