using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Checkpoints;

/// <summary>One tensor's entry in a safetensors header.</summary>
public sealed record SafeTensorInfo(string Name, ScalarType Dtype, string DtypeName, long[] Shape, long Begin, long End);

/// <summary>
/// The Hugging Face safetensors format: an 8-byte header length, a JSON header, raw little-endian
/// data. Read and written here so that config metadata and lazy per-tensor reads stay in our hands.
/// </summary>
public static class SafeTensors
{
    const long MaxHeader = 100L << 20;
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static bool LooksLikeSafeTensors(string path)
    {
        using var fs = CheckpointFile.OpenRead(path);
        if (fs.Length < 10) return false;
        Span<byte> head = stackalloc byte[9];
        fs.ReadExactly(head);
        long n = BitConverter.ToInt64(head[..8]);
        return n > 1 && n <= MaxHeader && n + 8 <= fs.Length && head[8] == (byte)'{';
    }

    public sealed class Header
    {
        public required string Path { get; init; }
        public required long DataStart { get; init; }
        public required IReadOnlyList<SafeTensorInfo> Tensors { get; init; }
        public required IReadOnlyDictionary<string, string> Metadata { get; init; }
    }

    public static Header ReadHeader(string path)
    {
        using var fs = OpenRead(path);
        if (fs.Length < 8) throw new SvgdException($"{path}: too short for a safetensors file ({fs.Length} bytes)");
        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        long n = BitConverter.ToInt64(lenBytes);
        if (n <= 0 || n > MaxHeader || 8 + n > fs.Length)
            throw new SvgdException($"{path}: invalid safetensors header length {n} (file has {fs.Length} bytes; truncated or not safetensors)");
        var buf = new byte[n];
        fs.ReadExactly(buf);
        // The JSON parser checks UTF-8 only when a string is decoded; checked here, a bad byte is a clean error.
        try { _ = StrictUtf8.GetCharCount(buf); }
        catch (DecoderFallbackException) { throw new SvgdException($"{path}: safetensors header is not valid UTF-8 text"); }
        JsonDocument doc;
        // Duplicate keys are allowed by the parser so that the check below can name the key.
        try { doc = JsonDocument.Parse(buf, new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (JsonException e) { throw new SvgdException($"{path}: safetensors header is not valid JSON ({FirstLine(e.Message)})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SvgdException($"{path}: safetensors header is a JSON {root.ValueKind.ToString().ToLowerInvariant()}, not an object");
            var meta = new Dictionary<string, string>();
            var tensors = new List<SafeTensorInfo>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            long dataLen = fs.Length - 8 - n;
            foreach (var prop in root.EnumerateObject())
            {
                string name = prop.Name;
                if (!seen.Add(name)) throw new SvgdException($"{path}: safetensors header names '{name}' twice");
                if (name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new SvgdException($"{path}: safetensors __metadata__ is a JSON {prop.Value.ValueKind.ToString().ToLowerInvariant()}, not an object of strings");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new SvgdException($"{path}: safetensors __metadata__ value of '{m.Name}' is a JSON {m.Value.ValueKind.ToString().ToLowerInvariant()}, not a string");
                        if (!meta.TryAdd(m.Name, m.Value.GetString()!))
                            throw new SvgdException($"{path}: safetensors __metadata__ names '{m.Name}' twice");
                    }
                    continue;
                }
                tensors.Add(ParseEntry(path, name, prop.Value, dataLen));
            }
            return new Header { Path = path, DataStart = 8 + n, Tensors = tensors, Metadata = meta };
        }
    }

    static SafeTensorInfo ParseEntry(string path, string name, JsonElement o, long dataLen)
    {
        SvgdException Bad(string what) => new($"{path}: tensor '{name}' in the safetensors header: {what}");
        if (o.ValueKind != JsonValueKind.Object) throw Bad("entry is not a JSON object");
        if (!o.TryGetProperty("dtype", out var dtEl) || dtEl.ValueKind != JsonValueKind.String) throw Bad("'dtype' is missing or not a string");
        string dt = dtEl.GetString()!;
        var st = ParseDtype(path, name, dt);
        long[] shape = Longs(o, "shape", Bad);
        long[] off = Longs(o, "data_offsets", Bad);
        if (off.Length != 2) throw Bad($"'data_offsets' has {off.Length} entries, expected 2");
        if (shape.Any(x => x < 0)) throw Bad($"negative dimension in shape {Checkpoint.Shape(shape)}");
        long b = off[0], e = off[1];
        if (b < 0 || e < b) throw Bad($"data_offsets [{b}, {e}] are not an ascending pair of positions");
        long expect;
        try { expect = checked(shape.Aggregate(1L, (a, x) => a * x) * TorchPickle.ElementSize(st)); }
        catch (OverflowException) { throw Bad($"shape {Checkpoint.Shape(shape)} {dt} is too large for any file"); }
        if (e - b != expect) throw new SvgdException($"{path}: tensor '{name}' has {e - b} bytes for shape [{string.Join(",", shape)}] {dt} (expected {expect})");
        if (e > dataLen) throw new SvgdException($"{path}: tensor '{name}' lies outside the file's data (truncated file?)");
        return new SafeTensorInfo(name, st, dt, shape, b, e);
    }

    static long[] Longs(JsonElement o, string key, Func<string, SvgdException> bad)
    {
        if (!o.TryGetProperty(key, out var a) || a.ValueKind != JsonValueKind.Array) throw bad($"'{key}' is missing or not an array");
        var list = new List<long>();
        foreach (var x in a.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out long v)) throw bad($"'{key}' holds {x.GetRawText()}, not a 64-bit integer");
            list.Add(v);
        }
        return list.ToArray();
    }

    static string FirstLine(string s) => s.Split('\n')[0].Trim();

    static FileStream OpenRead(string path) => CheckpointFile.OpenRead(path);

    static ScalarType ParseDtype(string path, string name, string dt) => dt switch
    {
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "F64" => ScalarType.Float64,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new SvgdException($"{path}: tensor '{name}' has unsupported dtype {dt}"),
    };

    static string DtypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new SvgdException($"cannot write dtype {t} to safetensors"),
    };

    /// <summary>Reads the named tensors (all when <paramref name="names"/> is null), in header order.</summary>
    public static Dictionary<string, Tensor> Load(string path, IEnumerable<string>? names = null)
    {
        using var file = Open(path);
        var wanted = names?.ToHashSet();
        if (wanted != null)
            foreach (var n in wanted)
                if (!file.Contains(n)) throw new SvgdException($"{path}: no tensor named '{n}'");
        var result = new Dictionary<string, Tensor>();
        foreach (var info in file.Header.Tensors.OrderBy(t => t.Begin))
        {
            if (wanted != null && !wanted.Contains(info.Name)) continue;
            result[info.Name] = file.Read(info.Name);
        }
        return file.Header.Tensors.Where(t => result.ContainsKey(t.Name)).ToDictionary(t => t.Name, t => result[t.Name]);
    }

    /// <summary>Opens a file to read its tensors one at a time (a training checkpoint larger than the memory to spare for it).</summary>
    public static Reader Open(string path) => new(path);

    /// <summary>
    /// An open safetensors file. Tensors are read on demand, straight into tensor memory a chunk at a
    /// time: no byte array holds a tensor, so one over 2 GB reads like any other.
    /// </summary>
    public sealed class Reader : IDisposable
    {
        readonly FileStream _fs;
        readonly Dictionary<string, SafeTensorInfo> _byName;

        public Header Header { get; }

        internal Reader(string path)
        {
            Header = ReadHeader(path);
            _byName = Header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
            _fs = OpenRead(path);
        }

        public bool Contains(string name) => _byName.ContainsKey(name);

        public SafeTensorInfo Info(string name) =>
            _byName.TryGetValue(name, out var info) ? info : throw new SvgdException($"{Header.Path}: no tensor named '{name}'");

        /// <summary>A new CPU tensor with the named tensor's data.</summary>
        public Tensor Read(string name)
        {
            var info = Info(name);
            var t = torch.empty(info.Shape, dtype: info.Dtype);
            try { Fill(info, t); }
            catch { t.Dispose(); throw; }
            return t;
        }

        /// <summary>
        /// Copies the named tensor's data into <paramref name="destination"/>, which must have its shape and dtype
        /// (a mismatch is one line naming the file, the tensor and <paramref name="what"/>). A contiguous CPU
        /// destination is filled in place; any other goes through one CPU tensor of its size.
        /// </summary>
        public void ReadInto(string name, Tensor destination, string what)
        {
            var info = Info(name);
            if (info.Dtype != destination.dtype || !info.Shape.SequenceEqual(destination.shape))
                throw new SvgdException($"{Header.Path}: tensor '{name}' is {Checkpoint.Shape(info.Shape)} {info.DtypeName}, {what} is {Checkpoint.Shape(destination.shape)} {destination.dtype}");
            if (destination.device_type == DeviceType.CPU && destination.is_contiguous())
            {
                Fill(info, destination);
                return;
            }
            using var staged = Read(name);
            using var _ = torch.no_grad();
            destination.copy_(staged);
        }

        void Fill(SafeTensorInfo info, Tensor t)
        {
            _fs.Seek(Header.DataStart + info.Begin, SeekOrigin.Begin);
            if (!TensorBytes.ReadInto(_fs, t)) throw new SvgdException($"{Header.Path}: tensor '{info.Name}' is cut short (truncated file?)");
        }

        public void Dispose() => _fs.Dispose();
    }

    /// <summary>
    /// Writes tensors plus string metadata; the file appears atomically (temp file + rename), so an
    /// interrupted save never leaves a half-written model behind. Tensors are written one at a time,
    /// straight from their memory in chunks (one that is not a contiguous CPU tensor through a CPU copy
    /// of itself alone), so neither a file nor a tensor over 2 GB is ever held in one buffer.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var mo = new JsonObject();
            foreach (var (k, v) in metadata) mo[k] = v;
            header["__metadata__"] = mo;
        }
        long offset = 0;
        foreach (var (name, t) in list)
        {
            long nbytes = TensorBytes.Length(t);
            header[name] = new JsonObject
            {
                ["dtype"] = DtypeName(t.dtype),
                ["shape"] = new JsonArray(t.shape.Select(x => (JsonNode)x).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + nbytes),
            };
            offset += nbytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int pad = (8 - json.Length % 8) % 8;
        AtomicFile.Write(path, fs =>
        {
            fs.Write(BitConverter.GetBytes((long)(json.Length + pad)));
            fs.Write(json);
            for (int i = 0; i < pad; i++) fs.WriteByte((byte)' ');
            foreach (var (_, t) in list)
            {
                if (t.numel() == 0) continue;
                if (t.device_type == DeviceType.CPU && t.is_contiguous())
                {
                    TensorBytes.WriteTo(fs, t);
                    continue;
                }
                using var d = t.detach();
                using var cpu = d.cpu();
                using var c = cpu.contiguous();
                TensorBytes.WriteTo(fs, c);
            }
        });
    }
}
