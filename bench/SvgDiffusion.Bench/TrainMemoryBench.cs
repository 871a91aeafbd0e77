using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Peak memory of the real DiT trainer (AdamW, EMA, gradient clipping; fp32 or bf16 mixed) on synthetic latents of
/// the released autoencoder's shape (16x16x392), against <see cref="TrainingMemory"/>'s estimate:
///   dotnet SvgDiffusion.Bench.dll train-memory --preset svg-xl --batch 1 --precision bf16 --steps 2
/// One line per phase: resident set now and peak, glibc heap in use.
/// </summary>
static class TrainMemoryBench
{
    public static int Run(string[] args)
    {
        string preset = "svg-s";
        int batch = 1, steps = 2;
        bool bf16 = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--preset": preset = args[++i]; break;
                case "--batch": batch = int.Parse(args[++i]); break;
                case "--steps": steps = int.Parse(args[++i]); break;
                case "--precision": bf16 = args[++i] == "bf16"; break;
                default: Console.Error.WriteLine($"error: unknown argument '{args[i]}' (known: --preset NAME, --batch N, --steps N, --precision fp32|bf16)"); return 1;
            }
        }
        var arch = DiTPresets.Get(preset);
        var estimate = TrainingMemory.DiT(arch, batch, bf16, ema: true, name: preset);
        Console.WriteLine($"estimate: {estimate}");
        void Say(string phase)
        {
            var (used, free) = ProcessMemory.Heap();
            Console.WriteLine($"{phase}: RSS {ResourceBudget.Gib(ProcessMemory.ResidentBytes())}, peak {ResourceBudget.Gib(ProcessMemory.PeakResidentBytes())}; heap {ResourceBudget.Gib(used)} in use, {ResourceBudget.Gib(free)} free");
        }
        Say("start");
        torch.manual_seed(0);
        using var model = new DiT(arch);
        using var stats = new LatentStatistics(torch.zeros(1, arch.InChannels, 1, 1), torch.ones(1, arch.InChannels, 1, 1));
        (Tensor, Tensor) Batch(IReadOnlyList<int> indices)
        {
            using var scope = torch.NewDisposeScope();
            var x = torch.randn(indices.Count, arch.InChannels, arch.InputSize, arch.InputSize);
            var y = torch.tensor(indices.Select(k => (long)(k % arch.NumClasses)).ToArray());
            return (x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope());
        }
        using var trainer = new DiTTrainer(model, Batch, 4096, new DiTTrainingConfig { BatchSize = batch, Steps = steps, LearningRate = 1e-4, Seed = 0 }, stats);
        trainer.ComputePrecision = bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        Say("trainer built");
        trainer.PhaseProbe = phase => Say($"  {phase}");
        for (int s = 0; s < steps; s++)
        {
            trainer.TrainStep();
            Say($"step {s + 1}");
        }
        Console.WriteLine($"peak RSS {ResourceBudget.Gib(ProcessMemory.PeakResidentBytes())} (estimate {ResourceBudget.Gib(estimate.PeakBytes)})");
        // glibc's per-arena totals (stderr): where the heap's free space sits.
        if (Environment.GetEnvironmentVariable("SVGD_MALLOC_STATS") == "1") malloc_stats();
        return 0;
    }

    [System.Runtime.InteropServices.DllImport("libc.so.6")]
    static extern void malloc_stats();
}
