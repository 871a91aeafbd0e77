using System.Text.Json;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation;
using SvgDiffusion.Evaluation.Probes;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using SvgDiffusion.Sampling;
using SvgDiffusion.Training;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Studies;

/// <summary>Where a study reports to: one-line messages, and stages with a known amount of work.</summary>
public interface IStudyObserver
{
    void Message(string line);
    /// <summary>Runs <paramref name="body"/>, which reports progress by adding to the work done.</summary>
    void Stage(string description, long total, Action<Action<long>> body);
}

/// <summary>
/// Runs a <see cref="StudyConfig"/> arm by arm. Each arm goes through the same stages (autoencoder
/// training, reconstruction and linear probe, latent cache, DiT training with scored checkpoints,
/// few-step sweep) and every stage resumes from what it left in the work folder, so a killed study
/// continues where it stopped. A finished arm's metrics.json in the results folder is what marks
/// it done: later runs skip it even when the work folder (checkpoints, caches) is gone, which is
/// how a study spans sessions with only its small results committed.
/// </summary>
public sealed class Study
{
    public StudyConfig Config { get; }
    readonly IStudyObserver _obs;
    EvaluatorFeatureNetwork? _net;
    SampleQuality? _quality;

    public Study(StudyConfig config, IStudyObserver observer)
    {
        Config = config;
        _obs = observer;
    }

    public static string MetricsPath(StudyConfig c, string arm) => Path.Combine(c.ResultsDir, arm, "metrics.json");

    /// <summary>Runs the arms not yet finished (all, or those named), then rewrites the plots and results.md.</summary>
    public IReadOnlyList<StudyArmResult> Run(IReadOnlyCollection<string>? onlyArms = null, CancellationToken cancel = default)
    {
        if (onlyArms != null)
            foreach (var a in onlyArms.Where(a => Config.Arms.All(b => b.Name != a)))
                throw new SvgdException($"no arm '{a}' in the study (arms: {string.Join(", ", Config.Arms.Select(b => b.Name))})");
        foreach (var dir in new[] { Config.TrainImages, Config.TestImages, Config.ReferenceImages, Config.ProbeTrainImages }.OfType<string>())
            if (!Directory.Exists(dir)) throw new SvgdException($"{dir}: image folder not found (Fashion-MNIST: see 'svgd import-idx --help')");
        Directory.CreateDirectory(Config.ResultsDir);
        var results = new List<StudyArmResult>();
        try
        {
            foreach (var arm in Config.Arms.Where(a => onlyArms == null || onlyArms.Contains(a.Name)))
            {
                cancel.ThrowIfCancellationRequested();
                results.Add(RunArm(arm, cancel));
            }
            WriteReport();
        }
        finally
        {
            _quality?.Dispose();
            _net?.Dispose();
            _quality = null;
            _net = null;
        }
        return results;
    }

    /// <summary>Plots and results.md from the arms finished so far (any subset).</summary>
    public void WriteReport()
    {
        var finished = Config.Arms.Select(a => MetricsPath(Config, a.Name)).Where(File.Exists)
            .Select(p => ReadJson<StudyArmResult>(p)).ToList();
        if (finished.Count == 0) return;
        StudyReport.Write(Config, finished, Baseline());
        _obs.Message($"report: {Path.Combine(Config.ResultsDir, StudyReport.ResultsFile)} and plots ({finished.Count} of {Config.Arms.Count} arms finished)");
    }

    string Fingerprint(StudyArm arm)
    {
        var owner = Owner(arm);
        return ConfigJson.Serialize(new
        {
            arm.Name, owner.Preset, arm.AutoencoderFrom, Normalization = Normalization(arm), Config.Seed,
            Config.TrainImages, Config.TestImages, Config.ReferenceImages, Config.ProbeTrainImages, Evaluator = Config.Evaluator ?? "bundled",
            Config.Autoencoder, Config.Dit, Config.Evaluation, Config.Probe,
        });
    }

    StudyArm Owner(StudyArm arm) => arm.AutoencoderFrom is string f ? Config.Arms.First(a => a.Name == f) : arm;
    string Normalization(StudyArm arm) => arm.LatentNormalization ?? Config.Dit.LatentNormalization;

    StudyArmResult RunArm(StudyArm arm, CancellationToken cancel)
    {
        string metricsPath = MetricsPath(Config, arm.Name);
        string fingerprint = Fingerprint(arm);
        if (File.Exists(metricsPath))
        {
            var done = ReadJson<StudyArmResult>(metricsPath);
            if (done.Fingerprint != fingerprint)
                throw new SvgdException($"{metricsPath}: arm '{arm.Name}' was finished with other study settings; delete {Path.GetDirectoryName(metricsPath)} to run it again with these");
            _obs.Message($"{arm.Name}: finished earlier ({metricsPath}); skipped");
            return done;
        }
        _obs.Message($"{arm.Name}: {arm.Title}");
        var owner = Owner(arm);
        string ownerDir = Path.Combine(Config.WorkDir, owner.Name), armDir = Path.Combine(Config.WorkDir, arm.Name);
        Directory.CreateDirectory(ownerDir);
        Directory.CreateDirectory(armDir);
        var ownerTimes = new StageTimes(Path.Combine(ownerDir, "times.json"));
        var armTimes = owner == arm ? ownerTimes : new StageTimes(Path.Combine(armDir, "times.json"));
        // A work folder left by other settings is never continued: its checkpoints and scores would mix two studies.
        string settingsPath = Path.Combine(armDir, "settings.json");
        if (File.Exists(settingsPath) && File.ReadAllText(settingsPath) != fingerprint)
            throw new SvgdException($"{settingsPath}: arm '{arm.Name}' was started with other study settings; delete {armDir} to start it again with these");
        if (!File.Exists(settingsPath)) AtomicFile.Write(settingsPath, fs => fs.Write(System.Text.Encoding.UTF8.GetBytes(fingerprint)));

        var (aePath, aeResult) = TrainAutoencoder(owner, ownerDir, ownerTimes, cancel);
        using var autoencoder = AutoencoderFile.Load(aePath);
        autoencoder.Module.eval();
        var (rec, probe) = Representation(owner, ownerDir, autoencoder, ownerTimes, cancel);
        using var cache = CacheLatents(owner, ownerDir, aePath, autoencoder, ownerTimes, cancel);
        var (dit, curve, sweep) = TrainAndScore(arm, armDir, cache, autoencoder, armTimes, cancel);

        string resultsDir = Path.GetDirectoryName(metricsPath)!;
        Directory.CreateDirectory(resultsDir);
        foreach (var (from, to) in new[] { (Path.Combine(ownerDir, "reconstructions.png"), "reconstructions.png"), (Path.Combine(armDir, "samples.png"), "samples.png"),
                     (Path.Combine(ownerDir, "autoencoder", "loss.png"), "autoencoder-loss.png"), (Path.Combine(armDir, "dit", "loss.png"), "dit-loss.png") })
            if (File.Exists(from)) AtomicFile.Write(Path.Combine(resultsDir, to), fs => fs.Write(File.ReadAllBytes(from)));
        double?[] parts = { owner == arm ? aeResult.Seconds : 0, owner == arm ? rec.Seconds + probe.Seconds : 0, owner == arm ? dit.CacheSeconds : 0,
            dit.TrainSeconds, curve.Sum(p => p.Seconds), sweep.Sum(p => p.Seconds) };
        var result = new StudyArmResult
        {
            Arm = arm.Name, Label = arm.Title, Preset = owner.Preset, AutoencoderFrom = arm.AutoencoderFrom, LatentNormalization = Normalization(arm),
            LatentShape = cache.LatentShape.ToArray(), Fingerprint = fingerprint, Autoencoder = aeResult, Reconstruction = rec, Probe = probe, Dit = dit,
            TrainingCurve = curve, SamplingSweep = sweep, WallSeconds = parts.Any(p => p == null) ? null : parts.Sum(p => p!.Value),
            FinishedUtc = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
        };
        WriteJson(metricsPath, result);
        _obs.Message($"{arm.Name}: done; {metricsPath}");
        return result;
    }

    // ---- autoencoder ----

    (string Path, StudyAutoencoderResult Result) TrainAutoencoder(StudyArm owner, string ownerDir, StageTimes times, CancellationToken cancel)
    {
        var b = Config.Autoencoder;
        var expected = new AutoencoderTrainingConfig
        {
            Steps = b.Steps, BatchSize = b.BatchSize, LearningRate = b.Lr, DiscStart = b.DiscStart, KlWeight = b.KlWeight, Seed = Config.Seed,
            CheckpointEvery = b.CheckpointEvery, SampleEvery = 0,
        }.Validate();
        string dir = Path.Combine(ownerDir, "autoencoder"), last = Path.Combine(dir, "last.safetensors");
        Directory.CreateDirectory(dir);
        var data = new ImageFolder(Config.TrainImages);
        AutoencoderTrainer trainer;
        if (File.Exists(last))
        {
            var (step, saved) = AutoencoderTrainer.ReadProgress(last);
            if (saved with { Steps = expected.Steps } != expected)
                throw new SvgdException($"{last}: trained with other settings ({ConfigJson.Serialize(saved)}) than the study's ({ConfigJson.Serialize(expected)}); delete {dir} to retrain");
            if (step >= expected.Steps)
            {
                using var done = AutoencoderFile.Load(last);
                return (last, AutoencoderResult(done, times));
            }
            trainer = AutoencoderTrainer.Resume(last, data, null, expected.Steps);
            _obs.Message($"{owner.Name}: autoencoder resumed at step {trainer.Step}");
        }
        else
        {
            ILatentAutoencoder model;
            if (Models.Vae.VaePresets.Names.Contains(owner.Preset!))
            {
                torch.manual_seed(expected.Seed);
                model = new Models.Vae.KlAutoencoder(Models.Vae.VaePresets.Get(owner.Preset!));
            }
            else
            {
                var arch = SvgAutoencoderPresets.Get(owner.Preset!);
                if (!arch.IsResNet) throw new SvgdException($"arm '{owner.Name}': preset '{owner.Preset}' needs DINOv3 weights; a study trains presets whose frozen encoder ships with the build (resnet18)");
                var frozen = Models.ResNet.ResNet18Encoder.FromOnnx(arch.Resnet);
                torch.manual_seed(expected.Seed);
                model = new SvgAutoencoder(arch, frozen);
            }
            trainer = new AutoencoderTrainer(model, data, expected);
            times.Set("autoencoder", 0);
        }
        using (trainer)
        {
            var log = new TrainingLog(Path.Combine(dir, "metrics.jsonl"), trainer.Step);
            var sw = new System.Diagnostics.Stopwatch();
            void Save()
            {
                trainer.Save(last);
                times.Add("autoencoder", sw.Elapsed.TotalSeconds);
                sw.Reset();
            }
            TrainSteps($"{owner.Name}: autoencoder", expected.Steps, () => trainer.Step, () =>
            {
                var r = trainer.TrainStep();
                var row = new Dictionary<string, double> { ["loss"] = r.Loss, ["l1"] = r.L1 };
                if (trainer.Model is Models.Vae.KlAutoencoder) row["kl"] = r.Kl;
                log.Add(r.Step, row);
                return r.Step;
            }, step => step % expected.CheckpointEvery == 0, _ => false, Save, sw, cancel);
            Save();
            log.Plot(Path.Combine(dir, "loss.png"), $"{owner.Name}: autoencoder training", new[] { "l1" }, smooth: 25);
            return (last, AutoencoderResult(trainer.Model, times));
        }
    }

    StudyAutoencoderResult AutoencoderResult(ILatentAutoencoder model, StageTimes times)
    {
        double? s = times.Get("autoencoder");
        return new StudyAutoencoderResult
        {
            Steps = Config.Autoencoder.Steps, TrainableParameters = model.TrainableParameters().Sum(p => p.numel()),
            Seconds = s, StepsPerSecond = s is double v && v > 0 ? Config.Autoencoder.Steps / v : null,
        };
    }

    // ---- reconstruction and linear probe ----

    (StudyReconstruction, StudyProbeResult) Representation(StudyArm owner, string ownerDir, ILatentAutoencoder model, StageTimes times, CancellationToken cancel)
    {
        string path = Path.Combine(ownerDir, "representation.json");
        // Shared by the arms that reuse this autoencoder, so checked against its own settings, not an arm's.
        string settings = ConfigJson.Serialize(new { Config.TestImages, Config.ProbeTrainImages, Config.TrainImages, Config.Evaluation.ReconstructionImages, Config.Evaluation.BatchSize, Config.Probe, Config.Seed, Evaluator = Config.Evaluator ?? "bundled" });
        if (File.Exists(path))
        {
            var saved = ReadJson<RepresentationFile>(path);
            if (saved.Settings == settings) return (saved.Reconstruction, saved.Probe);
        }
        cancel.ThrowIfCancellationRequested();
        var quality = Quality();
        var net = _net!;
        int size = model.ImageSize;
        var test = new ImageFolder(Config.TestImages);
        var idx = SampleQuality.Spread(test.Count, Config.Evaluation.ReconstructionImages);
        var psnr = new List<double>();
        var ssim = new List<double>();
        var real = new List<Tensor>();
        var recon = new List<Tensor>();
        var testLatents = new List<Tensor>();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Tensor? gridPairs = null;
        _obs.Stage($"{owner.Name}: reconstruction", idx.Count, advance =>
        {
            foreach (var chunk in idx.Chunk(Config.Evaluation.BatchSize))
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                using var _ = torch.inference_mode();
                var x = test.CenterBatch(chunk, size);
                var z = model.EncodeImages(x);
                var rec = model.Decode(z).clamp(-1, 1);
                var x01 = (x + 1) / 2;
                var r01 = (rec + 1) / 2;
                psnr.AddRange(ImageMetrics.Psnr(x01, r01).data<double>().ToArray());
                ssim.AddRange(ImageMetrics.Ssim(x01, r01).data<double>().ToArray());
                real.Add(net.Features(x01).MoveToOuterDisposeScope());
                recon.Add(net.Features(r01).MoveToOuterDisposeScope());
                testLatents.Add(z.flatten(1).MoveToOuterDisposeScope());
                if (gridPairs is null)
                {
                    int n = Math.Min(8, chunk.Length);
                    gridPairs = torch.cat(new[] { x.narrow(0, 0, n), rec.narrow(0, 0, n) }).MoveToOuterDisposeScope();
                }
                advance(chunk.Length);
            }
        });
        double rfd;
        using (var realF = torch.cat(real, 0))
        using (var recF = torch.cat(recon, 0))
        using (var realM = new FeatureMoments(realF.shape[1]))
        using (var recM = new FeatureMoments(recF.shape[1]))
        {
            realM.Add(realF);
            recM.Add(recF);
            using var a = realM.ToStatistics(null, "originals");
            using var b = recM.ToStatistics(null, "reconstructions");
            rfd = FrechetDistance.Compute(a, b);
        }
        using (var g = gridPairs!)
        using (var grid = ImageFiles.Grid(g, (int)g.shape[0] / 2))
            ImageFiles.SavePng(grid, Path.Combine(ownerDir, "reconstructions.png"));
        var reconstruction = new StudyReconstruction { Images = idx.Count, Psnr = psnr.Average(), Ssim = ssim.Average(), RfdEvaluator = rfd, Seconds = sw.Elapsed.TotalSeconds };
        foreach (var t in real.Concat(recon)) t.Dispose();

        sw.Restart();
        var probeTrain = new ImageFolder(Config.ProbeTrainImages ?? Config.TrainImages);
        var trainLatents = new List<Tensor>();
        _obs.Stage($"{owner.Name}: probe features", probeTrain.Count, advance =>
        {
            foreach (var chunk in Enumerable.Range(0, probeTrain.Count).Chunk(Config.Evaluation.BatchSize))
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                using var _ = torch.inference_mode();
                trainLatents.Add(model.EncodeImages(probeTrain.CenterBatch(chunk, size)).flatten(1).MoveToOuterDisposeScope());
                advance(chunk.Length);
            }
        });
        using var trainX = torch.cat(trainLatents, 0);
        using var testX = torch.cat(testLatents, 0);
        foreach (var t in trainLatents.Concat(testLatents)) t.Dispose();
        using var trainY = torch.tensor(probeTrain.Labels.Select(l => (long)l).ToArray());
        using var testY = torch.tensor(idx.Select(i => (long)test.Labels[i]).ToArray());
        var cfg = new LinearProbeConfig { Epochs = Config.Probe.Epochs, LearningRate = Config.Probe.Lr, Seed = Config.Seed };
        LinearProbeResult? r = null;
        _obs.Stage($"{owner.Name}: linear probe", cfg.Epochs, advance =>
            r = LinearProbe.TrainAndEvaluate(trainX, trainY, testX, testY, Math.Max(probeTrain.ClassNames.Count, test.ClassNames.Count), cfg, _ => advance(1)));
        var probe = new StudyProbeResult
        {
            TrainImages = probeTrain.Count, TestImages = idx.Count, FeatureDim = (int)trainX.shape[1],
            Top1 = r!.Validation.Top1, Top5 = r.Validation.Top5, Seconds = sw.Elapsed.TotalSeconds,
        };
        WriteJson(path, new RepresentationFile(settings, reconstruction, probe));
        _obs.Message($"{owner.Name}: PSNR {reconstruction.Psnr:F2} dB, SSIM {reconstruction.Ssim:F3}, rFD-evaluator {rfd:F2}; linear probe top-1 {probe.Top1:P1}");
        return (reconstruction, probe);
    }

    sealed record RepresentationFile(string Settings, StudyReconstruction Reconstruction, StudyProbeResult Probe);

    // ---- latent cache ----

    LatentCache CacheLatents(StudyArm owner, string ownerDir, string aePath, ILatentAutoencoder model, StageTimes times, CancellationToken cancel)
    {
        string dir = Path.Combine(ownerDir, "cache");
        var writer = new LatentCacheWriter(model, new ImageFolder(Config.TrainImages), dir, new LatentCacheOptions
        {
            ImagesPerShard = Config.Dit.CacheShardImages, BatchSize = Config.Evaluation.BatchSize, AutoencoderPath = aePath,
        });
        if (times.Get("cache") == null && !Directory.Exists(dir)) times.Set("cache", 0);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        LatentCache? cache = null;
        _obs.Stage($"{owner.Name}: latent cache", writer.Total, advance =>
        {
            long seen = 0;
            cache = writer.Write((done, _) => { advance(done - seen); seen = done; }, cancel);
        });
        if (writer.ShardsWritten > 0) times.Add("cache", sw.Elapsed.TotalSeconds);
        return cache!;
    }

    // ---- diffusion ----

    (StudyDiTResult, IReadOnlyList<StudyPoint>, IReadOnlyList<StudyPoint>) TrainAndScore(StudyArm arm, string armDir, LatentCache cache, ILatentAutoencoder autoencoder, StageTimes times, CancellationToken cancel)
    {
        var b = Config.Dit;
        string dir = Path.Combine(armDir, "dit"), last = Path.Combine(dir, "last.safetensors");
        Directory.CreateDirectory(dir);
        string curvePath = Path.Combine(armDir, "training-curve.json"), sweepPath = Path.Combine(armDir, "sampling-sweep.json");
        var curve = File.Exists(curvePath) ? ReadJson<List<StudyPoint>>(curvePath) : new List<StudyPoint>();
        var sweep = File.Exists(sweepPath) ? ReadJson<List<StudyPoint>>(sweepPath) : new List<StudyPoint>();
        DiTTrainer trainer;
        DiT? owned = null;
        if (File.Exists(last))
        {
            trainer = DiTTrainer.Resume(last, cache, b.Steps);
            if (trainer.Step < b.Steps) _obs.Message($"{arm.Name}: DiT resumed at step {trainer.Step}");
        }
        else
        {
            var arch = (DiTPresets.Get(b.Preset) with { InputSize = (int)cache.LatentShape[1], InChannels = cache.Channels, NumClasses = Math.Max(1, cache.NumClasses) }).Validate("DiT config");
            var cfg = new DiTTrainingConfig
            {
                Steps = b.Steps, BatchSize = b.BatchSize, LearningRate = b.Lr, EmaDecay = b.Ema, TimestepShift = b.Shift, Seed = Config.Seed,
                CheckpointEvery = b.CheckpointEvery, SampleEvery = 0,
            }.Validate();
            using var perChannel = cache.ComputeStatistics();
            using var stats = Normalization(arm) == "global" ? Global(perChannel) : new LatentStatistics(perChannel.Mean.clone(), perChannel.Std.clone());
            torch.manual_seed(cfg.Seed);
            owned = new DiT(arch);
            trainer = new DiTTrainer(owned, cache, cfg, stats);
            times.Set("dit", 0);
        }
        using var _t = trainer;
        using var _o = owned;
        var checkpoints = b.Checkpoints.ToHashSet();
        foreach (int c in checkpoints.Where(c => c < trainer.Step && curve.All(p => p.TrainingStep != c)))
            throw new SvgdException($"{curvePath}: no score for training step {c} and the run is past it; delete {armDir} to rerun the arm");
        var log = new TrainingLog(Path.Combine(dir, "metrics.jsonl"), trainer.Step);
        var sw = new System.Diagnostics.Stopwatch();
        void Save()
        {
            trainer.Save(last);
            times.Add("dit", sw.Elapsed.TotalSeconds);
            sw.Reset();
        }
        void ScoreCheckpoint()
        {
            if (!checkpoints.Contains(trainer.Step) || curve.Any(p => p.TrainingStep == trainer.Step)) return;
            var s = Score(arm, trainer, autoencoder, Config.Evaluation.Steps, Config.Evaluation.Cfg, $"{arm.Name}: score step {trainer.Step}");
            curve.Add(StudyPoint.From(s, trainer.Step, Config.Evaluation.Steps, Config.Evaluation.Cfg, times.Get("dit")));
            WriteJson(curvePath, curve);
            _obs.Message($"{arm.Name}: step {trainer.Step}: FD-evaluator {s.FdEvaluator:F2}, class accuracy {s.ClassAccuracy:P1}, precision {s.Precision:F3}, recall {s.Recall:F3}");
        }
        ScoreCheckpoint();
        while (trainer.Step < b.Steps)
        {
            TrainSteps($"{arm.Name}: DiT", b.Steps, () => trainer.Step, () =>
            {
                var r = trainer.TrainStep();
                log.Add(r.Step, new Dictionary<string, double> { ["loss"] = r.Loss, ["grad_norm"] = r.GradNorm });
                return r.Step;
            }, step => checkpoints.Contains(step) || step % b.CheckpointEvery == 0, checkpoints.Contains, Save, sw, cancel);
            ScoreCheckpoint();
        }
        log.Plot(Path.Combine(dir, "loss.png"), $"{arm.Name}: diffusion training", new[] { "loss" }, smooth: 50);

        foreach (double cfgScale in Config.Evaluation.SweepCfg)
            foreach (int steps in Config.Evaluation.SweepSteps)
            {
                if (sweep.Any(p => p.SamplingSteps == steps && p.Cfg == cfgScale)) continue;
                cancel.ThrowIfCancellationRequested();
                var s = Score(arm, trainer, autoencoder, steps, cfgScale, $"{arm.Name}: {steps} steps, CFG {cfgScale:G3}");
                sweep.Add(StudyPoint.From(s, trainer.Step, steps, cfgScale));
                WriteJson(sweepPath, sweep);
                _obs.Message($"{arm.Name}: {steps} steps, CFG {cfgScale:G3}: FD-evaluator {s.FdEvaluator:F2}, class accuracy {s.ClassAccuracy:P1}");
            }

        string grid = Path.Combine(armDir, "samples.png");
        if (!File.Exists(grid)) WriteSampleGrid(trainer, autoencoder, grid);
        double trainSeconds = times.Get("dit") ?? double.NaN;
        var losses = log.Rows.Where(r => r["loss"] != null).Select(r => r["loss"]!.GetValue<double>()).ToList();
        var result = new StudyDiTResult
        {
            Preset = b.Preset, Parameters = trainer.Model.parameters().Sum(p => p.numel()), Steps = trainer.Step, CachedLatents = cache.Count,
            CacheSeconds = times.Get("cache"), TrainSeconds = trainSeconds, StepsPerSecond = b.Steps / trainSeconds,
            FinalLoss = losses.Count == 0 ? double.NaN : losses.TakeLast(50).Average(),
        };
        return (result, curve.OrderBy(p => p.TrainingStep).ToList(), sweep);
    }

    /// <summary>
    /// Training steps under one progress stage until <paramref name="total"/>, or until a step <paramref name="pause"/>
    /// accepts (to score it outside the stage); only the steps are timed, and a cancellation saves before it stops.
    /// </summary>
    void TrainSteps(string description, int total, Func<int> current, Func<int> trainStep, Func<int, bool> saveAt, Func<int, bool> pause,
        Action save, System.Diagnostics.Stopwatch sw, CancellationToken cancel)
    {
        _obs.Stage(description, total, advance =>
        {
            advance(current());
            while (current() < total)
            {
                if (cancel.IsCancellationRequested) { save(); cancel.ThrowIfCancellationRequested(); }
                sw.Start();
                int step = trainStep();
                sw.Stop();
                advance(1);
                if (saveAt(step)) save();
                if (pause(step)) break;
            }
        });
    }

    /// <summary>One mean and one standard deviation for every channel, from per-channel statistics of equally many tokens.</summary>
    static LatentStatistics Global(LatentStatistics perChannel)
    {
        using var scope = torch.NewDisposeScope();
        var m = perChannel.Mean.to(ScalarType.Float64);
        var s = perChannel.Std.to(ScalarType.Float64);
        var mean = m.mean();
        var std = ((s * s + m * m).mean() - mean * mean).clamp_min(1e-16).sqrt();
        return new LatentStatistics(torch.full_like(m, mean.item<double>()), torch.full_like(s, std.item<double>()));
    }

    SampleScore Score(StudyArm arm, DiTTrainer trainer, ILatentAutoencoder autoencoder, int steps, double cfg, string description)
    {
        var quality = Quality();
        var generator = new SvgGenerator(trainer.Ema, Sampler.Create("euler", steps, Config.Evaluation.Shift),
            cfg == 1.0 ? GuidanceSchedule.None : GuidanceSchedule.Constant(cfg), trainer.Statistics, autoencoder);
        SampleScore? score = null;
        _obs.Stage(description, Config.Evaluation.Samples, advance =>
            score = quality.Score(generator, Config.Evaluation.Samples, Config.Seed, Config.Evaluation.BatchSize, advance));
        return score!;
    }

    void WriteSampleGrid(DiTTrainer trainer, ILatentAutoencoder autoencoder, string path)
    {
        using var scope = torch.NewDisposeScope();
        double cfg = Config.Evaluation.SweepCfg.Max();
        var generator = new SvgGenerator(trainer.Ema, Sampler.Create("euler", Config.Evaluation.Steps, Config.Evaluation.Shift),
            cfg == 1.0 ? GuidanceSchedule.None : GuidanceSchedule.Constant(cfg), trainer.Statistics, autoencoder);
        int classes = Math.Min(10, trainer.Model.Config.NumClasses);
        var labels = Enumerable.Range(0, classes).SelectMany(c => Enumerable.Repeat(c, 8)).ToList();
        var noise = torch.stack(Enumerable.Range(0, labels.Count).Select(i => generator.Noise(Config.Seed, i)).ToArray());
        var images = generator.Decode(generator.SampleLatents(noise, labels));
        ImageFiles.SavePng(ImageFiles.Grid(images, 8), path);
    }

    // ---- evaluator and baseline ----

    SampleQuality Quality()
    {
        if (_quality != null) return _quality;
        _net = EvaluatorFeatureNetwork.Load(Config.Evaluator);
        var reference = new ImageFolder(Config.ReferenceImages);
        _obs.Stage("evaluator features of the reference images", 1, advance =>
        {
            _quality = new SampleQuality(_net, reference, _net.Net.Config.ImageSize, Config.Evaluation.K);
            advance(1);
        });
        return _quality!;
    }

    /// <summary>Real training images scored like samples (as many, spread over the classes): the floor of every table.</summary>
    StudyBaseline Baseline()
    {
        string path = Path.Combine(Config.ResultsDir, "baseline.json");
        string fingerprint = ConfigJson.Serialize(new { Config.TrainImages, Config.ReferenceImages, Config.Evaluation.Samples, Config.Evaluation.K, Evaluator = Config.Evaluator ?? "bundled" });
        if (File.Exists(path))
        {
            var saved = ReadJson<BaselineFile>(path);
            if (saved.Fingerprint == fingerprint) return saved.Baseline;
        }
        var quality = Quality();
        var train = new ImageFolder(Config.TrainImages);
        var idx = SampleQuality.Spread(train.Count, Config.Evaluation.Samples);
        using var features = SampleQuality.FolderFeatures(_net!, train, idx, quality.ImageSize);
        using var labels = torch.tensor(idx.Select(i => (long)train.Labels[i]).ToArray());
        var s = quality.ScoreFeatures(features, labels);
        var baseline = new StudyBaseline { Images = Config.TrainImages, Count = idx.Count, FdEvaluator = s.FdEvaluator, ClassAccuracy = s.ClassAccuracy, Precision = s.Precision, Recall = s.Recall };
        WriteJson(path, new BaselineFile(fingerprint, baseline));
        return baseline;
    }

    sealed record BaselineFile(string Fingerprint, StudyBaseline Baseline);

    // ---- files ----

    static readonly JsonSerializerOptions Json = new(Finite.MetricsJson)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        // Fingerprints hold JSON: kept readable in metrics.json instead of \u0022-escaped.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    internal static T ReadJson<T>(string path)
    {
        try { return JsonSerializer.Deserialize<T>(File.ReadAllText(path), Json) ?? throw new SvgdException($"{path}: empty"); }
        catch (JsonException e) { throw new SvgdException($"{path}: not a study file ({e.Message.Split('\n')[0]})"); }
    }

    internal static void WriteJson<T>(string path, T value) =>
        AtomicFile.Write(path, fs => fs.Write(JsonSerializer.SerializeToUtf8Bytes(value, Json)));

    /// <summary>Seconds spent per stage, kept beside the checkpoints they belong to; null once a stage's time is unknown
    /// (its checkpoint came from an earlier run that recorded none).</summary>
    sealed class StageTimes(string path)
    {
        Dictionary<string, double?> Load() => File.Exists(path) ? ReadJson<Dictionary<string, double?>>(path) : new();
        public double? Get(string stage) => Load().TryGetValue(stage, out var v) ? v : null;
        public void Set(string stage, double seconds) { var d = Load(); d[stage] = seconds; WriteJson(path, d); }
        public void Add(string stage, double seconds)
        {
            var d = Load();
            if (d.TryGetValue(stage, out var v) && v is double s) { d[stage] = s + seconds; WriteJson(path, d); }
        }
    }
}
