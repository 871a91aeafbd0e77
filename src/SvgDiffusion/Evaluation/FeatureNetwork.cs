using SvgDiffusion.Data;
using SvgDiffusion.Models.Encoders;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// The network whose features a Fréchet distance compares. Only pytorch-fid's Inception gives "FID";
/// any other network's distance is labelled FD-&lt;network&gt; so it is never mistaken for a comparable FID.
/// </summary>
public interface IFeatureNetwork : IDisposable
{
    /// <summary>"FID" or "FD-&lt;network&gt;".</summary>
    string Label { get; }
    int Dim { get; }
    /// <summary>[B, 3, H, W] images in [0, 1] -> [B, Dim] features.</summary>
    Tensor Features(Tensor images01);
    /// <summary>Class logits from features, for the Inception Score; null where the network has none.</summary>
    Tensor? Logits(Tensor features);
}

public sealed class InceptionFeatureNetwork(FidInceptionV3 net) : IFeatureNetwork
{
    public string Label => "FID";
    public int Dim => FidInceptionV3.FeatureDim;
    public Tensor Features(Tensor images01)
    {
        using var _ = torch.inference_mode();
        return net.Features(images01);
    }
    public Tensor? Logits(Tensor features) => net.Logits(features, includeBias: false);
    public void Dispose() => net.Dispose();
}

/// <summary>A frozen encoder as feature network: its global token where it has one (as FD-DINOv2 uses the class token), else the mean patch feature.</summary>
public sealed class EncoderFeatureNetwork : IFeatureNetwork
{
    readonly IFrozenEncoder _encoder;
    readonly int _size;

    /// <param name="size">Images are resized (bilinear, antialias) to size x size, a multiple of the encoder's stride.</param>
    public EncoderFeatureNetwork(IFrozenEncoder encoder, int size = 224)
    {
        if (size % encoder.Stride != 0) throw new SvgdException($"feature size {size} must be a multiple of the {encoder.Kind} stride {encoder.Stride}");
        _encoder = encoder;
        _size = size;
    }

    public string Label => $"FD-{_encoder.Kind}";
    public int Dim => _encoder.FeatureDim;

    public Tensor Features(Tensor images01)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var x = images01.to(ScalarType.Float32);
        if (x.shape[2] != _size || x.shape[3] != _size)
            x = nn.functional.interpolate(x, new long[] { _size, _size }, mode: InterpolationMode.Bilinear, align_corners: false, antialias: true);
        using var f = _encoder.Encode(Preprocessing.Normalize(x));
        var features = f.Global ?? f.Patch.mean(new long[] { 1 });
        return features.clone().MoveToOuterDisposeScope();
    }

    public Tensor? Logits(Tensor features) => null;
    public void Dispose() { if (_encoder is IDisposable d) d.Dispose(); }
}
