using SvgDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Tests;

/// <summary>What the tests of our own kernels share: the error measure they assert on and whether the CPU has bf16 instructions.</summary>
static class KernelTest
{
    /// <summary>Largest absolute difference over the reference's largest magnitude, in float64.</summary>
    public static double RelativeError(Tensor actual, Tensor reference)
    {
        using var scope = torch.NewDisposeScope();
        var r = reference.to(ScalarType.Float64);
        return (actual.to(ScalarType.Float64) - r).abs().max().item<double>() / r.abs().max().item<double>();
    }

    /// <summary>Where this is false, the bf16 kernels must report themselves off instead of running.</summary>
    public static bool HasBf16Instructions => CpuInfo.Current.Has("avx512_bf16");
}
