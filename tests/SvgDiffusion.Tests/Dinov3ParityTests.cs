using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

public class Dinov3ParityTests
{
    [Theory]
    [InlineData("dinov3_swiglu", "pth", "official")]
    [InlineData("dinov3_swiglu", "hf.safetensors", "hf")]
    [InlineData("dinov3_mlp", "pth", "official")]
    [InlineData("dinov3_mlp", "hf.safetensors", "hf")]
    public void MatchesReference(string caseName, string container, string prefix)
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(caseName);
        var cfg = Config.ConfigJson.Load<Dinov3Config>(Reference.File_(caseName + ".json"));
        using var model = Dinov3Checkpoint.Load(Reference.File_($"{caseName}.{container}"), cfg);
        using var _ = torch.no_grad();
        using var o = model.Forward(io["image"], new[] { 0, 2 });
        Reference.Close(io[$"{prefix}.cls"], o.Cls, 1e-5, "cls");
        Reference.Close(io[$"{prefix}.registers"], o.Registers, 1e-5, "registers");
        Reference.Close(io[$"{prefix}.patch"], o.Patch, 1e-5, "patch");
        Reference.Close(io[$"{prefix}.prenorm"], o.PreNorm, 1e-5, "prenorm");
        Reference.Close(io[$"{prefix}.layer0"], o.Layers[0], 1e-5, "layer0");
        Reference.Close(io[$"{prefix}.layer2"], o.Layers[2], 1e-5, "layer2");
    }
}
