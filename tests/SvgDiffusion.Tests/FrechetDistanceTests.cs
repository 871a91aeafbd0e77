using SvgDiffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

public class FrechetDistanceTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)] // rank-deficient: fewer samples than dimensions
    public void MatchesPytorchFid(int c)
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io("frechet");
        var warnings = new List<string>();
        using var a = FidStatistics.FromFeatures(io[$"case{c}.features1"], warn: warnings.Add);
        using var b = FidStatistics.FromFeatures(io[$"case{c}.features2"], warn: warnings.Add);
        double expected = io[$"case{c}.fid"].item<double>();
        var r = FrechetDistance.ComputeDetailed(a.Mu, a.Sigma, b.Mu, b.Sigma, warn: warnings.Add);
        double rel = Math.Abs(r.Distance - expected) / Math.Abs(expected);
        log.WriteLine($"case{c}: fid {r.Distance:R} expected {expected:R} relative error {rel:g3} (eps fallback {r.AddedEps}, max |imag| on diagonal {r.MaxImaginaryDiagonal:g3})");
        Assert.True(rel < 1e-6, $"case{c}: relative error {rel:g3}");
        Assert.False(r.AddedEps);
        Assert.Equal(c == 1 ? 2 : 0, warnings.Count); // one rank-deficiency warning per feature set
        Assert.Equal(r.Distance, FrechetDistance.Compute(a, b));
    }

    [Fact]
    public void FewerSamplesThanDimensionsWarns()
    {
        using var f = torch.randn(10, 16, dtype: ScalarType.Float64);
        var warnings = new List<string>();
        using var s = FidStatistics.FromFeatures(f, warn: warnings.Add, source: "gen");
        var w = Assert.Single(warnings);
        Assert.Contains("10 samples for 16-dimensional", w);
        using var g = torch.randn(20, 16);
        using var s2 = FidStatistics.FromFeatures(g, warn: warnings.Add);
        Assert.Single(warnings);
    }

    [Fact]
    public void StatisticsFollowNumpy()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(new double[] { 1, 2, 3, 5, 4, 0 }).reshape(3, 2);
        using var s = FidStatistics.FromFeatures(x);
        AssertClose(new double[] { 8.0 / 3, 7.0 / 3 }, s.Mu.data<double>().ToArray());
        // np.cov([[1,2],[3,5],[4,0]], rowvar=False)
        AssertClose(new[] { 7.0 / 3, -5.0 / 6, -5.0 / 6, 19.0 / 3 }, s.Sigma.flatten().data<double>().ToArray());
    }

    static void AssertClose(double[] expected, double[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) < 1e-12, $"[{i}] {actual[i]} vs {expected[i]}");
    }

    [Fact]
    public void MismatchedFeatureDimensionsAreRejected()
    {
        using var a = FidStatistics.FromFeatures(torch.randn(40, 8));
        using var b = FidStatistics.FromFeatures(torch.randn(40, 6));
        var e = Assert.Throws<SvgdException>(() => FrechetDistance.Compute(a, b));
        Assert.Contains("8 vs 6", e.Message);
    }

    [Fact]
    public void IdenticalStatisticsGiveZero()
    {
        using var a = FidStatistics.FromFeatures(torch.randn(200, 12, dtype: ScalarType.Float64));
        Assert.True(Math.Abs(FrechetDistance.Compute(a, a)) < 1e-9);
    }

    [Fact]
    public void LargeImaginaryComponentIsAnError()
    {
        using var scope = torch.NewDisposeScope();
        // Σ₂ is not positive semi-definite: √(Σ₁Σ₂) has ±i on its diagonal.
        var mu = torch.zeros(2, dtype: ScalarType.Float64);
        var s1 = torch.eye(2, dtype: ScalarType.Float64);
        var s2 = torch.diag(torch.tensor(new double[] { -1, 1 }));
        var e = Assert.Throws<SvgdException>(() => FrechetDistance.Compute(mu, s1, mu, s2));
        Assert.Contains("imaginary component", e.Message);
    }

    [Fact]
    public void NonFiniteStatisticsAreAnError()
    {
        using var scope = torch.NewDisposeScope();
        var mu = torch.zeros(3, dtype: ScalarType.Float64);
        var s = torch.eye(3, dtype: ScalarType.Float64);
        var bad = s.clone(); bad[1, 1] = torch.tensor(double.NaN);
        var e = Assert.Throws<SvgdException>(() => FrechetDistance.Compute(mu, s, mu, bad));
        Assert.Contains("sigma2", e.Message);
    }

    [Fact]
    public void SqrtmSquaresBack()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.randn(30, 50, dtype: ScalarType.Float64);
        var b = torch.randn(30, 50, dtype: ScalarType.Float64);
        var p = a.T.matmul(a).matmul(b.T.matmul(b)); // rank 30 of 50, non-symmetric
        var r = MatrixSquareRoot.Sqrtm(p);
        var back = r.matmul(r).real;
        double err = (back - p).abs().max().item<double>() / p.abs().max().item<double>();
        log.WriteLine($"sqrtm of a singular 50x50 product: ‖R²−A‖∞/‖A‖∞ = {err:g3}");
        Assert.True(err < 1e-8, $"{err:g3}");
    }
}
