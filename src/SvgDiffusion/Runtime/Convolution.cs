using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>How the project's convolutions run on this machine; <see cref="KernelGuard"/> picks one.</summary>
public enum ConvPath
{
    /// <summary>libtorch's conv2d as it is (oneDNN on x86). Only ever used for comparison.</summary>
    Native,
    /// <summary>
    /// oneDNN, with the input channels zero-padded (and the weight's in-channels with them) and the
    /// output channels padded then sliced off, wherever a count is one oneDNN gets wrong (see
    /// <see cref="Convolution.PaddedInChannels"/>). Exact, forward and backward.
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
    /// Input channel count the <see cref="ConvPath.PaddedChannels"/> path feeds to the kernel. Measured on
    /// Zen 5 (oneDNN 3.7.1, fp32 and bf16): counts that are odd multiples of 16 (48, 80, 144, 400) give a
    /// wrong input gradient at stride 2, and bf16 is wrong below 16 channels; counts of 16 and multiples
    /// of 32 were right in every shape tried. So small counts go to 16 and the rest to a multiple of 32.
    /// </summary>
    public static long PaddedInChannels(long inChannels)
        => inChannels <= 16 ? 16 : (inChannels + 31) / 32 * 32;

    /// <summary>
    /// Output channel count the padded path computes before slicing: the same machine gives a wrong bf16
    /// forward and a wrong fp32 input gradient (stride 1) whenever the output channels are not a multiple
    /// of 16 (the decoder's 3-channel conv_out, 136-channel heads).
    /// </summary>
    public static long PaddedOutChannels(long outChannels) => (outChannels + 15) / 16 * 16;

    /// <summary><c>torch.nn.functional.conv2d</c>, on the path <see cref="KernelGuard"/> chose for this machine.</summary>
    public static Tensor Conv2d(Tensor input, Tensor weight, Tensor? bias = null,
        (long, long)? stride = null, (long, long)? padding = null, (long, long)? dilation = null, long groups = 1)
        => Conv2d(input, weight, bias, stride, padding, dilation, groups, KernelGuard.ConvPath);

    /// <summary>The same on an explicit path (the kernel check compares paths with this).</summary>
    public static Tensor Conv2d(Tensor input, Tensor weight, Tensor? bias,
        (long, long)? stride, (long, long)? padding, (long, long)? dilation, long groups, ConvPath path)
    {
        if (Autocast.Current is ScalarType cast && input.dtype == ScalarType.Float32 && input.device_type == DeviceType.CPU)
        {
            using var castScope = NewDisposeScope();
            var low = Conv2d(input.to(cast), weight.to(cast), bias?.to(cast), stride, padding, dilation, groups, path);
            return low.to(ScalarType.Float32).MoveToOuterDisposeScope();
        }
        var s = stride ?? (1, 1);
        var p = padding ?? (0, 0);
        var d = dilation ?? (1, 1);
        long[] strides = { s.Item1, s.Item2 }, paddings = { p.Item1, p.Item2 }, dilations = { d.Item1, d.Item2 };
        long inChannels = weight.shape[1], outChannels = weight.shape[0];
        bool pad = path == ConvPath.PaddedChannels && groups == 1 && input.device_type == DeviceType.CPU
                   && input.dtype is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16;
        long paddedIn = pad ? PaddedInChannels(inChannels) : inChannels;
        long paddedOut = pad ? PaddedOutChannels(outChannels) : outChannels;
        if (paddedIn == inChannels && paddedOut == outChannels)
            return nn.functional.conv2d(input, weight, bias, strides, paddings, dilations, groups);

        using var scope = NewDisposeScope();
        // pad() counts from the last dimension: (W left, W right, H top, H bottom, C front, C back),
        // which is the channel axis for [B, C, H, W], [C, H, W] and the weight's [O, C, kh, kw] alike;
        // two more entries reach the weight's output axis. The extra channels multiply zeros, and the
        // pads' and the slice's backward drop their gradients: exact, forward and backward.
        var x = paddedIn == inChannels ? input : nn.functional.pad(input, new long[] { 0, 0, 0, 0, 0, paddedIn - inChannels });
        var w = paddedIn == inChannels && paddedOut == outChannels ? weight
            : nn.functional.pad(weight, new long[] { 0, 0, 0, 0, 0, paddedIn - inChannels, 0, paddedOut - outChannels });
        var b = bias is null || paddedOut == outChannels ? bias : nn.functional.pad(bias, new long[] { 0, paddedOut - outChannels });
        var y = nn.functional.conv2d(x, w, b, strides, paddings, dilations, groups);
        if (paddedOut != outChannels)
            y = y.narrow(input.dim() == 4 ? 1 : 0, 0, outChannels);
        return y.MoveToOuterDisposeScope();
    }
}
