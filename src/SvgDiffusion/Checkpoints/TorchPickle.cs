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
        using var fs = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return fs.Read(magic) == 4 && magic[0] == (byte)'P' && magic[1] == (byte)'K' && magic[2] == 3 && magic[3] == 4;
    }

    /// <summary>The unpickled object tree: dictionaries, lists, tuples (as object?[]), primitives and tensors.</summary>
    public static object? Load(string path)
    {
        ZipArchive zip;
        try { zip = ZipFile.OpenRead(path); }
        catch (InvalidDataException e) { throw new SvgdException($"{path}: not a readable PyTorch zip checkpoint ({e.Message})"); }
        using (zip)
        {
            var pkl = zip.Entries.FirstOrDefault(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal) && e.FullName.Count(c => c == '/') <= 1)
                ?? throw new SvgdException($"{path}: zip archive has no data.pkl; not a PyTorch checkpoint");
            string prefix = pkl.FullName[..^"data.pkl".Length];
            var bo = zip.GetEntry(prefix + "byteorder");
            if (bo != null)
            {
                using var r = new StreamReader(bo.Open());
                if (r.ReadToEnd().Trim() == "big") throw new SvgdException($"{path}: big-endian checkpoints are not supported");
            }
            byte[] program = ReadEntry(path, pkl);
            var machine = new Machine(path, program, key =>
            {
                var entry = zip.GetEntry(prefix + "data/" + key)
                    ?? throw new SvgdException($"{path}: storage 'data/{key}' referenced by the pickle is missing (truncated file?)");
                return ReadEntry(path, entry);
            });
            return machine.Run();
        }
    }

    static byte[] ReadEntry(string path, ZipArchiveEntry entry)
    {
        try
        {
            using var s = entry.Open();
            var ms = new MemoryStream((int)Math.Max(0, entry.Length));
            s.CopyTo(ms);
            if (ms.Length != entry.Length) throw new InvalidDataException("short read");
            return ms.ToArray();
        }
        catch (InvalidDataException e) { throw new SvgdException($"{path}: entry '{entry.FullName}' is corrupt ({e.Message})"); }
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
        public IEnumerable<(string Key, Tensor Storage)> Storages => _storages.Select(kv => (kv.Key.Split('/')[0], kv.Value));

        SvgdException Corrupt(string why) => new($"{_path}: corrupt pickle at byte {_pos}: {why}");

        byte U8() => _pos < _p.Length ? _p[_pos++] : throw Corrupt("unexpected end of data (truncated file?)");
        ReadOnlySpan<byte> Take(long n)
        {
            if (n < 0 || _pos + n > _p.Length) throw Corrupt("unexpected end of data (truncated file?)");
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
            while (true)
            {
                byte op = U8();
                switch (op)
                {
                    case 0x80: U8(); break;                                   // PROTO
                    case 0x95: Take(8); break;                                // FRAME
                    case (byte)'.': return Pop();                            // STOP
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
                    case (byte)'I': { var s = Line(); Push(s == "00" ? false : s == "01" ? true : long.Parse(s)); break; }
                    case (byte)'L': Push(long.Parse(Line().TrimEnd('L'))); break;
                    case (byte)'F': Push(double.Parse(Line(), System.Globalization.CultureInfo.InvariantCulture)); break;
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
                    case (byte)'p': _memo[long.Parse(Line())] = Peek(); break;
                    case 0x94: _memo[_memo.Count] = Peek(); break;           // MEMOIZE
                    case (byte)'h': Push(Memo(U8())); break;
                    case (byte)'j': Push(Memo(U32())); break;
                    case (byte)'g': Push(Memo(long.Parse(Line()))); break;
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
            return big >= long.MinValue && big <= long.MaxValue ? (long)big : big;
        }

        object PersistentLoad(object? pid)
        {
            if (pid is not object?[] t || t.Length < 5 || t[0] as string != "storage")
                throw Corrupt("unknown persistent id (not a torch storage)");
            if (t.Length >= 6 && t[5] is not null) throw Corrupt("storage views (files from PyTorch before 1.0) are not supported");
            var dtype = t[1] is Global g ? StorageDtype(g) : throw Corrupt("storage type is not a global");
            string key = t[2]?.ToString() ?? throw Corrupt("storage key missing");
            long numel = t[4] is long n ? n : throw Corrupt("storage size missing");
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
            if (bytes.LongLength < s.Numel * elemSize)
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
            long offset = Convert.ToInt64(a[1]);
            long[] size = ((object?[])a[2]!).Select(Convert.ToInt64).ToArray();
            long[] stride = ((object?[])a[3]!).Select(Convert.ToInt64).ToArray();
            var storage = Storage(s);
            long needed = offset + 1 + size.Zip(stride, (n, st) => n == 0 ? -1 : (n - 1) * st).Sum();
            if (size.Any(n => n == 0)) return torch.empty(size, dtype: s.Dtype);
            if (needed > storage.numel()) throw Corrupt($"tensor view exceeds its storage 'data/{s.Key}'");
            if (_deferStorage) return storage.as_strided(size, stride, offset); // filled later; made contiguous then
            using var view = storage.as_strided(size, stride, offset);
            return view.contiguous();
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
