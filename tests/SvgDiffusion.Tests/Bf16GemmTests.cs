using SvgDiffusion.Models.Common;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using static SvgDiffusion.Tests.KernelTest;

namespace SvgDiffusion.Tests;

/// <summary>
/// The native AVX512-BF16 GEMM behind bf16 inference linears: built and in use on CPUs with the
/// instructions, right against float64 on every edge of its tiling, the same results as libtorch's
/// bf16 linear through <see cref="PackedLinear"/>, and out of the way of autograd and odd shapes.
/// </summary>
public class Bf16GemmTests
{
    [Fact]
    public void IsBuiltAndInUseWhereTheCpuHasAvx512Bf16()
    {
        if (!HasBf16Instructions)
        {
            Assert.Equal("no AVX512-BF16 on this CPU", Bf16Gemm.DisabledReason);
            return;
        }
        // The build compiles Native/*.c; a missing library here is a build fault, not a skip.
        Assert.Null(Bf16Gemm.DisabledReason);
        Assert.Equal(6, Bf16Gemm.Checks.Count);
        Assert.All(Bf16Gemm.Checks, c => Assert.True(c.Error < Bf16Gemm.Tolerance, $"{c.Case}: {c.Error}"));
        Assert.StartsWith("packed AVX512-BF16", Bf16Gemm.Describe());
        using (Bf16Gemm.Suspend()) Assert.Equal("suspended", Bf16Gemm.DisabledReason);
        Assert.True(Bf16Gemm.Enabled);
    }

    [Theory]
    // rows on and off the 14-row tile; outputs under 16, between 16 and 32, on and off the 32-wide
    // panel; k from one pair to several L2 blocks of panels.
    [InlineData(14, 64, 32, true)]
    [InlineData(15, 392, 136, true)]
    [InlineData(257, 1152, 200, false)]
    [InlineData(96, 4608, 1000, true)]
    [InlineData(31, 2, 7, true)]
    [InlineData(5, 300, 20, false)]
    public void MatchesFloat64OnEveryEdgeOfTheTiling(int rows, int k, int n, bool bias)
    {
        if (!Bf16Gemm.Enabled) { Assert.False(HasBf16Instructions, Bf16Gemm.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(7);
        var x = torch.randn(new long[] { rows, k }, generator: g).to(ScalarType.BFloat16);
        var w = (torch.randn(new long[] { n, k }, generator: g) / Math.Sqrt(k)).to(ScalarType.BFloat16);
        var b = bias ? torch.randn(new long[] { n }, generator: g).to(ScalarType.BFloat16) : null;
        using var packed = Bf16Gemm.Pack(w);
        var reference = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t());
        if (b is not null) reference += b.to(ScalarType.Float64);
        // Every element within one bf16 rounding (2^-8 relative, with slack for sums near zero) of the exact sum.
        var slack = reference.abs() / 256 + 1e-3 * reference.abs().max();
        foreach (int threads in new[] { 1, 2, 3 })
        {
            var y = Bf16Gemm.Linear(x, packed, b, threads);
            Assert.Equal(ScalarType.BFloat16, y.dtype);
            Assert.Equal(new long[] { rows, n }, y.shape);
            var excess = ((y.to(ScalarType.Float64) - reference).abs() - slack).max().item<double>();
            Assert.True(excess <= 0, $"{threads} threads: beyond one rounding by {excess}");
        }
    }

    [Theory]
    [InlineData(15, 392, 136)]
    [InlineData(40, 1152, 70)]
    public void GeluEpilogueMatchesFloat64(int rows, int k, int n)
    {
        if (!Bf16Gemm.Enabled) { Assert.False(HasBf16Instructions, Bf16Gemm.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(9);
        var x = torch.randn(new long[] { rows, k }, generator: g).to(ScalarType.BFloat16);
        // pre-activations over several units, both signs, where GELU bends
        var w = (torch.randn(new long[] { n, k }, generator: g) * (3 / Math.Sqrt(k))).to(ScalarType.BFloat16);
        var b = torch.randn(new long[] { n }, generator: g).to(ScalarType.BFloat16);
        using var packed = Bf16Gemm.Pack(w);
        var pre = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t()) + b.to(ScalarType.Float64);
        var reference = nn.functional.gelu(pre, TorchSharp.Modules.GELU.Approximate.tanh);
        var slack = reference.abs() / 256 + 1e-3 * reference.abs().max();
        foreach (int threads in new[] { 1, 2 })
        {
            var y = Bf16Gemm.Linear(x, packed, b, threads, geluTanh: true);
            var excess = ((y.to(ScalarType.Float64) - reference).abs() - slack).max().item<double>();
            Assert.True(excess <= 0, $"{threads} threads: beyond one rounding by {excess}");
        }
    }

    [Fact]
    public void FeedForwardFusesItsGeluInBf16InferenceOnly()
    {
        if (!Bf16Gemm.Enabled) { Assert.False(HasBf16Instructions, Bf16Gemm.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(10);
        var mlp = new FeedForward(96, 384);
        mlp.to(ScalarType.BFloat16);
        var x = torch.randn(3, 30, 96).to(ScalarType.BFloat16);
        var fc1 = (PackedLinear)mlp.named_children().First(c => c.name == "fc1").module;
        Tensor fused, separate;
        using (torch.inference_mode())
        {
            Assert.NotNull(fc1.ForwardGeluTanhFused(x));
            fused = mlp.forward(x);
            using (Bf16Gemm.Suspend())
            {
                Assert.Null(fc1.ForwardGeluTanhFused(x));
                separate = mlp.forward(x);
            }
        }
        // The fused GELU sees the fp32 sum; the separate one its bf16 rounding: neighbours, not equals.
        Assert.True(RelativeError(fused, separate) < 2e-2, $"{RelativeError(fused, separate)}");
        var trained = mlp.forward(x.requires_grad_(true));
        Assert.True(trained.requires_grad);
    }

    [Fact]
    public void PackedLinearRunsBf16InferenceOnItAndMatchesLibTorch()
    {
        if (!Bf16Gemm.Enabled) { Assert.False(HasBf16Instructions, Bf16Gemm.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(5);
        var lin = new PackedLinear(384, 1536);
        lin.to(ScalarType.BFloat16);
        var x = torch.randn(2, 130, 384).to(ScalarType.BFloat16);
        var strided = torch.randn(384, 2, 130).permute(1, 2, 0).to(ScalarType.BFloat16);
        using var noGrad = torch.no_grad();
        foreach (var input in new[] { x, strided, x.narrow(1, 0, 11) })
        {
            var y = lin.forward(input);
            Tensor expected;
            using (Bf16Gemm.Suspend()) expected = lin.forward(input);
            Assert.Equal(input.shape[..^1].Append(1536L), y.shape);
            // Both round one fp32 sum to bf16; sums in another order may round to neighbours.
            Assert.True(RelativeError(y, expected) < 1e-2, $"{RelativeError(y, expected)}");
        }
        Assert.Equal(1, lin.PackCount);

        // A write to the weight (an EMA update, a load) repacks before the next product.
        lin.weight.mul_(2);
        var doubled = lin.forward(x);
        Tensor doubledExpected;
        using (Bf16Gemm.Suspend()) doubledExpected = lin.forward(x);
        Assert.Equal(2, lin.PackCount);
        Assert.True(RelativeError(doubled, doubledExpected) < 1e-2);
    }

    [Fact]
    public void AutogradAndOddWidthsStayOnLibTorchSingleRowsDoNot()
    {
        if (!Bf16Gemm.Enabled) { Assert.False(HasBf16Instructions, Bf16Gemm.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(6);
        var lin = new PackedLinear(64, 48);
        lin.to(ScalarType.BFloat16);
        var x = torch.randn(40, 64).to(ScalarType.BFloat16).requires_grad_(true);
        lin.forward(x).sum().backward();
        Assert.NotNull(x.grad);
        Assert.Equal(0, lin.PackCount);

        using var noGrad = torch.no_grad();
        // adaLN's one row per image is bound by reading the weight, which the packed kernel does faster.
        var row = x.narrow(0, 0, 1);
        var one = lin.forward(row);
        Assert.Equal(1, lin.PackCount);
        Tensor oneExpected;
        using (Bf16Gemm.Suspend()) oneExpected = lin.forward(row);
        Assert.True(RelativeError(one, oneExpected) < 1e-2);
        var odd = new PackedLinear(63, 48);
        odd.to(ScalarType.BFloat16);
        var y = odd.forward(torch.randn(40, 63).to(ScalarType.BFloat16));
        Assert.Equal(new long[] { 40, 48 }, y.shape);
        Assert.Equal(0, odd.PackCount);
    }

    [Fact]
    public void Bf16DiTForwardAgreesWithLibTorchLinears()
    {
        if (!Bf16Gemm.Enabled) { Assert.False(HasBf16Instructions, Bf16Gemm.DisabledReason); return; }
        using var scope = torch.NewDisposeScope();
        using var dit = SmallBf16DiT(8, 2);
        var x = torch.randn(6, 16, 16);
        var t = torch.full(6, 0.3f);
        var y = torch.tensor(new long[] { 0, 1, 2, 3, 4, 10 });
        using var inference = torch.inference_mode();
        var ours = dit.Forward(x, t, y);
        Tensor theirs;
        using (Bf16Gemm.Suspend()) theirs = dit.Forward(x, t, y);
        Assert.True(RelativeError(ours, theirs) < 3e-2, $"{RelativeError(ours, theirs)}");
        Assert.True(ours.isfinite().all().item<bool>());
    }
}
