using System.Diagnostics;
using System.Text;
using System.Text.Json;
using SvgDiffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>The FID Inception (one model for the class, with the formula weights of fid_inception.json) and the Inception Score.</summary>
public sealed class FidInceptionFixture : IDisposable
{
    public List<string> Keys { get; }
    public FidInceptionV3 Model { get; }

    public FidInceptionFixture()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Reference.File_("fid_inception.json")));
        Keys = doc.RootElement.GetProperty("state_dict_keys_in_order").EnumerateArray().Select(e => e.GetString()!).ToList();
        using var shapes = new FidInceptionV3();
        var shapeOf = shapes.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        var sd = new Dictionary<string, Tensor>();
        for (int j = 0; j < Keys.Count; j++)
        {
            string k = Keys[j];
            Assert.True(shapeOf.ContainsKey(k), $"model has no '{k}'");
            sd[k] = FormulaTensor(k, j, shapeOf[k]);
        }
        Model = FidInceptionV3.FromStateDict(sd, "fid_inception formula weights");
        foreach (var t in sd.Values) t.Dispose();
    }

    /// <summary>t = sin(0.7·i + 1.3·j) in float64 (i the flat index, j the key's position), mapped per kind, then float32.</summary>
    static Tensor FormulaTensor(string key, int j, long[] shape)
    {
        if (key.EndsWith("num_batches_tracked")) return torch.zeros(shape, dtype: ScalarType.Int64);
        using var scope = torch.NewDisposeScope();
        long numel = shape.Aggregate(1L, (a, b) => a * b);
        var t = torch.sin(torch.arange(numel, dtype: ScalarType.Float64) * 0.7 + 1.3 * j);
        Tensor v;
        if (key.EndsWith("running_var")) v = 1 + 0.5 * t.abs();
        else if (key.EndsWith("running_mean")) v = 0.1 * t;
        else if (key.EndsWith(".bn.weight")) v = 1 + 0.2 * t;
        else if (key.EndsWith(".bn.bias")) v = 0.1 * t;
        else
        {
            long fanIn = shape.Length >= 2 ? numel / shape[0] : numel;
            v = t * Math.Sqrt(3.0 / fanIn);
        }
        return v.reshape(shape).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public void Dispose() => Model.Dispose();
}

public class FidInceptionTests(FidInceptionFixture fx, ITestOutputHelper log) : IClassFixture<FidInceptionFixture>
{
    [Fact]
    public void StateDictKeysAreThoseOfPytorchFid()
    {
        var ours = fx.Model.state_dict().Keys.ToList();
        Assert.Equal(fx.Keys.OrderBy(k => k, StringComparer.Ordinal), ours.OrderBy(k => k, StringComparer.Ordinal));
        int firstDiff = ours.Zip(fx.Keys).TakeWhile(p => p.First == p.Second).Count();
        log.WriteLine($"{ours.Count} keys; same order as the reference: {ours.SequenceEqual(fx.Keys)} (first difference at {firstDiff}: {(firstDiff < ours.Count ? ours[firstDiff] + " vs " + fx.Keys[firstDiff] : "-")})");
    }

    [Theory]
    [InlineData("big")]   // 299x299: the resize is the identity
    [InlineData("small")] // 64x48: bilinear upsampling to 299x299 inside the model
    public void Pool3MatchesReference(string size)
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io("fid_inception");
        var expected = io[$"{size}.pool3"];
        var sw = Stopwatch.StartNew();
        Tensor actual;
        using (torch.no_grad()) actual = fx.Model.Features(io[$"{size}.image"]);
        double err = Reference.MaxAbs(actual, expected);
        double scale = expected.abs().max().to(ScalarType.Float64).item<double>();
        double elementwise = ((actual - expected).abs() / (expected.abs() + 1e-3 * scale)).max().to(ScalarType.Float64).item<double>();
        log.WriteLine($"{size}: {sw.Elapsed.TotalSeconds:F1}s; max abs error {err:g3}, max |expected| {scale:g4}, relative to max {err / scale:g3}, elementwise relative (floor 1e-3·max) {elementwise:g3}");
        Assert.True(err / scale < 1e-4, $"{size}: relative error {err / scale:g3}");
    }

    [Fact]
    public void LogitsComeFromTheClassifier()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var pool3 = torch.rand(3, FidInceptionV3.FeatureDim);
        var withBias = fx.Model.Logits(pool3);
        var unbiased = fx.Model.Logits(pool3, includeBias: false);
        Assert.Equal(new long[] { 3, FidInceptionV3.NumClasses }, withBias.shape);
        var sd = fx.Model.state_dict();
        Assert.True(Reference.MaxAbs(unbiased, pool3.matmul(sd["fc.weight"].T)) < 1e-4);
        Assert.True(Reference.MaxAbs(withBias - unbiased, sd["fc.bias"].expand(3, -1)) < 1e-4);
    }

    [Fact]
    public void RejectsWrongInputAndWrongWeights()
    {
        using var scope = torch.NewDisposeScope();
        Assert.Contains("expected images [B, 3, H, W]", Assert.Throws<SvgdException>(() => fx.Model.Features(torch.zeros(1, 1, 32, 32))).Message);
        var sd = fx.Model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        sd.Remove("Mixed_6b.branch7x7_2.conv.weight");
        foreach (var k in sd.Keys.Where(k => k.EndsWith("num_batches_tracked")).ToList()) sd.Remove(k); // old files lack these: fine
        var e = Assert.Throws<SvgdException>(() => FidInceptionV3.FromStateDict(sd, "partial.pth"));
        Assert.Contains("1 missing key(s): Mixed_6b.branch7x7_2.conv.weight", e.Message);
    }

    /// <summary>
    /// pt_inception-2015-12-05-6726825d.pth predates PyTorch 1.6 and uses the legacy torch.save layout; this
    /// writes the formula weights in that layout (protocol-2 pickles, then the raw storages) and loads them back.
    /// </summary>
    [Fact]
    public void LoadsLegacyTorchSaveFile()
    {
        using var scope = torch.NewDisposeScope();
        string p = Path.Combine(Reference.TempDir(), "pt_inception-legacy.pth");
        var sd = fx.Model.state_dict();
        // Like the released file: no num_batches_tracked (it was saved before BatchNorm had them).
        var tensors = sd.Where(kv => !kv.Key.EndsWith("num_batches_tracked")).ToList();
        File.WriteAllBytes(p, LegacyTorchSave(tensors));
        Assert.True(Checkpoints.TorchLegacyPickle.IsLegacyPickle(p));
        using var loaded = FidInceptionV3.Load(p);
        var back = loaded.state_dict();
        Assert.All(sd, kv => Assert.True(Reference.Same(kv.Value, back[kv.Key]), kv.Key));

        var bytes = File.ReadAllBytes(p);
        string cut = Path.Combine(Path.GetDirectoryName(p)!, "cut.pth");
        File.WriteAllBytes(cut, bytes[..(bytes.Length - 1000)]);
        var e = Assert.Throws<SvgdException>(() => FidInceptionV3.Load(cut));
        Assert.Contains(cut, e.Message);
        Assert.Contains("cut short", e.Message);
    }

    static byte[] LegacyTorchSave(IReadOnlyList<KeyValuePair<string, Tensor>> tensors)
    {
        var ms = new MemoryStream();
        void B(params byte[] b) => ms.Write(b);
        void Str(string s) { var u = Encoding.UTF8.GetBytes(s); B((byte)'X'); ms.Write(BitConverter.GetBytes(u.Length)); ms.Write(u); }
        void Int(long v) { B((byte)'J'); ms.Write(BitConverter.GetBytes(checked((int)v))); }
        void Global(string module, string name) { B((byte)'c'); ms.Write(Encoding.ASCII.GetBytes(module + "\n" + name + "\n")); }
        // 1. magic number 0x1950a86a20f9469cfc6c as LONG1, 2. protocol version 1001, 3. system info.
        B(0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, (byte)'.');
        B(0x80, 2); Int(1001); B((byte)'.');
        B(0x80, 2, (byte)'}', (byte)'('); Str("protocol_version"); Int(1001); Str("little_endian"); B(0x88); B((byte)'u', (byte)'.');
        // 4. the state dict: OrderedDict of _rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict()).
        B(0x80, 2); Global("collections", "OrderedDict"); B((byte)')', (byte)'R', (byte)'(');
        for (int i = 0; i < tensors.Count; i++)
        {
            var (key, t) = tensors[i];
            Str(key);
            Global("torch._utils", "_rebuild_tensor_v2");
            B((byte)'(', (byte)'(');
            Str("storage");
            Global("torch", t.dtype == ScalarType.Int64 ? "LongStorage" : "FloatStorage");
            Str(i.ToString()); Str("cpu"); Int(t.numel()); B((byte)'N', (byte)'t', (byte)'Q');
            Int(0);
            B((byte)'('); foreach (var d in t.shape) Int(d); B((byte)'t');
            B((byte)'('); foreach (var st in t.stride()) Int(st); B((byte)'t');
            B(0x89);
            Global("collections", "OrderedDict"); B((byte)')', (byte)'R');
            B((byte)'t', (byte)'R');
        }
        B((byte)'u', (byte)'.');
        // 5. storage keys, then each storage: int64 element count and raw bytes.
        B(0x80, 2, (byte)']', (byte)'(');
        for (int i = 0; i < tensors.Count; i++) Str(i.ToString());
        B((byte)'e', (byte)'.');
        foreach (var (_, t) in tensors)
        {
            ms.Write(BitConverter.GetBytes(t.numel()));
            using var c = t.contiguous();
            ms.Write(c.bytes);
        }
        return ms.ToArray();
    }

    [Fact]
    public void LoadsFromAFile()
    {
        using var scope = torch.NewDisposeScope();
        string p = Path.Combine(Reference.TempDir(), "inception.safetensors");
        var sd = fx.Model.state_dict();
        Checkpoints.SafeTensors.Save(p, sd);
        using var loaded = FidInceptionV3.Load(p);
        var back = loaded.state_dict();
        Assert.All(sd, kv => Assert.True(Reference.Same(kv.Value, back[kv.Key]), kv.Key));
    }
}
