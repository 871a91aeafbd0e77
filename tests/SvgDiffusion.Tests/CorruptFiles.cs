using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using SkiaSharp;
using Spectre.Console.Testing;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Cli;
using SvgDiffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Tests;

/// <summary>
/// Builders and byte-level editors for damaged checkpoints, arrays and images, shared by the fuzz test and
/// the regression tests. Every builder starts from a valid file so that one edit is the only fault.
/// </summary>
static class CorruptFiles
{
    public static (int Code, string Err) RunCli(params string[] args)
    {
        var console = new TestConsole();
        console.Profile.Width = 200;
        var err = new StringWriter();
        int code = SvgdCli.Run(args, console, err);
        return (code, err.ToString());
    }

    /// <summary>Null when the run ended as the CLI promises for a bad file: exit 0 (the edit left it valid), or
    /// exit 1 with exactly one stderr line, "error: ...", naming <paramref name="file"/>. Else what went wrong.</summary>
    public static string? Verdict(string file, int code, string err)
    {
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (code == 0) return null;
        if (code != 1) return $"exit {code}: {err.Trim()}";
        if (lines.Length != 1) return $"{lines.Length} stderr lines: {err.Trim()}";
        if (!lines[0].StartsWith("error: ", StringComparison.Ordinal)) return $"not an error line: {lines[0]}";
        if (!lines[0].Contains(file, StringComparison.Ordinal)) return $"file not named: {lines[0]}";
        return null;
    }

    // ---------------- pickles ----------------

    /// <summary>A pickle program written opcode by opcode (protocol 2, as torch.save writes).</summary>
    public sealed class Pickle
    {
        readonly MemoryStream _m = new();
        public Pickle Op(params byte[] b) { _m.Write(b); return this; }
        public Pickle Raw(string ascii) { _m.Write(Encoding.ASCII.GetBytes(ascii)); return this; }
        public Pickle Str(string s)
        {
            var u = Encoding.UTF8.GetBytes(s);
            Op((byte)'X'); _m.Write(BitConverter.GetBytes(u.Length)); _m.Write(u);
            return this;
        }
        public Pickle Int(long v)
        {
            if (v is >= int.MinValue and <= int.MaxValue) { Op((byte)'J'); _m.Write(BitConverter.GetBytes((int)v)); }
            else { Op(0x8a, 8); _m.Write(BitConverter.GetBytes(v)); }
            return this;
        }
        public Pickle Global(string module, string name) => Op((byte)'c').Raw(module + "\n" + name + "\n");
        public Pickle Tuple(params long[] items) { Op((byte)'('); foreach (var i in items) Int(i); return Op((byte)'t'); }
        public byte[] Bytes => _m.ToArray();
    }

    /// <summary>The parts of the one-tensor state dict {"w": float32 [2, 3]} that the structured cases replace.</summary>
    public sealed record TensorSpec
    {
        public Action<Pickle> StorageSize { get; init; } = p => p.Int(6);
        public Action<Pickle> Offset { get; init; } = p => p.Int(0);
        public Action<Pickle> Size { get; init; } = p => p.Tuple(2, 3);
        public Action<Pickle> Stride { get; init; } = p => p.Tuple(3, 1);
        public string StorageType { get; init; } = "FloatStorage";
        public string Key { get; init; } = "0";
        /// <summary>Opcodes after the dict is built, before STOP (e.g. memo tricks); the dict is on the stack.</summary>
        public Action<Pickle>? Tail { get; init; }
    }

    public static byte[] StateDictPickle(TensorSpec spec)
    {
        var p = new Pickle().Op(0x80, 2);
        p.Global("collections", "OrderedDict").Op((byte)')', (byte)'R', (byte)'(');
        p.Str("w").Global("torch._utils", "_rebuild_tensor_v2").Op((byte)'(');
        p.Op((byte)'(').Str("storage").Global("torch", spec.StorageType).Str(spec.Key).Str("cpu");
        spec.StorageSize(p);
        p.Op((byte)'t', (byte)'Q');
        spec.Offset(p);
        spec.Size(p);
        spec.Stride(p);
        p.Op(0x89).Global("collections", "OrderedDict").Op((byte)')', (byte)'R');
        p.Op((byte)'t', (byte)'R', (byte)'u');
        spec.Tail?.Invoke(p);
        return p.Op((byte)'.').Bytes;
    }

    static readonly byte[] SixFloats = MemoryMarshalBytes(new float[] { 1, 2, 3, 4, 5, 6 });
    static byte[] MemoryMarshalBytes(float[] f) { var b = new byte[f.Length * 4]; Buffer.BlockCopy(f, 0, b, 0, b.Length); return b; }

    /// <summary>A PyTorch zip checkpoint (stored entries) around <paramref name="pickle"/> and storage "0".</summary>
    public static byte[] TorchZip(byte[] pickle, byte[]? storage = null, string byteorder = "little") => Zip(
        ("archive/data.pkl", pickle), ("archive/byteorder", Encoding.ASCII.GetBytes(byteorder)),
        ("archive/data/0", storage ?? SixFloats), ("archive/version", Encoding.ASCII.GetBytes("3\n")));

    /// <summary>A legacy torch.save file: magic, protocol and system-info pickles, <paramref name="pickle"/>,
    /// the storage key list, then each storage as an int64 count and raw bytes.</summary>
    public static byte[] TorchLegacy(byte[] pickle, long? storedCount = null, byte[]? storage = null, string[]? keys = null)
    {
        var ms = new MemoryStream();
        ms.Write(new byte[] { 0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, (byte)'.' });
        ms.Write(new Pickle().Op(0x80, 2).Int(1001).Op((byte)'.').Bytes);
        ms.Write(new Pickle().Op(0x80, 2, (byte)'}', (byte)'(').Str("protocol_version").Int(1001).Str("little_endian").Op(0x88, (byte)'u', (byte)'.').Bytes);
        ms.Write(pickle);
        var list = new Pickle().Op(0x80, 2, (byte)']', (byte)'(');
        foreach (var k in keys ?? new[] { "0" }) list.Str(k);
        ms.Write(list.Op((byte)'e', (byte)'.').Bytes);
        storage ??= SixFloats;
        ms.Write(BitConverter.GetBytes(storedCount ?? storage.Length / 4));
        ms.Write(storage);
        return ms.ToArray();
    }

    // ---------------- zips ----------------

    public static byte[] Zip(params (string Name, byte[] Data)[] entries) => Zip(entries, CompressionLevel.NoCompression);

    public static byte[] Zip((string Name, byte[] Data)[] entries, CompressionLevel level)
    {
        var ms = new MemoryStream();
        using (var z = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (name, data) in entries)
            {
                using var s = z.CreateEntry(name, level).Open();
                s.Write(data);
            }
        return ms.ToArray();
    }

    public static (string Name, byte[] Data)[] Unzip(byte[] zip)
    {
        using var z = new ZipArchive(new MemoryStream(zip), ZipArchiveMode.Read);
        return z.Entries.Select(e =>
        {
            using var s = e.Open();
            var ms = new MemoryStream();
            s.CopyTo(ms);
            return (e.FullName, ms.ToArray());
        }).ToArray();
    }

    /// <summary>One entry of a zip's central directory, with where its fields lie in the file.</summary>
    public sealed record ZipEntryAt(string Name, int Central, int Local, int DataStart, int CompressedSize, ushort Method);

    /// <summary>The central directory of a small (non-zip64) archive.</summary>
    public static List<ZipEntryAt> ZipLayout(byte[] z)
    {
        int eocd = -1;
        for (int i = z.Length - 22; i >= 0; i--)
            if (z[i] == 'P' && z[i + 1] == 'K' && z[i + 2] == 5 && z[i + 3] == 6) { eocd = i; break; }
        if (eocd < 0) throw new InvalidOperationException("no end of central directory");
        int count = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(eocd + 10));
        int pos = (int)BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(eocd + 16));
        var list = new List<ZipEntryAt>();
        for (int i = 0; i < count; i++)
        {
            ushort method = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(pos + 10));
            int csize = (int)BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(pos + 20));
            int nlen = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(pos + 28));
            int xlen = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(pos + 30));
            int clen = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(pos + 32));
            int local = (int)BinaryPrimitives.ReadUInt32LittleEndian(z.AsSpan(pos + 42));
            string name = Encoding.UTF8.GetString(z, pos + 46, nlen);
            int lnlen = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(local + 26));
            int lxlen = BinaryPrimitives.ReadUInt16LittleEndian(z.AsSpan(local + 28));
            list.Add(new ZipEntryAt(name, pos, local, local + 30 + lnlen + lxlen, csize, method));
            pos += 46 + nlen + xlen + clen;
        }
        return list;
    }

    // ---------------- safetensors ----------------

    /// <summary>A safetensors file with header text <paramref name="json"/> (padded as the writer pads) and <paramref name="data"/>.</summary>
    public static byte[] SafeTensorsBytes(string json, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(json);
        int pad = (8 - h.Length % 8) % 8;
        var ms = new MemoryStream();
        ms.Write(BitConverter.GetBytes((long)(h.Length + pad)));
        ms.Write(h);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        ms.Write(data);
        return ms.ToArray();
    }

    public static (JsonObject Header, byte[] Data) SplitSafeTensors(byte[] file)
    {
        long n = BitConverter.ToInt64(file, 0);
        var header = JsonNode.Parse(file.AsSpan(8, (int)n))!.AsObject();
        return (header, file[(int)(8 + n)..]);
    }

    // ---------------- images ----------------

    /// <summary>Sets a PNG's IHDR size and recomputes the chunk CRC, so only the size is wrong.</summary>
    public static byte[] PngWithSize(byte[] png, uint width, uint height)
    {
        var b = (byte[])png.Clone();
        // Signature (8), IHDR length (4), "IHDR" (4), then width and height big-endian; CRC after 13 data bytes.
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(16), width);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(20), height);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(29), ZipEntries.Crc32(0, b.AsSpan(12, 17)));
        return b;
    }

    public static byte[] Jpeg(byte[] png)
    {
        using var bmp = SKBitmap.Decode(png);
        using var data = bmp.Encode(SKEncodedImageFormat.Jpeg, 90);
        return data.ToArray();
    }

    /// <summary>Position of the height field of a JPEG's frame header (SOF0/SOF2), width following.</summary>
    public static int JpegSizeField(byte[] jpg)
    {
        for (int i = 2; i + 9 < jpg.Length; i++)
            if (jpg[i] == 0xFF && jpg[i + 1] is 0xC0 or 0xC2) return i + 5;
        throw new InvalidOperationException("no SOF marker");
    }

    // ---------------- npz ----------------

    public static byte[] NpyBytes(Tensor t)
    {
        var ms = new MemoryStream();
        Npy.Write(ms, t);
        return ms.ToArray();
    }

    /// <summary>An .npy whose header dictionary text is <paramref name="dict"/> (padded to 64 bytes as numpy does).</summary>
    public static byte[] NpyWithHeader(string dict, byte[] data, byte major = 1)
    {
        int prefix = major == 1 ? 10 : 12;
        int total = (prefix + dict.Length + 1 + 63) / 64 * 64;
        string header = dict.PadRight(total - prefix - 1) + "\n";
        var ms = new MemoryStream();
        ms.Write(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', major, 0 });
        if (major == 1) ms.Write(BitConverter.GetBytes((ushort)header.Length));
        else ms.Write(BitConverter.GetBytes((uint)header.Length));
        ms.Write(Encoding.Latin1.GetBytes(header));
        ms.Write(data);
        return ms.ToArray();
    }
}
