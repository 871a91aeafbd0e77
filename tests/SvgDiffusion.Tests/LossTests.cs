using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Losses;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

public class LossTests
{
    [Fact]
    public void LpipsLoadsReleasedKeyLayoutsAndIsAMetric()
    {
        // Files laid out like the releases: torchvision VGG-16 'features.N.*' and LPIPS 'linK.model.1.weight'.
        string dir = Reference.TempDir();
        torch.manual_seed(0);
        using var fresh = new Lpips();
        var vgg = fresh.state_dict().Where(kv => kv.Key.StartsWith("features.")).ToDictionary(kv => kv.Key, kv => torch.randn_like(kv.Value) * 0.05);
        var lin = Enumerable.Range(0, 5).ToDictionary(i => $"lin{i}.model.1.weight", i => torch.rand(1, new[] { 64, 128, 256, 512, 512 }[i], 1, 1));
        SafeTensors.Save(Path.Combine(dir, "vgg16.safetensors"), vgg);
        SafeTensors.Save(Path.Combine(dir, "lin.safetensors"), lin);
        using var lpips = Lpips.Load(Path.Combine(dir, "lin.safetensors"), Path.Combine(dir, "vgg16.safetensors"));
        using var _ = torch.no_grad();
        var x = torch.rand(2, 3, 32, 32) * 2 - 1;
        var y = torch.rand(2, 3, 32, 32) * 2 - 1;
        Assert.True(lpips.Forward(x, x).abs().max().item<float>() < 1e-6, "LPIPS(x, x) = 0");
        var d = lpips.Forward(x, y);
        Assert.True((d > 0).all().item<bool>(), "different images are apart");
        Reference.Close(d, lpips.Forward(y, x), 1e-5, "symmetric");
        var e = Assert.Throws<SvgdException>(() => Lpips.Load(Path.Combine(dir, "lin.safetensors")));
        Assert.Contains("missing key", e.Message);
    }

    [Fact]
    public void PatchGanHingeLoss()
    {
        using var d = new PatchDiscriminator(layers: 3);
        var logits = d.forward(torch.randn(2, 3, 64, 64));
        Assert.Equal(new long[] { 2, 1, 6, 6 }, logits.shape);
        Assert.Equal(0f, PatchDiscriminator.HingeLoss(torch.full(4, 2f), torch.full(4, -2f)).item<float>());
        Assert.Equal(1f, PatchDiscriminator.HingeLoss(torch.zeros(4), torch.zeros(4)).item<float>());
    }
}
