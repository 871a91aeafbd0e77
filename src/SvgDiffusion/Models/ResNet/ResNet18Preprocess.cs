using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.ResNet;

/// <summary>
/// ResNetPreprocess.onnx as tensor ops: RGB 0-255 -> BGR -> minus the 224x224 mean image (buffer
/// <c>mean_image</c>, [1, 3, 224, 224], BGR as stored in the file). At 224x224 this is the ONNX graph exactly.
/// Other sizes, which the fixed-size ONNX graph refuses, follow <see cref="ResNet18Config.Mean"/>:
/// <c>image</c> resizes the mean image to the input size (bilinear, half-pixel centres, antialiased when
/// shrinking: PIL's and torchvision's resize), <c>channel</c> subtracts its per-channel averages
/// (B 103.06, G 115.90, R 123.15) at every size, 224 included.
/// </summary>
public sealed class ResNet18Preprocess : nn.Module
{
    public const int MeanSize = 224;

    public string Mean { get; }

    public ResNet18Preprocess(string mean = "image") : base("ResNet18Preprocess")
    {
        if (mean is not ("image" or "channel")) throw new SvgdException($"ResNet-18 mean must be 'image' or 'channel', not '{mean}'");
        Mean = mean;
        register_buffer("mean_image", torch.zeros(1, 3, MeanSize, MeanSize));
    }

    public Tensor MeanImage => get_buffer("mean_image")!;

    /// <summary>The BGR mean subtracted at [<paramref name="h"/>, <paramref name="w"/>]: [1, 3, h, w] or [1, 3, 1, 1].</summary>
    public Tensor MeanAt(long h, long w)
    {
        var m = MeanImage;
        if (Mean == "channel") return m.mean(new long[] { 2, 3 }, keepdim: true);
        if (m.shape[2] == h && m.shape[3] == w) return m.alias();
        return nn.functional.interpolate(m, new long[] { h, w }, mode: InterpolationMode.Bilinear, align_corners: false, antialias: true);
    }

    /// <summary>[B, 3, H, W] RGB in 0-255 -> the ResNet18.onnx input: BGR minus the mean.</summary>
    public Tensor Forward(Tensor rgb255)
    {
        if (rgb255.dim() != 4 || rgb255.shape[1] != 3)
            throw new SvgdException($"ResNet-18 preprocessing input must be [B, 3, H, W], got {Checkpoints.Checkpoint.Shape(rgb255.shape)}");
        using var scope = torch.NewDisposeScope();
        var bgr = rgb255.flip(1);
        var mean = MeanAt(rgb255.shape[2], rgb255.shape[3]).to(rgb255.dtype, rgb255.device);
        return (bgr - mean).MoveToOuterDisposeScope();
    }
}
