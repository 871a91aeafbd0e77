using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>Bad input gives one clear line naming the file, key or shape at fault.</summary>
public class ErrorPathTests
{
    static SvgdException Fails(Action a)
    {
        var e = Assert.Throws<SvgdException>(a);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    static string Truncated(string source, double fraction, string ext)
    {
        var bytes = File.ReadAllBytes(Reference.File_(source));
        string p = Path.Combine(Reference.TempDir(), "cut" + ext);
        File.WriteAllBytes(p, bytes.AsSpan(0, (int)(bytes.Length * fraction)).ToArray());
        return p;
    }

    [Theory]
    [InlineData("dinov3_swiglu.pth", ".pth")]
    [InlineData("dinov3_swiglu.hf.safetensors", ".safetensors")]
    public void TruncatedCheckpointNamesTheFile(string source, string ext)
    {
        string p = Truncated(source, 0.6, ext);
        var e = Fails(() => Dinov3Checkpoint.Load(p));
        Assert.Contains(p, e.Message);
    }

    [Fact]
    public void MissingAndWrongShapedKeysAreListedTogether()
    {
        var sd = Checkpoint.Open(Reference.File_("dinov3_mlp.pth")).StateDict();
        sd.Remove("blocks.1.ls1.gamma");
        sd.Remove("norm.bias");
        sd["blocks.0.attn.proj.weight"] = torch.zeros(64, 32);
        sd["extra.thing"] = torch.zeros(1);
        var cfg = Config.ConfigJson.Load<Dinov3Config>(Reference.File_("dinov3_mlp.json"));
        var e = Fails(() => Dinov3Checkpoint.FromStateDict(sd, "edited.pth", cfg));
        Assert.Contains("edited.pth", e.Message);
        Assert.Contains("2 missing key(s): blocks.1.ls1.gamma, norm.bias", e.Message);
        Assert.Contains("1 unexpected key(s): extra.thing", e.Message);
        Assert.Contains("blocks.0.attn.proj.weight: checkpoint [64, 32] vs model [64, 64]", e.Message);
    }

    [Fact]
    public void ConfigDisagreeingWithCheckpointShapesIsRejected()
    {
        var e = Fails(() => Dinov3Checkpoint.Load(Reference.File_("dinov3_swiglu.pth"), Dinov3Presets.Get("vits16plus")));
        Assert.Contains("embed_dim 384 vs 64", e.Message);
    }

    [Fact]
    public void UnknownLayoutIsNamed()
    {
        var e = Fails(() => Dinov3Checkpoint.Load(Reference.File_("svg_dit.pt")));
        Assert.Contains("unknown DINOv3 layout", e.Message);
        Assert.Contains("svg_dit.pt", e.Message);
    }

    [Fact]
    public void NotACheckpointAtAll()
    {
        string p = Path.Combine(Reference.TempDir(), "notes.pth");
        File.WriteAllText(p, "hello");
        Assert.Contains("unknown checkpoint container", Fails(() => Checkpoint.Open(p)).Message);
        Assert.Contains("no such file", Fails(() => Checkpoint.Open(p + ".missing")).Message);
    }

    [Fact]
    public void CorruptImageIsNamed()
    {
        string dir = Reference.TempDir();
        string good = Path.Combine(dir, "good.png");
        ImageFiles.SavePng(torch.rand(3, 20, 30), good, (0, 1));
        var bytes = File.ReadAllBytes(good);
        string cut = Path.Combine(dir, "cut.png");
        File.WriteAllBytes(cut, bytes.AsSpan(0, bytes.Length / 2).ToArray());
        string junk = Path.Combine(dir, "junk.jpg");
        File.WriteAllText(junk, "not an image");
        Assert.Contains(cut, Fails(() => ImageFiles.LoadRgb(cut)).Message);
        Assert.Contains(junk, Fails(() => ImageFiles.LoadRgb(junk)).Message);
        Assert.Contains("no images", Fails(() => ImageFiles.List(Reference.TempDir())).Message);
    }

    [Fact]
    public void InputNotMultipleOfPatchSize()
    {
        using var model = new DinoVisionTransformer(new Dinov3Config { EmbedDim = 32, Depth = 1, NumHeads = 2 });
        Assert.Contains("multiple of the patch size", Fails(() => model.Forward(torch.zeros(1, 3, 40, 32))).Message);
        Assert.Contains("out of range", Fails(() => model.Forward(torch.zeros(1, 3, 32, 32), new[] { 5 })).Message);
    }
}
