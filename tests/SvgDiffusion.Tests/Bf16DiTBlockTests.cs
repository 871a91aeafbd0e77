using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using static SvgDiffusion.Tests.KernelTest;

namespace SvgDiffusion.Tests;

/// <summary>
/// The DiT block as one native region in bf16 inference: in use on CPUs with AVX512-BF16, right
/// against float64 on shapes off its tiles, with and without q/k-norm, on 1-3 threads; the same as
/// the block composed from separate calls inside a DiT; out of the way of autograd; one clear error
/// for operands that do not fit.
/// </summary>
public class Bf16DiTBlockTests
{
    [Fact]
    public void IsInUseWhereTheCpuHasAvx512Bf16()
    {
        if (!HasBf16Instructions)
        {
            Assert.Equal("no AVX512-BF16 on this CPU", Bf16DiTBlock.DisabledReason);
            return;
        }
        Assert.Null(Bf16DiTBlock.DisabledReason);
        Assert.Equal(4, Bf16DiTBlock.Checks.Count);
        Assert.All(Bf16DiTBlock.Checks, c => Assert.True(c.Error < Bf16DiTBlock.Tolerance, $"{c.Case}: {c.Error}"));
        using (Bf16DiTBlock.Suspend()) Assert.False(Bf16DiTBlock.Enabled);
        // The block runs the GEMM and attention kernels: it stands down with either.
        using (Bf16Gemm.Suspend()) Assert.StartsWith("bf16 GEMM", Bf16DiTBlock.DisabledReason);
        using (Bf16Attention.Suspend()) Assert.StartsWith("bf16 attention", Bf16DiTBlock.DisabledReason);
        Assert.True(Bf16DiTBlock.Enabled);
    }

    [Theory]
    [InlineData(1, 1, 32, 1, 64, true)]
    [InlineData(2, 13, 64, 4, 256, true)]
    [InlineData(3, 15, 96, 3, 200, false)]
    [InlineData(1, 33, 80, 5, 336, true)]
    [InlineData(2, 64, 384, 6, 1536, true)]
    public void MatchesFloat64(int batch, int tokens, int channels, int heads, int hidden, bool qkNorm)
    {
        if (!Bf16DiTBlock.Enabled) { Assert.False(HasBf16Instructions, Bf16DiTBlock.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(21);
        using var o = Bf16DiTBlockOperands.Random(batch, tokens, channels, heads, hidden, qkNorm, g);
        var (x, mod, w, raw) = (o.X, o.Modulation, o.Weights, o.Raw);
        var reference = Bf16DiTBlock.Reference(x, mod, w, raw);
        var before = x.clone();
        foreach (int threads in new[] { 1, 2, 3 })
        {
            var y = Bf16DiTBlock.Forward(x, mod, w, threads);
            Assert.Equal(x.shape, y.shape);
            Assert.True(RelativeError(y, reference) < Bf16DiTBlock.Tolerance, $"{threads} threads: {RelativeError(y, reference)}");
        }
        Assert.True(x.equal(before).all().item<bool>(), "the block wrote into its input");
    }

    [Fact]
    public void DiTForwardAgreesWithTheComposedBlocksAndLeavesAutogradAlone()
    {
        if (!Bf16DiTBlock.Enabled) { Assert.False(HasBf16Instructions, Bf16DiTBlock.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        using var dit = SmallBf16DiT(22, 3);
        var x = torch.randn(5, 16, 16);
        var t = torch.full(5, 0.6f);
        var y = torch.tensor(new long[] { 0, 1, 2, 9, 10 });
        Tensor ours, composed;
        using (torch.inference_mode())
        {
            ours = dit.Forward(x, t, y);
            using (Bf16DiTBlock.Suspend()) composed = dit.Forward(x, t, y);
        }
        // Same kernels and rounding points; only the order of sums inside the LayerNorms differs.
        Assert.True(RelativeError(ours, composed) < 1e-2, $"{RelativeError(ours, composed)}");
        Assert.True(ours.isfinite().all().item<bool>());

        // With autograd recording, the blocks are composed and gradients reach the input.
        var xg = torch.randn(2, 16, 16).to(ScalarType.Float32).requires_grad_(true);
        var outg = dit.Forward(xg, torch.full(2, 0.5f), torch.tensor(new long[] { 1, 2 }));
        outg.sum().backward();
        Assert.NotNull(xg.grad);
        Assert.True(xg.grad!.abs().sum().item<float>() > 0);
    }

    [Fact]
    public void ConcurrentCallersGetTheSameResultAsOne()
    {
        // A server runs requests side by side: each call has its own job, workspace and thread team.
        if (!Bf16DiTBlock.Enabled) { Assert.False(HasBf16Instructions, Bf16DiTBlock.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(24);
        using var o = Bf16DiTBlockOperands.Random(2, 40, 96, 3, 384, true, g);
        var (x, mod, w) = (o.X, o.Modulation, o.Weights);
        var alone = Bf16DiTBlock.Forward(x, mod, w, 2);
        var results = new Tensor[4];
        Parallel.For(0, results.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            for (int r = 0; r < 5; r++)
            {
                results[i]?.Dispose();
                results[i] = Bf16DiTBlock.Forward(x, mod, w, 2).DetachFromDisposeScope();
            }
        });
        foreach (var y in results)
        {
            Assert.True(y.equal(alone).all().item<bool>(), "a concurrent call differs from a call alone");
            y.Dispose();
        }
    }

    [Fact]
    public void OperandsThatDoNotFitAreOneClearError()
    {
        if (!Bf16DiTBlock.Enabled) { Assert.False(HasBf16Instructions, Bf16DiTBlock.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(23);
        using var o = Bf16DiTBlockOperands.Random(2, 4, 32, 2, 64, true, g);
        var (x, mod, w) = (o.X, o.Modulation, o.Weights);
        var badMod = torch.zeros(new long[] { 2, 5 * 32 }, ScalarType.BFloat16);
        var e = Assert.Throws<ArgumentException>(() => Bf16DiTBlock.Forward(x, badMod, w));
        Assert.Contains("[2, 160]", e.Message);
        e = Assert.Throws<ArgumentException>(() => Bf16DiTBlock.Forward(x.to(ScalarType.Float32), mod, w));
        Assert.Contains("Float32", e.Message);
        e = Assert.Throws<ArgumentException>(() => Bf16DiTBlock.Forward(torch.zeros(new long[] { 2, 4, 48 }, ScalarType.BFloat16), mod, w));
        Assert.Contains("48 channels", e.Message);
        e = Assert.Throws<ArgumentException>(() => Bf16DiTBlock.Forward(x, mod, w with { KNormBias = null }));
        Assert.Contains("q/k-norm", e.Message);
    }
}
