using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Data;

/// <summary>
/// The encoders' input pipeline: RGB uint8 -> resize (bilinear with antialias, like PIL/torchvision)
/// -> [0, 1] -> ImageNet mean/std.
/// </summary>
public sealed record Preprocessing(int Height = 256, int Width = 256)
{
    public static readonly float[] ImageNetMean = { 0.485f, 0.456f, 0.406f };
    public static readonly float[] ImageNetStd = { 0.229f, 0.224f, 0.225f };

    public Preprocessing Validate(int multiple)
    {
        if (Height <= 0 || Width <= 0 || Height % multiple != 0 || Width % multiple != 0)
            throw new SvgdException($"image size {Height}x{Width} must be positive multiples of {multiple}");
        return this;
    }

    /// <summary>[3, h, w] uint8 -> [3, Height, Width] float in [0, 1].</summary>
    public Tensor ResizeUnit(Tensor rgb)
    {
        using var scope = torch.NewDisposeScope();
        var x = rgb.to(ScalarType.Float32).div_(255.0).unsqueeze(0);
        if (x.shape[2] != Height || x.shape[3] != Width)
            x = nn.functional.interpolate(x, new long[] { Height, Width }, mode: InterpolationMode.Bilinear, align_corners: false, antialias: true).clamp_(0.0, 1.0);
        return x.squeeze(0).MoveToOuterDisposeScope();
    }

    public static Tensor Normalize(Tensor unit)
    {
        using var scope = torch.NewDisposeScope();
        var shape = unit.dim() == 4 ? new long[] { 1, 3, 1, 1 } : new long[] { 3, 1, 1 };
        var mean = torch.tensor(ImageNetMean).view(shape).to(unit.device);
        var std = torch.tensor(ImageNetStd).view(shape).to(unit.device);
        return ((unit - mean) / std).MoveToOuterDisposeScope();
    }

    /// <summary>Rec. 601 luma weights (R, G, B) of <see cref="Luminance"/>.</summary>
    public static readonly float[] LumaWeights = { 0.299f, 0.587f, 0.114f };

    /// <summary>
    /// ImageNet-normalised [B, 3, H, W] -> the ImageNet-normalised grey image of the same luminance (Y = 0.299 R +
    /// 0.587 G + 0.114 B, in every channel): what a frozen encoder sees with <c>frozen_input: luminance</c>.
    /// </summary>
    public static Tensor Luminance(Tensor normalized)
    {
        using var scope = torch.NewDisposeScope();
        var shape = new long[] { 1, 3, 1, 1 };
        var mean = torch.tensor(ImageNetMean, dtype: normalized.dtype, device: normalized.device).view(shape);
        var std = torch.tensor(ImageNetStd, dtype: normalized.dtype, device: normalized.device).view(shape);
        var w = torch.tensor(LumaWeights, dtype: normalized.dtype, device: normalized.device).view(shape);
        var unit = normalized * std + mean;
        var y = (unit * w).sum(1, keepdim: true);
        return ((y.expand_as(unit) - mean) / std).MoveToOuterDisposeScope();
    }

    /// <summary>Loads, resizes and normalises a batch of files: [B, 3, Height, Width].</summary>
    public Tensor LoadBatch(IEnumerable<string> paths)
    {
        using var scope = torch.NewDisposeScope();
        var items = paths.Select(p => ResizeUnit(ImageFiles.LoadRgb(p))).ToList();
        return Normalize(torch.stack(items)).MoveToOuterDisposeScope();
    }
}
