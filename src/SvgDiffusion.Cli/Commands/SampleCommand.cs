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
        var models = new GenerationModelOptions();
        var ditOptions = models.DiT;
        var classes = new Option<string?>("--classes") { Description = "Comma-separated classes, as indices or as the names the model stores (e.g. sneaker,bag); --n samples each, one grid row per class. Indices are positions in the model's class list (its training folders sorted by name), not a data set's own label ids: the bundled model's 0 is ankle-boot." };
        var labels = new Option<string?>("--labels") { Description = "Comma-separated label of every sample, indices or names (instead of --classes); num_classes (or 'null') is the null (unconditional) label." };
        var n = new Option<int>("--n") { Description = $"Samples per class with --classes; otherwise the number of samples, with uniformly random labels (at most {MaxSamples:N0}; the bundled model without --n: one row of 8 per class).", DefaultValueFactory = _ => 8 };
        var output = new Option<string?>("--out") { Description = "PNG grid of the decoded samples." }.OutputFile();
        var outDir = new Option<string?>("--out-dir") { Description = "Folder for one PNG per sample." };
        var batch = new Option<int>("--batch-size") { Description = $"Samples per solver pass. 0 (default): as many as make {GenerationService.TokensPerPass:N0} latent tokens, at least 16 (16 at 256 px; all 80 of the bundled model's default run).", DefaultValueFactory = _ => 0 }.ZeroMeansAutomatic();
        var initNoise = new Option<string?>("--init-noise") { Description = "Start from this noise (safetensors; tokens [B, T, C] or a latent [B, C, h, w]) instead of drawing it." };
        var key = new Option<string>("--key") { Description = "Name of the tensor in --init-noise.", DefaultValueFactory = _ => "z" };
        var latentOut = new Option<string?>("--latent-out") { Description = "Also write the sampled latents [B, C, h, w] in the model's (normalised) space, before de-normalisation." };
        var noDecode = new Option<bool>("--no-decode") { Description = "Stop after sampling (with --latent-out); no autoencoder needed." };
        var precision = PrecisionOption.Create();
        var cmd = new Command("sample", "Generate images: sample SVG latents with the DiT (rectified flow, Euler/Heun, classifier-free guidance) and decode them.")
        { classes, labels, n, output, outDir, batch, initNoise, key, latentOut, noDecode, precision };
        foreach (var o in models.Options()) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var console = cli.Console;
            // A model folder (a bundled one by name, the default, or one written by export) holds its autoencoder and class
            // names: its default is a row per class into samples.png; an explicit --n without --classes is the total, as the help says.
            bool bundled = models.Folder(p) != null;
            bool nGiven = p.GetResult(n) is { Implicit: false };
            bool allClasses = bundled && p.GetValue(classes) == null && p.GetValue(labels) == null && !nGiven;
            var request = ditOptions.Request(p, p.GetValue(classes), p.GetValue(labels), p.GetValue(n), p.GetValue(precision));
            request.Validate(ditOptions.Limits(p), "--");
            bool decode = !p.GetValue(noDecode);
            string? gridOut = p.GetValue(output) ?? (bundled && p.GetValue(outDir) == null ? "samples.png" : null);
            if (decode && gridOut == null && p.GetValue(outDir) == null) throw new SvgdException("give --out (grid) and/or --out-dir (one PNG each), or --no-decode with --latent-out");
            if (!decode && p.GetValue(latentOut) == null) throw new SvgdException("--no-decode needs --latent-out");
            if (decode && !bundled && p.GetValue(models.Autoencoder.Autoencoder) == null) throw new SvgdException("decoding needs --autoencoder (or use --no-decode with --latent-out)");
            var dtype = PrecisionOption.Parse(p, precision);
            using var loaded = models.Load(p, cli, dtype, needAutoencoder: decode, loadAutoencoder: decode, decodeOnly: true);
            var service = loaded.Service;
            service.BatchSize = p.GetValue(batch);
            var dc = service.Model.Config;
            if (allClasses) request = request with { Classes = Enumerable.Range(0, dc.NumClasses).Select(i => i.ToString()).ToList() };
            var plan = service.Plan(request, ditOptions.Limits(p), "--");

            int h = dc.InputSize, w = dc.InputSize;
            Tensor? given = null;
            if (p.GetValue(initNoise) is string noisePath)
            {
                string k = p.GetValue(key)!;
                given = SafeTensors.Load(noisePath, new[] { k })[k];
                LatentInput.Check(given, noisePath, k, null, cli.Warn);
                given = given.to(ScalarType.Float32);
                if (given.dim() == 4) { (h, w) = ((int)given.shape[2], (int)given.shape[3]); given = DiT.LatentToTokens(given); }
                if (given.dim() != 3 || given.shape[2] != dc.InChannels)
                    throw new SvgdException($"{noisePath}: '{k}' must be tokens [B, T, {dc.InChannels}] or a latent [B, {dc.InChannels}, h, w], got {Checkpoint.Shape(given.shape)}");
                if (given.shape[1] != (long)h * w) { int side = (int)Math.Round(Math.Sqrt(given.shape[1])); (h, w) = (side, side); }
                if (given.shape[0] != plan.Count)
                {
                    if (p.GetValue(labels) != null || p.GetValue(classes) != null)
                        throw new SvgdException($"{noisePath}: '{k}' holds {given.shape[0]} samples but {plan.Count} labels were given");
                    if (nGiven)
                        throw new SvgdException($"--n {p.GetValue(n)}: {noisePath} '{k}' holds {given.shape[0]} noise samples; leave --n out (the noise decides the count) or give {plan.Count}");
                    // The noise decides the count; the (random) labels repeat to cover it.
                    int count = (int)given.shape[0];
                    plan = plan with { Labels = Enumerable.Range(0, count).Select(i => plan.Labels[i % plan.Labels.Length]).ToArray(), Rows = 0 };
                }
            }
            console.MarkupLine($"DiT {dc.Depth}x{dc.HiddenSize}, {plan.Count} samples, {Markup.Escape(plan.Sampler.ToString())}, {Markup.Escape(plan.Guidance.ToString())}, {Runtime.Precision.Name(dtype)}");
            using var r = ProgressBars.Track(console, "sampling", GenerationService.Work(plan.Count, plan.Sampler.Steps, decode),
                report => service.Generate(plan, decode, given, (h, w), report));
            if (p.GetValue(latentOut) is string lo)
            {
                SafeTensors.Save(lo, new Dictionary<string, Tensor> { ["latent"] = r.Latents, ["labels"] = torch.tensor(r.Labels.Select(l => (long)l).ToArray()) },
                    new Dictionary<string, string> { ["svgd.command"] = "sample", ["svgd.space"] = "normalised (before de-normalisation)" });
                console.MarkupLine($"wrote latents to [bold]{Markup.Escape(lo)}[/]");
            }
            if (r.Images is Tensor all)
            {
                if (p.GetValue(outDir) is string dir)
                    for (int i = 0; i < plan.Count; i++) ImageFiles.SavePng(all[i], Path.Combine(dir, $"{i:D6}-class{r.Labels[i]}.png"));
                if (gridOut is string gridPath)
                {
                    using var grid = r.Grid();
                    ImageFiles.SavePng(grid, gridPath);
                    console.MarkupLine($"wrote [bold]{Markup.Escape(gridPath)}[/]");
                }
                if (p.GetValue(outDir) is string d2) console.MarkupLine($"wrote {plan.Count} PNGs under [bold]{Markup.Escape(d2)}[/]");
            }
            double secs = r.Elapsed.TotalSeconds;
            console.MarkupLine($"{plan.Count} samples in {secs:F1} s ({secs / plan.Count:F2} s per image)");
            return 0;
        }));
        return cmd;
    }

    /// <summary>More samples than this are refused before any work; 'svgd sample-eval' streams larger sets.</summary>
    static int MaxSamples => GenerationLimits.Cli.MaxSamples;
}
