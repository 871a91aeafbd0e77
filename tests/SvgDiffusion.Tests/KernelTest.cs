using SvgDiffusion.Models.Diffusion;
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

    /// <summary>A small DiT (svg-xs widths, a 4x4 grid of 16 channels, 10 classes) with weights N(0, 0.05), in eval mode and bf16.</summary>
    public static DiT SmallBf16DiT(int seed, int depth)
    {
        torch.manual_seed(seed);
        var dit = new DiT(DiTPresets.Get("svg-xs") with { InputSize = 4, InChannels = 16, NumClasses = 10, Depth = depth });
        dit.eval();
        using (torch.no_grad()) foreach (var p in dit.parameters()) p.normal_(0, 0.05);
        dit.SetComputePrecision(ScalarType.BFloat16);
        return dit;
    }
}
