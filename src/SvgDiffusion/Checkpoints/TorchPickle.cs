using System.IO.Compression;
using System.Numerics;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Checkpoints;

/// <summary>An object the pickle named but we never construct: kept as data so nothing in a file runs.</summary>
public sealed record PickledObject(string Type, IReadOnlyList<object?> Args)
{
    public object? State { get; set; }
    public override string ToString() => $"<{Type}>";
}

/// <summary>
/// Reads PyTorch's zip serialization (<c>torch.save</c> since 1.6: .pth, .pt, .ckpt) with a small pickle
/// machine of our own. Only tensor rebuilding and plain containers are interpreted; every other global
/// becomes a <see cref="PickledObject"/>, so loading never executes code from the file.
/// </summary>
public static class TorchPickle
{
    public static bool IsZipPickle(string path)
    {
        using var fs = CheckpointFile.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return fs.Read(magic) == 4 && magic[0] == (byte)'P' && magic[1] == (byte)'K' && magic[2] == 3 && magic[3] == 4;
    }

    /// <summary>The unpickled object tree: dictionaries, lists, tuples (as object?[]), primitives and tensors.</summary>
    public static object? Load(string path)
    {
        ZipArchive zip;
        try { zip = ZipFile.OpenRead(path); }
        catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException or ArgumentException)
        { throw new SvgdException($"{path}: not a readable PyTorch zip checkpoint ({e.Message.Split('\n')[0].Trim()})"); }
        using (zip)
        {
            var pkl = zip.Entries.FirstOrDefault(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal) && e.FullName.Count(c => c == '/') <= 1)
                ?? throw new SvgdException($"{path}: zip archive has no data.pkl; not a PyTorch checkpoint");
            string prefix = pkl.FullName[..^"data.pkl".Length];
            var bo = zip.GetEntry(prefix + "byteorder");
            if (bo != null && System.Text.Encoding.ASCII.GetString(ZipEntries.ReadAll(bo, path)).Trim() == "big")
                throw new SvgdException($"{path}: big-endian checkpoints are not supported");
            byte[] program = ZipEntries.ReadAll(pkl, path);
            var machine = new Machine(path, program, key =>
            {
                var entry = zip.GetEntry(prefix + "data/" + key)
                    ?? throw new SvgdException($"{path}: storage 'data/{key}' referenced by the pickle is missing (truncated file?)");
                return ZipEntries.ReadAll(entry, path);
            });
            return machine.Run();
        }
    }

    sealed record Global(string Module, string Name)
    {
        public string Full => Module + "." + Name;
    }

    sealed record StorageRef(ScalarType Dtype, string Key, long Numel);

    sealed class Mark { public static readonly Mark Instance = new(); }

    internal sealed class Machine
    {
        readonly string _path;
        readonly byte[] _p;
        readonly Func<string, byte[]> _readStorage;
        readonly bool _deferStorage;
        readonly Dictionary<string, Tensor> _storages = new();
        readonly Dictionary<long, object?> _memo = new();
        readonly List<object?> _stack = new();
        int _pos;

        /// <param name="start">Offset of the pickle in <paramref name="program"/> (legacy files hold several in a row).</param>
        /// <param name="deferStorage">Legacy files store tensor data after the pickle: storages start empty, tensors are
        /// views of them, and the caller fills <see cref="Storages"/> once the data can be read.</param>
        public Machine(string path, byte[] program, Func<string, byte[]> readStorage, int start = 0, bool deferStorage = false)
        {
            _path = path; _p = program; _readStorage = readStorage; _pos = start; _deferStorage = deferStorage;
        }

        /// <summary>The byte after the STOP of the last <see cref="Run"/>.</summary>
        public int Position => _pos;

        /// <summary>Storages created so far, by storage key (in deferred mode the key alone identifies one).</summary>
        public IEnumerable<(string Key, Tensor Storage)> Storages => _storages.Select(kv => (kv.Key[..kv.Key.LastIndexOf('/')], kv.Value));

        SvgdException Corrupt(string why) => new($"{_path}: corrupt pickle at byte {_pos}: {why}");

        byte U8() => _pos < _p.Length ? _p[_pos++] : throw Corrupt("unexpected end of data (truncated file?)");
        ReadOnlySpan<byte> Take(long n)
        {
            if (n < 0 || n > _p.Length - _pos) throw Corrupt("unexpected end of data (truncated file?)");
            var s = _p.AsSpan(_pos, (int)n); _pos += (int)n; return s;
        }
        ushort U16() => BitConverter.ToUInt16(Take(2));
        int I32() => BitConverter.ToInt32(Take(4));
        uint U32() => BitConverter.ToUInt32(Take(4));
        long I64() => BitConverter.ToInt64(Take(8));
        string Line()
        {
            int start = _pos;
            while (U8() != (byte)'\n') { }
            return Encoding.UTF8.GetString(_p, start, _pos - start - 1);
        }

        void Push(object? o) => _stack.Add(o);
        object? Pop()
        {
            if (_stack.Count == 0) throw Corrupt("stack underflow");
            var o = _stack[^1]; _stack.RemoveAt(_stack.Count - 1); return o;
        }
        object? Peek() => _stack.Count > 0 ? _stack[^1] : throw Corrupt("stack underflow");
        List<object?> PopMark()
        {
            int i = _stack.FindLastIndex(o => o is Mark);
            if (i < 0) throw Corrupt("MARK not found");
            var items = _stack.GetRange(i + 1, _stack.Count - i - 1);
            _stack.RemoveRange(i, _stack.Count - i);
            return items;
        }

        public object? Run()
        {
            // Every opcode validates what it needs; this catches what a hand-crafted file can still provoke in
            // the framework (a conversion, a collection argument), so it too reads as a corrupt file.
            try { return RunOpcodes(); }
            catch (Exception e) when (e is FormatException or OverflowException or InvalidCastException or ArgumentException or IndexOutOfRangeException or KeyNotFoundException)
            { throw Corrupt(e.Message.Split('\n')[0].Trim()); }
        }

        object? RunOpcodes()
        {
            while (true)
            {
                byte op = U8();
                switch (op)
                {
                    case 0x80: U8(); break;                                   // PROTO
                    case 0x95: Take(8); break;                                // FRAME
                    case (byte)'.': { var top = Pop(); return top is Mark ? throw Corrupt("STOP inside an unclosed MARK") : top; }
                    case (byte)'(': Push(Mark.Instance); break;
                    case (byte)'}': Push(new Dictionary<object, object?>()); break;
                    case (byte)']': Push(new List<object?>()); break;
                    case (byte)')': Push(Array.Empty<object?>()); break;
                    case (byte)'N': Push(null); break;
                    case 0x88: Push(true); break;
                    case 0x89: Push(false); break;
                    case (byte)'K': Push((long)U8()); break;
                    case (byte)'M': Push((long)U16()); break;
                    case (byte)'J': Push((long)I32()); break;
                    case 0x8a: Push(LongFrom(Take(U8()))); break;            // LONG1
                    case 0x8b: Push(LongFrom(Take(I32()))); break;           // LONG4
                    case (byte)'G': { var b = Take(8).ToArray(); Array.Reverse(b); Push(BitConverter.ToDouble(b)); break; }
                    case (byte)'I': { var s = Line(); Push(s == "00" ? false : s == "01" ? true : Integer(s)); break; }
                    case (byte)'L': Push(Integer(Line().TrimEnd('L'))); break;
                    case (byte)'F': Push(double.TryParse(Line(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var fl) ? fl : throw Corrupt("FLOAT is not a number")); break;
                    case (byte)'X': Push(Encoding.UTF8.GetString(Take(U32()))); break;
                    case 0x8c: Push(Encoding.UTF8.GetString(Take(U8()))); break;
                    case 0x8d: Push(Encoding.UTF8.GetString(Take(I64()))); break;
                    case (byte)'V': Push(Line()); break;
                    case (byte)'T': Push(Encoding.Latin1.GetString(Take(I32()))); break;
                    case (byte)'U': Push(Encoding.Latin1.GetString(Take(U8()))); break;
                    case (byte)'S': Push(Line().Trim('\'', '"')); break;
                    case (byte)'B': Push(Take(I32()).ToArray()); break;
                    case (byte)'C': Push(Take(U8()).ToArray()); break;
                    case 0x8e: case 0x96: Push(Take(I64()).ToArray()); break;
                    case (byte)'q': _memo[U8()] = Peek(); break;
                    case (byte)'r': _memo[U32()] = Peek(); break;
                    case (byte)'p': _memo[MemoKey(Line())] = Peek(); break;
                    case 0x94: _memo[_memo.Count] = Peek(); break;           // MEMOIZE
                    case (byte)'h': Push(Memo(U8())); break;
                    case (byte)'j': Push(Memo(U32())); break;
                    case (byte)'g': Push(Memo(MemoKey(Line()))); break;
                    case (byte)'0': Pop(); break;
                    case (byte)'1': PopMark(); break;
                    case (byte)'2': Push(Peek()); break;
                    case (byte)'t': Push(PopMark().ToArray()); break;
                    case 0x85: Push(new[] { Pop() }); break;
                    case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }
                    case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; }
                    case (byte)'l': Push(PopMark()); break;
                    case (byte)'d': { var items = PopMark(); var d = new Dictionary<object, object?>(); for (int i = 0; i + 1 < items.Count; i += 2) d[Key(items[i])] = items[i + 1]; Push(d); break; }
                    case (byte)'a': { var v = Pop(); AsList(Peek()).Add(v); break; }
                    case (byte)'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; }
                    case (byte)'s': { var v = Pop(); var k = Pop(); SetItem(Peek(), k, v); break; }
                    case (byte)'u': { var items = PopMark(); var d = Peek(); for (int i = 0; i + 1 < items.Count; i += 2) SetItem(d, items[i], items[i + 1]); break; }
                    case 0x8f: Push(new List<object?>()); break;             // EMPTY_SET
                    case 0x90: { var items = PopMark(); AsList(Peek()).AddRange(items); break; }
                    case 0x91: Push(PopMark()); break;                       // FROZENSET
                    case (byte)'c': { var module = Line(); var name = Line(); Push(new Global(module, name)); break; }
                    case 0x93: { var name = Pop() as string; var module = Pop() as string; Push(new Global(module ?? "?", name ?? "?")); break; }
                    case (byte)'Q': Push(PersistentLoad(Pop())); break;
                    case (byte)'P': throw Corrupt("text persistent ids are not used by torch.save");
                    case (byte)'R': { var args = Pop() as object?[] ?? throw Corrupt("REDUCE arguments are not a tuple"); var f = Pop(); Push(Call(f, args)); break; }
                    case 0x81: { var args = Pop() as object?[] ?? Array.Empty<object?>(); var cls = Pop(); Push(Call(cls, args)); break; }
                    case 0x92: { Pop(); var args = Pop() as object?[] ?? Array.Empty<object?>(); var cls = Pop(); Push(Call(cls, args)); break; }
                    case (byte)'b': { var state = Pop(); Build(Peek(), state); break; }
                    case (byte)'o': { var items = PopMark(); if (items.Count == 0) throw Corrupt("OBJ without class"); Push(Call(items[0], items.Skip(1).ToArray())); break; }
                    case (byte)'i': { var module = Line(); var name = Line(); var items = PopMark(); Push(Call(new Global(module, name), items.ToArray())); break; }
                    default: throw Corrupt($"unsupported pickle opcode 0x{op:x2}");
                }
            }
        }

        object Integer(string s)
        {
            if (long.TryParse(s, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out long v)) return v;
            if (BigInteger.TryParse(s, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var big)) return big;
            throw Corrupt($"integer literal '{Clip(s)}' is not a number");
        }

        long MemoKey(string s) =>
            long.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long k) ? k
            : throw Corrupt($"memo key '{Clip(s)}' is not a number");

        static string Clip(string s) => s.Length > 40 ? s[..40] + "..." : s;

        object? Memo(long k) => _memo.TryGetValue(k, out var v) ? v : throw Corrupt($"memo key {k} missing");

        static object Key(object? k) => k switch
        {
            null => "None",
            object?[] t => "(" + string.Join(", ", t.Select(x => x?.ToString())) + ")",
            _ => k,
        };

        List<object?> AsList(object? o) => o as List<object?> ?? throw Corrupt("APPEND to something that is not a list");

        void SetItem(object? target, object? k, object? v)
        {
            if (target is Dictionary<object, object?> d) d[Key(k)] = v;
            else if (target is PickledObject po) { po.State ??= new Dictionary<object, object?>(); if (po.State is Dictionary<object, object?> sd) sd[Key(k)] = v; }
            else throw Corrupt("SETITEM on something that is not a dict");
        }

        static void Build(object? target, object? state)
        {
            switch (target)
            {
                // A dict's BUILD state holds attributes (an OrderedDict's _metadata), not items.
                case PickledObject po: po.State = state; break;
                // Tensors rebuilt as parameters or with backward hooks carry no state we need.
            }
        }

        static BigInteger LongFromBig(ReadOnlySpan<byte> b) => new(b, isUnsigned: false, isBigEndian: false);
        static object LongFrom(ReadOnlySpan<byte> b)
        {
            var big = LongFromBig(b);
            // Boxed separately: a plain conditional would convert the long back to BigInteger.
            return big >= long.MinValue && big <= long.MaxValue ? (object)(long)big : big;
        }

        object PersistentLoad(object? pid)
        {
            if (pid is not object?[] t || t.Length < 5 || t[0] as string != "storage")
                throw Corrupt("unknown persistent id (not a torch storage)");
            if (t.Length >= 6 && t[5] is not null) throw Corrupt("storage views (files from PyTorch before 1.0) are not supported");
            var dtype = t[1] is Global g ? StorageDtype(g) : throw Corrupt("storage type is not a global");
            string key = t[2]?.ToString() ?? throw Corrupt("storage key missing");
            long numel = t[4] is long n ? n : throw Corrupt("storage size is missing or not an integer");
            if (numel < 0) throw Corrupt($"storage 'data/{key}' has negative size {numel}");
            // Legacy storages are allocated before their data is read; the data lies in this same file.
            if (_deferStorage && numel > _p.Length / ElementSize(dtype))
                throw Corrupt($"storage '{key}' claims {numel} elements, more than the file holds");
            return new StorageRef(dtype, key, numel);
        }

        ScalarType StorageDtype(Global g) => g.Name switch
        {
            "FloatStorage" => ScalarType.Float32,
            "DoubleStorage" => ScalarType.Float64,
            "HalfStorage" => ScalarType.Float16,
            "BFloat16Storage" => ScalarType.BFloat16,
            "LongStorage" => ScalarType.Int64,
            "IntStorage" => ScalarType.Int32,
            "ShortStorage" => ScalarType.Int16,
            "CharStorage" => ScalarType.Int8,
            "ByteStorage" => ScalarType.Byte,
            "BoolStorage" => ScalarType.Bool,
            "UntypedStorage" => ScalarType.Byte,
            _ => throw new SvgdException($"{_path}: unsupported tensor storage type {g.Full}"),
        };

        Tensor Storage(StorageRef s)
        {
            string id = s.Key + "/" + s.Dtype;
            if (_storages.TryGetValue(id, out var t)) return t;
            if (_deferStorage)
            {
                t = torch.zeros(s.Numel, dtype: s.Dtype);
                _storages[id] = t;
                return t;
            }
            byte[] bytes = _readStorage(s.Key);
            long elemSize = ElementSize(s.Dtype);
            if (s.Numel > bytes.LongLength / elemSize)
                throw new SvgdException($"{_path}: storage 'data/{s.Key}' holds {bytes.LongLength} bytes, expected {s.Numel * elemSize} (truncated file?)");
            t = TensorBytes.FromBytes(bytes.AsSpan(0, (int)(s.Numel * elemSize)), s.Dtype, new[] { s.Numel });
            _storages[id] = t;
            return t;
        }

        object? Call(object? f, object?[] args)
        {
            if (f is not Global g) throw Corrupt("call of something that is not a global");
            switch (g.Full)
            {
                case "collections.OrderedDict":
                case "builtins.dict":
                case "__builtin__.dict":
                    return new Dictionary<object, object?>();
                case "builtins.list": return new List<object?>();
                case "torch._utils._rebuild_tensor":
                case "torch._utils._rebuild_tensor_v2":
                    return RebuildTensor(args);
                case "torch._utils._rebuild_parameter":
                case "torch._utils._rebuild_parameter_with_state":
                    return args.Length > 0 && args[0] is Tensor p ? p : throw Corrupt("_rebuild_parameter without a tensor");
                case "torch.Size": return args.Length > 0 ? args[0] : Array.Empty<object?>();
                case "torch.device": return args.Length > 0 ? args[0]?.ToString() : "cpu";
                default: return new PickledObject(g.Full, args);
            }
        }

        Tensor RebuildTensor(object?[] a)
        {
            if (a.Length < 4 || a[0] is not StorageRef s) throw Corrupt("_rebuild_tensor without storage");
            long offset = a[1] is long o ? o : throw Corrupt($"storage offset of a tensor in 'data/{s.Key}' is not an integer");
            long[] size = Ints(a[2], "size", s), stride = Ints(a[3], "stride", s);
            string where = $"tensor of size {Checkpoint.Shape(size)} stride {Checkpoint.Shape(stride)} offset {offset} in 'data/{s.Key}'";
            if (size.Length != stride.Length) throw Corrupt($"{where}: size and stride differ in length");
            if (offset < 0 || size.Any(n => n < 0) || stride.Any(n => n < 0)) throw Corrupt($"{where}: negative size, stride or offset");
            var storage = Storage(s);
            if (size.Any(n => n == 0)) return torch.empty(size, dtype: s.Dtype);
            long last = offset, numel = 1;
            try { checked { for (int i = 0; i < size.Length; i++) last += (size[i] - 1) * stride[i]; } }
            catch (OverflowException) { last = long.MaxValue; }
            try { checked { foreach (long n in size) numel *= n; } }
            catch (OverflowException) { numel = long.MaxValue; }
            if (last >= storage.numel()) throw Corrupt($"{where}: exceeds its storage of {storage.numel()} elements");
            // Zero strides (expanded tensors) may legitimately repeat a storage, but not into an allocation
            // no real checkpoint asks for: that is a corrupt size, refused before it exhausts memory.
            if (numel > (1L << 28) && numel / 64 > storage.numel())
                throw Corrupt($"{where}: {(numel == long.MaxValue ? "over 2^63" : numel.ToString())} elements is implausibly many for a storage of {storage.numel()}");
            if (_deferStorage) return storage.as_strided(size, stride, offset); // filled later; made contiguous then
            using var view = storage.as_strided(size, stride, offset);
            return view.contiguous();
        }

        long[] Ints(object? o, string what, StorageRef s)
        {
            var items = o switch { object?[] t => t, List<object?> l => l.ToArray(), _ => null };
            if (items == null || items.Any(x => x is not long))
                throw Corrupt($"{what} of a tensor in 'data/{s.Key}' is not a tuple of integers");
            return items.Select(x => (long)x!).ToArray();
        }
    }

    internal static long ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        _ => 1,
    };
}
