using SvgDiffusion.Models.Common;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using static SvgDiffusion.Tests.KernelTest;

namespace SvgDiffusion.Tests;

/// <summary>
/// The packed AVX-512 fp32 GEMM behind every model linear: right against float64 on every edge of its
/// tiling, the same results as libtorch's linear through <see cref="PackedLinear"/>, and never stale
/// when the weight changes.
/// </summary>
public class SgemmTests
{
    [Fact]
    public void IsInUseOnAvx512AndPassesItsFloat64Check()
    {
        if (!Sgemm.Supported)
        {
            Assert.Equal("no AVX-512 on this CPU", Sgemm.DisabledReason);
            return;
        }
        Assert.Null(Sgemm.DisabledReason);
        Assert.Equal(4, Sgemm.Checks.Count);
        Assert.All(Sgemm.Checks, c => Assert.True(c.Error < 1e-5, $"{c.Case}: {c.Error}"));
    }

    [Theory]
    // rows on and off the 6-row tile and around the one-row-tile threshold; outputs on and off the
    // 64-wide panel; K inside one 256-block, a multiple of it, and across blocks with a remainder.
    [InlineData(24, 64, 64, true)]
    [InlineData(25, 392, 136, true)]
    [InlineData(257, 1152, 200, false)]
    [InlineData(96, 512, 1000, true)]
    [InlineData(31, 300, 7, true)]
    public void MatchesFloat64OnEveryEdgeOfTheTiling(int rows, int k, int n, bool bias)
    {
        if (!Sgemm.Supported) return;
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(7);
        var x = torch.randn(new long[] { rows, k }, generator: g);
        var w = torch.randn(new long[] { n, k }, generator: g) / Math.Sqrt(k);
        var b = bias ? torch.randn(new long[] { n }, generator: g) : null;
        using var packed = Sgemm.Pack(w);
        foreach (int threads in new[] { 1, 2, 3 })
        {
            var y = Sgemm.Linear(x, packed, b, threads);
            var reference = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t());
            if (b is not null) reference += b.to(ScalarType.Float64);
            Assert.Equal(new long[] { rows, n }, y.shape);
            Assert.True(RelativeError(y, reference) < 2e-6, $"{threads} threads: {RelativeError(y, reference)}");
        }
    }

    [Fact]
    public void PackedLinearMatchesLibTorchForBatchedAndStridedInputs()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(3);
        var lin = new PackedLinear(384, 1536);
        var reference = torch.nn.Linear(384, 1536);
        reference.load_state_dict(lin.state_dict());
        Assert.Equal(new[] { "weight", "bias" }, lin.state_dict().Keys);
        var x = torch.randn(2, 130, 384);
        var strided = torch.randn(384, 2, 130).permute(1, 2, 0);
        using var noGrad = torch.no_grad();
        foreach (var input in new[] { x, strided, x.narrow(1, 0, 11) })
        {
            var y = lin.forward(input);
            Assert.Equal(input.shape[..^1].Append(1536L), y.shape);
            Assert.True(RelativeError(y, reference.forward(input)) < 1e-5);
        }
    }

    [Fact]
    public void ANewWeightIsRepackedAfterInPlaceWritesLoadsAndDtypeMoves()
    {
        if (!Sgemm.Supported) return;
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(4);
        var lin = new PackedLinear(64, 96);
        var x = torch.randn(40, 64);
        Tensor Expected() => nn.functional.linear(x, lin.weight, lin.bias);
        using (torch.no_grad())
        {
            var first = lin.forward(x);
            Assert.True(RelativeError(first, Expected()) < 1e-5);
            // An optimizer or EMA step writes in place.
            lin.weight.mul_(-2).add_(0.5);
            Assert.True(RelativeError(lin.forward(x), Expected()) < 1e-5);
            // A state-dict load copies into the same storage.
            var other = new PackedLinear(64, 96);
            lin.load_state_dict(other.state_dict());
            Assert.True(RelativeError(lin.forward(x), other.forward(x)) < 1e-5);
            Assert.True(RelativeError(lin.forward(x), Expected()) < 1e-5);
        }
        lin.to(ScalarType.BFloat16);
        lin.to(ScalarType.Float32);
        using (torch.inference_mode())
            Assert.True(RelativeError(lin.forward(x), Expected()) < 1e-5);
    }

    [Fact]
    public void TrainingRunsForwardAndBackwardOnThePackedGemm()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(5);
        var lin = new PackedLinear(300, 80);
        var x = torch.randn(3, 30, 300).requires_grad_();
        var target = torch.randn(3, 30, 80);
        var y = lin.forward(x);
        Assert.True(y.requires_grad);
        (y - target).square().sum().backward();
        // The same loss in float64, gradients written out.
        var x64 = x.detach().to(ScalarType.Float64).reshape(-1, 300);
        var w64 = lin.weight.detach().to(ScalarType.Float64);
        var dy = 2 * (x64.matmul(w64.t()) + lin.bias!.detach().to(ScalarType.Float64) - target.to(ScalarType.Float64).reshape(-1, 80));
        Assert.True(RelativeError(y, (dy / 2 + target.to(ScalarType.Float64).reshape(-1, 80)).reshape(3, 30, 80)) < 1e-5);
        Assert.True(RelativeError(x.grad!, dy.matmul(w64).reshape(3, 30, 300)) < 1e-5);
        Assert.True(RelativeError(lin.weight.grad!, dy.t().matmul(x64)) < 1e-5);
        Assert.True(RelativeError(lin.bias!.grad!, dy.sum(new long[] { 0 })) < 1e-5);
        if (!Sgemm.Supported) return;
        Assert.Equal(1, lin.PackCount);
        // An optimizer step writes the weight: the next forward packs it again; inference reuses it.
        using var opt = torch.optim.SGD(lin.parameters(), 0.1);
        opt.step();
        using (torch.no_grad())
        {
            lin.forward(x).Dispose();
            lin.forward(x).Dispose();
        }
        Assert.Equal(2, lin.PackCount);
    }

    [Fact]
    public void DiTTrainingStepMatchesTheLibTorchGemm()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(8);
        var cfg = DiTPresets.Get("svg-xs");
        var a = new DiT(cfg);
        var b = new DiT(cfg);
        b.load_state_dict(a.state_dict());
        using (torch.no_grad())
            foreach (var (pa, pb) in a.parameters().Zip(b.parameters()))
                if (pa.dim() == 2) { pa.normal_(0, 0.05); pb.copy_(pa); }
        var flow = new Transport.RectifiedFlow();
        var x1 = torch.randn(4, cfg.InputSize * cfg.InputSize, cfg.InChannels);
        var labels = torch.tensor(new long[] { 0, 1, 2, 3 });
        var z0 = torch.randn(x1.shape);
        var t = torch.rand(4);
        using (var g = new Generator(1)) flow.Loss(a, x1, z0, t, labels, g).Loss.backward();
        using (Sgemm.Suspend())
        using (var g = new Generator(1))
            flow.Loss(b, x1, z0, t, labels, g).Loss.backward();
        int compared = 0;
        foreach (var (pa, pb) in a.parameters().Zip(b.parameters()))
        {
            Assert.Equal(pa.grad is null, pb.grad is null);
            // qk-norm's key bias shifts every logit of a row alike, which softmax ignores: its gradient
            // is rounding noise either way (about 1e-9 of the others).
            if (pa.grad is null || pb.grad!.abs().max().item<float>() < 1e-6) continue;
            Assert.True(RelativeError(pa.grad, pb.grad) < 1e-4, $"{RelativeError(pa.grad, pb.grad)}");
            compared++;
        }
        Assert.True(compared > 30, $"{compared} gradients compared");
    }

    [Fact]
    public void WeightsMadeInInferenceModeFallBackToLibTorch()
    {
        using var scope = torch.NewDisposeScope();
        using var inference = torch.inference_mode();
        var lin = new PackedLinear(64, 64);
        Assert.True(LibTorchNative.IsInference(lin.weight));
        var x = torch.randn(32, 64);
        Assert.True(RelativeError(lin.forward(x), nn.functional.linear(x, lin.weight, lin.bias)) < 1e-6);
    }

    [Fact]
    public void DiTForwardAgreesWithTheLibTorchGemm()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(6);
        var cfg = DiTPresets.Get("svg-xs");
        var dit = new DiT(cfg);
        dit.eval();
        // adaLN-Zero starts every block at the identity; random modulation weights make each block count.
        using (torch.no_grad())
            foreach (var p in dit.parameters()) if (p.dim() == 2) p.normal_(0, 0.05);
        var x = torch.randn(3, cfg.InputSize * cfg.InputSize, cfg.InChannels);
        var t = torch.rand(3);
        var y = torch.tensor(new long[] { 0, 1, 2 });
        using var inference = torch.inference_mode();
        var packed = dit.Forward(x, t, y);
        Tensor libtorch;
        using (Sgemm.Suspend())
        {
            Assert.Equal("suspended", Sgemm.DisabledReason);
            libtorch = dit.Forward(x, t, y);
        }
        Assert.True(RelativeError(packed, libtorch) < 1e-4, $"{RelativeError(packed, libtorch)}");
    }
}
