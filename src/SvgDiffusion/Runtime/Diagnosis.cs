using System.Diagnostics;
using SvgDiffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>Everything <c>svgd doctor</c> reports about this machine, as data (the CLI prints it, <c>--json</c> serialises it).</summary>
public sealed record DiagnosisReport
{
    public required string CpuModel { get; init; }
    public required string CpuVendor { get; init; }
    public required int CpuFamily { get; init; }
    public required int CpuModelNumber { get; init; }
    /// <summary>Each flag of <see cref="CpuInfo.KernelFlags"/> with whether the CPU reports it.</summary>
    public required Dictionary<string, bool> IsaFlags { get; init; }
    public required int LogicalCores { get; init; }
    public required int TorchThreads { get; init; }
    public required string LibTorch { get; init; }
    public required string LibTorchPath { get; init; }
    public string? OneDnn { get; init; }
    public string? Mkl { get; init; }
    public string? CpuCapability { get; init; }
    public required string LibStdCxx { get; init; }
    /// <summary>Where our native kernels (libsvgd_kernels.so) were loaded from, or why they were not.</summary>
    public string? NativeKernelsStatus { get; init; }
    /// <summary>Whether glibc's malloc keeps large blocks on the heap (<see cref="MallocTuning"/>).</summary>
    public required string Malloc { get; init; }
    /// <summary>Environment variables that steer oneDNN, MKL or OpenMP, as set for this process.</summary>
    public required Dictionary<string, string> KernelEnvironment { get; init; }
    public required string MachineKey { get; init; }
    public required KernelVerdict Verdict { get; init; }
    /// <summary>Convolutions on the unpadded oneDNN path: what the workaround protects against here.</summary>
    public required List<KernelCheckResult> NativeConv { get; init; }
    public required double CheckSeconds { get; init; }
    /// <summary>The CPU's own fp32 FMA rate on the torch threads (<see cref="PhysicalPeak"/>), and the vector width used.</summary>
    public required double PhysicalFp32Gflops { get; init; }
    /// <summary>The bf16 peak (<see cref="Evaluation.PhysicalPeak.Bf16Gflops"/>), NaN where bf16 is emulated.</summary>
    public required double PhysicalBf16Gflops { get; init; }
    public required int VectorBits { get; init; }
    public required double MatmulFp32Gflops { get; init; }
    public required int MatmulFp32Size { get; init; }
    public required double MatmulBf16Gflops { get; init; }
    public required int MatmulBf16Size { get; init; }
    /// <summary>Which fp32 GEMM the model linears use (<see cref="Sgemm.Describe"/>), and its rate on a DiT-XL MLP shape (NaN when it is libtorch's).</summary>
    public required string Fp32Gemm { get; init; }
    public required double PackedSgemmGflops { get; init; }
    /// <summary>Which bf16 GEMM the model linears use in inference (<see cref="Bf16Gemm.Describe"/>), and its rate on the same shape (NaN when it is libtorch's).</summary>
    public required string Bf16Gemm { get; init; }
    public required double PackedBf16Gflops { get; init; }
    /// <summary>Which attention bf16 inference takes (<see cref="Bf16Attention.Describe"/>).</summary>
    public required string Bf16Attention { get; init; }
    /// <summary>How bf16 inference runs a DiT block (<see cref="Bf16DiTBlock.Describe"/>).</summary>
    public required string Bf16DiTBlock { get; init; }
    /// <summary>Which elementwise path DiT inference takes (<see cref="FusedOps.Describe"/>).</summary>
    public required string DiTElementwise { get; init; }
    /// <summary>True when some check fails on every path: results computed here may be wrong.</summary>
    public bool Failed => !Verdict.AllPassed;
}

/// <summary>The doctor's work: machine facts, a fresh kernel check (cached for later processes), the unpadded conv for comparison, and GEMM throughput.</summary>
public static class Diagnosis
{
    /// <summary>Cheap (no checks): where libsvgd_kernels.so was loaded from (beside the assemblies or in
    /// runtimes/linux-x64/native/ of the packages), or why it was not and libtorch runs instead.</summary>
    public static string NativeKernelsStatus() => NativeKernels.Describe();

    public static DiagnosisReport Run()
    {
        var cpu = CpuInfo.Current;
        var versions = LibTorchNative.Versions();
        var sw = Stopwatch.StartNew();
        var verdict = KernelGuard.Recheck();
        double checkSeconds = sw.Elapsed.TotalSeconds;

        // The unpadded path, only for the report; oneDNN must be on for it to mean anything.
        bool onednn = LibTorchNative.OneDnnEnabled;
        LibTorchNative.OneDnnEnabled = true;
        List<KernelCheckResult> native;
        try { native = KernelCheck.Run(ConvPath.Native, includeNonConv: false); }
        finally { LibTorchNative.OneDnnEnabled = onednn; }

        double physical = PhysicalPeak.Fp32Gflops(torch.get_num_threads(), seconds: 1, rounds: 10);
        var (fp32, fp32Size) = Throughput.MatmulGflopsWithin(ScalarType.Float32, budgetSeconds: 1.5);
        var (bf16, bf16Size) = Throughput.MatmulGflopsWithin(ScalarType.BFloat16, budgetSeconds: 1.5);
        double packed = Throughput.PackedSgemmGflops();
        double packedBf16 = Throughput.PackedBf16GemmGflops();
        return new DiagnosisReport
        {
            CpuModel = cpu.Model,
            CpuVendor = cpu.Vendor,
            CpuFamily = cpu.Family,
            CpuModelNumber = cpu.ModelNumber,
            IsaFlags = CpuInfo.KernelFlags.ToDictionary(f => f, cpu.Has),
            LogicalCores = cpu.LogicalCores,
            TorchThreads = torch.get_num_threads(),
            LibTorch = versions.LibTorch,
            LibTorchPath = LibTorchNative.NativePath(),
            OneDnn = versions.OneDnn,
            Mkl = versions.Mkl,
            CpuCapability = versions.CpuCapability,
            NativeKernelsStatus = NativeKernels.Describe(),
            LibStdCxx = TorchRuntime.Compat switch
            {
                LibStdCxxCompat.ShimLoaded => "system libstdc++ lacks GLIBCXX_3.4.32: patched libLibTorchSharp.so + shim loaded",
                _ => "system libstdc++ is new enough: TorchSharp as shipped",
            },
            Malloc = MallocTuning.Applied
                ? "glibc tuned: blocks up to 1 GiB from the heap, no trimming" + (Environment.GetEnvironmentVariable("GLIBC_TUNABLES")?.Contains("glibc.malloc.hugetlb=1") == true ? ", transparent huge pages" : "") + " (SVGD_MALLOC=default for glibc's defaults)"
                : "allocator defaults",
            KernelEnvironment = new Dictionary<string, string>(KernelGuard.EnvironmentVariables(n =>
                KernelGuard.HasPrefix(n, "ONEDNN_", "DNNL_", "MKL_", "OMP_", "SVGD_") || n == "ATEN_CPU_CAPABILITY")),
            MachineKey = verdict.MachineKey,
            Verdict = verdict,
            NativeConv = native,
            CheckSeconds = checkSeconds,
            PhysicalFp32Gflops = physical,
            PhysicalBf16Gflops = Evaluation.PhysicalPeak.Bf16Gflops(physical) ?? double.NaN,
            VectorBits = PhysicalPeak.VectorBits,
            MatmulFp32Gflops = fp32,
            MatmulFp32Size = fp32Size,
            MatmulBf16Gflops = bf16,
            MatmulBf16Size = bf16Size,
            Fp32Gemm = Sgemm.Describe(),
            PackedSgemmGflops = packed,
            Bf16Gemm = Runtime.Bf16Gemm.Describe(),
            PackedBf16Gflops = packedBf16,
            Bf16Attention = Runtime.Bf16Attention.Describe(),
            Bf16DiTBlock = Runtime.Bf16DiTBlock.Describe(),
            DiTElementwise = FusedOps.Describe(),
        };
    }
}
