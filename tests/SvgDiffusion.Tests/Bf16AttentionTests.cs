using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using static SvgDiffusion.Tests.KernelTest;

namespace SvgDiffusion.Tests;

/// <summary>
/// The native bf16 attention of DiT inference: in use on CPUs with AVX512-BF16, right against float64
/// on token counts off its 14-query tile and 32-key panel and head widths off its 32-channel panel,
/// the same as libtorch's attention inside the module, and out of the way of autograd.
/// </summary>
public class Bf16AttentionTests
{
    [Fact]
    public void IsInUseWhereTheCpuHasAvx512Bf16()
    {
        if (!HasBf16Instructions)
        {
            Assert.Equal("no AVX512-BF16 on this CPU", Bf16Attention.DisabledReason);
            return;
        }
        Assert.Null(Bf16Attention.DisabledReason);
        Assert.Equal(4, Bf16Attention.Checks.Count);
        Assert.All(Bf16Attention.Checks, c => Assert.True(c.Error < Bf16Attention.Tolerance, $"{c.Case}: {c.Error}"));
        using (Bf16Attention.Suspend()) Assert.False(Bf16Attention.Enabled);
    }

    [Theory]
    [InlineData(2, 1, 2, 8)]
    [InlineData(1, 13, 3, 72)]
    [InlineData(3, 16, 4, 64)]
    [InlineData(1, 33, 2, 40)]
    [InlineData(2, 256, 16, 72)]
    [InlineData(1, 300, 1, 130)]
    public void MatchesFloat64(int batch, int tokens, int heads, int dim)
    {
        if (!Bf16Attention.Enabled) { Assert.False(HasBf16Instructions, Bf16Attention.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(11);
        // Unit-scale q and k after their LayerNorm: logits of a few units, as in the DiT.
        var qkv = torch.randn(new long[] { batch, tokens, 3 * heads * dim }, generator: g).to(ScalarType.BFloat16);
        var reference = Bf16Attention.Reference(qkv, heads);
        foreach (int threads in new[] { 1, 2, 3 })
        {
            var y = Bf16Attention.Attend(qkv, heads, threads);
            Assert.Equal(new long[] { batch, tokens, heads * dim }, y.shape);
            Assert.True(RelativeError(y, reference) < Bf16Attention.Tolerance, $"{threads} threads: {RelativeError(y, reference)}");
        }
    }

    [Fact]
    public void AttentionModuleAgreesWithLibTorchAndLeavesAutogradAlone()
    {
        if (!Bf16Attention.Enabled) { Assert.False(HasBf16Instructions, Bf16Attention.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(12);
        var attn = new Attention(144, 2, qkNorm: true);
        using (torch.no_grad()) foreach (var p in attn.parameters()) p.normal_(0, 0.3);
        attn.to(ScalarType.BFloat16);
        var x = torch.randn(2, 50, 144).to(ScalarType.BFloat16);
        Tensor ours, theirs;
        using (torch.inference_mode())
        {
            ours = attn.forward(x);
            using (Bf16Attention.Suspend()) theirs = attn.forward(x);
        }
        Assert.True(RelativeError(ours, theirs) < 2e-2, $"{RelativeError(ours, theirs)}");

        // With autograd recording, the libtorch route runs and gradients reach the input.
        var xg = x.detach().requires_grad_(true);
        var trained = attn.forward(xg);
        trained.to(ScalarType.Float32).sum().backward();
        Assert.NotNull(xg.grad);
        // (its q/k LayerNorm is libtorch's too, so not bit-equal to the fused one)
        Assert.True(RelativeError(trained.detach(), theirs) < 1e-2, $"{RelativeError(trained.detach(), theirs)}");
    }

    [Fact]
    public void OddHeadWidthsAndStridedInputsAreNotTaken()
    {
        if (!Bf16Attention.Enabled) { Assert.False(HasBf16Instructions, Bf16Attention.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        Assert.True(Bf16Attention.Applies(torch.zeros(new long[] { 1, 4, 3 * 2 * 8 }, ScalarType.BFloat16), 2));
        Assert.False(Bf16Attention.Applies(torch.zeros(new long[] { 1, 4, 3 * 2 * 9 }, ScalarType.BFloat16), 2));
        Assert.False(Bf16Attention.Applies(torch.zeros(new long[] { 1, 4, 3 * 2 * 8 }), 2));
        Assert.False(Bf16Attention.Applies(torch.zeros(new long[] { 1, 4, 2 * 3 * 2 * 8 }, ScalarType.BFloat16).narrow(2, 0, 3 * 2 * 8), 2));
    }
}
