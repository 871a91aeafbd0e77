using static TorchSharp.torch;

namespace SvgDiffusion.Models.Encoders;

/// <summary>What a frozen encoder gives SVG: a grid of patch features and, where the network has one, a global token.</summary>
public sealed record FrozenFeatures(
    Tensor Patch,     // [B, N, D] row-major over the grid
    Tensor? Global,   // [B, D] (DINOv3's class token), or null
    int GridH, int GridW) : IDisposable
{
    public void Dispose() { Patch.Dispose(); Global?.Dispose(); }
}

/// <summary>
/// A frozen semantic encoder behind the SVG latent: DINOv3 (the paper's) or another pretrained network.
/// Inputs are always ImageNet-normalised RGB [B, 3, H, W] (what both SVG encoders take); an encoder
/// trained on other preprocessing converts internally. Implementations are nn.Modules whose weights load
/// under the autoencoder's <c>encoder.</c> prefix.
/// </summary>
public interface IFrozenEncoder
{
    /// <summary>Short name used in configs and labels (<c>dinov3</c>, <c>resnet18</c>).</summary>
    string Kind { get; }
    /// <summary>Channels of a patch feature.</summary>
    int FeatureDim { get; }
    /// <summary>Pixels per grid cell: input sides must be multiples of it.</summary>
    int Stride { get; }
    FrozenFeatures Encode(Tensor images);
}
