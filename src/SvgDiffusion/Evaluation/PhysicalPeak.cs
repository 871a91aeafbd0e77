using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SvgDiffusion.Runtime;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// What the CPU itself can do, as opposed to what a library reaches: fused multiply-adds in the widest
/// vectors the CPU has, on every thread, with enough independent accumulators to hide the FMA latency.
/// Library GEMMs are measured against this; a fraction of the library's own GEMM hides how far that
/// GEMM is from the hardware (MKL's fp32 GEMM on AMD reaches about 20% of it).
/// </summary>
public static class PhysicalPeak
{
    /// <summary>Vector width used: 512 (AVX-512), 256 (AVX2 + FMA) or 128 (SSE, no FMA).</summary>
    public static int VectorBits => Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? 512 : Fma.IsSupported ? 256 : 128;

    /// <summary>
    /// fp32 GFLOP/s of the FMA loop on <paramref name="threads"/> threads (each FMA counts 2 FLOP), the
    /// best of <paramref name="rounds"/> rounds sharing <paramref name="seconds"/>. A peak is what the CPU
    /// can do, so the best round is the estimate: on a shared VM one 0.1 s round measured 270 GFLOP/s
    /// where the others gave 400.
    /// </summary>
    public static double Fp32Gflops(int threads, double seconds = 0.3, int rounds = 3) => Rounds(threads, seconds, rounds, Loop, FlopsPerIteration);

    /// <summary>
    /// bf16 peak where it is native. With AVX512-BF16 and our native kernels it is measured: the
    /// VDPBF16PS loop of Native/bf16_peak.c on every thread, best round as for fp32 (on a 2-core Zen 5:
    /// 770-800 GFLOP/s against 400 fp32). Without the kernels it is estimated as twice the fp32 rate, the
    /// dot-product instruction's two products per lane (AMX tiles do more; not counted). Null where bf16
    /// is emulated: there is no bf16 hardware to be a fraction of.
    /// </summary>
    public static double? Bf16Gflops(double fp32Gflops, int threads = 0, double seconds = 1, int rounds = 10)
    {
        if (!CpuInfo.Current.NativeBf16) return null;
        if (!Bf16Measured) return 2 * fp32Gflops;
        return Rounds(threads <= 0 ? TorchSharp.torch.get_num_threads() : threads, seconds, rounds, Bf16Chunk, NativeBf16FlopsPerIteration);
    }

    /// <summary>Whether <see cref="Bf16Gflops"/> measures (true) or estimates from the fp32 rate.</summary>
    public static bool Bf16Measured => CpuInfo.Current.Has("avx512_bf16") && NativeKernels.MissingReason == null;

    static unsafe double NativeBf16FlopsPerIteration => NativeKernels.Bf16DotFlopsPerIteration();

    static unsafe float Bf16Chunk(int iterations) => NativeKernels.Bf16DotLoop(iterations);

    /// <summary>FLOP/s of <paramref name="loop"/> on <paramref name="threads"/> threads, best of <paramref name="rounds"/> rounds sharing <paramref name="seconds"/>.</summary>
    static double Rounds(int threads, double seconds, int rounds, Func<int, float> loop, double flopsPerIteration)
    {
        threads = Math.Max(1, threads);
        rounds = Math.Max(1, rounds);
        double best = 0;
        for (int round = 0; round < rounds; round++)
        {
            long iterations = 0;
            var sw = Stopwatch.StartNew();
            var workers = Enumerable.Range(0, threads).Select(_ => Task.Factory.StartNew(() =>
            {
                long n = 0;
                var until = Stopwatch.GetTimestamp() + (long)(seconds / rounds * Stopwatch.Frequency);
                float sink = 0;
                while (Stopwatch.GetTimestamp() < until) { sink += loop(1 << 16); n += 1 << 16; }
                Interlocked.Add(ref iterations, n);
                return sink;
            }, TaskCreationOptions.LongRunning)).ToArray();
            Task.WaitAll(workers);
            double elapsed = sw.Elapsed.TotalSeconds;
            best = Math.Max(best, iterations * flopsPerIteration / elapsed / 1e9);
        }
        return best;
    }

    const int Accumulators = 12;
    static int Lanes => VectorBits / 32;
    static double FlopsPerIteration => Accumulators * Lanes * 2.0;

    [MethodImpl(MethodImplOptions.NoInlining)]
    static float Loop(int iterations)
    {
        if (VectorBits == 512) return Loop512(iterations);
        if (VectorBits == 256) return Loop256(iterations);
        return Loop128(iterations);
    }

    // Twelve independent chains: FMA latency (4 cycles) times two FMA ports needs at least eight.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Loop512(int iterations)
    {
        var m = Vector512.Create(0.999999f);
        var c = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (int i = 0; i < iterations; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, m, c); a1 = Avx512F.FusedMultiplyAdd(a1, m, c);
            a2 = Avx512F.FusedMultiplyAdd(a2, m, c); a3 = Avx512F.FusedMultiplyAdd(a3, m, c);
            a4 = Avx512F.FusedMultiplyAdd(a4, m, c); a5 = Avx512F.FusedMultiplyAdd(a5, m, c);
            a6 = Avx512F.FusedMultiplyAdd(a6, m, c); a7 = Avx512F.FusedMultiplyAdd(a7, m, c);
            a8 = Avx512F.FusedMultiplyAdd(a8, m, c); a9 = Avx512F.FusedMultiplyAdd(a9, m, c);
            a10 = Avx512F.FusedMultiplyAdd(a10, m, c); a11 = Avx512F.FusedMultiplyAdd(a11, m, c);
        }
        return (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).ToScalar();
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Loop256(int iterations)
    {
        var m = Vector256.Create(0.999999f);
        var c = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (int i = 0; i < iterations; i++)
        {
            a0 = Fma.MultiplyAdd(a0, m, c); a1 = Fma.MultiplyAdd(a1, m, c);
            a2 = Fma.MultiplyAdd(a2, m, c); a3 = Fma.MultiplyAdd(a3, m, c);
            a4 = Fma.MultiplyAdd(a4, m, c); a5 = Fma.MultiplyAdd(a5, m, c);
            a6 = Fma.MultiplyAdd(a6, m, c); a7 = Fma.MultiplyAdd(a7, m, c);
            a8 = Fma.MultiplyAdd(a8, m, c); a9 = Fma.MultiplyAdd(a9, m, c);
            a10 = Fma.MultiplyAdd(a10, m, c); a11 = Fma.MultiplyAdd(a11, m, c);
        }
        return (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).ToScalar();
    }

    // No FMA: a multiply and an add per lane, which is what such a CPU can do per cycle and port.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Loop128(int iterations)
    {
        var m = Vector128.Create(0.999999f);
        var c = Vector128.Create(1e-7f);
        Vector128<float> a0 = Vector128.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (int i = 0; i < iterations; i++)
        {
            a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
            a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
            a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
        }
        return (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).ToScalar();
    }
}
