using static TorchSharp.torch;

namespace SvgDiffusion.Checkpoints;

static class TensorBytes
{
    /// <summary>A new CPU tensor whose memory is a copy of little-endian <paramref name="data"/>.</summary>
    public static Tensor FromBytes(ReadOnlySpan<byte> data, ScalarType dtype, long[] shape)
    {
        var t = empty(shape, dtype: dtype);
        if (data.Length > 0) data.CopyTo(t.bytes);
        return t;
    }
}
