using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class SampleCommand
{
    public static Command Create(CliContext cli)
    {
        var model = new Option<string>("--model") { Description = "SVG diffusion transformer: the released .pt ({\"ema\": ...}), or a .safetensors written by svgd (its EMA weights).", Required = true };
        var ditPreset = new Option<string?>("--dit-preset") { Description = $"DiT architecture: {string.Join(", ", DiTPresets.Names)} (default: the file's config, else inferred from its shapes)." };
        var ditConfig = new Option<string?>("--dit-config") { Description = "DiT architecture as JSON (the reference's names, e.g. its 'model' section)." };
        var ae = new AutoencoderOptions();
        ae.Autoencoder.Required = false;
        var stats = new Option<string?>("--stats") { Description = "Latent normalisation statistics (the released dinov3_sp_stats.pt, or from 'svgd latent-stats'); default: those stored in --model." };
        var noStats = new Option<bool>("--no-stats") { Description = "Sample directly in the model's space: no de-normalisation before decoding." };
        var classes = new Option<string?>("--classes") { Description = "Comma-separated class indices; --n samples each, one grid row per class." };
        var labels = new Option<string?>("--labels") { Description = "Comma-separated label of every sample (instead of --classes); num_classes is the null (unconditional) label." };
        var n = new Option<int>("--n") { Description = "Samples per class with --classes; otherwise the number of samples, with uniformly random labels.", DefaultValueFactory = _ => 8 };
        var steps = new Option<int>("--steps") { Description = "Solver steps (1-25 typical; SVG is good at 5).", DefaultValueFactory = _ => 25 };
        var cfg = new Option<double>("--cfg") { Description = "Classifier-free guidance scale (1: none).", DefaultValueFactory = _ => 1.5 };
        var guidance = new Option<string>("--guidance") { Description = "Guidance schedule: constant, late, linear, early-<t>, cfg_star-<k>-<r>.", DefaultValueFactory = _ => "constant" };
        var shift = new Option<double>("--shift") { Description = "Timestep shift of the schedule (reference sampler: 0.15).", DefaultValueFactory = _ => Sampler.DefaultShift };
        var sampler = new Option<string>("--sampler") { Description = "ODE solver: euler or heun.", DefaultValueFactory = _ => "euler" };
        var seed = new Option<long>("--seed") { Description = "Seed; sample i's noise depends on (seed, i) only, so it is the same at any batch size.", DefaultValueFactory = _ => 0 };
        var output = new Option<string?>("--out") { Description = "PNG grid of the decoded samples." };
        var outDir = new Option<string?>("--out-dir") { Description = "Folder for one PNG per sample." };
        var batch = new Option<int>("--batch-size") { Description = "Samples per solver pass.", DefaultValueFactory = _ => 16 };
        var initNoise = new Option<string?>("--init-noise") { Description = "Start from this noise (safetensors; tokens [B, T, C] or a latent [B, C, h, w]) instead of drawing it." };
        var key = new Option<string>("--key") { Description = "Name of the tensor in --init-noise.", DefaultValueFactory = _ => "z" };
        var latentOut = new Option<string?>("--latent-out") { Description = "Also write the sampled latents [B, C, h, w] in the model's (normalised) space, before de-normalisation." };
        var noDecode = new Option<bool>("--no-decode") { Description = "Stop after sampling (with --latent-out); no autoencoder needed." };
        var cmd = new Command("sample", "Generate images: sample SVG latents with the DiT (rectified flow, Euler/Heun, classifier-free guidance) and decode them.")
        { model, ditPreset, ditConfig, stats, noStats, classes, labels, n, steps, cfg, guidance, shift, sampler, seed, output, outDir, batch, initNoise, key, latentOut, noDecode };
        foreach (var o in ae.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var console = cli.Console;
            bool decode = !p.GetValue(noDecode);
            if (decode && p.GetValue(output) == null && p.GetValue(outDir) == null) throw new SvgdException("give --out (grid) and/or --out-dir (one PNG each), or --no-decode with --latent-out");
            if (!decode && p.GetValue(latentOut) == null) throw new SvgdException("--no-decode needs --latent-out");
            if (decode && p.GetValue(ae.Autoencoder) == null) throw new SvgdException("decoding needs --autoencoder (or use --no-decode with --latent-out)");
            string modelPath = p.GetValue(model)!;
            using var dit = DiTCheckpoint.Load(modelPath, ResolveDiT(p, ditPreset, ditConfig));
            dit.eval();
            var dc = dit.Config;
            var solver = Sampler.Create(p.GetValue(sampler)!, p.GetValue(steps), p.GetValue(shift));
            var schedule = GuidanceSchedule.Parse(p.GetValue(cfg), p.GetValue(guidance)!);

            var (labelList, rows) = Labels(p.GetValue(classes), p.GetValue(labels), p.GetValue(n), dc.NumClasses, p.GetValue(seed));
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

            LatentStatistics? norm = null;
            if (!p.GetValue(noStats))
            {
                string statsPath = p.GetValue(stats) ?? modelPath;
                try { norm = LatentStatistics.Load(statsPath); }
                catch (SvgdException) when (p.GetValue(stats) == null)
                {
                    throw new SvgdException($"{modelPath}: holds no latent statistics; give --stats (e.g. the released dinov3_sp_stats.pt) or --no-stats");
                }
                if (norm.Channels != dc.InChannels) throw new SvgdException($"{statsPath}: statistics have {norm.Channels} channels, the model {dc.InChannels}");
            }
            using var aeModel = decode ? ae.Load(p) : null;
            if (aeModel != null && aeModel.Config.LatentChannels != dc.InChannels)
                throw new SvgdException($"the autoencoder makes {aeModel.Config.LatentChannels}-channel latents but the DiT models {dc.InChannels}");

            console.MarkupLine($"DiT {dc.Depth}x{dc.HiddenSize}, {count} samples, {Markup.Escape(solver.ToString())}, {Markup.Escape(schedule.ToString())}");
            int bs = Math.Max(1, p.GetValue(batch));
            long seedValue = p.GetValue(seed);
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
                        using var _ = torch.inference_mode();
                        int m = Math.Min(bs, count - s);
                        var z = given is not null ? given.narrow(0, s, m) : torch.stack(Enumerable.Range(s, m).Select(i =>
                        {
                            using var g = new Generator((ulong)((seedValue * 1_000_003L + i) & long.MaxValue));
                            return Sampler.Noise(new long[] { (long)h * w, dc.InChannels }, g);
                        }).ToArray());
                        var cond = torch.tensor(labelList.Skip(s).Take(m).Select(l => (long)l).ToArray());
                        var nul = torch.full(m, dit.NullLabel, dtype: ScalarType.Int64);
                        var tokens = solver.Sample(dit, z, cond, nul, schedule, _ => task.Increment(m));
                        var latent = DiT.TokensToLatent(tokens, h, w);
                        latents.Add(latent.MoveToOuterDisposeScope());
                        if (aeModel != null)
                        {
                            var x = aeModel.Decode(norm != null ? norm.Denormalize(latent) : latent).clamp(-1, 1);
                            images.Add(x.MoveToOuterDisposeScope());
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
                if (p.GetValue(output) is string gridPath)
                {
                    using var grid = ImageFiles.Grid(all, rows > 0 ? (count + rows - 1) / rows : (int)Math.Ceiling(Math.Sqrt(count)));
                    ImageFiles.SavePng(grid, gridPath);
                    console.MarkupLine($"wrote [bold]{Markup.Escape(gridPath)}[/]");
                }
                if (p.GetValue(outDir) is string d2) console.MarkupLine($"wrote {count} PNGs under [bold]{Markup.Escape(d2)}[/]");
            }
            console.MarkupLine($"{count} samples in {secs:F1} s ({secs / count:F2} s per image)");
            norm?.Dispose();
            return 0;
        }));
        return cmd;
    }

    static DiTConfig? ResolveDiT(ParseResult p, Option<string?> preset, Option<string?> config)
    {
        string? pr = p.GetValue(preset), cf = p.GetValue(config);
        if (pr != null && cf != null) throw new SvgdException("give either --dit-preset or --dit-config, not both");
        if (pr != null) return DiTPresets.Get(pr);
        return cf != null ? Config.ConfigJson.Load<DiTConfig>(cf, "model").Validate(cf) : null;
    }

    /// <summary>Per-sample labels and the number of grid rows (one per class with --classes; 0 for a square grid).</summary>
    internal static (int[] Labels, int Rows) Labels(string? classes, string? labels, int n, int numClasses, long seed)
    {
        if (classes != null && labels != null) throw new SvgdException("give either --classes or --labels, not both");
        int[] Parse(string s, string what, int max) =>
            s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x =>
                int.TryParse(x, out int v) && v >= 0 && v <= max ? v
                    : throw new SvgdException($"{what}: '{x}' is not a class index in 0..{max}")).ToArray();
        if (labels != null) return (Parse(labels, "--labels", numClasses), 0);
        if (n <= 0) throw new SvgdException("--n must be positive");
        if (classes != null)
        {
            var cls = Parse(classes, "--classes", numClasses - 1);
            return (cls.SelectMany(c => Enumerable.Repeat(c, n)).ToArray(), cls.Length);
        }
        using var g = new Generator((ulong)(seed & long.MaxValue) ^ 0x5eed);
        using var r = torch.randint(0, numClasses, new long[] { n }, generator: g);
        return (r.data<long>().Select(x => (int)x).ToArray(), 0);
    }
}
