using System.IO.Compression;
using System.Text;
using SvgDiffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

public class NpzTests
{
    /// <summary>A .npy written by hand: magic, version, little-endian header length, dict literal padded to 64, data.</summary>
    static byte[] NpyBytes(string descr, string shape, byte[] data, bool fortran = false, int major = 1)
    {
        string dict = $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': {shape}, }}";
        int prefix = major == 1 ? 10 : 12;
        int total = (prefix + dict.Length + 1 + 63) / 64 * 64;
        string header = dict + new string(' ', total - prefix - dict.Length - 1) + "\n";
        var ms = new MemoryStream();
        ms.Write(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, 0 });
        if (major == 1) ms.Write(BitConverter.GetBytes((ushort)header.Length));
        else ms.Write(BitConverter.GetBytes((uint)header.Length));
        ms.Write(Encoding.ASCII.GetBytes(header));
        ms.Write(data);
        return ms.ToArray();
    }

    static byte[] Doubles(params double[] v) => v.SelectMany(BitConverter.GetBytes).ToArray();
    static byte[] Floats(params float[] v) => v.SelectMany(BitConverter.GetBytes).ToArray();

    static string Zip(params (string Name, byte[] Bytes)[] entries)
    {
        string p = Path.Combine(Reference.TempDir(), "hand.npz");
        using var fs = File.Create(p);
        using var zip = new ZipArchive(fs, ZipArchiveMode.Create);
        foreach (var (name, bytes) in entries)
        {
            using var s = zip.CreateEntry(name, CompressionLevel.Optimal).Open();
            s.Write(bytes);
        }
        return p;
    }

    [Fact]
    public void ReadsHandMadeNpz()
    {
        // mu: float64 v1 header; sigma: float32 stored in Fortran order (column-major); arr_0: ADM-style uint8 images.
        var sigmaRowMajor = new float[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
        var sigmaColMajor = new float[] { 1, 4, 7, 2, 5, 8, 3, 6, 9 };
        string p = Zip(
            ("mu.npy", NpyBytes("<f8", "(3,)", Doubles(0.5, -1.25, 3))),
            ("sigma.npy", NpyBytes("<f4", "(3, 3)", Floats(sigmaColMajor), fortran: true)),
            ("arr_0.npy", NpyBytes("|u1", "(2, 4, 4, 3)", new byte[96])));
        using var s = FidStatistics.Load(p, loadActivations: true);
        Assert.Equal(ScalarType.Float64, s.Mu.dtype);
        Assert.Equal(new[] { 0.5, -1.25, 3 }, s.Mu.data<double>().ToArray());
        Assert.Equal(sigmaRowMajor.Select(x => (double)x).ToArray(), s.Sigma.flatten().data<double>().ToArray());
        Assert.Null(s.Activations); // arr_0 holds images here, not [N, 3] features

        using var npz = NpzArchive.Open(p);
        Assert.Equal(new[] { "mu", "sigma", "arr_0" }, npz.Names);
        Assert.Equal(new long[] { 2, 4, 4, 3 }, npz.Header("arr_0").Shape);
    }

    [Fact]
    public void ReadsOtherHeaderVersionsAndByteOrders()
    {
        var be = new[] { 1.5, -2.0 }.SelectMany(x => BitConverter.GetBytes(x).Reverse()).ToArray();
        string p = Zip(
            ("a.npy", NpyBytes(">f8", "(2,)", be, major: 2)),
            ("b.npy", NpyBytes("<i8", "(2L, 1L)", new[] { 7L, -3L }.SelectMany(BitConverter.GetBytes).ToArray(), major: 3)),
            ("c.npy", NpyBytes("<f2", "()", BitConverter.GetBytes((Half)0.25))));
        var d = Npz.Load(p);
        Assert.Equal(new[] { 1.5, -2.0 }, d["a"].data<double>().ToArray());
        Assert.Equal(ScalarType.Int64, d["b"].dtype);
        Assert.Equal(new long[] { 2, 1 }, d["b"].shape);
        Assert.Equal(new[] { 7L, -3L }, d["b"].data<long>().ToArray());
        Assert.Empty(d["c"].shape);
        Assert.Equal(0.25f, d["c"].to(ScalarType.Float32).item<float>());
    }

    [Fact]
    public void StatisticsRoundTrip()
    {
        using var scope = torch.NewDisposeScope();
        var feats = torch.randn(50, 7);
        using var s = FidStatistics.FromFeatures(feats, keepActivations: true);
        string p = Path.Combine(Reference.TempDir(), "stats.npz");
        s.Save(p, includeActivations: true);
        using var back = FidStatistics.Load(p, loadActivations: true);
        Assert.True(Reference.Same(s.Mu, back.Mu));
        Assert.True(Reference.Same(s.Sigma, back.Sigma));
        Assert.True(Reference.Same(feats, back.Activations!));
        using var noActs = FidStatistics.Load(p);
        Assert.Null(noActs.Activations);

        // What numpy needs: version 1.0, header padded to 64 bytes and ended by a newline.
        using var zip = ZipFile.OpenRead(p);
        Assert.Equal(new[] { "mu.npy", "sigma.npy", "activations.npy" }, zip.Entries.Select(e => e.FullName));
        using var ms = new MemoryStream();
        using (var es = zip.GetEntry("sigma.npy")!.Open()) es.CopyTo(ms);
        var bytes = ms.ToArray();
        Assert.Equal(1, bytes[6]);
        int hlen = BitConverter.ToUInt16(bytes, 8);
        Assert.Equal(0, (10 + hlen) % 64);
        string header = Encoding.ASCII.GetString(bytes, 10, hlen);
        Assert.StartsWith("{'descr': '<f8', 'fortran_order': False, 'shape': (7, 7), }", header);
        Assert.EndsWith("\n", header);
        Assert.Equal(10 + hlen + 7 * 7 * 8, bytes.Length);
    }

    [Fact]
    public void NpzWithoutMuSigmaIsAClearError()
    {
        string p = Zip(("arr_0.npy", NpyBytes("<f4", "(2, 3)", new byte[24])));
        var e = Assert.Throws<SvgdException>(() => FidStatistics.Load(p));
        Assert.Contains(p, e.Message);
        Assert.Contains("no 'mu' and 'sigma'", e.Message);
        Assert.Contains("arr_0", e.Message);
    }

    [Fact]
    public void MismatchedMuSigmaIsAClearError()
    {
        string p = Zip(("mu.npy", NpyBytes("<f8", "(3,)", new byte[24])), ("sigma.npy", NpyBytes("<f8", "(4, 4)", new byte[128])));
        var e = Assert.Throws<SvgdException>(() => FidStatistics.Load(p));
        Assert.Contains("sigma has shape [4, 4] but mu has 3 entries", e.Message);
    }

    [Fact]
    public void CorruptFilesAreClearErrors()
    {
        string dir = Reference.TempDir();
        string junk = Path.Combine(dir, "junk.npz");
        File.WriteAllBytes(junk, Encoding.ASCII.GetBytes("this is not a zip archive at all"));
        Assert.Contains("not a valid .npz", Assert.Throws<SvgdException>(() => FidStatistics.Load(junk)).Message);

        string shortData = Zip(("mu.npy", NpyBytes("<f8", "(3,)", new byte[16])), ("sigma.npy", NpyBytes("<f8", "(3, 3)", new byte[72])));
        Assert.Contains("cut short", Assert.Throws<SvgdException>(() => FidStatistics.Load(shortData)).Message);

        string badMagic = Zip(("mu.npy", new byte[64]), ("sigma.npy", NpyBytes("<f8", "(1, 1)", new byte[8])));
        Assert.Contains("bad magic", Assert.Throws<SvgdException>(() => FidStatistics.Load(badMagic)).Message);

        string badHeader = Zip(("mu.npy", NpyBytes("<f8", "(3,", new byte[24])), ("sigma.npy", NpyBytes("<f8", "(1, 1)", new byte[8])));
        Assert.Contains("malformed .npy header", Assert.Throws<SvgdException>(() => FidStatistics.Load(badHeader)).Message);

        string complexDtype = Zip(("mu.npy", NpyBytes("<c16", "(1,)", new byte[16])), ("sigma.npy", NpyBytes("<f8", "(1, 1)", new byte[8])));
        Assert.Contains("unsupported .npy dtype '<c16'", Assert.Throws<SvgdException>(() => FidStatistics.Load(complexDtype)).Message);

        // A real zip cut in half.
        string good = Path.Combine(dir, "good.npz");
        using (var s = FidStatistics.FromFeatures(torch.randn(20, 4))) s.Save(good);
        var bytes = File.ReadAllBytes(good);
        string cut = Path.Combine(dir, "cut.npz");
        File.WriteAllBytes(cut, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<SvgdException>(() => FidStatistics.Load(cut));
        Assert.Contains(cut, e.Message);

        Assert.Contains("no such file", Assert.Throws<SvgdException>(() => FidStatistics.Load(Path.Combine(dir, "missing.npz"))).Message);
    }
}
