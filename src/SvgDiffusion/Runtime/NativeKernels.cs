using System.Runtime.InteropServices;

namespace SvgDiffusion.Runtime;

/// <summary>
/// Our C kernels (src/SvgDiffusion/Native, built by build/NativeKernels.targets into
/// <see cref="FileName"/> beside the assemblies, or in runtimes/linux-x64/native/ of the NuGet packages;
/// see <see cref="NativeFiles"/>): the instructions .NET's intrinsics do not reach.
/// Loaded on first use; where the file is missing (no C compiler at build time, another OS) every
/// caller stays on libtorch and <see cref="MissingReason"/> says why.
/// </summary>
static unsafe class NativeKernels
{
    public const string FileName = "libsvgd_kernels.so";

    public static readonly delegate* unmanaged<int, int, long> Bf16PackedElements;
    public static readonly delegate* unmanaged<ushort*, int, int, ushort*, void> Bf16Pack;
    public static readonly delegate* unmanaged<IntPtr, int, int, void> Bf16LinearPart;
    public static readonly delegate* unmanaged<IntPtr, int, int, void> Bf16AttentionPart;
    public static readonly delegate* unmanaged<IntPtr, int, int, void> Bf16DiTBlockPart;
    public static readonly delegate* unmanaged<long> Bf16DiTBlockJobBytes;
    public static readonly delegate* unmanaged<long> Bf16DotFlopsPerIteration;
    public static readonly delegate* unmanaged<long, float> Bf16DotLoop;

    /// <summary>The loaded library's path; null when it is not loaded.</summary>
    public static string? LoadedPath { get; }

    /// <summary>One line for `svgd doctor`: where the kernels were loaded from, or why they were not.</summary>
    public static string Describe()
    {
        if (LoadedPath is not { } p) return $"not loaded ({MissingReason}): bf16 linears run on libtorch";
        string? why;
        try { why = Bf16UnsupportedReason; }
        catch (Exception e) { why = $"libtorch did not load: {(e.InnerException ?? e).Message.Split('\n')[0]}"; }
        return why == null ? p : $"{p} (bf16 kernels off: {why})";
    }

    /// <summary>Null when the library is loaded; otherwise why not.</summary>
    public static string? MissingReason { get; }

    /// <summary>Null where the bf16 kernels can run (AVX512-BF16, the library, libtorch's OpenMP team); otherwise why not.</summary>
    public static string? Bf16UnsupportedReason =>
        !CpuInfo.Current.Has("avx512_bf16") ? "no AVX512-BF16 on this CPU"
        : MissingReason ?? (OpenMpTeam.Available ? null : "libtorch's OpenMP runtime was not found");

    static NativeKernels()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            MissingReason = "native kernels are built for Linux x64 only";
            return;
        }
        string? path = NativeFiles.Find(FileName);
        if (path == null)
        {
            MissingReason = $"{FileName} was not built (no C compiler with -mavx512bf16 at build time)";
            return;
        }
        IntPtr lib;
        try { lib = NativeLibrary.Load(path); }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)  // .NET's message says nothing more
        {
            MissingReason = $"{path}: cannot be loaded";
            WarnIfUsable(MissingReason);
            return;
        }
        IntPtr Symbol(string name) => NativeLibrary.TryGetExport(lib, name, out IntPtr p) ? p : IntPtr.Zero;
        IntPtr elements = Symbol("svgd_bf16_packed_elements"), pack = Symbol("svgd_bf16_pack"), part = Symbol("svgd_bf16_linear_part"),
            attention = Symbol("svgd_bf16_attention_part"), flops = Symbol("svgd_bf16_dot_flops_per_iteration"), loop = Symbol("svgd_bf16_dot_loop"),
            block = Symbol("svgd_bf16_dit_block_part"), blockBytes = Symbol("svgd_bf16_dit_block_job_bytes");
        if (new[] { elements, pack, part, attention, flops, loop, block, blockBytes }.Contains(IntPtr.Zero))
        {
            MissingReason = $"{path}: lacks entry points (stale build?)";
            WarnIfUsable(MissingReason);
            return;
        }
        LoadedPath = path;
        Bf16PackedElements = (delegate* unmanaged<int, int, long>)elements;
        Bf16Pack = (delegate* unmanaged<ushort*, int, int, ushort*, void>)pack;
        Bf16LinearPart = (delegate* unmanaged<IntPtr, int, int, void>)part;
        Bf16AttentionPart = (delegate* unmanaged<IntPtr, int, int, void>)attention;
        Bf16DiTBlockPart = (delegate* unmanaged<IntPtr, int, int, void>)block;
        Bf16DiTBlockJobBytes = (delegate* unmanaged<long>)blockBytes;
        Bf16DotFlopsPerIteration = (delegate* unmanaged<long>)flops;
        Bf16DotLoop = (delegate* unmanaged<long, float>)loop;
    }

    /// <summary>A library that is there but does not load is a fault worth one line, where the CPU could have used it;
    /// on other CPUs (and where it was never built) the fallback is silent and <c>svgd doctor</c> says why.</summary>
    static void WarnIfUsable(string why)
    {
        if (CpuInfo.Current.Has("avx512_bf16")) KernelGuard.Warn($"native kernels: {why}; bf16 linears stay on libtorch");
    }
}
