using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Encoders;

/// <summary>
/// Stands in for the frozen encoder of an autoencoder loaded only to decode (sampling): no weights, and
/// encoding refuses. Sampling never encodes, and building the real one is most of the load time (the
/// bundled model's ResNet-18 is parsed from a 64 MB ONNX file; a released DINOv3 holds 29M parameters).
/// </summary>
public sealed class DecodeOnlyEncoder : nn.Module, IFrozenEncoder
{
    public DecodeOnlyEncoder(string kind, int featureDim, int stride) : base("DecodeOnlyEncoder")
    {
        Kind = kind;
        FeatureDim = featureDim;
        Stride = stride;
    }

    public string Kind { get; }
    public int FeatureDim { get; }
    public int Stride { get; }

    public FrozenFeatures Encode(Tensor images) =>
        throw new SvgdException("this autoencoder was loaded to decode only; its frozen encoder is not loaded");
}
