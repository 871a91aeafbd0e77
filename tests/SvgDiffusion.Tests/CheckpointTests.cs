using System.IO.Compression;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

public class CheckpointTests
{
    [Fact]
    public void SafeTensorsRoundTripsDtypesAndMetadata()
    {
        string dir = Reference.TempDir();
        string path = Path.Combine(dir, "x.safetensors");
        var src = new Dictionary<string, Tensor>
        {
            ["f32"] = torch.randn(3, 4),
            ["f16"] = torch.randn(5).to(ScalarType.Float16),
            ["bf16"] = torch.randn(2, 2).to(ScalarType.BFloat16),
            ["i64"] = torch.arange(7),
            ["empty"] = torch.zeros(0, 3),
        };
        SafeTensors.Save(path, src, new Dictionary<string, string> { ["k"] = "v" });
        Assert.Empty(Directory.GetFiles(dir, "*.tmp-*"));
        var header = SafeTensors.ReadHeader(path);
        Assert.Equal("v", header.Metadata["k"]);
        var back = SafeTensors.Load(path);
        Assert.Equal(src.Keys, back.Keys);
        foreach (var (k, t) in src)
        {
            Assert.Equal(t.dtype, back[k].dtype);
            Assert.Equal(t.shape, back[k].shape);
            Assert.True(Reference.Same(t, back[k]), k);
        }
    }

    [Fact]
    public void SavedDinov3ReloadsFromOneFileWithItsConfig()
    {
        var cfg = new Dinov3Config { EmbedDim = 32, Depth = 2, NumHeads = 2, Ffn = "swiglu", FfnRatio = 3, NStorageTokens = 2 };
        using var model = new DinoVisionTransformer(cfg);
        model.eval();
        string path = Path.Combine(Reference.TempDir(), "dino.safetensors");
        Dinov3Checkpoint.Save(model, path);
        using var again = Dinov3Checkpoint.Load(path);
        Assert.Equal(cfg, again.Config);
        using var _ = torch.no_grad();
        var x = torch.randn(2, 3, 32, 48);
        using var a = model.Forward(x);
        using var b = again.Forward(x);
        Assert.True(Reference.Same(a.Patch, b.Patch));
    }

    [Fact]
    public void NestedContainersAreSelectedByNameAndPrefixesStripped()
    {
        // svg_autoencoder.ckpt is {"state_dict": {...}}: the DINOv3 inside it loads with a prefix.
        var ckpt = Checkpoint.Open(Reference.File_("svg_autoencoder.ckpt"));
        Assert.Contains(ckpt.Sections(), s => s.Name == "state_dict");
        var dino = ckpt.StateDict("state_dict", "encoder.");
        Assert.True(dino.ContainsKey("patch_embed.proj.weight"));
        Assert.DoesNotContain(dino.Keys, k => k.StartsWith("decoder."));
        // svg_dit.pt is {"ema": {...}}: chosen without being named.
        var ema = Checkpoint.Open(Reference.File_("svg_dit.pt")).StateDict();
        Assert.True(ema.ContainsKey("pos_embed"));
        var err = Assert.Throws<SvgdException>(() => Checkpoint.Open(Reference.File_("svg_dit.pt")).StateDict("model"));
        Assert.Contains("no section 'model'", err.Message);
        Assert.Contains("ema", err.Message);
    }

    [Fact]
    public void PickledHalfPrecisionAndNonTensorEntriesLoad()
    {
        // A torch.save zip written by hand: {"model": {"w": fp16 [2,3], "b": bf16 [3]}, "step": 7, "opt": {...}}
        string path = Path.Combine(Reference.TempDir(), "hand.pt");
        WriteMiniTorchZip(path);
        var ckpt = Checkpoint.Open(path);
        var sd = ckpt.StateDict("model");
        Assert.Equal(ScalarType.Float16, sd["w"].dtype);
        Assert.Equal(new long[] { 2, 3 }, sd["w"].shape);
        Assert.Equal(new float[] { 0, 1, 2, 3, 4, 5 }, sd["w"].to(ScalarType.Float32).data<float>().ToArray());
        Assert.Equal(ScalarType.BFloat16, sd["b"].dtype);
        Assert.Equal(new float[] { 1, 2, 3 }, sd["b"].to(ScalarType.Float32).data<float>().ToArray());
        var top = (Dictionary<object, object?>)ckpt.Root!;
        Assert.Equal(7L, top["step"]);
        // A class we do not know is kept as data, never constructed.
        Assert.IsType<PickledObject>(top["args"]);
    }

    /// <summary>Emits protocol-2 pickle opcodes the way torch.save does, for fp16/bf16 storages.</summary>
    static void WriteMiniTorchZip(string path)
    {
        var p = new MemoryStream();
        void Op(params byte[] b) => p.Write(b);
        void Str(string s) { var b = System.Text.Encoding.UTF8.GetBytes(s); Op((byte)'X'); p.Write(BitConverter.GetBytes(b.Length)); p.Write(b); }
        void Global(string m, string n) { Op((byte)'c'); p.Write(System.Text.Encoding.ASCII.GetBytes(m + "\n" + n + "\n")); }
        void Int(byte v) => Op((byte)'K', v);
        void Tensor(string storageType, string key, int numel, byte[] size, byte[] stride)
        {
            Global("torch._utils", "_rebuild_tensor_v2");
            Op((byte)'(');
            Op((byte)'('); Str("storage"); Global("torch", storageType); Str(key); Str("cpu"); Int((byte)numel); Op((byte)'t');
            Op((byte)'Q');
            Int(0);
            Op((byte)'('); foreach (var s in size) Int(s); Op((byte)'t');
            Op((byte)'('); foreach (var s in stride) Int(s); Op((byte)'t');
            Op(0x89);
            Global("collections", "OrderedDict"); Op((byte)')'); Op((byte)'R');
            Op((byte)'t');
            Op((byte)'R');
        }
        Op(0x80, 2);
        Op((byte)'}');
        Op((byte)'(');
        Str("model");
        Global("collections", "OrderedDict"); Op((byte)')'); Op((byte)'R');
        Op((byte)'(');
        Str("w"); Tensor("HalfStorage", "0", 6, new byte[] { 2, 3 }, new byte[] { 3, 1 });
        Str("b"); Tensor("BFloat16Storage", "1", 3, new byte[] { 3 }, new byte[] { 1 });
        Op((byte)'u');
        Str("step"); Int(7);
        Str("args"); Global("argparse", "Namespace"); Op((byte)')'); Op((byte)'R');
        Op((byte)'u');
        Op((byte)'.');

        using var half = torch.arange(6, dtype: ScalarType.Float32).to(ScalarType.Float16);
        using var bf = torch.tensor(new float[] { 1, 2, 3 }).to(ScalarType.BFloat16);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        void Entry(string name, byte[] data) { using var s = zip.CreateEntry(name, CompressionLevel.NoCompression).Open(); s.Write(data); }
        Entry("archive/data.pkl", p.ToArray());
        Entry("archive/byteorder", System.Text.Encoding.ASCII.GetBytes("little"));
        Entry("archive/data/0", half.bytes.ToArray());
        Entry("archive/data/1", bf.bytes.ToArray());
        Entry("archive/version", System.Text.Encoding.ASCII.GetBytes("3\n"));
    }
}

/// <summary>Loaders build models without drawing initial weights; the strict load then fills every one.</summary>
public class SkippedInitialisationTests
{
    [Fact]
    public void LoadedDiTMatchesTheSavedOneAndTheSkipEndsWithItsScope()
    {
        Assert.False(SvgDiffusion.Models.Common.WeightInit.Skipping);
        using (SvgDiffusion.Models.Common.WeightInit.SkipForLoad()) Assert.True(SvgDiffusion.Models.Common.WeightInit.Skipping);
        Assert.False(SvgDiffusion.Models.Common.WeightInit.Skipping);

        using var scope = torch.NewDisposeScope();
        torch.manual_seed(8);
        var cfg = new SvgDiffusion.Models.Diffusion.DiTConfig { InputSize = 4, InChannels = 8, HiddenSize = 64, Depth = 2, NumHeads = 2, NumClasses = 3 };
        using var saved = new SvgDiffusion.Models.Diffusion.DiT(cfg);
        using (torch.no_grad()) foreach (var p in saved.parameters()) p.add_(torch.randn_like(p) * 0.05);
        saved.eval();
        string path = Path.Combine(Reference.TempDir(), "dit.safetensors");
        SvgDiffusion.Models.Diffusion.DiTCheckpoint.Save(saved, path);
        using var loaded = SvgDiffusion.Models.Diffusion.DiTCheckpoint.Load(path);
        Assert.False(SvgDiffusion.Models.Common.WeightInit.Skipping);
        var x = torch.randn(2, 16, 8);
        var t = torch.rand(2);
        var y = torch.tensor(new long[] { 0, 2 });
        using var _ = torch.inference_mode();
        Assert.Equal(0.0, (saved.Forward(x, t, y) - loaded.Forward(x, t, y)).abs().max().item<float>());
        // A model built outside the scope is initialised as before: same seed, same weights.
        torch.manual_seed(8);
        using var again = new SvgDiffusion.Models.Diffusion.DiT(cfg);
        torch.manual_seed(8);
        using var twice = new SvgDiffusion.Models.Diffusion.DiT(cfg);
        foreach (var ((k, a), (_, b)) in again.state_dict().Zip(twice.state_dict()))
            Assert.True(a.eq(b).all().item<bool>(), k);
    }
}
