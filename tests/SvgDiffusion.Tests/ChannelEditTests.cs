using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Evaluator;
using SvgDiffusion.Sampling;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>The pieces of SVG's channel-space edits: inpainting in channel space, the luminance-fed frozen encoder, model folders by name.</summary>
public class ChannelEditTests
{
    [Fact]
    public void ChannelInpaintingHoldsTheKnownChannelsOnTheirFlowPathAndLeavesTheOthers()
    {
        using var g = new Generator(3);
        var known = torch.randn(new long[] { 2, 5, 6 }, generator: g);
        var noise = torch.randn(new long[] { 2, 5, 6 }, generator: g);
        var x = torch.randn(new long[] { 2, 5, 6 }, generator: g);
        using var inpaint = new ChannelInpainting(known, noise, ChannelInpainting.Leading(4, 6));
        foreach (double t in new[] { 0.0, 0.37, 1.0 })
        {
            var y = inpaint.Apply(x, t);
            Reference.Close((1 - t) * noise.narrow(2, 0, 4) + t * known.narrow(2, 0, 4), y.narrow(2, 0, 4), 1e-6, $"known channels at t={t}");
            Reference.Close(x.narrow(2, 4, 2), y.narrow(2, 4, 2), 0, "free channels untouched");
        }
        // At t = 1 the known channels are the known latent exactly; a slice of the batch takes its own rows.
        Reference.Close(known.narrow(2, 0, 4), inpaint.Apply(x, 1.0).narrow(2, 0, 4), 0, "t = 1");
        var second = inpaint.Apply(x.narrow(0, 1, 1), 1.0, first: 1);
        Reference.Close(known.narrow(0, 1, 1).narrow(2, 0, 4), second.narrow(2, 0, 4), 0, "a slice");
        Assert.Throws<SvgdException>(() => new ChannelInpainting(known, noise, ChannelInpainting.Leading(4, 5)));
    }

    [Fact]
    public void ASamplerWithAConstraintEndsOnTheKnownChannelsExactly()
    {
        using var g = new Generator(5);
        var known = torch.randn(new long[] { 3, 4, 6 }, generator: g);
        var noise = torch.randn(new long[] { 3, 4, 6 }, generator: g);
        using var inpaint = new ChannelInpainting(known, noise, ChannelInpainting.Leading(2, 6));
        // A field that pulls every channel towards zero: without the constraint the known channels would end elsewhere.
        VelocityField field = (x, t, y) => -x;
        foreach (var sampler in new Sampler[] { new EulerSampler(7), new HeunSampler(3) })
        {
            var outp = sampler.Sample(field, noise, torch.zeros(3, dtype: ScalarType.Int64), constraint: (x, t) => inpaint.Apply(x, t));
            Reference.Close(known.narrow(2, 0, 2), outp.narrow(2, 0, 2), 0, sampler.ToString());
            var free = sampler.Sample(field, noise, torch.zeros(3, dtype: ScalarType.Int64));
            Reference.Close(free.narrow(2, 2, 4), outp.narrow(2, 2, 4), 1e-6, "this field does not couple channels, so the free ones are as without the constraint");
        }
    }

    [Fact]
    public void LuminanceIsTheGreyImageOfTheSameLumaInEveryChannel()
    {
        using var g = new Generator(1);
        var unit = torch.rand(new long[] { 2, 3, 4, 4 }, generator: g);
        var grey = Preprocessing.Luminance(Preprocessing.Normalize(unit));
        var mean = torch.tensor(Preprocessing.ImageNetMean).view(1, 3, 1, 1);
        var std = torch.tensor(Preprocessing.ImageNetStd).view(1, 3, 1, 1);
        var back = grey * std + mean;
        var y = 0.299 * unit.narrow(1, 0, 1) + 0.587 * unit.narrow(1, 1, 1) + 0.114 * unit.narrow(1, 2, 1);
        for (int c = 0; c < 3; c++) Reference.Close(y, back.narrow(1, c, 1), 1e-5, $"channel {c}");
    }

    [Fact]
    public void ALuminanceFedFrozenEncoderSeesNoColourButTheResidualChannelsDo()
    {
        var cfg = SvgAutoencoderPresets.Get(SvgAutoencoderPresets.ResNet18Small32) with { FrozenInput = "luminance" };
        using var model = new SvgAutoencoder(cfg);
        model.eval();
        using var _ = torch.no_grad();
        using var g = new Generator(2);
        var rgb = torch.rand(new long[] { 2, 3, 32, 32 }, generator: g) * 2 - 1;
        // The same luminance, other colours: swap the channels' roles while keeping 0.299 R + 0.587 G + 0.114 B.
        var unit = (rgb + 1) / 2;
        var y = 0.299 * unit.narrow(1, 0, 1) + 0.587 * unit.narrow(1, 1, 1) + 0.114 * unit.narrow(1, 2, 1);
        var greyImages = (y.expand(-1, 3, -1, -1) * 2 - 1).contiguous();
        model.CalibrateAlignment(new[] { SvgAutoencoder.ToEncoderInput(rgb) });
        var a = model.Encode(SvgAutoencoder.ToEncoderInput(rgb));
        var b = model.Encode(SvgAutoencoder.ToEncoderInput(greyImages));
        Reference.Close(a.narrow(1, 0, 128), b.narrow(1, 0, 128), 1e-4, "semantic channels of an image and of its grey image");
        Assert.True((a.narrow(1, 128, 8) - b.narrow(1, 128, 8)).abs().max().item<float>() > 1e-3, "the residual channels see the colour");
        var rgbCfg = SvgAutoencoderPresets.Get(SvgAutoencoderPresets.ResNet18Small32);
        using var plain = new SvgAutoencoder(rgbCfg);
        plain.eval();
        var pa = plain.SemanticEncoder.Encode(SvgAutoencoder.ToEncoderInput(rgb));
        var pb = plain.SemanticEncoder.Encode(SvgAutoencoder.ToEncoderInput(greyImages));
        Assert.True((pa.Patch - pb.Patch).abs().max().item<float>() > 1e-2, "an RGB-fed frozen encoder sees the colour");
        Assert.Equal("luminance", SvgAutoencoderPresets.Get(SvgAutoencoderPresets.ResNet18Small64Luminance).FrozenInput);
        Assert.Throws<SvgdException>(() => (cfg with { FrozenInput = "hsv" }).Validate("test"));
    }

    [Fact]
    public void AColourEvaluatorSeesColourAndAGreyOneDoesNot()
    {
        torch.manual_seed(0);
        using var colour = new EvaluatorNet(new EvaluatorConfig { ImageSize = 16, InputChannels = 3, NumClasses = 3 });
        using var grey = new EvaluatorNet(new EvaluatorConfig { ImageSize = 16, NumClasses = 3 });
        colour.eval(); grey.eval();
        using var _ = torch.no_grad();
        var red = torch.zeros(1, 3, 16, 16); red.narrow(1, 0, 1).fill_(1);
        var blue = torch.zeros(1, 3, 16, 16); blue.narrow(1, 2, 1).fill_(1);
        Reference.Close(grey.Features(red), grey.Features(blue), 0, "grey evaluator: same mean of RGB");
        Assert.True((colour.Features(red) - colour.Features(blue)).abs().max().item<float>() > 1e-4);
        Assert.Throws<SvgdException>(() => colour.Features(torch.zeros(1, 1, 16, 16)));
        Assert.Throws<SvgdException>(() => new EvaluatorConfig { InputChannels = 2 }.Validate("test"));
    }

    [Fact]
    public void ModelFoldersResolveByNameOrPathAndRefuseWhatIsNotOne()
    {
        Assert.Contains(BundledModel.Name, ModelFolder.BundledNames);
        var bundled = ModelFolder.Resolve(BundledModel.Name)!;
        Assert.Equal(Path.GetFullPath(BundledModel.DiTPath), Path.GetFullPath(bundled.DiTPath));
        var byPath = ModelFolder.Resolve(bundled.Directory)!;
        Assert.Equal(BundledModel.Name, byPath.Name);
        Assert.Null(ModelFolder.Resolve(BundledModel.DiTPath));                 // a plain file: loaded as it is
        string dir = Reference.TempDir();
        var e = Assert.Throws<SvgdException>(() => ModelFolder.Resolve(dir));
        Assert.Contains("dit.safetensors", e.Message);
        e = Assert.Throws<SvgdException>(() => ModelFolder.Resolve("no-such-model"));
        Assert.Contains("bundled", e.Message);
        File.Copy(BundledModel.DiTPath, Path.Combine(dir, ModelFolder.DiTFile));
        e = Assert.Throws<SvgdException>(() => ModelFolder.Resolve(dir));
        Assert.Contains(ModelFolder.AutoencoderFile, e.Message);
        Assert.Null(ModelFolder.ReadBackground(BundledModel.DiTPath));          // Fashion-MNIST has no alpha to composite
    }

    [Fact]
    public void ToRgbCompositesOntoTheBackgroundOrDropsAlpha()
    {
        var rgba = torch.tensor(new byte[] { 200, 0, 10, 0, 100, 0, 255, 128 }, dtype: ScalarType.Byte).view(4, 1, 2);
        var white = ImageFiles.ToRgb(rgba, (255, 255, 255));
        Assert.Equal(new byte[] { 200, 127, 10, 127, 100, 127 }, white.flatten().data<byte>().ToArray());
        var dropped = ImageFiles.ToRgb(rgba, null);
        Assert.Equal(new byte[] { 200, 0, 10, 0, 100, 0 }, dropped.flatten().data<byte>().ToArray());
    }
}

public class ColourProbeTests
{
    [Fact]
    public void RidgeR2IsNearOneForALinearTargetAndNearZeroForNoise()
    {
        using var g = new Generator(4);
        var x = torch.randn(new long[] { 400, 10 }, generator: g);
        var w = torch.randn(new long[] { 10, 2 }, generator: g);
        var y = x.matmul(w) + 0.01 * torch.randn(new long[] { 400, 2 }, generator: g);
        double fit = SvgDiffusion.Evaluation.Probes.ColourProbe.RidgeR2(x.narrow(0, 0, 300), y.narrow(0, 0, 300), x.narrow(0, 300, 100), y.narrow(0, 300, 100));
        Assert.InRange(fit, 0.99, 1.0);
        var noise = torch.randn(new long[] { 400, 2 }, generator: g);
        double none = SvgDiffusion.Evaluation.Probes.ColourProbe.RidgeR2(x.narrow(0, 0, 300), noise.narrow(0, 0, 300), x.narrow(0, 300, 100), noise.narrow(0, 300, 100));
        Assert.InRange(none, -0.3, 0.1);
        // Half the variance explained, small values (a sum that went through an 8-bit type would read 0 here).
        var half = 0.01 * (x.matmul(w) / Math.Sqrt(10) + torch.randn(new long[] { 400, 2 }, generator: g) * w.pow(2).sum(new long[] { 0 }).sqrt() / Math.Sqrt(10));
        double mid = SvgDiffusion.Evaluation.Probes.ColourProbe.RidgeR2(x.narrow(0, 0, 300), half.narrow(0, 0, 300), x.narrow(0, 300, 100), half.narrow(0, 300, 100));
        Assert.InRange(mid, 0.3, 0.7);
    }

    [Fact]
    public void MeanHueIsTheSaturationWeightedHueOfTheForeground()
    {
        // Left half pure red (hue 0), right half white background: the foreground is the red half.
        var img = torch.ones(1, 3, 4, 4);
        img[.., 1.., .., ..2] = torch.zeros(1, 2, 4, 2);
        var fg = SvgDiffusion.Evaluation.Probes.ColourProbe.Foreground(img, (1, 1, 1));
        Assert.Equal(8f, fg.sum().item<float>());
        var h = SvgDiffusion.Evaluation.Probes.ColourProbe.MeanHue(img, fg);
        Reference.Close(torch.tensor(new float[] { 1, 0 }).view(1, 2), h, 1e-6, "red");
        // Pure blue: hue 240 degrees.
        var blue = torch.zeros(1, 3, 2, 2); blue[.., 2, .., ..] = torch.ones(1, 2, 2);
        var hb = SvgDiffusion.Evaluation.Probes.ColourProbe.MeanHue(blue, torch.ones(1, 1, 2, 2));
        Reference.Close(torch.tensor(new float[] { (float)Math.Cos(4 * Math.PI / 3), (float)Math.Sin(4 * Math.PI / 3) }).view(1, 2), hb, 1e-5, "blue");
    }
}
