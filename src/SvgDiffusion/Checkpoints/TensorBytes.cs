using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Checkpoints;

static class TensorBytes
{
    /// <summary>The most bytes one span covers: a span's length is an int, and a tensor may hold more.</summary>
    const int Chunk = 64 << 20;

    /// <summary>A new CPU tensor whose memory is a copy of little-endian <paramref name="data"/>.</summary>
    public static Tensor FromBytes(ReadOnlySpan<byte> data, ScalarType dtype, long[] shape)
    {
        var t = empty(shape, dtype: dtype);
        if (data.Length > 0) data.CopyTo(t.bytes);
        return t;
    }

    /// <summary>The bytes a tensor's elements occupy.</summary>
    public static long Length(Tensor t) => t.numel() * TorchPickle.ElementSize(t.dtype);

    /// <summary>Writes a contiguous CPU tensor's memory to <paramref name="stream"/> a chunk at a time,
    /// so a tensor of any size (over 2 GB too) is written without a copy.</summary>
    public static unsafe void WriteTo(Stream stream, Tensor t)
    {
        Check(t);
        long n = Length(t);
        if (n == 0) return;
        byte* p = (byte*)Runtime.LibTorchNative.DataPointer(t);
        for (long at = 0; at < n; at += Chunk)
            stream.Write(new ReadOnlySpan<byte>(p + at, (int)Math.Min(Chunk, n - at)));
    }

    /// <summary>Fills a contiguous CPU tensor's memory from <paramref name="stream"/> a chunk at a time;
    /// false when the stream ends first.</summary>
    public static unsafe bool ReadInto(Stream stream, Tensor t)
    {
        Check(t);
        long n = Length(t);
        if (n == 0) return true;
        byte* p = (byte*)Runtime.LibTorchNative.DataPointer(t);
        try
        {
            for (long at = 0; at < n; at += Chunk)
                stream.ReadExactly(new Span<byte>(p + at, (int)Math.Min(Chunk, n - at)));
        }
        catch (EndOfStreamException) { return false; }
        return true;
    }

    static void Check(Tensor t)
    {
        if (t.device_type != DeviceType.CPU || !t.is_contiguous())
            throw new ArgumentException("raw bytes are read and written only for contiguous CPU tensors", nameof(t));
    }
}
