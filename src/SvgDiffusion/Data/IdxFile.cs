using System.IO.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Data;

/// <summary>The IDX format of MNIST and Fashion-MNIST (optionally gzipped): unsigned-byte arrays with a big-endian header.</summary>
public static class IdxFile
{
    /// <summary>Images [N, H, W] or labels [N] as uint8.</summary>
    public static Tensor Read(string path)
    {
        if (!File.Exists(path)) throw new SvgdException($"{path}: no such file");
        byte[] data;
        try
        {
            using var fs = File.OpenRead(path);
            Stream s = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(fs, CompressionMode.Decompress) : fs;
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            data = ms.ToArray();
        }
        catch (InvalidDataException e) { throw new SvgdException($"{path}: corrupt gzip data ({e.Message})"); }
        if (data.Length < 4 || data[0] != 0 || data[1] != 0) throw new SvgdException($"{path}: not an IDX file (bad magic)");
        if (data[2] != 0x08) throw new SvgdException($"{path}: only unsigned-byte IDX files are supported (type 0x{data[2]:x2})");
        int dims = data[3];
        if (data.Length < 4 + 4 * dims) throw new SvgdException($"{path}: truncated IDX header");
        var shape = new long[dims];
        for (int i = 0; i < dims; i++)
            shape[i] = (data[4 + 4 * i] << 24) | (data[5 + 4 * i] << 16) | (data[6 + 4 * i] << 8) | data[7 + 4 * i];
        long count = shape.Aggregate(1L, (a, b) => a * b);
        int offset = 4 + 4 * dims;
        if (data.LongLength - offset != count) throw new SvgdException($"{path}: holds {data.LongLength - offset} values, header says {count} (truncated?)");
        var t = torch.empty(shape, dtype: ScalarType.Byte);
        data.AsSpan(offset).CopyTo(t.bytes);
        return t;
    }
}
