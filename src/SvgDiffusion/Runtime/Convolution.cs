using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>How the project's convolutions run on this machine; <see cref="KernelGuard"/> picks one.</summary>
public enum ConvPath
{
    /// <summary>libtorch's conv2d as it is (oneDNN on x86). Only ever used for comparison.</summary>
    Native,
    /// <summary>
    /// oneDNN, with the input channels zero-padded (and the weight's in-channels with them) to a
    /// multiple of the vector width wherever the count is off it. Exact, forward and backward: the
    /// extra channels multiply zeros, and their gradients are sliced away by the pad's backward.
    /// </summary>
    PaddedChannels,
    /// <summary>libtorch with oneDNN disabled everywhere: im2col + GEMM convolutions, 2-3x slower.</summary>
    OneDnnOff,
}

/// <summary>
/// The one convolution of the project: every conv layer and functional conv goes through
/// <see cref="Conv2d"/>. On Zen 5, oneDNN's conv2d is wrong when the input channels are not a multiple
/// of 16 (fp32 and bf16; the released decoder's first conv has 392); routing every conv through one
/// place is what lets the kernel check's verdict apply everywhere.
/// </summary>
public static class Convolution
{
    // NNPACK is libtorch's third CPU conv backend (inference, batch >= 16, oneDNN off): a path the kernel
    // check never chose, and on CPUs NNPACK does not support libtorch logs "Could not initialize NNPACK!"
    // on stderr at every such conv (the DINOv3 flood). Off, the oneDNN-off path is im2col + GEMM throughout.
    static Convolution()
    {
        try { LibTorchNative.NnpackEnabled = false; }
        catch (InvalidOperationException) { }   // a libtorch without the switch: convs still work, only noisier
    }

    /// <summary>
    /// Input channel count the <see cref="ConvPath.PaddedChannels"/> path feeds to the kernel. Counts of 16
    /// and below take oneDNN's small-channel kernels (first layers: 1, 3, 8) and are left alone; the check
    /// covers them as they are. bf16 kernels pair channels for the dot-product instructions, so their
    /// multiple is 32.
    /// </summary>
    public static long PaddedInChannels(long inChannels, ScalarType dtype)
    {
        long multiple = dtype == ScalarType.Float32 ? 16 : 32;
        if (inChannels <= 16 || inChannels % multiple == 0) return inChannels;
        return (inChannels + multiple - 1) / multiple * multiple;
    }

    /// <summary><c>torch.nn.functional.conv2d</c>, on the path <see cref="KernelGuard"/> chose for this machine.</summary>
    public static Tensor Conv2d(Tensor input, Tensor weight, Tensor? bias = null,
        (long, long)? stride = null, (long, long)? padding = null, (long, long)? dilation = null, long groups = 1)
        => Conv2d(input, weight, bias, stride, padding, dilation, groups, KernelGuard.ConvPath);

    /// <summary>The same on an explicit path (the kernel check compares paths with this).</summary>
    public static Tensor Conv2d(Tensor input, Tensor weight, Tensor? bias,
        (long, long)? stride, (long, long)? padding, (long, long)? dilation, long groups, ConvPath path)
    {
        var s = stride ?? (1, 1);
        var p = padding ?? (0, 0);
        var d = dilation ?? (1, 1);
        long[] strides = { s.Item1, s.Item2 }, paddings = { p.Item1, p.Item2 }, dilations = { d.Item1, d.Item2 };
        long inChannels = weight.shape[1];
        long padded = path == ConvPath.PaddedChannels && groups == 1 && input.device_type == DeviceType.CPU
                      && input.dtype is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16
            ? PaddedInChannels(inChannels, input.dtype)
            : inChannels;
        if (padded == inChannels)
            return nn.functional.conv2d(input, weight, bias, strides, paddings, dilations, groups);

        // pad() counts from the last dimension: (W left, W right, H top, H bottom, C front, C back),
        // which is the channel axis for [B, C, H, W], [C, H, W] and the weight's [O, C, kh, kw] alike.
        long[] channelPad = { 0, 0, 0, 0, 0, padded - inChannels };
        using var x = nn.functional.pad(input, channelPad);
        using var w = nn.functional.pad(weight, channelPad);
        return nn.functional.conv2d(x, w, bias, strides, paddings, dilations, groups);
    }
}
