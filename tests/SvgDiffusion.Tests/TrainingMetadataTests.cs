using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Training;
using TorchSharp;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>A training checkpoint whose metadata is damaged is one clean error naming the file and the key.</summary>
public class TrainingMetadataTests
{
    static string Write(Dictionary<string, string> meta)
    {
        string path = Path.Combine(Reference.TempDir(), "last.safetensors");
        using var t = torch.zeros(1);
        SafeTensors.Save(path, new Dictionary<string, torch.Tensor> { ["x"] = t }, meta);
        return path;
    }

    static Dictionary<string, string> Good() => new()
    {
        ["svgd.kind"] = DiTTrainer.KindValue,
        [DiTCheckpoint.ConfigMetadataKey] = ConfigJson.Serialize(DiTPresets.Get("svg-tiny")),
        ["svgd.dit_training_config"] = "{}",
        ["svgd.step"] = "12",
    };

    [Theory]
    [InlineData("svgd.dit_training_config", "{broken", "svgd.dit_training_config")]
    [InlineData("svgd.step", "twelve", "svgd.step")]
    [InlineData("svgd.step", "-3", "svgd.step")]
    [InlineData("svgd.class_names", "[1, {}]", "svgd.class_names")]
    [InlineData("svgd.latent_shape", "not json", "svgd.latent_shape")]
    public void DamagedMetadataNamesTheFileAndKey(string key, string value, string named)
    {
        var meta = Good();
        meta[key] = value;
        string path = Write(meta);
        var e = Assert.Throws<SvgdException>(() => DiTTrainer.ReadInfo(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(named, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void IntactMetadataReads()
    {
        var info = DiTTrainer.ReadInfo(Write(Good()));
        Assert.Equal(12, info.Step);
    }
}
