using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

public class ResNetAutoencoderTests
{
    [Fact]
    public void ResNetPresetEncodesDecodesAndSavesWithoutTheFrozenEncoder()
    {
        var cfg = SvgAutoencoderPresets.Get(SvgAutoencoderPresets.ResNet18Small32);
        Assert.Equal(136, cfg.LatentChannels);
        using var model = new SvgAutoencoder(cfg);
        model.eval();
        var data = new ImageFolder(AutoencoderTrainingTests.FashionMnist);
        using var _ = torch.no_grad();
        var images = data.CenterBatch(Enumerable.Range(0, 6), 32);
        // Stored alignment needs statistics: one calibration pass over the batch.
        model.CalibrateAlignment(new[] { SvgAutoencoder.ToEncoderInput(images) });
        var z = model.Encode(SvgAutoencoder.ToEncoderInput(images));
        Assert.Equal(new long[] { 6, 136, 4, 4 }, z.shape);
        var x = model.Decode(z);
        Assert.Equal(new long[] { 6, 3, 32, 32 }, x.shape);
        Assert.True(torch.isfinite(x).all().item<bool>());

        string dir = Reference.TempDir();
        string full = Path.Combine(dir, "full.safetensors"), compact = Path.Combine(dir, "compact.safetensors");
        SvgAutoencoderCheckpoint.Save(model, full);
        SvgAutoencoderCheckpoint.Save(model, compact, includeFrozenEncoder: false, dtype: ScalarType.Float16);
        var compactKeys = SvgDiffusion.Checkpoints.SafeTensors.ReadHeader(compact).Tensors;
        Assert.DoesNotContain(compactKeys, t => t.Name.StartsWith("encoder."));
        Assert.All(compactKeys.Where(t => t.Name.StartsWith("decoder.")), t => Assert.Equal(ScalarType.Float16, t.Dtype));
        Assert.True(new FileInfo(compact).Length < new FileInfo(full).Length / 2);
        using var again = SvgAutoencoderCheckpoint.Load(compact);
        var z2 = again.Encode(SvgAutoencoder.ToEncoderInput(images));
        // The frozen ResNet-18 comes back bit-exact from ONNX; the fp16 residual and decoder weights differ slightly.
        Reference.Close(z.narrow(1, 0, 128), z2.narrow(1, 0, 128), 0, "ResNet channels");
        Reference.Close(z, z2, 5e-2, "latent with fp16 residual weights");
        Reference.Close(x, again.Decode(z), 5e-2, "decoded with fp16 weights");
    }
}
