using SvgDiffusion.Checkpoints;
using SvgDiffusion.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// Optimiser state in training checkpoints (issue 28 item 7): stored tensor by tensor in the run's safetensors,
/// restored exactly, of any size (over 2 GB: SVG-XL's AdamW state is about 5.4 GB), and older checkpoints that
/// hold it as one <c>save_state_dict</c> byte tensor still resume.
/// </summary>
public class OptimizerStateTests
{
    const string Key = "optimizer.test";

    static string Save(OptimizerHelper opt, string? dir = null)
    {
        string path = Path.Combine(dir ?? Reference.TempDir(), "opt.safetensors");
        using var scope = torch.NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>();
        var meta = new Dictionary<string, string>();
        RunCheckpoint.AddOptimizer(tensors, meta, Key, opt);
        SafeTensors.Save(path, tensors, meta);
        return path;
    }

    static void Restore(OptimizerHelper opt, string path)
    {
        using var file = SafeTensors.Open(path);
        RunCheckpoint.RestoreOptimizer(opt, file, Key);
    }

    static (long Step, Tensor ExpAvg, Tensor ExpAvgSq, Tensor? Max) State(OptimizerState s) => s switch
    {
        Adam.State a => (a.step, a.exp_avg, a.exp_avg_sq, a.max_exp_avg_sq),
        AdamW.State w => (w.step, w.exp_avg, w.exp_avg_sq, w.max_exp_avg_sq),
        _ => throw new InvalidOperationException(s.GetType().Name),
    };

    static void AssertSameState(OptimizerHelper expected, OptimizerHelper actual)
    {
        var a = expected.state_dict();
        var b = actual.state_dict();
        Assert.Equal(a.State.Count, b.State.Count);
        for (int i = 0; i < a.State.Count; i++)
        {
            var (sa, ma, va, xa) = State(a.State[i]);
            var (sb, mb, vb, xb) = State(b.State[i]);
            Assert.Equal(sa, sb);
            Assert.True(SameBits(ma, mb), $"exp_avg of parameter {i}");
            Assert.True(SameBits(va, vb), $"exp_avg_sq of parameter {i}");
            Assert.Equal(xa is null, xb is null);
            if (xa is not null) Assert.True(SameBits(xa, xb!), $"max_exp_avg_sq of parameter {i}");
        }
        var ga = expected.ParamGroups.ToList();
        var gb = actual.ParamGroups.ToList();
        Assert.Equal(ga.Count, gb.Count);
        for (int g = 0; g < ga.Count; g++)
        {
            Assert.Equal(ga[g].LearningRate, gb[g].LearningRate);
            Assert.Equal(ga[g].InitialLearningRate, gb[g].InitialLearningRate);
        }
    }

    /// <summary>Same dtype, shape and bytes (not values: NaN and -0 compare as bits), a chunk at a time, with no copies.</summary>
    internal static bool SameBits(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape)) return false;
        using var fa = a.contiguous().reshape(-1);
        using var fb = b.contiguous().reshape(-1);
        const long Chunk = 1 << 26;
        for (long at = 0; at < fa.shape[0]; at += Chunk)
        {
            long n = Math.Min(Chunk, fa.shape[0] - at);
            using var ca = fa.narrow(0, at, n);
            using var cb = fb.narrow(0, at, n);
            if (!ca.bytes.SequenceEqual(cb.bytes)) return false;
        }
        return true;
    }

    /// <summary>
    /// Fills a tensor's memory with random bytes of a prime period (1,000,003): gigabytes at memcpy speed, and a
    /// tensor read from the wrong offset still differs. Float bit patterns include NaNs: they must come back as bits.
    /// </summary>
    static void FillBytes(Tensor t, int seed)
    {
        var pattern = new byte[1_000_003];
        new Random(seed).NextBytes(pattern);
        using var flat = t.reshape(-1);
        long chunk = (1L << 26) / flat.ElementSize, pos = 0;
        for (long at = 0; at < flat.shape[0]; at += chunk)
        {
            using var c = flat.narrow(0, at, Math.Min(chunk, flat.shape[0] - at));
            var span = c.bytes;
            for (int i = 0; i < span.Length;)
            {
                int phase = (int)((pos + i) % pattern.Length), n = Math.Min(pattern.Length - phase, span.Length - i);
                pattern.AsSpan(phase, n).CopyTo(span[i..]);
                i += n;
            }
            pos += span.Length;
        }
    }

    static List<Parameter> Parameters(int seed, params long[][] shapes)
    {
        using var g = new Generator((ulong)seed);
        return shapes.Select(s => new Parameter(torch.randn(s, generator: g))).ToList();
    }

    static List<Parameter> Copies(IEnumerable<Parameter> ps) => ps.Select(p => new Parameter(p.detach().clone())).ToList();

    /// <summary>Sets every gradient from a seeded generator and takes a step.</summary>
    static void Step(OptimizerHelper opt, IReadOnlyList<Parameter> ps, int seed)
    {
        using var g = new Generator((ulong)seed);
        foreach (var p in ps)
        {
            using var grad = torch.randn(p.shape, generator: g);
            p.grad = grad.clone();
        }
        opt.step();
    }

    static void AssertSameParameters(IReadOnlyList<Parameter> a, IReadOnlyList<Parameter> b)
    {
        for (int i = 0; i < a.Count; i++) Assert.True(SameBits(a[i], b[i]), $"parameter {i}");
    }

    [Fact]
    public void AdamWWithParameterGroupsRoundTripsAndStepsIdentically()
    {
        var ps = Parameters(1, new long[] { 7, 5 }, new long[] { 5 }, new long[] { 3, 2, 2 });
        var groups = new[]
        {
            new AdamW.ParamGroup(ps.Take(2), new AdamW.Options { LearningRate = 3e-3, weight_decay = 0.05 }),
            new AdamW.ParamGroup(ps.Skip(2), new AdamW.Options { LearningRate = 1e-3, weight_decay = 0.0, beta2 = 0.95 }),
        };
        using var opt = torch.optim.AdamW(groups, lr: 1e-4, weight_decay: 0.01);
        for (int s = 0; s < 3; s++) Step(opt, ps, 10 + s);
        foreach (var g in opt.ParamGroups) g.LearningRate *= 0.5; // a schedule moved the rates: the saved ones must come back
        string path = Save(opt);

        var meta = SafeTensors.ReadHeader(path);
        Assert.Contains(Key, meta.Metadata.Keys);
        Assert.DoesNotContain(meta.Tensors, t => t.Name == Key);
        Assert.Equal(ScalarType.Int64, meta.Tensors.Single(t => t.Name == $"{Key}.2.step").Dtype);
        Assert.Equal(new long[] { 7, 5 }, meta.Tensors.Single(t => t.Name == $"{Key}.0.exp_avg").Shape);

        var qs = Copies(ps);
        var groups2 = new[]
        {
            new AdamW.ParamGroup(qs.Take(2), new AdamW.Options { LearningRate = 1.0 }),
            new AdamW.ParamGroup(qs.Skip(2), new AdamW.Options { LearningRate = 1.0 }),
        };
        using var again = torch.optim.AdamW(groups2);
        Restore(again, path);
        AssertSameState(opt, again);
        var o = (AdamW.Options)again.state_dict().Options[1];
        Assert.Equal((0.95, 0.0, 1e-3), (o.beta2!.Value, o.weight_decay!.Value, o.InitialLearningRate));
        // Equal after two more steps only if every moment, step count and hyper-parameter came back.
        for (int s = 0; s < 2; s++) { Step(opt, ps, 20 + s); Step(again, qs, 20 + s); }
        AssertSameParameters(ps, qs);
        File.Delete(path);
    }

    [Fact]
    public void AdamWithAmsgradRoundTrips()
    {
        var ps = Parameters(2, new long[] { 4, 3 }, new long[] { 6 });
        using var opt = torch.optim.Adam(ps, lr: 2e-3, beta1: 0.5, beta2: 0.9, amsgrad: true);
        for (int s = 0; s < 2; s++) Step(opt, ps, 30 + s);
        string path = Save(opt);
        Assert.Contains(SafeTensors.ReadHeader(path).Tensors, t => t.Name == $"{Key}.1.max_exp_avg_sq");
        var qs = Copies(ps);
        using var again = torch.optim.Adam(qs, lr: 2e-3, beta1: 0.5, beta2: 0.9); // amsgrad comes from the file, as with save_state_dict
        Restore(again, path);
        AssertSameState(opt, again);
        Step(opt, ps, 40);
        Step(again, qs, 40);
        AssertSameParameters(ps, qs);
    }

    [Fact]
    public void StateThatDoesNotFitIsOneLineNamingTheFileAndKey()
    {
        var ps = Parameters(3, new long[] { 4, 3 }, new long[] { 6 });
        using var opt = torch.optim.AdamW(ps);
        Step(opt, ps, 1);
        string path = Save(opt);
        void Refused(OptimizerHelper other, string why)
        {
            var e = Assert.Throws<SvgdException>(() => Restore(other, path));
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains(path, e.Message);
            Assert.Contains(Key, e.Message);
            Assert.Contains(why, e.Message);
        }
        using (var adam = torch.optim.Adam(Copies(ps))) Refused(adam, "saved from AdamW");
        using (var fewer = torch.optim.AdamW(Copies(ps.Take(1)))) Refused(fewer, "2 parameters saved");
        var wrong = Parameters(4, new long[] { 3, 4 }, new long[] { 6 });
        using (var shaped = torch.optim.AdamW(wrong))
        {
            Refused(shaped, "[3, 4]");
            // Checked before anything changed: the optimiser is untouched.
            Assert.Equal(0L, State(shaped.state_dict().State[1]).Step);
        }
        var e = Assert.Throws<SvgdException>(() => { using var file = SafeTensors.Open(path); RunCheckpoint.RestoreOptimizer(opt, file, "optimizer.other"); });
        Assert.Contains("lacks the optimizer state 'optimizer.other'", e.Message);
    }

    [Fact]
    public void OldSingleBlobLayoutStillRestores()
    {
        var ps = Parameters(5, new long[] { 5, 2 }, new long[] { 3 });
        using var opt = torch.optim.AdamW(ps, lr: 5e-4, weight_decay: 0.1);
        for (int s = 0; s < 2; s++) Step(opt, ps, 50 + s);
        string path = Path.Combine(Reference.TempDir(), "old.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { [Key] = RunCheckpoint.OptimizerBlob(opt) });
        var qs = Copies(ps);
        using var again = torch.optim.AdamW(qs);
        Restore(again, path);
        AssertSameState(opt, again);
    }

    /// <summary>
    /// AdamW state of 2^31 + 2^23 bytes (1 GB of parameters, about 5.4 GB of memory in all) saved through a
    /// checkpoint and restored into a second optimiser, every moment bit for bit; the file is deleted after.
    /// </summary>
    [Fact]
    public void OptimizerStateOver2GBRoundTrips()
    {
        // 2^28 + 2^20 float32 parameters: exp_avg and exp_avg_sq hold 8 bytes each.
        var ps = new List<Parameter>
        {
            new(torch.zeros(1 << 14, 1 << 13)),
            new(torch.zeros(1L << 27)),
            new(torch.zeros(1 << 10, 1 << 10)),
        };
        long stateBytes = ps.Sum(p => p.numel()) * 8;
        Assert.True(stateBytes > 1L << 31);
        string dir = Reference.TempDir();
        try
        {
            using var opt = torch.optim.AdamW(ps, lr: 3e-4, weight_decay: 0.02);
            for (int i = 0; i < ps.Count; i++)
            {
                var st = (AdamW.State)opt.state_dict().State[i];
                FillBytes(st.exp_avg, 2 * i);
                FillBytes(st.exp_avg_sq, 2 * i + 1);
                st.step = 1000 + i;
            }
            string path = Save(opt, dir);
            var header = SafeTensors.ReadHeader(path);
            Assert.True(new FileInfo(path).Length > stateBytes);
            Assert.Contains(header.Tensors, t => t.Begin > 1L << 31); // offsets past 2 GB
            using var again = torch.optim.AdamW(ps);
            Restore(again, path);
            AssertSameState(opt, again);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
            foreach (var p in ps) p.Dispose();
        }
    }

    /// <summary>A single tensor of 2^31 + 8 bytes, then a small one past it: written, read back and compared; the file is deleted after.</summary>
    [Fact]
    public void SafeTensorsTensorOver2GBRoundTrips()
    {
        string dir = Reference.TempDir();
        string path = Path.Combine(dir, "big.safetensors");
        try
        {
            using var big = torch.empty((1L << 31) + 8, dtype: ScalarType.Byte);
            FillBytes(big, 5);
            using var tail = torch.arange(10, dtype: ScalarType.Float64);
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["big"] = big, ["tail"] = tail });
            Assert.Equal(SafeTensors.ReadHeader(path).DataStart + big.numel() + 80, new FileInfo(path).Length);
            using var file = SafeTensors.Open(path);
            using (var back = file.Read("big")) Assert.True(SameBits(big, back));
            using (var t = file.Read("tail")) Assert.True(SameBits(tail, t));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
