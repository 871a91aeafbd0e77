using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using static SvgDiffusion.Tests.CorruptFiles;

namespace SvgDiffusion.Tests;

/// <summary>Damaged files that once ended in an internal error (exit 2) or loaded silently; each now fails in one line.</summary>
public class ReaderRegressionTests
{
    static string Write(string name, byte[] bytes)
    {
        string p = Path.Combine(Reference.TempDir(), name);
        File.WriteAllBytes(p, bytes);
        return p;
    }

    /// <summary>Runs <c>svgd inspect</c> on the file and returns its one error line.</summary>
    static string InspectFails(string path)
    {
        var (code, err) = RunCli("inspect", path);
        Assert.True(Verdict(path, code, err) == null && code == 1, $"exit {code}: {err}");
        return err.Trim();
    }

    static SvgdException Fails(Action a)
    {
        var e = Assert.Throws<SvgdException>(a);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    const string OneTensor = "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    static readonly byte[] EightBytes = new byte[8];

    [Fact]
    public void SafeTensorsDuplicateKeyIsNamed()
    {
        string p = Write("dup.safetensors", SafeTensorsBytes("{" + OneTensor + "," + OneTensor + "}", EightBytes));
        Assert.Contains("'w' twice", InspectFails(p));
    }

    [Fact]
    public void SafeTensorsNonStringMetadataIsNamed()
    {
        string p = Write("meta.safetensors", SafeTensorsBytes("{\"__metadata__\":{\"step\":5}," + OneTensor + "}", EightBytes));
        string err = InspectFails(p);
        Assert.Contains("__metadata__", err);
        Assert.Contains("'step'", err);
    }

    [Theory]
    [InlineData("[-2,-1]", "negative dimension")]
    [InlineData("[4294967296,4294967296,4294967296]", "too large")]
    [InlineData("[1e30]", "not a 64-bit integer")]
    public void SafeTensorsBadShapeIsNamed(string shape, string expect)
    {
        string p = Write("shape.safetensors", SafeTensorsBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[0,8]}}", EightBytes));
        string err = InspectFails(p);
        Assert.Contains("'w'", err);
        Assert.Contains(expect, err);
    }

    [Fact]
    public void BrokenConfigInMetadataIsNamed()
    {
        var meta = new Dictionary<string, string>
        {
            [SvgAutoencoderCheckpoint.ConfigMetadataKey] = "{\"residual_vit\": {",
            [DiTCheckpoint.ConfigMetadataKey] = "{not json",
        };
        string p = Path.Combine(Reference.TempDir(), "model.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["w"] = torch.zeros(2) }, meta);
        foreach (var load in new Action[] { () => SvgAutoencoderCheckpoint.Load(p), () => DiTCheckpoint.Load(p) })
        {
            var e = Fails(load);
            Assert.Contains(p, e.Message);
            Assert.Contains("metadata", e.Message);
            Assert.Contains("not valid JSON", e.Message);
        }
    }

    [Theory]
    [InlineData("memo")]
    [InlineData("storage-size")]
    [InlineData("offset")]
    [InlineData("stride")]
    [InlineData("size-not-tuple")]
    public void BadPickleFieldsAreNamed(string what)
    {
        var d = new TensorSpec();
        var spec = what switch
        {
            "memo" => d with { Tail = p => p.Raw("pnot-a-number\n") },
            "storage-size" => d with { StorageSize = p => p.Int(-6) },
            "offset" => d with { Offset = p => p.Int(-1) },
            "stride" => d with { Stride = p => p.Tuple(3, -1) },
            _ => d with { Size = p => p.Int(6) },
        };
        foreach (var (ext, bytes) in new[] { (".pt", TorchZip(StateDictPickle(spec))), (".pth", TorchLegacy(StateDictPickle(spec))) })
        {
            string err = InspectFails(Write("bad" + ext, bytes));
            Assert.Contains("corrupt pickle", err);
        }
    }

    [Fact]
    public void ValidHandBuiltPicklesLoad()
    {
        // The builders above make loadable files: the failures are the edits, not the builders.
        var zip = Checkpoint.Open(Write("ok.pt", TorchZip(StateDictPickle(new TensorSpec())))).StateDict();
        var legacy = Checkpoint.Open(Write("ok.pth", TorchLegacy(StateDictPickle(new TensorSpec())))).StateDict();
        foreach (var sd in new[] { zip, legacy })
        {
            Assert.Equal(new long[] { 2, 3 }, sd["w"].shape);
            Assert.Equal(6f, sd["w"][1, 2].item<float>());
        }
    }

    [Fact]
    public void LegacyTensorReferencedTwiceLoads()
    {
        // Tied weights: the memo puts one tensor under two keys; it must not be disposed while still in use.
        var spec = new TensorSpec { Tail = p => p.Str("tied").Op((byte)'h', 0, (byte)'s') };
        var pickle = StateDictPickle(spec with { });
        // Memoize the tensor as it is built: BINPUT 0 right after its REDUCE (the 't' 'R' before 'u').
        int reduce = Array.LastIndexOf(pickle, (byte)'u') - 1;
        var withMemo = pickle[..(reduce + 1)].Concat(new byte[] { (byte)'q', 0 }).Concat(pickle[(reduce + 1)..]).ToArray();
        foreach (var (ext, bytes) in new[] { (".pth", TorchLegacy(withMemo)), (".pt", TorchZip(withMemo)) })
        {
            var sd = Checkpoint.Open(Write("tied" + ext, bytes)).StateDict();
            Assert.True(Reference.Same(sd["w"], sd["tied"]), ext);
        }
    }

    [Fact]
    public void SelfReferencingDictIsACleanError()
    {
        var spec = new TensorSpec { Tail = p => p.Op(0x94).Str("self").Op((byte)'h', 0, (byte)'s') };
        foreach (var (ext, bytes) in new[] { (".pt", TorchZip(StateDictPickle(spec))), (".pth", TorchLegacy(StateDictPickle(spec))) })
            Assert.Contains("nested more than", InspectFails(Write("self" + ext, bytes)));
    }

    [Fact]
    public void HugeImageHeaderIsRefusedBeforeDecoding()
    {
        var png = File.ReadAllBytes(Directory.GetFiles(Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist", "bag"), "*.png")[0]);
        string p = Write("huge.png", PngWithSize(png, 100000, 100000));
        var e = Fails(() => ImageFiles.LoadRgb(p));
        Assert.Contains(p, e.Message);
        Assert.Contains("100000x100000", e.Message);
        string j = Write("huge.jpg", Jpeg(png));
        var bytes = File.ReadAllBytes(j);
        int at = JpegSizeField(bytes);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(at), 20000);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(at + 2), 30000);
        File.WriteAllBytes(j, bytes);
        Assert.Contains("30000x20000", Fails(() => ImageFiles.LoadRgb(j)).Message);
    }

    [Fact]
    public void ZipStorageWithBadCrcIsRejected()
    {
        var src = File.ReadAllBytes(Reference.File_("svg_dit.pt"));
        var entry = ZipLayout(src).First(e => e.Name.Contains("/data/", StringComparison.Ordinal) && e.CompressedSize > 16);
        src[entry.DataStart + entry.CompressedSize / 2] ^= 0x01; // one bit: a different number, same length
        string p = Write("flipped.pt", src);
        string err = InspectFails(p);
        Assert.Contains("CRC-32", err);
        Assert.Contains(entry.Name, err);
    }

    /// <summary>A copy of a reference torch zip with one bit flipped in the middle of its largest stored tensor, the CRC left alone.</summary>
    static (string Path, string Entry) FlipStoredTensor(string reference, string name)
    {
        var bytes = File.ReadAllBytes(Reference.File_(reference));
        var entry = ZipLayout(bytes).Where(e => e.Name.Contains("/data/", StringComparison.Ordinal)).MaxBy(e => e.CompressedSize)!;
        Assert.Equal(0, entry.Method); // torch.save stores tensors uncompressed
        bytes[entry.DataStart + entry.CompressedSize / 2] ^= 0x01;
        return (Write(name, bytes), entry.Name);
    }

    static void FailsOnCrc(string path, string entry, params string[] args)
    {
        var (code, err) = RunCli(args);
        Assert.True(Verdict(path, code, err) == null && code == 1, $"exit {code}: {err}");
        Assert.Contains("CRC-32", err);
        Assert.Contains(entry, err);
    }

    /// <summary>
    /// Issue 28 item 4: one flipped byte inside a stored tensor of a <c>.pt</c> must not sample with wrong weights.
    /// The released DiT under each torch extension through <c>svgd sample</c>, the released autoencoder <c>.ckpt</c>
    /// through <c>svgd encode</c>, and a DINOv3 <c>.pth</c> given as <c>--encoder</c>: exit 1, one line naming the file and the CRC.
    /// </summary>
    [Fact]
    public void CliRefusesTorchFilesWithAFlippedTensorByte()
    {
        string dit = Reference.File_("svg_dit.json"), ae = Reference.File_("svg_autoencoder.ckpt"), aeConfig = Reference.File_("svg_autoencoder.json");
        foreach (var ext in new[] { ".pt", ".pth", ".ckpt" })
        {
            var (model, entry) = FlipStoredTensor("svg_dit.pt", "crcflip" + ext);
            string latent = Path.Combine(Reference.TempDir(), "latent.safetensors");
            FailsOnCrc(model, entry, "sample", "--model", model, "--dit-config", dit, "--no-stats", "--no-decode", "--latent-out", latent,
                "--n", "1", "--steps", "1", "--precision", "fp32");
            Assert.False(File.Exists(latent), ext);
        }
        string images = Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist", "bag");
        var (badAe, aeEntry) = FlipStoredTensor("svg_autoencoder.ckpt", "crcflip-autoencoder.ckpt");
        FailsOnCrc(badAe, aeEntry, "encode", "--autoencoder", badAe, "--config", aeConfig, "--images", images, "--out", Path.Combine(Reference.TempDir(), "z.safetensors"));
        var (badDino, dinoEntry) = FlipStoredTensor("dinov3_swiglu.pth", "crcflip-dinov3.pth");
        FailsOnCrc(badDino, dinoEntry, "encode", "--autoencoder", ae, "--config", aeConfig, "--encoder", badDino, "--images", images, "--out", Path.Combine(Reference.TempDir(), "z.safetensors"));
    }

    [Fact]
    public void NpzArrayWithBadCrcIsRejected()
    {
        string dir = Reference.TempDir();
        string good = Path.Combine(dir, "good.npz");
        Npz.Save(good, new Dictionary<string, Tensor> { ["mu"] = torch.arange(4, dtype: ScalarType.Float64), ["sigma"] = torch.eye(4, dtype: ScalarType.Float64) });
        var bytes = File.ReadAllBytes(good);
        var sigma = ZipLayout(bytes).First(e => e.Name == "sigma.npy");
        bytes[sigma.DataStart + sigma.CompressedSize - 3] ^= 0x10;
        string bad = Path.Combine(dir, "bad.npz");
        File.WriteAllBytes(bad, bytes);
        var (code, err) = RunCli("fid", bad, good);
        Assert.True(Verdict(bad, code, err) == null && code == 1, err);
        Assert.Contains("sigma.npy", err);
        Assert.Contains("CRC-32", err);
    }

    [Fact]
    public void DirectoryIsNotReportedAsMissing()
    {
        string dir = Reference.TempDir();
        Assert.Contains("is a directory", Fails(() => Checkpoint.Open(dir)).Message);
        Assert.Contains("is a directory", InspectFails(dir));
    }

    [Fact]
    public void LeftoverTempFilesOfDeadWritersAreRemoved()
    {
        string dir = Reference.TempDir();
        string target = Path.Combine(dir, "last.safetensors");
        string Tmp(int pid) => $"{target}.tmp-{pid}-{Guid.NewGuid():N}";
        // pid_max is at most 2^22 on Linux: this pid never runs. Our own pid's leftovers come from a failed write.
        string dead = Tmp(int.MaxValue - 7), own = Tmp(Environment.ProcessId);
        using var other = Process.GetProcesses().First(p => p.Id != Environment.ProcessId && !p.HasExited);
        string live = Tmp(other.Id);
        string foreign = target + ".tmp-notes", sibling = Path.Combine(dir, "other.safetensors.tmp-" + (int.MaxValue - 7) + "-" + Guid.NewGuid().ToString("N"));
        foreach (var f in new[] { dead, own, live, foreign, sibling }) File.WriteAllBytes(f, new byte[16]);
        SafeTensors.Save(target, new Dictionary<string, Tensor> { ["x"] = torch.ones(3) });
        Assert.False(File.Exists(dead), "leftover of a dead process");
        Assert.False(File.Exists(own), "leftover of this process");
        Assert.True(File.Exists(live), "a running writer's file");
        Assert.True(File.Exists(foreign), "a name AtomicFile does not make");
        Assert.True(File.Exists(sibling), "another target's leftover");
        Assert.Equal(3, SafeTensors.Load(target)["x"].shape[0]);
    }
}
