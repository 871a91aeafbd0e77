using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>The header of one <c>.npy</c> array.</summary>
/// <param name="Descr">numpy dtype string, e.g. <c>&lt;f8</c>.</param>
/// <param name="HeaderLength">Bytes before the data (magic, version, length field, header text).</param>
public sealed record NpyHeader(int Major, int Minor, string Descr, bool FortranOrder, long[] Shape, long HeaderLength)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
    public ScalarType Dtype => Npy.ParseDescr(Descr, "npy").Dtype;
    public long ByteCount => Count * Npy.ParseDescr(Descr, "npy").ItemSize;
}

/// <summary>
/// numpy's <c>.npy</c> format (versions 1.0, 2.0 and 3.0), read and written without numpy: the magic
/// <c>\x93NUMPY</c>, a version, a little-endian header length (2 bytes in v1, 4 in v2/v3), a Python dict
/// literal <c>{'descr': ..., 'fortran_order': ..., 'shape': (...), }</c> padded to a multiple of 64 bytes
/// and ended by a newline, then the raw elements. Supported dtypes: f2 f4 f8, i1 i2 i4 i8, u1, b1 in
/// either byte order; Fortran-ordered arrays are transposed into C order.
/// </summary>
public static class Npy
{
    static readonly byte[] Magic = { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y' };
    const int Align = 64;

    /// <summary>Reads the header, leaving <paramref name="s"/> at the first data byte.</summary>
    /// <param name="source">Names the file (and array) in messages.</param>
    public static NpyHeader ReadHeader(Stream s, string source)
    {
        var pre = new byte[8];
        ReadAll(s, pre, source, "header");
        if (!pre.AsSpan(0, 6).SequenceEqual(Magic))
            throw new SvgdException($"{source}: not a .npy array (bad magic bytes)");
        int major = pre[6], minor = pre[7];
        long len;
        if (major == 1)
        {
            var b = new byte[2]; ReadAll(s, b, source, "header");
            len = BinaryPrimitives.ReadUInt16LittleEndian(b);
        }
        else if (major is 2 or 3)
        {
            var b = new byte[4]; ReadAll(s, b, source, "header");
            len = BinaryPrimitives.ReadUInt32LittleEndian(b);
        }
        else throw new SvgdException($"{source}: unsupported .npy format version {major}.{minor}");
        if (len > 1 << 24) throw new SvgdException($"{source}: implausible .npy header length {len}");
        var text = new byte[len];
        ReadAll(s, text, source, "header");
        string header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(text);
        var (descr, fortran, shape) = ParseHeader(header, source);
        var (_, itemSize, _) = ParseDescr(descr, source);
        if (shape.Any(x => x < 0)) throw new SvgdException($"{source}: negative dimension in .npy shape {Checkpoint.Shape(shape)}");
        if (shape.Length > 64) throw new SvgdException($"{source}: .npy shape has {shape.Length} dimensions (numpy allows at most 64)");
        try { _ = checked(shape.Aggregate(1L, (a, b) => a * b) * itemSize); }
        catch (OverflowException) { throw new SvgdException($"{source}: .npy shape {Checkpoint.Shape(shape)} is too large for any file"); }
        return new NpyHeader(major, minor, descr, fortran, shape, 8 + (major == 1 ? 2 : 4) + len);
    }

    /// <summary>Reads a whole array (header and data) as a CPU tensor of the matching dtype, in C order.</summary>
    public static Tensor Read(Stream s, string source)
    {
        var h = ReadHeader(s, source);
        return ReadData(s, h, source);
    }

    /// <summary>Reads the data that follows <paramref name="h"/>.</summary>
    public static Tensor ReadData(Stream s, NpyHeader h, string source)
    {
        var (dtype, size, bigEndian) = ParseDescr(h.Descr, source);
        long nbytes = h.Count * size;
        if (nbytes > Array.MaxLength)
            throw new SvgdException($"{source}: array of {nbytes} bytes is too large to read in one piece");
        var bytes = new byte[nbytes];
        ReadAll(s, bytes, source, "data");
        if (bigEndian && size > 1)
            for (long i = 0; i < nbytes; i += size) Array.Reverse(bytes, (int)i, size);
        if (!h.FortranOrder) return TensorBytes.FromBytes(bytes, dtype, h.Shape);
        // Fortran order: memory is C order of the reversed shape; reverse the axes back.
        var reversed = h.Shape.Reverse().ToArray();
        using var t = TensorBytes.FromBytes(bytes, dtype, reversed);
        using var p = t.permute(Enumerable.Range(0, reversed.Length).Reverse().Select(i => (long)i).ToArray());
        return p.contiguous();
    }

    /// <summary>Writes <paramref name="t"/> as a version 1.0 (2.0 if the header needs it) .npy, C order, little-endian.
    /// bfloat16 is written as float32 (numpy has no bfloat16).</summary>
    public static void Write(Stream s, Tensor t)
    {
        using var scope = torch.NewDisposeScope();
        var c = t.detach().cpu();
        if (c.dtype == ScalarType.BFloat16) c = c.to(ScalarType.Float32);
        c = c.contiguous();
        string descr = DescrOf(c.dtype);
        string shape = c.dim() switch
        {
            0 => "()",
            1 => $"({c.shape[0]},)",
            _ => "(" + string.Join(", ", c.shape) + ")",
        };
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
        int major = 1, prefix = 10;
        int padded = RoundUp(prefix + dict.Length + 1);
        if (padded - prefix > ushort.MaxValue) { major = 2; prefix = 12; padded = RoundUp(prefix + dict.Length + 1); }
        string header = dict.PadRight(padded - prefix - 1) + "\n";
        s.Write(Magic);
        s.WriteByte((byte)major);
        s.WriteByte(0);
        var len = new byte[major == 1 ? 2 : 4];
        if (major == 1) BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)header.Length);
        else BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)header.Length);
        s.Write(len);
        s.Write(Encoding.Latin1.GetBytes(header));
        if (c.numel() > 0) s.Write(c.bytes);
    }

    static int RoundUp(int n) => (n + Align - 1) / Align * Align;

    static string DescrOf(ScalarType t) => t switch
    {
        ScalarType.Float64 => "<f8",
        ScalarType.Float32 => "<f4",
        ScalarType.Float16 => "<f2",
        ScalarType.Int64 => "<i8",
        ScalarType.Int32 => "<i4",
        ScalarType.Int16 => "<i2",
        ScalarType.Int8 => "|i1",
        ScalarType.Byte => "|u1",
        ScalarType.Bool => "|b1",
        _ => throw new SvgdException($"cannot write dtype {t} to .npy"),
    };

    /// <summary>The tensor dtype, element size and byte order of a numpy dtype string.</summary>
    public static (ScalarType Dtype, int ItemSize, bool BigEndian) ParseDescr(string descr, string source)
    {
        if (descr.Length < 3) throw new SvgdException($"{source}: unsupported .npy dtype '{descr}'");
        char order = descr[0];
        if (order is not ('<' or '>' or '|' or '='))
            throw new SvgdException($"{source}: unsupported .npy dtype '{descr}'");
        bool big = order == '>' || (order == '=' && !BitConverter.IsLittleEndian);
        ScalarType? dtype = descr[1..] switch
        {
            "f8" => ScalarType.Float64,
            "f4" => ScalarType.Float32,
            "f2" => ScalarType.Float16,
            "i8" => ScalarType.Int64,
            "i4" => ScalarType.Int32,
            "i2" => ScalarType.Int16,
            "i1" => ScalarType.Int8,
            "u1" => ScalarType.Byte,
            "b1" => ScalarType.Bool,
            _ => null,
        };
        if (dtype is null) throw new SvgdException($"{source}: unsupported .npy dtype '{descr}' (supported: f2 f4 f8 i1 i2 i4 i8 u1 b1)");
        return (dtype.Value, int.Parse(descr[2..], CultureInfo.InvariantCulture), big);
    }

    static void ReadAll(Stream s, byte[] buffer, string source, string what)
    {
        int done = 0;
        try
        {
            while (done < buffer.Length)
            {
                int n = s.Read(buffer, done, Math.Min(buffer.Length - done, 1 << 24));
                if (n == 0) break;
                done += n;
            }
        }
        catch (InvalidDataException e) { throw new SvgdException($"{source}: corrupt compressed data ({e.Message})", e); }
        if (done < buffer.Length)
            throw new SvgdException($"{source}: .npy {what} cut short ({done} of {buffer.Length} bytes; truncated file?)");
    }

    // --- the header is a Python literal; a small parser for the subset numpy writes ---

    static (string Descr, bool Fortran, long[] Shape) ParseHeader(string text, string source)
    {
        var p = new LiteralParser(text, source);
        var dict = p.ParseValue() as Dictionary<string, object?>
            ?? throw new SvgdException($"{source}: .npy header is not a dictionary");
        if (!dict.TryGetValue("descr", out var d) || !dict.TryGetValue("fortran_order", out var f) || !dict.TryGetValue("shape", out var sh))
            throw new SvgdException($"{source}: .npy header lacks descr, fortran_order or shape");
        if (d is not string descr)
            throw new SvgdException($"{source}: structured .npy arrays (record dtypes) are not supported");
        if (f is not bool fortran) throw new SvgdException($"{source}: .npy fortran_order is not True/False");
        if (sh is not List<object?> dims || dims.Any(x => x is not long))
            throw new SvgdException($"{source}: .npy shape is not a tuple of integers");
        return (descr, fortran, dims.Select(x => (long)x!).ToArray());
    }

    sealed class LiteralParser(string text, string source)
    {
        int _pos;

        SvgdException Bad() => new($"{source}: malformed .npy header near offset {_pos}: '{Trunc(text)}'");
        static string Trunc(string s) => (s.Length > 120 ? s[..120] + "..." : s).Replace("\n", "\\n");

        void Skip() { while (_pos < text.Length && char.IsWhiteSpace(text[_pos])) _pos++; }
        char Peek() { Skip(); return _pos < text.Length ? text[_pos] : '\0'; }
        void Expect(char c) { if (Peek() != c) throw Bad(); _pos++; }

        public object? ParseValue()
        {
            char c = Peek();
            switch (c)
            {
                case '{':
                {
                    _pos++;
                    var d = new Dictionary<string, object?>();
                    while (Peek() != '}')
                    {
                        if (ParseValue() is not string key) throw Bad();
                        Expect(':');
                        d[key] = ParseValue();
                        if (Peek() == ',') _pos++; else if (Peek() != '}') throw Bad();
                    }
                    _pos++;
                    return d;
                }
                case '(':
                case '[':
                {
                    char close = c == '(' ? ')' : ']';
                    _pos++;
                    var items = new List<object?>();
                    while (Peek() != close)
                    {
                        items.Add(ParseValue());
                        if (Peek() == ',') _pos++; else if (Peek() != close) throw Bad();
                    }
                    _pos++;
                    return items;
                }
                case '\'':
                case '"':
                {
                    _pos++;
                    var sb = new StringBuilder();
                    while (_pos < text.Length && text[_pos] != c)
                    {
                        if (text[_pos] == '\\' && _pos + 1 < text.Length) _pos++;
                        sb.Append(text[_pos++]);
                    }
                    if (_pos >= text.Length) throw Bad();
                    _pos++;
                    return sb.ToString();
                }
                default:
                {
                    int start = _pos;
                    while (_pos < text.Length && (char.IsLetterOrDigit(text[_pos]) || text[_pos] is '-' or '_')) _pos++;
                    string word = text[start.._pos];
                    if (word == "True") return true;
                    if (word == "False") return false;
                    if (word == "None") return null;
                    string digits = word.EndsWith('L') ? word[..^1] : word; // Python 2 longs: (3L, 4L)
                    if (long.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v)) return v;
                    throw Bad();
                }
            }
        }
    }
}
