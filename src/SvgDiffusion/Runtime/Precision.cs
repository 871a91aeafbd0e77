using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>
/// The compute precision a user asks for, resolved for this CPU. <c>auto</c> is bf16 only where bf16
/// is native (AVX512-BF16 or AMX): there it is 2-4x faster than fp32. Elsewhere libtorch emulates bf16
/// at about 1% of the fp32 speed (1.4 vs 120 GFLOP/s measured on an AVX2 EPYC), so auto means fp32.
/// fp64 is the machine-independent reference: float64 reaches no oneDNN kernel.
/// </summary>
public static class Precision
{
    public const string Names = "auto, fp32, bf16, fp64";

    public static ScalarType Resolve(string name, bool allowFp64 = true) => name.Trim().ToLowerInvariant() switch
    {
        "auto" => CpuInfo.Current.NativeBf16 ? ScalarType.BFloat16 : ScalarType.Float32,
        "fp32" or "float32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "fp64" or "float64" when allowFp64 => ScalarType.Float64,
        _ => throw new SvgdException($"--precision must be one of {(allowFp64 ? Names : "auto, fp32, bf16")}, not '{name}'"),
    };

    public static string Name(ScalarType t) => KernelCheck.DtypeName(t);
}
