using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>One benchmark row: items per second and how much of the machine's matmul peak that is.</summary>
public sealed record ThroughputResult(string Name, string Dtype, int Batch, double ItemsPerSecond, double GflopPerItem, double Gflops, double FractionOfFp32Peak, double FractionOfDtypePeak)
{
    /// <summary>GFLOP/s over the CPU's own FMA peak for the dtype (<see cref="PhysicalPeak"/>): the yardstick that does not flatter a slow library.</summary>
    public double FractionOfPhysicalPeak { get; init; } = double.NaN;
    /// <summary>Peak resident set of the process while the row was set up and run (bytes; 0 where not measured).</summary>
    public long PeakResidentBytes { get; init; }
}

/// <summary>Timing helpers shared by the benchmark project and <c>svgd bench</c>.</summary>
public static class Throughput
{
    /// <summary>Best-of-<paramref name="repeats"/> GFLOP/s of an n^3 matmul: the practical peak the other numbers are a fraction of.</summary>
    public static double MatmulPeakGflops(ScalarType dtype, int n = 2048, int repeats = 5)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var a = torch.randn(n, n).to(dtype);
        var b = torch.randn(n, n).to(dtype);
        a.matmul(b).Dispose();
        double best = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            a.matmul(b).Dispose();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * n * n * n / best / 1e9;
    }

    /// <summary>
    /// GFLOP/s of the packed fp32 GEMM the model linears use (<see cref="Runtime.Sgemm"/>) on a DiT-XL
    /// MLP shape — 512 tokens (one image with CFG), 1152 -> 4608 — with the weight packed beforehand as
    /// the linears keep it; NaN where it is not in use.
    /// </summary>
    public static double PackedSgemmGflops(int rows = 512, int inFeatures = 1152, int outFeatures = 4608, int repeats = 5)
    {
        if (!Runtime.Sgemm.Enabled) return double.NaN;
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var x = torch.randn(rows, inFeatures);
        var w = torch.randn(outFeatures, inFeatures);
        using var packed = Runtime.Sgemm.Pack(w);
        Runtime.Sgemm.Linear(x, packed, null).Dispose();
        double best = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            Runtime.Sgemm.Linear(x, packed, null).Dispose();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * rows * inFeatures * outFeatures / best / 1e9;
    }

    /// <summary>The native bf16 GEMM's GFLOP/s on the same DiT-XL MLP shape, best of <paramref name="repeats"/>; NaN where bf16 linears run on libtorch.</summary>
    public static double PackedBf16GemmGflops(int rows = 512, int inFeatures = 1152, int outFeatures = 4608, int repeats = 5)
    {
        if (!Runtime.Bf16Gemm.Enabled) return double.NaN;
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var x = torch.randn(rows, inFeatures).to(ScalarType.BFloat16);
        var w = torch.randn(outFeatures, inFeatures).to(ScalarType.BFloat16);
        using var packed = Runtime.Bf16Gemm.Pack(w);
        Runtime.Bf16Gemm.Linear(x, packed, null).Dispose();
        double best = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            Runtime.Bf16Gemm.Linear(x, packed, null).Dispose();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * rows * inFeatures * outFeatures / best / 1e9;
    }

    /// <summary>
    /// Matmul GFLOP/s at the largest square size up to <paramref name="maxN"/> whose single product
    /// fits in a fraction of <paramref name="budgetSeconds"/>: bf16 on CPUs without native bf16
    /// instructions runs at well under 1 GFLOP/s, where a fixed 2048^3 would take minutes.
    /// </summary>
    public static (double Gflops, int N) MatmulGflopsWithin(ScalarType dtype, double budgetSeconds, int maxN = 2048)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        int n = 256;
        double best = 0;
        while (true)
        {
            using var a = torch.randn(n, n).to(dtype);
            using var b = torch.randn(n, n).to(dtype);
            a.matmul(b).Dispose();
            double fastest = double.MaxValue;
            for (int i = 0; i < 3; i++)
            {
                var sw = Stopwatch.StartNew();
                a.matmul(b).Dispose();
                fastest = Math.Min(fastest, sw.Elapsed.TotalSeconds);
            }
            best = 2.0 * n * n * n / fastest / 1e9;
            // The next size costs 8x: stop while the whole measurement stays inside the budget.
            if (n * 2 > maxN || fastest * 8 * 4 > budgetSeconds) return (best, n);
            n *= 2;
        }
    }

    /// <summary>
    /// Median seconds of <paramref name="run"/> after <paramref name="warmup"/> untimed calls; repeats
    /// stop early (after at least one) once the timed runs have taken <paramref name="budgetSeconds"/>.
    /// </summary>
    public static double MedianSeconds(Action run, int warmup = 1, int repeats = 3, double budgetSeconds = double.PositiveInfinity)
    {
        for (int i = 0; i < warmup; i++) run();
        var times = new List<double>();
        for (int i = 0; i < repeats && (i == 0 || times.Sum() < budgetSeconds); i++)
        {
            var sw = Stopwatch.StartNew();
            run();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    public static ThroughputResult Measure(string name, ScalarType dtype, int batch, double gflopPerItem, double peakFp32, double peakDtype, Action run, int warmup = 1, int repeats = 3, double budgetSeconds = double.PositiveInfinity)
    {
        double s = MedianSeconds(run, warmup, repeats, budgetSeconds);
        double ips = batch / s;
        double gflops = ips * gflopPerItem;
        return new ThroughputResult(name, dtype == ScalarType.BFloat16 ? "bf16" : "fp32", batch, ips, gflopPerItem, gflops, gflops / peakFp32, gflops / peakDtype);
    }
}
