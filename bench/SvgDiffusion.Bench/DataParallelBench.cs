using System.Diagnostics;
using SvgDiffusion.Distributed;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Time of a data-parallel DiT training step and of its gradient allreduce, on synthetic latents of the
/// released autoencoder's shape (16x16x392). Run it alone for one process, under mpiexec for several:
///   dotnet SvgDiffusion.Bench.dll data-parallel --preset svg-xs --batch 8 --steps 6
///   mpiexec.mpich -n 2 dotnet SvgDiffusion.Bench.dll data-parallel --preset svg-xs --batch 8 --steps 6
/// </summary>
static class DataParallelBench
{
    public static int Run(string[] args)
    {
        string preset = "svg-xs";
        int batch = 8, steps = 6, warmup = 2;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--preset": preset = args[++i]; break;
                case "--batch": batch = int.Parse(args[++i]); break;
                case "--steps": steps = int.Parse(args[++i]); break;
                case "--warmup": warmup = int.Parse(args[++i]); break;
                default: Console.Error.WriteLine($"error: unknown argument '{args[i]}' (known: --preset NAME, --batch N, --steps N, --warmup N)"); return 1;
            }
        }
        var launch = MpiLaunch.Detect();
        using var comm = MpiLaunch.Connect(launch);
        if (MpiLaunch.ThreadsPerProcess(launch) is int threads) torch.set_num_threads(threads);
        void Say(string line) { if (comm.IsRoot) Console.WriteLine(line); }

        var arch = DiTPresets.Get(preset);
        torch.manual_seed(0);
        using var model = new DiT(arch);
        using var stats = new LatentStatistics(torch.zeros(1, arch.InChannels, 1, 1), torch.ones(1, arch.InChannels, 1, 1));
        // Deterministic synthetic latents: sample k is a function of k alone, on every rank.
        (Tensor, Tensor) Batch(IReadOnlyList<int> indices)
        {
            using var scope = torch.NewDisposeScope();
            var x = torch.stack(indices.Select(k => { using var g = new Generator((ulong)k + 1); return torch.randn(new long[] { arch.InChannels, arch.InputSize, arch.InputSize }, generator: g); }).ToArray());
            var y = torch.tensor(indices.Select(k => (long)(k % arch.NumClasses)).ToArray());
            return (x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope());
        }
        var config = new DiTTrainingConfig { BatchSize = batch, Steps = warmup + steps, LearningRate = 1e-4, Seed = 0 };
        using var trainer = new DiTTrainer(model, Batch, 4096, config, stats);
        trainer.Distribute(comm);
        long parameters = model.parameters().Sum(p => p.numel());
        Say($"{preset}: {parameters:N0} parameters; {comm.Size} process(es) x {torch.get_num_threads()} thread(s); global batch {batch}; {warmup} warm-up + {steps} timed steps");

        for (int s = 0; s < warmup; s++) trainer.TrainStep();
        var stepMs = new List<double>();
        var reduceMs = new List<double>();
        for (int s = 0; s < steps; s++)
        {
            comm.Barrier();
            double before = trainer.Allreduce?.Elapsed.TotalMilliseconds ?? 0;
            var sw = Stopwatch.StartNew();
            trainer.TrainStep();
            stepMs.Add(sw.Elapsed.TotalMilliseconds);
            reduceMs.Add((trainer.Allreduce?.Elapsed.TotalMilliseconds ?? 0) - before);
        }
        double step = Median(stepMs), reduce = Median(reduceMs);
        Say($"step {step:F0} ms (median; min {stepMs.Min():F0}, max {stepMs.Max():F0}), compute {step - reduce:F0} ms = {(step - reduce) / Math.Max(1, batch / comm.Size):F0} ms per sample per process");
        if (trainer.Allreduce is GradientBuckets g)
        {
            Say($"gradient allreduce {reduce:F0} ms per step ({100 * reduce / step:F1}% of the step): {g.Bytes / 1048576.0:F1} MiB in {g.BucketCount} bucket(s), including waiting for the slower process");
            // The transfer alone: the same bytes, all processes already at the barrier.
            using var flat = torch.zeros(g.Bytes / sizeof(float), dtype: ScalarType.Float32);
            var pure = new List<double>();
            for (int r = 0; r < 5; r++)
            {
                comm.Barrier();
                var sw = Stopwatch.StartNew();
                comm.AllreduceSum(flat);
                pure.Add(sw.Elapsed.TotalMilliseconds);
            }
            double t = Median(pure);
            Say($"allreduce of {g.Bytes / 1048576.0:F1} MiB alone: {t:F1} ms (median of 5), {g.Bytes / (t / 1000) / 1e9:F2} GB/s algorithm bandwidth");
        }
        return 0;
    }

    static double Median(List<double> v)
    {
        var s = v.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }
}
