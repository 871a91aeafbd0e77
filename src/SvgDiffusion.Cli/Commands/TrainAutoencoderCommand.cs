using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Distributed;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Dinov3;
using SvgDiffusion.Models.Losses;
using SvgDiffusion.Training;
using TorchSharp;

namespace SvgDiffusion.Cli.Commands;

internal static class TrainAutoencoderCommand
{
    public static Command Create(CliContext cli)
    {
        var images = new Option<string>("--images") { Description = "Training images: a folder (recursive). Random crops of the model's input size and horizontal flips are drawn each step.", Required = true };
        var output = new Option<string>("--out") { Description = "Run folder: last.safetensors (resumable checkpoint, also a plain autoencoder file), samples/step-NNNNNN.png, metrics.jsonl (losses per step) and loss.png.", Required = true }.OutputDir();
        var encoder = new Option<string?>("--encoder") { Description = "Frozen encoder weights for a new model: DINOv3 (official .pth, Hugging Face safetensors, or an SVG autoencoder file holding encoder.*); for a resnet18 model optional (default: the ONNX file shipped with the build)." };
        var preset = new Option<string?>("--preset") { Description = $"Architecture of a new model: SVG {string.Join(", ", SvgAutoencoderPresets.Names)}; VAE baseline {string.Join(", ", Models.Vae.VaePresets.Names)}." };
        var config = new Option<string?>("--config") { Description = "Architecture of a new model as JSON: SVG (sections dino or resnet, residual_vit, decoder, alignment, mask_ratio) or a VAE (ddconfig, embed_dim)." };
        var klWeight = new Option<double>("--kl-weight") { Description = "Weight of a VAE's KL term (LDM: 1e-6); ignored for SVG.", DefaultValueFactory = _ => new AutoencoderTrainingConfig().KlWeight };
        var init = new Option<string?>("--init") { Description = "Start from an existing autoencoder (e.g. the released .ckpt): fine-tuning, fresh optimisers." };
        var resume = new Option<string?>("--resume") { Description = "Continue a run from its last.safetensors exactly where it stopped (step, optimisers, discriminator, statistics)." };
        var steps = new Option<int>("--steps") { Description = "Total optimisation steps (with --resume: the new total).", DefaultValueFactory = _ => 1000 };
        var batch = new Option<int>("--batch-size") { Description = "Images per step; under mpiexec the global batch, each process computing its share.", DefaultValueFactory = _ => 8 };
        var lr = new Option<double>("--lr") { Description = "Adam learning rate (betas 0.5, 0.9 as the reference).", DefaultValueFactory = _ => 1e-4 };
        var discStart = new Option<int>("--disc-start") { Description = "Step from which the PatchGAN loss is on (reference: 5001).", DefaultValueFactory = _ => 5001 };
        var discWeight = new Option<double>("--disc-weight") { Description = "Factor on the adaptive generator weight (reference: 0.5).", DefaultValueFactory = _ => 0.5 };
        var lpips = new Option<string?>("--lpips") { Description = "LPIPS linear-layer weights (vgg.pth of the LPIPS release); without them training uses L1 and the GAN only." };
        var vgg = new Option<string?>("--vgg") { Description = "torchvision VGG-16 weights for LPIPS (vgg16-397923af.pth), unless --lpips already holds them." };
        var seed = new Option<long>("--seed") { Description = "Seed of every random draw (data order, crops, flips, masking, dropout).", DefaultValueFactory = _ => 0 };
        var ckptEvery = new Option<int>("--checkpoint-every") { Description = "Write last.safetensors every N steps; 0: only at the end and on Ctrl+C/SIGTERM (always then).", DefaultValueFactory = _ => 500 };
        var sampleEvery = new Option<int>("--sample-every") { Description = "Write a reconstruction grid every N steps (0: only at the end).", DefaultValueFactory = _ => 500 };
        var precision = PrecisionOption.CreateForTraining("every convolution: decoder, LPIPS, PatchGAN, conv patch embeddings");
        var evalEvery = new Option<int>("--eval-every") { Description = "Every N steps, log eval_l1 to metrics.jsonl: the mean L1 reconstruction error (fp32, centre crops, no masking) of the first --eval-size images of --eval-images (or of the training images), comparable across steps and runs (0: never).", DefaultValueFactory = _ => 0 };
        var evalImages = new Option<string?>("--eval-images") { Description = "Held-out image folder for --eval-every (default: the training images)." };
        var evalSize = new Option<int>("--eval-size") { Description = "Images in each --eval-every evaluation.", DefaultValueFactory = _ => 256 };
        var cmd = new Command("train-autoencoder", "Train an SVG autoencoder's residual encoder and decoder (the frozen encoder stays frozen), or a VAE baseline, with L1 + LPIPS + PatchGAN (+ KL for a VAE); data-parallel under mpiexec.")
        { images, output, encoder, preset, config, init, resume, steps, batch, lr, discStart, discWeight, klWeight, lpips, vgg, seed, ckptEvery, sampleEvery, precision, evalEvery, evalImages, evalSize };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var console = cli.Console;
            // From the start: a signal while the data and model load still ends in a checkpoint, not a lost run.
            using var cancel = new CtrlC();
            var data = new ImageFolder(p.GetValue(images)!);
            string outDir = p.GetValue(output)!;
            string last = Path.Combine(outDir, "last.safetensors");
            Lpips? perceptual = p.GetValue(lpips) is string lin ? Lpips.Load(lin, p.GetValue(vgg)) : null;

            AutoencoderTrainer trainer;
            if (p.GetValue(resume) is string from)
            {
                trainer = AutoencoderTrainer.Resume(from, data, perceptual, p.GetValue(steps));
                console.MarkupLine($"resumed [bold]{Markup.Escape(from)}[/] at step {trainer.Step}");
            }
            else
            {
                var cfg = new AutoencoderTrainingConfig
                {
                    Steps = p.GetValue(steps), BatchSize = p.GetValue(batch), LearningRate = p.GetValue(lr),
                    DiscStart = p.GetValue(discStart), DiscWeight = p.GetValue(discWeight), KlWeight = p.GetValue(klWeight), Seed = p.GetValue(seed),
                    CheckpointEvery = p.GetValue(ckptEvery), SampleEvery = p.GetValue(sampleEvery),
                }.Validate();
                ILatentAutoencoder model;
                if (p.GetValue(init) is string initPath)
                {
                    model = AutoencoderFile.Load(initPath, ResolveConfig(p, preset, config), p.GetValue(encoder));
                }
                else if (ResolveVae(p, preset, config) is Models.Vae.VaeConfig vae)
                {
                    torch.manual_seed(cfg.Seed);
                    model = new Models.Vae.KlAutoencoder(vae);
                }
                else
                {
                    var arch = ResolveConfig(p, preset, config) ?? throw new SvgdException("a new model needs --preset or --config (or --init to fine-tune, --resume to continue)");
                    Models.Encoders.IFrozenEncoder frozen;
                    if (arch.IsResNet)
                        frozen = p.GetValue(encoder) is string rp ? Models.ResNet.ResNet18Encoder.Load(rp, arch.Resnet) : Models.ResNet.ResNet18Encoder.FromOnnx(arch.Resnet);
                    else
                        frozen = LoadDino(p.GetValue(encoder) ?? throw new SvgdException("a new DINOv3 model needs --encoder: the frozen DINOv3 weights"), arch.Dino);
                    torch.manual_seed(cfg.Seed);
                    model = new SvgAutoencoder(arch, frozen);
                }
                trainer = new AutoencoderTrainer(model, data, cfg, perceptual);
            }

            using var _ = trainer;
            // Only once every option and file has been accepted: a refused call prints its one error line alone.
            if (perceptual == null) cli.Warn("no LPIPS weights given (--lpips/--vgg): training with L1 and the PatchGAN loss only");
            trainer.ComputePrecision = PrecisionOption.Parse(p, precision);
            // The peak memory of a step, checked before anything is written (the models, small beside their
            // activations, are built: the estimate counts their parameters, and their memory as held already).
            string modelOption = p.GetValue(resume) != null ? "--resume" : p.GetValue(init) != null ? "--init" : p.GetValue(config) != null ? "--config" : "--preset";
            MemoryEstimate Estimate(int b) => trainer.EstimateMemory(GlobalBatch.Shard(b, cli.Comm.Rank, cli.Comm.Size).Count, p.GetValue(preset) ?? "model");
            TrainingMemory.Require(Estimate, trainer.Config.BatchSize, modelOption);
            if (cli.IsRoot) Directory.CreateDirectory(Path.Combine(outDir, "samples"));
            trainer.Distribute(cli.Comm);
            if (trainer.ResumedWorldSize is int saved && saved != cli.Comm.Size) cli.Warn(TrainCommand.WorldSizeChange(saved, cli.Comm.Size));
            var tc = trainer.Config;
            console.MarkupLine($"{data.Count} images, {trainer.ImageSize}px, batch {tc.BatchSize}, steps {trainer.Step} -> {tc.Steps}, GAN from step {tc.DiscStart}, {PrecisionOption.TrainingLabel(trainer.ComputePrecision)}");
            if (trainer.Step >= tc.Steps)
            {
                console.MarkupLine($"already at step {trainer.Step} of --steps {tc.Steps}; nothing to do (give a larger --steps to continue)");
                return 0;
            }
            int startStep = trainer.Step;
            var heldOut = p.GetValue(evalImages) is string ei ? new ImageFolder(ei) : null;
            var evalIndices = Evaluation.SampleQuality.Spread((heldOut ?? data).Count, p.GetValue(evalSize));
            int every = p.GetValue(evalEvery);
            var log = cli.IsRoot ? new TrainingLog(Path.Combine(outDir, "metrics.jsonl"), trainer.Step) : null;
            bool stopped = false;
            var sw = System.Diagnostics.Stopwatch.StartNew();
            console.Progress().AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("train", maxValue: Math.Max(1, tc.Steps));
                    task.Value = trainer.Step;
                    // The processes of a job stop at the same step: a signal reaches them at different moments.
                    while (trainer.Step < tc.Steps && !(stopped = ShardedWork.AnyRank(cli.Comm, cancel.Requested)))
                    {
                        var r = trainer.TrainStep();
                        task.Value = r.Step;
                        var row = new Dictionary<string, double> { ["loss"] = r.Loss, ["l1"] = r.L1, ["seconds"] = sw.Elapsed.TotalSeconds };
                        if (every > 0 && (r.Step % every == 0 || r.Step == tc.Steps) && cli.IsRoot) row["eval_l1"] = trainer.EvalL1(evalIndices, heldOut);
                        if (perceptual != null) row["lpips"] = r.Perceptual;
                        if (trainer.Model is Models.Vae.KlAutoencoder) row["kl"] = r.Kl;
                        if (r.Step > tc.DiscStart) { row["g_loss"] = r.GeneratorLoss; row["d_loss"] = r.DiscriminatorLoss; }
                        log?.Add(r.Step, row);
                        task.Description = $"train l1 {r.L1:F4}{(perceptual != null ? $" lpips {r.Perceptual:F4}" : "")}{(r.Step > tc.DiscStart ? $" g {r.GeneratorLoss:F3} d {r.DiscriminatorLoss:F3}" : "")}{TrainCommand.AllreduceShare(trainer.Allreduce, sw.Elapsed)}";
                        if (tc.CheckpointEvery > 0 && r.Step % tc.CheckpointEvery == 0) Save(cli, trainer, last);
                        if (cli.IsRoot && tc.SampleEvery > 0 && r.Step % tc.SampleEvery == 0) WriteGrid(trainer, outDir);
                    }
                });
            Save(cli, trainer, last);
            log?.Plot(Path.Combine(outDir, "loss.png"), "autoencoder training", new[] { "l1", "lpips", "g_loss", "d_loss" }, smooth: 25);
            if (every > 0) log?.Plot(Path.Combine(outDir, "eval-l1.png"), "autoencoder training: eval L1", new[] { "eval_l1" });
            // SIGTERM comes with a short grace period before SIGKILL: the checkpoint is written, the grid is not.
            if (cli.IsRoot && trainer.Step > startStep && cancel.Signal != "SIGTERM") WriteGrid(trainer, outDir);
            console.MarkupLine($"{TrainCommand.StopWords(cancel, stopped)} at step {trainer.Step}; checkpoint [bold]{Markup.Escape(last)}[/] (continue with --resume)");
            if (trainer.Allreduce is GradientBuckets g && trainer.Step > startStep) console.MarkupLine(TrainCommand.AllreduceSummary(g, trainer.Step - startStep, sw.Elapsed));
            console.MarkupLine(TrainCommand.PeakMemoryLine(Estimate(trainer.Config.BatchSize)));
            return TrainCommand.StopCode(cancel, stopped);
        }));
        return cmd;
    }

    /// <summary>A VAE architecture when --preset names one or --config has a ddconfig section; otherwise null.</summary>
    static Models.Vae.VaeConfig? ResolveVae(ParseResult p, Option<string?> preset, Option<string?> config)
    {
        string? pr = p.GetValue(preset), cf = p.GetValue(config);
        if (pr != null && Models.Vae.VaePresets.Contains(pr)) return Models.Vae.VaePresets.Get(pr);
        if (cf != null && File.Exists(cf) && System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cf)) is System.Text.Json.Nodes.JsonObject o && o.ContainsKey("ddconfig"))
            return Config.ConfigJson.Load<Models.Vae.VaeConfig>(cf).Validate(cf);
        return null;
    }

    /// <summary>Every process checks that the copies agree, then rank 0 writes the checkpoint.</summary>
    static void Save(CliContext cli, AutoencoderTrainer trainer, string path)
    {
        trainer.VerifyReplicas();
        if (cli.IsRoot) trainer.Save(path);
    }

    static SvgAutoencoderConfig? ResolveConfig(ParseResult p, Option<string?> preset, Option<string?> config)
    {
        string? pr = p.GetValue(preset), cf = p.GetValue(config);
        if (pr != null && cf != null) throw new SvgdException("give either --preset or --config, not both");
        if (ResolveVae(p, preset, config) != null) throw new SvgdException("a VAE architecture applies to a new model only (the file given to --init carries its own)");
        if (pr != null) return SvgAutoencoderPresets.Get(pr);
        return cf != null ? Config.ConfigJson.Load<SvgAutoencoderConfig>(cf).Validate(cf) : null;
    }

    /// <summary>A DINOv3 file, or the encoder.* part of an SVG autoencoder checkpoint.</summary>
    internal static DinoVisionTransformer LoadDino(string path, Dinov3Config config)
    {
        var ckpt = Checkpoints.Checkpoint.Open(path);
        var sd = ckpt.StateDict();
        if (sd.ContainsKey("encoder.patch_embed.proj.weight"))
            return Dinov3Checkpoint.FromStateDict(sd.Where(kv => kv.Key.StartsWith("encoder.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key[8..], kv => kv.Value), $"{path} (encoder.*)", config);
        return Dinov3Checkpoint.FromStateDict(sd, path, config);
    }

    static void WriteGrid(AutoencoderTrainer trainer, string outDir)
    {
        using var grid = trainer.ReconstructionGrid();
        ImageFiles.SavePng(grid, Path.Combine(outDir, "samples", $"step-{trainer.Step:D6}.png"));
    }
}
