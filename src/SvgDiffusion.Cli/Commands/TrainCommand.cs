using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Distributed;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Training;
using TorchSharp;

namespace SvgDiffusion.Cli.Commands;

internal static class TrainCommand
{
    public static Command Create(CliContext cli)
    {
        var latents = new Option<string?>("--latents") { Description = "Latent cache folder from 'svgd cache-latents' (the fast way)." };
        var images = new Option<string?>("--images") { Description = "Instead of --latents: encode this class-folder dataset on the fly with --autoencoder every step (needs --stats)." };
        var output = new Option<string>("--out") { Description = "Run folder: last.safetensors ({model, ema, optimizer, step, config, latent statistics}; loads as a DiT), samples/step-NNNNNN.png, metrics.jsonl (loss per step) and loss.png.", Required = true }.OutputDir();
        var preset = new Option<string?>("--preset") { Description = $"DiT architecture: {string.Join(", ", DiTPresets.Names)}. Its input_size, in_channels and num_classes are set from the cache." };
        var config = new Option<string?>("--config") { Description = "DiT architecture as JSON (reference names; its 'model' section if present)." };
        var resume = new Option<string?>("--resume") { Description = "Continue a run from its last.safetensors exactly where it stopped." };
        var stats = new Option<string?>("--stats") { Description = "Latent statistics to normalise with (default: computed from the cache)." };
        var steps = new Option<int>("--steps") { Description = "Total optimisation steps (with --resume: the new total).", DefaultValueFactory = _ => 10000 };
        var batch = new Option<int>("--batch-size") { Description = "Latents per step; under mpiexec the global batch, each process computing its share.", DefaultValueFactory = _ => 32 };
        var lr = new Option<double>("--lr") { Description = "AdamW learning rate (betas 0.9/0.999, no weight decay, as the reference).", DefaultValueFactory = _ => 1e-4 };
        var ema = new Option<double>("--ema") { Description = "EMA decay of the weights used for sampling.", DefaultValueFactory = _ => 0.9999 };
        var clip = new Option<double>("--grad-clip") { Description = "Clip the gradient norm (0: off, the reference).", DefaultValueFactory = _ => 0 };
        var shift = new Option<double>("--shift") { Description = "Training timestep shift (reference: 0.4).", DefaultValueFactory = _ => 0.4 };
        var seed = new Option<long>("--seed") { Description = "Seed of every random draw (order, noise, times, label dropout).", DefaultValueFactory = _ => 0 };
        var ckptEvery = new Option<int>("--checkpoint-every") { Description = "Write last.safetensors every N steps; 0: only at the end and on Ctrl+C/SIGTERM (always then).", DefaultValueFactory = _ => 1000 };
        var sampleEvery = new Option<int>("--sample-every") { Description = "Write a sample grid every N steps (needs --autoencoder; 0: only at the end).", DefaultValueFactory = _ => 1000 };
        var sampleSteps = new Option<int>("--sample-steps") { Description = "Solver steps of the sample grids.", DefaultValueFactory = _ => 25 };
        var sampleCfg = new Option<double>("--sample-cfg") { Description = "Guidance of the sample grids.", DefaultValueFactory = _ => 1.5 };
        var evalEvery = new Option<int>("--eval-every") { Description = "Every N steps, log eval_loss to metrics.jsonl: the flow loss of the current (fp32) weights on fixed noise and times over --eval-size latents of --eval-latents (or of the training cache), comparable across steps and runs (0: never).", DefaultValueFactory = _ => 0 };
        var evalLatents = new Option<string?>("--eval-latents") { Description = "Held-out latent cache for --eval-every (same latent shape; default: the training latents)." };
        var evalSize = new Option<int>("--eval-size") { Description = "Latents in each --eval-every evaluation (the first N).", DefaultValueFactory = _ => 512 };
        var precision = PrecisionOption.CreateForTraining("the transformer blocks' forward and backward");
        var ae = new AutoencoderOptions("autoencoder-");
        ae.Autoencoder.Required = false;
        ae.Autoencoder.Description = "Autoencoder (SVG or VAE) to decode the sample grids with (optional).";
        var cmd = new Command("train", "Train a diffusion transformer with rectified flow on cached latents (SVG or VAE) (AdamW, EMA, label dropout); resumable; data-parallel under mpiexec.")
        { latents, images, output, preset, config, resume, stats, steps, batch, lr, ema, clip, shift, seed, ckptEvery, sampleEvery, sampleSteps, sampleCfg, precision, evalEvery, evalLatents, evalSize };
        foreach (var o in ae.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var console = cli.Console;
            // From the start: a signal while the data and model load still ends in a checkpoint, not a lost run.
            using var cancel = new CtrlC();
            if ((p.GetValue(latents) == null) == (p.GetValue(images) == null)) throw new SvgdException("give exactly one of --latents (a cache) or --images (online encoding)");
            using var source = p.GetValue(latents) is string lp ? new DataSource(LatentCache.Open(lp)) : DataSource.Online(p, ae, images, stats);
            string outDir = p.GetValue(output)!;
            string last = Path.Combine(outDir, "last.safetensors");
            var computePrecision = PrecisionOption.Parse(p, precision);
            // The peak memory of the run, checked before any model is built or file written.
            MemoryEstimate memory;
            {
                var info = p.GetValue(resume) is string r ? DiTTrainer.ReadInfo(r) : null;
                var arch = info?.Model ?? ResolveArch(p, preset, config, source);
                int batchSize = info?.Training.BatchSize ?? p.GetValue(batch);
                string? name = info == null ? p.GetValue(preset) : null;
                bool mixed = computePrecision == torch.ScalarType.BFloat16;
                MemoryEstimate Estimate(int b) => TrainingMemory.DiT(arch, GlobalBatch.Shard(b, cli.Comm.Rank, cli.Comm.Size).Count, mixed, ema: true, name: name);
                TrainingMemory.Require(Estimate, batchSize, info != null ? "--resume" : p.GetValue(config) != null ? "--config" : "--preset");
                memory = Estimate(batchSize);
            }
            if (cli.IsRoot) Directory.CreateDirectory(Path.Combine(outDir, "samples"));
            DiTTrainer trainer;
            DiT? owned = null;
            if (p.GetValue(resume) is string from)
            {
                trainer = source.Cache != null ? DiTTrainer.Resume(from, source.Cache, p.GetValue(steps)) : DiTTrainer.Resume(from, source.Batches, source.Count, p.GetValue(steps));
                console.MarkupLine($"resumed [bold]{Markup.Escape(from)}[/] at step {trainer.Step}");
            }
            else
            {
                var arch = ResolveArch(p, preset, config, source);
                var cfg = new DiTTrainingConfig
                {
                    Steps = p.GetValue(steps), BatchSize = p.GetValue(batch), LearningRate = p.GetValue(lr), EmaDecay = p.GetValue(ema),
                    GradClip = p.GetValue(clip), TimestepShift = p.GetValue(shift), Seed = p.GetValue(seed),
                    CheckpointEvery = p.GetValue(ckptEvery), SampleEvery = p.GetValue(sampleEvery),
                }.Validate();
                torch.manual_seed(cfg.Seed);
                owned = new DiT(arch);
                var norm = p.GetValue(stats) is string sp ? Models.Autoencoder.LatentStatistics.Load(sp) : null;
                trainer = source.Cache != null ? new DiTTrainer(owned, source.Cache, cfg, norm)
                    : new DiTTrainer(owned, source.Batches, source.Count, cfg, norm!, source.ClassNames);
            }
            using var _t = trainer;
            using var _o = owned;
            trainer.ComputePrecision = computePrecision;
            trainer.Distribute(cli.Comm);
            if (trainer.ResumedWorldSize is int saved && saved != cli.Comm.Size) cli.Warn(WorldSizeChange(saved, cli.Comm.Size));
            // Only rank 0 writes sample grids.
            var decoder = source.Autoencoder ?? (cli.IsRoot && p.GetValue(ae.Autoencoder) != null ? ae.LoadAny(p) : null);
            using var _d = source.Autoencoder == null ? decoder : null;
            var tc = trainer.Config;
            var mc = trainer.Model.Config;
            console.MarkupLine($"DiT {mc.Depth}x{mc.HiddenSize} ({trainer.Model.parameters().Sum(x => x.numel()):N0} params) on {source.Count} {(source.Cache != null ? "cached" : "online-encoded")} latents of {source.Channels}x{source.GridSize}x{source.GridSize}, {mc.NumClasses} classes; steps {trainer.Step} -> {tc.Steps}, batch {tc.BatchSize}, {PrecisionOption.TrainingLabel(trainer.ComputePrecision)}");
            if (trainer.Step >= tc.Steps)
            {
                console.MarkupLine($"already at step {trainer.Step} of --steps {tc.Steps}; nothing to do (give a larger --steps to continue)");
                return 0;
            }
            var sw = System.Diagnostics.Stopwatch.StartNew();
            int startStep = trainer.Step;
            using var heldOut = p.GetValue(evalLatents) is string ep ? LatentCache.Open(ep) : null;
            if (heldOut != null && !heldOut.LatentShape.SequenceEqual(new long[] { mc.InChannels, mc.InputSize, mc.InputSize }))
                throw new SvgdException($"--eval-latents {p.GetValue(evalLatents)}: latents are {string.Join("x", heldOut.LatentShape)}, the DiT takes {mc.InChannels}x{mc.InputSize}x{mc.InputSize}");
            var evalIndices = Enumerable.Range(0, Math.Min(p.GetValue(evalSize), heldOut?.Count ?? source.Count)).ToList();
            int every = p.GetValue(evalEvery);
            var log = cli.IsRoot ? new TrainingLog(Path.Combine(outDir, "metrics.jsonl"), trainer.Step) : null;
            bool stopped = false;
            console.Progress().AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("train", maxValue: Math.Max(1, tc.Steps));
                    task.Value = trainer.Step;
                    double smooth = double.NaN;
                    // The processes of a job stop at the same step: a signal reaches them at different moments.
                    while (trainer.Step < tc.Steps && !(stopped = ShardedWork.AnyRank(cli.Comm, cancel.Requested)))
                    {
                        var r = trainer.TrainStep();
                        smooth = double.IsNaN(smooth) ? r.Loss : 0.98 * smooth + 0.02 * r.Loss;
                        double rate = (r.Step - startStep) / Math.Max(1e-9, sw.Elapsed.TotalSeconds);
                        task.Value = r.Step;
                        task.Description = $"train loss {smooth:F4} ({rate:F2} steps/s{AllreduceShare(trainer.Allreduce, sw.Elapsed)})";
                        var row = new Dictionary<string, double> { ["loss"] = r.Loss, ["grad_norm"] = r.GradNorm, ["seconds"] = sw.Elapsed.TotalSeconds };
                        if (every > 0 && (r.Step % every == 0 || r.Step == tc.Steps) && cli.IsRoot) row["eval_loss"] = trainer.EvalLoss(evalIndices, seed: 1234, heldOut: heldOut);
                        log?.Add(r.Step, row);
                        if (tc.CheckpointEvery > 0 && r.Step % tc.CheckpointEvery == 0) Save(cli, trainer, last);
                        if (decoder != null && cli.IsRoot && tc.SampleEvery > 0 && r.Step % tc.SampleEvery == 0) WriteGrid(trainer, decoder, source.ClassNames.Count, outDir, p.GetValue(sampleSteps), p.GetValue(sampleCfg));
                    }
                });
            Save(cli, trainer, last);
            log?.Plot(Path.Combine(outDir, "loss.png"), "diffusion training", new[] { "loss" }, smooth: 50);
            if (every > 0) log?.Plot(Path.Combine(outDir, "eval-loss.png"), "diffusion training: eval loss", new[] { "eval_loss" }, smooth: 1);
            // SIGTERM comes with a short grace period before SIGKILL: the checkpoint is written, the preview grid is not.
            if (decoder != null && cli.IsRoot && cancel.Signal != "SIGTERM") WriteGrid(trainer, decoder, source.ClassNames.Count, outDir, p.GetValue(sampleSteps), p.GetValue(sampleCfg));
            console.MarkupLine($"{StopWords(cancel, stopped)} at step {trainer.Step} in {sw.Elapsed.TotalMinutes:F1} min; checkpoint [bold]{Markup.Escape(last)}[/] (continue with --resume)");
            if (trainer.Allreduce is GradientBuckets g && trainer.Step > startStep) console.MarkupLine(AllreduceSummary(g, trainer.Step - startStep, sw.Elapsed));
            console.MarkupLine(PeakMemoryLine(memory));
            return StopCode(cancel, stopped);
        }));
        return cmd;
    }

    /// <summary>"peak memory 12.1 GiB (estimated 13.0 GiB)": this process's peak resident set beside the estimate it was checked with.</summary>
    internal static string PeakMemoryLine(MemoryEstimate estimate) =>
        $"peak memory {Runtime.ResourceBudget.Gib(Runtime.ProcessMemory.PeakResidentBytes())} (estimated {Runtime.ResourceBudget.Gib(estimate.PeakBytes)})";

    /// <summary>The architecture of a new run: --preset or --config, fitted to the data's grid, channels and classes.</summary>
    static DiTConfig ResolveArch(ParseResult p, Option<string?> preset, Option<string?> config, DataSource source)
    {
        string? pr = p.GetValue(preset), cf = p.GetValue(config);
        if (pr != null && cf != null) throw new SvgdException("give either --preset or --config, not both");
        var arch = pr != null ? DiTPresets.Get(pr) : cf != null ? Config.ConfigJson.Load<DiTConfig>(cf, "model") : throw new SvgdException("a new run needs --preset or --config (or --resume)");
        return (arch with { InputSize = source.GridSize, InChannels = source.Channels, NumClasses = Math.Max(1, source.ClassNames.Count) }).Validate("DiT config");
    }

    /// <summary>Every process checks that the copies agree, then rank 0 writes the checkpoint.</summary>
    static void Save(CliContext cli, DiTTrainer trainer, string path)
    {
        trainer.VerifyReplicas();
        if (cli.IsRoot) trainer.Save(path);
    }

    internal static string WorldSizeChange(int saved, int now) =>
        $"the run was trained by {saved} process{(saved == 1 ? "" : "es")} and continues with {now}: the global batch and every random draw stay the same, " +
        "but gradients are summed in another order, so it continues within float32 rounding of the original, not bit for bit";

    internal static string StopWords(CtrlC cancel, bool stopped) =>
        cancel.Requested ? $"stopped by {cancel.Signal}" : stopped ? "stopped by a signal to another process" : "finished";

    internal static int StopCode(CtrlC cancel, bool stopped) => cancel.Requested ? cancel.ExitCode : stopped ? 143 : 0;

    /// <summary>", allreduce N%" of the wall time so far, for the progress line of a data-parallel run.</summary>
    internal static string AllreduceShare(GradientBuckets? g, TimeSpan elapsed) =>
        g == null ? "" : $", allreduce {100 * g.Elapsed.TotalSeconds / Math.Max(1e-9, elapsed.TotalSeconds):F0}%";

    internal static string AllreduceSummary(GradientBuckets g, int steps, TimeSpan elapsed) =>
        $"gradient allreduce: {g.Bytes / 1048576.0:F1} MiB per step in {g.BucketCount} bucket{(g.BucketCount == 1 ? "" : "s")}, " +
        $"{1000 * g.Elapsed.TotalSeconds / steps:F1} ms per step of {1000 * elapsed.TotalSeconds / steps:F1} ms ({100 * g.Elapsed.TotalSeconds / Math.Max(1e-9, elapsed.TotalSeconds):F1}%)";

    /// <summary>One row per class (up to 10), 8 EMA samples each, decoded.</summary>
    static void WriteGrid(DiTTrainer trainer, Models.Autoencoder.ILatentAutoencoder decoder, int numClasses, string outDir, int steps, double cfg)
    {
        using var scope = torch.NewDisposeScope();
        int classes = Math.Min(10, Math.Max(1, numClasses));
        var labels = Enumerable.Range(0, classes).SelectMany(c => Enumerable.Repeat(c, 8)).ToList();
        var latents = trainer.Sample(labels, steps, cfg, seed: 0);
        using var _ = torch.inference_mode();
        var images = decoder.Decode(latents).clamp(-1, 1);
        ImageFiles.SavePng(ImageFiles.Grid(images, 8), Path.Combine(outDir, "samples", $"step-{trainer.Step:D6}.png"));
    }

    /// <summary>Where training latents come from: a cache, or an autoencoder encoding images every step.</summary>
    sealed class DataSource : IDisposable
    {
        public LatentCache? Cache { get; }
        public Models.Autoencoder.ILatentAutoencoder? Autoencoder { get; private init; }
        public Func<IReadOnlyList<int>, (torch.Tensor Latents, torch.Tensor Labels)> Batches { get; private init; }
        public int Count { get; private init; }
        public int Channels { get; private init; }
        public int GridSize { get; private init; }
        public IReadOnlyList<string> ClassNames { get; private init; }

        public DataSource(LatentCache cache)
        {
            Cache = cache;
            Batches = cache.Batch;
            Count = cache.Count;
            Channels = cache.Channels;
            GridSize = (int)cache.LatentShape[1];
            ClassNames = cache.ClassNames;
        }

        DataSource(Func<IReadOnlyList<int>, (torch.Tensor, torch.Tensor)> batches) { Batches = batches; ClassNames = Array.Empty<string>(); }

        public static DataSource Online(ParseResult p, AutoencoderOptions ae, Option<string?> images, Option<string?> stats)
        {
            if (p.GetValue(ae.Autoencoder) == null) throw new SvgdException("--images (online encoding) needs --autoencoder");
            if (p.GetValue(stats) == null) throw new SvgdException("--images (online encoding) needs --stats (from 'svgd latent-stats')");
            var folder = new ImageFolder(p.GetValue(images)!);
            var model = ae.LoadAny(p);
            int size = model.ImageSize;
            // Index 2i is image i, 2i+1 its mirror image, as in a flipped cache.
            (torch.Tensor, torch.Tensor) Batch(IReadOnlyList<int> indices)
            {
                using var scope = torch.NewDisposeScope();
                using var _ = torch.inference_mode();
                var x = folder.CenterBatch(indices.Select(i => i / 2), size);
                var flip = torch.tensor(indices.Select(i => i % 2 == 1).ToArray()).view(-1, 1, 1, 1);
                x = torch.where(flip, x.flip(3), x);
                var z = model.EncodeImages(x);
                var y = torch.tensor(indices.Select(i => (long)folder.Labels[i / 2]).ToArray());
                return (z.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope());
            }
            return new DataSource(Batch)
            {
                Autoencoder = model, Count = 2 * folder.Count, Channels = model.LatentChannels,
                GridSize = model.LatentSize, ClassNames = folder.ClassNames,
            };
        }

        public void Dispose() { Cache?.Dispose(); Autoencoder?.Dispose(); }
    }
}
