using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// The fused elementwise kernels of DiT inference: each against the libtorch ops it replaces (fp32)
/// and against float64 (bf16), on widths off the 16-lane vector and on sizes that split across threads;
/// and the whole DiT with and without them.
/// </summary>
public class FusedOpsTests
{
    static double MaxError(Tensor actual, Tensor reference)
    {
        using var scope = torch.NewDisposeScope();
        return (actual.to(ScalarType.Float64) - reference.to(ScalarType.Float64)).abs().max().item<double>();
    }

    static Tensor Round(Tensor t, ScalarType dtype) => t.to(dtype).to(ScalarType.Float64);

    [Fact]
    public void IsInUseWhereAvx512AndOpenMpAre()
    {
        if (!FusedOps.Supported) { Assert.NotNull(FusedOps.DisabledReason); return; }
        Assert.Null(FusedOps.DisabledReason);
        Assert.Equal(8, FusedOps.Checks.Count);
        Assert.All(FusedOps.Checks, c => Assert.True(c.Error < 1e-5, $"{c.Kernel} {c.Case}: {c.Error}"));
        using (FusedOps.Suspend()) Assert.Equal("suspended", FusedOps.DisabledReason);
        Assert.True(FusedOps.Enabled);
    }

    [Theory]
    // widths on and off the 16 lanes; a small case on one thread and a large one split between threads
    [InlineData(2, 5, 72)]
    [InlineData(3, 300, 256)]
    [InlineData(2, 64, 1160)]
    public void ModulatedLayerNormMatchesLibTorch(int b, int n, int c)
    {
        if (!FusedOps.Enabled) return;
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(3);
        var x = torch.randn(new long[] { b, n, c }, generator: g) * 3 + 1;
        // chunks of one [B, 2C] tensor, as adaLN hands them over (strided views)
        var m = torch.randn(new long[] { b, 2 * c }, generator: g).chunk(2, dim: 1);
        Tensor Reference(Tensor xx) => nn.functional.layer_norm(xx, new long[] { c }, eps: 1e-6) * (1 + m[1].to(xx.dtype).unsqueeze(1)) + m[0].to(xx.dtype).unsqueeze(1);

        var y = FusedOps.ModulatedLayerNorm(x, m[0], m[1], 1e-6);
        Assert.True(MaxError(y, Reference(x)) < 2e-5, $"fp32: {MaxError(y, Reference(x))}");

        // bf16: within one bf16 rounding of the float64 result (computed from the same rounded inputs)
        var xb = x.to(ScalarType.BFloat16);
        var yb = FusedOps.ModulatedLayerNorm(xb, m[0].to(ScalarType.BFloat16), m[1].to(ScalarType.BFloat16), 1e-6);
        Assert.Equal(ScalarType.BFloat16, yb.dtype);
        var exact = nn.functional.layer_norm(xb.to(ScalarType.Float64), new long[] { c }, eps: 1e-6) * (1 + Round(m[1], ScalarType.BFloat16).unsqueeze(1)) + Round(m[0], ScalarType.BFloat16).unsqueeze(1);
        var rel = ((yb.to(ScalarType.Float64) - exact).abs() / exact.abs().clamp_min(1e-3)).max().item<double>();
        Assert.True(rel <= 1.0 / 256 + 1e-6, $"bf16 relative error {rel}");
    }

    [Theory]
    [InlineData(2, 3, 40)]
    [InlineData(4, 256, 384)]
    public void GatedResidualMatchesLibTorchInAndOutOfPlace(int b, int n, int c)
    {
        if (!FusedOps.Enabled) return;
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(5);
        var x = torch.randn(new long[] { b, n, c }, generator: g);
        var y = torch.randn(new long[] { b, n, c }, generator: g);
        var gate = torch.randn(new long[] { b, 3 * c }, generator: g).chunk(3, dim: 1)[1];
        var expected = x + gate.unsqueeze(1) * y;
        var before = x.clone();

        var o = FusedOps.GatedResidual(x, gate, y, inPlace: false);
        Assert.True(MaxError(o, expected) < 1e-6);
        Assert.Equal(0.0, MaxError(x, before));

        var same = FusedOps.GatedResidual(x, gate, y, inPlace: true);
        Assert.True(ReferenceEquals(same, x));
        Assert.True(MaxError(x, expected) < 1e-6);

        var xb = before.to(ScalarType.BFloat16);
        var ob = FusedOps.GatedResidual(xb, gate.to(ScalarType.BFloat16), y.to(ScalarType.BFloat16), inPlace: false);
        var exact = xb.to(ScalarType.Float64) + Round(gate, ScalarType.BFloat16).unsqueeze(1) * Round(y, ScalarType.BFloat16);
        // one rounding of the exact sum: half a bf16 step of its magnitude
        var bound = exact.abs() / 256 + 1e-30;
        Assert.True(((ob.to(ScalarType.Float64) - exact).abs() <= bound).all().item<bool>());
    }

    [Theory]
    [InlineData(37)]          // one thread, tail only
    [InlineData(3 * 4096 + 5)] // rows of 4,096 split between threads, with a tail
    public void GeluTanhMatchesLibTorch(int count)
    {
        if (!FusedOps.Enabled) return;
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(9);
        var h = torch.randn(new long[] { count }, generator: g) * 4;
        h[0] = torch.tensor(-30f);
        h[1] = torch.tensor(30f);
        h[2] = torch.tensor(float.NaN);
        var expected = nn.functional.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh);
        var y = h.clone();
        FusedOps.GeluTanh_(y);
        Assert.True(float.IsNaN(y[2].item<float>()));
        y[2] = torch.tensor(0f);
        expected[2] = torch.tensor(0f);
        Assert.True(MaxError(y, expected) < 1e-5, $"fp32: {MaxError(y, expected)}");

        var hb = h.to(ScalarType.BFloat16);
        FusedOps.GeluTanh_(hb);
        var exact = nn.functional.gelu(h.to(ScalarType.BFloat16).to(ScalarType.Float64), TorchSharp.Modules.GELU.Approximate.tanh);
        var err = (hb.to(ScalarType.Float64) - exact).abs();
        err[2] = torch.tensor(0.0);
        exact[2] = torch.tensor(0.0);
        var excess = err - (exact.abs() / 256 + 1e-6);
        long worst = excess.argmax().item<long>();
        Assert.True(excess.max().item<double>() <= 0, $"bf16: at {hb[worst].to(ScalarType.Float32).item<float>()} (input {h[worst].item<float>()}) error {err[worst].item<double>()} for {exact[worst].item<double>()}");
    }

    [Theory]
    [InlineData(2, 7, 4, 72)]
    [InlineData(2, 256, 6, 64)]
    public void HeadNormNormalisesQueriesAndKeysInPlaceAndLeavesValues(int b, int n, int heads, int d)
    {
        if (!FusedOps.Enabled) return;
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(11);
        long c = (long)heads * d;
        var qkv = torch.randn(new long[] { b, n, 3 * c }, generator: g) * 2 + 0.5;
        var wq = torch.randn(new long[] { d }, generator: g);
        var bq = torch.randn(new long[] { d }, generator: g);
        var wk = torch.randn(new long[] { d }, generator: g);
        var bk = torch.randn(new long[] { d }, generator: g);
        var parts = qkv.reshape(b, n, 3, heads, d);
        var q = nn.functional.layer_norm(parts.select(2, 0), new long[] { d }, wq, bq, 1e-5);
        var k = nn.functional.layer_norm(parts.select(2, 1), new long[] { d }, wk, bk, 1e-5);
        var v = parts.select(2, 2).clone();

        FusedOps.HeadNorm_(qkv, heads, wq, bq, wk, bk, 1e-5);
        var after = qkv.reshape(b, n, 3, heads, d);
        Assert.True(MaxError(after.select(2, 0), q) < 2e-5);
        Assert.True(MaxError(after.select(2, 1), k) < 2e-5);
        Assert.Equal(0.0, MaxError(after.select(2, 2), v));
    }

    [Fact]
    public void TakesNoPartWhenAutogradRecords()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(2, 3, 16, requires_grad: true);
        var y = torch.randn(2, 3, 16);
        Assert.False(FusedOps.Applies(x, y));
        using (torch.no_grad()) Assert.Equal(FusedOps.Enabled, FusedOps.Applies(x, y));
        Assert.Equal(FusedOps.Enabled, FusedOps.Applies(y));
        Assert.False(FusedOps.Applies(y.to(ScalarType.Float16)));
        Assert.False(FusedOps.Applies(y, y.to(ScalarType.Float64)));
    }

    [Fact]
    public void DiTForwardIsTheSameWithAndWithoutTheFusedKernels()
    {
        if (!FusedOps.Enabled) return;
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(21);
        var cfg = new DiTConfig { InputSize = 4, InChannels = 24, HiddenSize = 144, Depth = 2, NumHeads = 2, NumClasses = 5 };
        using var dit = new DiT(cfg);
        dit.eval();
        // DiT starts with zeroed adaLN and output layers; random ones exercise every path.
        using (torch.no_grad()) foreach (var p in dit.parameters()) p.normal_(0, 0.05);
        var x = torch.randn(6, 16, 24);
        var t = torch.rand(6);
        var y = torch.tensor(new long[] { 0, 1, 2, 3, 4, 5 });
        using var _ = torch.inference_mode();
        Tensor Run(bool fused)
        {
            if (fused) return dit.Forward(x, t, y);
            using (FusedOps.Suspend()) return dit.Forward(x, t, y);
        }
        var fusedFp32 = Run(true);
        var libtorchFp32 = Run(false);
        double scale = libtorchFp32.abs().max().item<float>();
        Assert.True(MaxError(fusedFp32, libtorchFp32) < 1e-5 * scale, $"fp32: {MaxError(fusedFp32, libtorchFp32)} of {scale}");

        // bf16: the fused kernels round once per pass where libtorch rounds per op, so they stay at
        // least as close to fp32 (a margin for bf16's own noise).
        dit.SetComputePrecision(ScalarType.BFloat16);
        double fusedErr = MaxError(Run(true), libtorchFp32), libtorchErr = MaxError(Run(false), libtorchFp32);
        Assert.True(fusedErr < 0.05 * scale, $"bf16 fused error {fusedErr} of {scale}");
        Assert.True(fusedErr <= 1.5 * libtorchErr, $"bf16: fused {fusedErr} against libtorch's {libtorchErr}");
    }
}
