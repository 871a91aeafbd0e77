using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

public class Dinov3ParityTests(ITestOutputHelper log)
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
        var outputs = new (string Name, Tensor Actual)[]
        {
            ("cls", o.Cls), ("registers", o.Registers), ("patch", o.Patch),
            ("prenorm", o.PreNorm), ("layer0", o.Layers[0]), ("layer2", o.Layers[2]),
        };
        foreach (var (name, actual) in outputs)
        {
            log.WriteLine($"{caseName} {container} {name}: max abs error {Reference.MaxAbs(actual, io[$"{prefix}.{name}"]):g3}");
            Reference.Close(io[$"{prefix}.{name}"], actual, 1e-5, name);
        }
    }
}
