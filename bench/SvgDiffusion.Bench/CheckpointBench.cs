using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// A DiT training checkpoint of a large model (SVG-XL: 676M parameters, about 10.8 GB with EMA weights and
/// AdamW state) written and resumed, checked bit for bit (issue 28 item 7). Two processes, so each one's peak
/// memory is its own (run them under /usr/bin/time -v; bench/checkpoint-xl.sh does):
///   dotnet SvgDiffusion.Bench.dll checkpoint straight --dir D [--preset svg-xl] [--precision fp32|bf16] [--grid N --channels N]
///     one step, save D/step1.safetensors (timed), one more step; writes D/straight.json (losses, SHA-256 of
///     the model and EMA weights after step 2).
///   dotnet SvgDiffusion.Bench.dll checkpoint resume --dir D [same options]
///     resumes D/step1.safetensors (timed), takes step 2 and compares with D/straight.json. Step 2 moves every
///     weight by AdamW's update, which reads every moment and the step count, and the EMA by the weights:
///     equal weights after it mean the model, EMA and optimiser state came back exactly.
/// Latents are synthetic (sample k a function of k alone), batch 1: the preset's 16x16x392 (the released
/// autoencoder's shape), or --grid/--channels for a smaller latent (fewer activations, same optimiser state).
/// </summary>
static class CheckpointBench
{
    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] is not ("straight" or "resume"))
        {
            Console.Error.WriteLine("error: checkpoint straight|resume --dir D [--preset svg-xl] [--precision fp32|bf16]");
            return 1;
        }
        string phase = args[0], preset = "svg-xl", precision = "fp32";
        string? dir = null;
        int? grid = null, channels = null;
        bool train = true;
        for (int i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--dir": dir = args[++i]; break;
                case "--preset": preset = args[++i]; break;
                case "--precision": precision = args[++i]; break;
                case "--grid": grid = int.Parse(args[++i]); break;
                case "--channels": channels = int.Parse(args[++i]); break;
                case "--no-step": train = false; break;
                default: Console.Error.WriteLine($"error: unknown argument '{args[i]}' (known: --dir D, --preset NAME, --precision fp32|bf16, --grid N, --channels N, --no-step)"); return 1;
            }
        }
        if (dir == null) { Console.Error.WriteLine("error: --dir is required"); return 1; }
        Directory.CreateDirectory(dir);
        var compute = precision switch
        {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            _ => throw new ArgumentException($"--precision is fp32 or bf16, not {precision}"),
        };
        string ckpt = Path.Combine(dir, "step1.safetensors"), record = Path.Combine(dir, "straight.json");
        var arch = DiTPresets.Get(preset);
        arch = (arch with { InputSize = grid ?? arch.InputSize, InChannels = channels ?? arch.InChannels }).Validate("DiT config");
        (Tensor, Tensor) Batch(IReadOnlyList<int> indices)
        {
            using var scope = torch.NewDisposeScope();
            var x = torch.stack(indices.Select(k => { using var g = new Generator((ulong)k + 1); return torch.randn(new long[] { arch.InChannels, arch.InputSize, arch.InputSize }, generator: g); }).ToArray());
            var y = torch.tensor(indices.Select(k => (long)(k % arch.NumClasses)).ToArray());
            return (x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope());
        }
        const int DatasetSize = 64, Steps = 2;
        Say($"{phase}: {preset} on {arch.InChannels}x{arch.InputSize}x{arch.InputSize} latents, {precision}, {torch.get_num_threads()} threads; {Memory()}");
        using var guard = MemoryGuard();

        DiTTrainer trainer;
        DiT? owned = null;
        var sw = Stopwatch.StartNew();
        if (phase == "straight")
        {
            var config = new DiTTrainingConfig { BatchSize = 1, Steps = Steps, LearningRate = 1e-4, Seed = 0 };
            torch.manual_seed(0);
            owned = new DiT(arch);
            using var stats = new LatentStatistics(torch.zeros(1, arch.InChannels, 1, 1), torch.ones(1, arch.InChannels, 1, 1));
            trainer = new DiTTrainer(owned, Batch, DatasetSize, config, stats);
            Say($"built in {sw.Elapsed.TotalSeconds:F1} s: {owned.parameters().Sum(p => p.numel()):N0} parameters; {Memory()}");
        }
        else
        {
            trainer = DiTTrainer.Resume(ckpt, Batch, DatasetSize);
            Say($"resumed {ckpt} at step {trainer.Step} in {sw.Elapsed.TotalSeconds:F1} s ({new FileInfo(ckpt).Length / 1e9:F2} GB, {new FileInfo(ckpt).Length / 1e9 / sw.Elapsed.TotalSeconds:F2} GB/s); {Memory()}");
        }
        using (trainer)
        using (owned)
        {
            trainer.ComputePrecision = compute;
            if (!train) return StateOnly(phase, trainer, ckpt, record);
            var losses = new List<double>();
            while (trainer.Step < Steps)
            {
                sw.Restart();
                var r = trainer.TrainStep();
                losses.Add(r.Loss);
                Say($"step {r.Step}: loss {r.Loss:R} in {sw.Elapsed.TotalSeconds:F1} s; {Memory()}");
                if (phase == "straight" && r.Step == 1)
                {
                    sw.Restart();
                    trainer.Save(ckpt);
                    double s = sw.Elapsed.TotalSeconds;
                    long bytes = new FileInfo(ckpt).Length;
                    Say($"saved {ckpt} in {s:F1} s: {bytes:N0} bytes ({bytes / 1e9:F2} GB, {bytes / 1e9 / s:F2} GB/s, fsync included); {Memory()}");
                }
            }
            string model = Digest(trainer.Model), ema = Digest(trainer.Ema);
            if (phase == "straight")
            {
                File.WriteAllText(record, JsonSerializer.Serialize(new Record(losses.Skip(1).ToArray(), model, ema)));
                Say($"after step {Steps}: model {model[..16]}, EMA {ema[..16]} (written to {record})");
                return 0;
            }
            var expected = JsonSerializer.Deserialize<Record>(File.ReadAllText(record))!;
            bool same = expected.Model == model && expected.Ema == ema && expected.Losses.SequenceEqual(losses);
            Say($"after step {Steps}: model {model[..16]} (uninterrupted {expected.Model[..16]}), EMA {ema[..16]} (uninterrupted {expected.Ema[..16]}); " +
                $"losses {string.Join(", ", losses.Select(l => l.ToString("R")))} (uninterrupted {string.Join(", ", expected.Losses.Select(l => l.ToString("R")))})");
            Say($"bit-exact resume: {(same ? "yes" : "NO")}");
            return same ? 0 : 3;
        }
    }

    /// <summary>
    /// On a shared machine, stops this process (exit 137, one line) before the kernel's OOM killer picks someone:
    /// when MemAvailable falls under SVGD_BENCH_MIN_AVAILABLE_GB (default 1.5).
    /// </summary>
    static Timer MemoryGuard()
    {
        double floor = double.TryParse(Environment.GetEnvironmentVariable("SVGD_BENCH_MIN_AVAILABLE_GB"), System.Globalization.CultureInfo.InvariantCulture, out var f) ? f : 1.5;
        int stopping = 0;
        return new Timer(_ =>
        {
            var line = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal));
            if (line == null) return;
            double available = long.Parse(line.Split(new[] { ' ', '\t' }, StringSplitOptions.RemoveEmptyEntries)[1]) / 1048576.0;
            if (available >= floor || Interlocked.Exchange(ref stopping, 1) == 1) return;
            Say($"stopped: the machine has {available:F2} GB available (< {floor} GB); this process: {Memory()}");
            Environment.Exit(137);
        }, null, 0, 250);
    }

    /// <summary>
    /// --no-step: the checkpoint round trip alone, for a model whose training step does not fit in memory. The
    /// straight phase gives the optimiser a state derived from the weights (exp_avg = 1e-3 w, exp_avg_sq = w*w,
    /// step 7: every tensor distinct), saves, and records SHA-256 digests of the weights, EMA weights and
    /// optimiser state; the resume phase resumes and compares the same digests.
    /// </summary>
    static int StateOnly(string phase, DiTTrainer trainer, string ckpt, string record)
    {
        var sw = Stopwatch.StartNew();
        if (phase == "straight")
        {
            // exp_avg and exp_avg_sq in the optimiser's own order (the trainable parameters').
            var ps = trainer.Model.parameters().Where(p => p.requires_grad).ToList();
            var states = trainer.Optimizer.state_dict().State.Cast<TorchSharp.Modules.AdamW.State>().ToList();
            using (torch.no_grad())
                for (int i = 0; i < ps.Count; i++)
                {
                    states[i].exp_avg.copy_(ps[i]).mul_(1e-3);
                    states[i].exp_avg_sq.copy_(ps[i]).mul_(ps[i]);
                    states[i].step = 7;
                }
            Say($"optimizer state set ({states.Count} parameters) in {sw.Elapsed.TotalSeconds:F1} s; {Memory()}");
            sw.Restart();
            trainer.Save(ckpt);
            double s = sw.Elapsed.TotalSeconds;
            long bytes = new FileInfo(ckpt).Length;
            Say($"saved {ckpt} in {s:F1} s: {bytes:N0} bytes ({bytes / 1e9:F2} GB, {bytes / 1e9 / s:F2} GB/s, fsync included); {Memory()}");
        }
        string model = Digest(trainer.Model), ema = Digest(trainer.Ema), opt = Digest(trainer.Optimizer);
        if (phase == "straight")
        {
            File.WriteAllText(record, JsonSerializer.Serialize(new Record(Array.Empty<double>(), model, ema, opt)));
            Say($"digests: model {model[..16]}, EMA {ema[..16]}, optimizer {opt[..16]} (written to {record}); {Memory()}");
            return 0;
        }
        var expected = JsonSerializer.Deserialize<Record>(File.ReadAllText(record))!;
        bool same = expected.Model == model && expected.Ema == ema && expected.Optimizer == opt;
        Say($"digests: model {model[..16]} (saved {expected.Model[..16]}), EMA {ema[..16]} (saved {expected.Ema[..16]}), optimizer {opt[..16]} (saved {expected.Optimizer?[..16]}); {Memory()}");
        Say($"bit-exact resume of weights, EMA and optimizer state: {(same ? "yes" : "NO")}");
        return same ? 0 : 3;
    }

    /// <summary>SHA-256 of an Adam/AdamW state: every step count and moment, parameter by parameter.</summary>
    static string Digest(TorchSharp.Modules.OptimizerHelper opt)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var st in opt.state_dict().State.Cast<TorchSharp.Modules.AdamW.State>())
        {
            h.AppendData(BitConverter.GetBytes(st.step));
            foreach (var t in new[] { st.exp_avg, st.exp_avg_sq, st.max_exp_avg_sq })
            {
                if (t is null) continue;
                using var c = t.detach().cpu().contiguous();
                h.AppendData(c.bytes);
            }
        }
        return Convert.ToHexString(h.GetHashAndReset());
    }

    sealed record Record(double[] Losses, string Model, string Ema, string? Optimizer = null);

    static void Say(string line) => Console.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {line}");

    /// <summary>SHA-256 of every tensor of a module's state dict, by name, in order.</summary>
    static string Digest(nn.Module m)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (k, t) in m.state_dict())
        {
            h.AppendData(System.Text.Encoding.UTF8.GetBytes(k));
            using var c = t.detach().cpu().contiguous();
            h.AppendData(c.bytes);
        }
        return Convert.ToHexString(h.GetHashAndReset());
    }

    /// <summary>This process's resident memory now and at its peak (/proc/self/status).</summary>
    static string Memory()
    {
        string rss = "?", hwm = "?";
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Gb(line);
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = Gb(line);
        }
        return $"RSS {rss} GB, peak {hwm} GB";
        static string Gb(string line) => (long.Parse(line.Split(new[] { ' ', '\t' }, StringSplitOptions.RemoveEmptyEntries)[1]) / 1048576.0).ToString("F2");
    }
}
