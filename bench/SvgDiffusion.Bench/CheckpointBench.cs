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
///   dotnet SvgDiffusion.Bench.dll checkpoint straight --dir D [--preset svg-xl] [--precision fp32|bf16]
///     one step, save D/step1.safetensors (timed), two more steps; writes D/straight.json (losses, SHA-256 of
///     the model and EMA weights after step 3).
///   dotnet SvgDiffusion.Bench.dll checkpoint resume --dir D [...]
///     resumes D/step1.safetensors (timed), takes steps 2 and 3, and compares with D/straight.json. Steps 2 and
///     3 move every weight by AdamW's update, which reads every moment and step count: equal weights after
///     them mean the optimiser state came back exactly.
/// Latents are synthetic (16x16x392, the released autoencoder's shape; sample k a function of k alone), batch 1.
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
        for (int i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--dir": dir = args[++i]; break;
                case "--preset": preset = args[++i]; break;
                case "--precision": precision = args[++i]; break;
                default: Console.Error.WriteLine($"error: unknown argument '{args[i]}' (known: --dir D, --preset NAME, --precision fp32|bf16)"); return 1;
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
        (Tensor, Tensor) Batch(IReadOnlyList<int> indices)
        {
            using var scope = torch.NewDisposeScope();
            var x = torch.stack(indices.Select(k => { using var g = new Generator((ulong)k + 1); return torch.randn(new long[] { arch.InChannels, arch.InputSize, arch.InputSize }, generator: g); }).ToArray());
            var y = torch.tensor(indices.Select(k => (long)(k % arch.NumClasses)).ToArray());
            return (x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope());
        }
        const int DatasetSize = 64;
        Say($"{phase}: {preset}, {precision}, {torch.get_num_threads()} threads; {Memory()}");

        DiTTrainer trainer;
        DiT? owned = null;
        var sw = Stopwatch.StartNew();
        if (phase == "straight")
        {
            var config = new DiTTrainingConfig { BatchSize = 1, Steps = 3, LearningRate = 1e-4, Seed = 0 };
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
            var losses = new List<double>();
            while (trainer.Step < 3)
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
                Say($"after step 3: model {model[..16]}, EMA {ema[..16]} (written to {record})");
                return 0;
            }
            var expected = JsonSerializer.Deserialize<Record>(File.ReadAllText(record))!;
            bool same = expected.Model == model && expected.Ema == ema && expected.Losses.SequenceEqual(losses);
            Say($"after step 3: model {model[..16]} (uninterrupted {expected.Model[..16]}), EMA {ema[..16]} (uninterrupted {expected.Ema[..16]}); " +
                $"losses {string.Join(", ", losses.Select(l => l.ToString("R")))} (uninterrupted {string.Join(", ", expected.Losses.Select(l => l.ToString("R")))})");
            Say($"bit-exact resume: {(same ? "yes" : "NO")}");
            return same ? 0 : 3;
        }
    }

    sealed record Record(double[] Losses, string Model, string Ema);

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
        static string Gb(string line) => (long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1048576.0).ToString("F2");
    }
}
