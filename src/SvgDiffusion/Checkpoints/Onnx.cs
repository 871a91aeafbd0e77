using System.Runtime.InteropServices;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Checkpoints;

/// <summary>
/// Reads the parts of an ONNX model (a protobuf <c>ModelProto</c>) that a weight importer needs: the graph's
/// nodes with their attributes, its inputs and outputs, and the initializer tensors. A small hand-written
/// protobuf wire-format reader; unknown fields are skipped, as protobuf requires. Field numbers are those of
/// onnx/onnx.proto (IR version 3 and later).
/// </summary>
public sealed class OnnxModel
{
    public required string Path { get; init; }
    public long IrVersion { get; init; }
    public string ProducerName { get; init; } = "";
    public string ProducerVersion { get; init; } = "";
    public string Domain { get; init; } = "";
    /// <summary>Operator set versions by domain ("" is the default ONNX domain).</summary>
    public required IReadOnlyDictionary<string, long> Opsets { get; init; }
    public required OnnxGraph Graph { get; init; }

    public static OnnxModel Load(string path)
    {
        if (!File.Exists(path)) throw new SvgdException($"{path}: no such ONNX file");
        var info = new FileInfo(path);
        if (info.Length > int.MaxValue) throw new SvgdException($"{path}: ONNX files over 2 GB (external data) are not supported");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException e) { throw new SvgdException($"{path}: cannot read ({e.Message})"); }
        return Parse(bytes, path);
    }

    public static OnnxModel Parse(byte[] bytes, string source)
    {
        try
        {
            var model = ReadModel(bytes, source);
            if (model.Graph.Nodes.Count == 0)
                throw new SvgdException($"{source}: not an ONNX model (no graph nodes)");
            return model;
        }
        catch (ProtoException e) { throw new SvgdException($"{source}: not a valid ONNX model ({e.Message}; truncated or corrupt file?)"); }
    }

    static OnnxModel ReadModel(byte[] buf, string source)
    {
        var r = new ProtoReader(buf, 0, buf.Length);
        long ir = 0; string producer = "", producerVersion = "", domain = "";
        var opsets = new Dictionary<string, long>();
        OnnxGraph? graph = null;
        while (r.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (1, 0): ir = (long)r.Varint(); break;
                case (2, 2): producer = r.String(); break;
                case (3, 2): producerVersion = r.String(); break;
                case (4, 2): domain = r.String(); break;
                case (7, 2): graph = OnnxGraph.Read(r.Sub()); break;
                case (8, 2):
                    var o = r.Sub(); string d = ""; long v = 0;
                    while (o.Next(out int f2, out int w2))
                        if (f2 == 1 && w2 == 2) d = o.String();
                        else if (f2 == 2 && w2 == 0) v = (long)o.Varint();
                        else o.Skip(w2);
                    opsets[d] = v;
                    break;
                default: r.Skip(wire); break;
            }
        }
        if (graph == null) throw new SvgdException($"{source}: not an ONNX model (no graph)");
        return new OnnxModel
        {
            Path = source, IrVersion = ir, ProducerName = producer, ProducerVersion = producerVersion,
            Domain = domain, Opsets = opsets, Graph = graph,
        };
    }
}

/// <summary>An ONNX <c>GraphProto</c>: nodes in topological order, initializers by name, declared inputs and outputs.</summary>
public sealed class OnnxGraph
{
    public string Name { get; private init; } = "";
    public required IReadOnlyList<OnnxNode> Nodes { get; init; }
    public required IReadOnlyDictionary<string, OnnxTensor> Initializers { get; init; }
    public required IReadOnlyList<OnnxValueInfo> Inputs { get; init; }
    public required IReadOnlyList<OnnxValueInfo> Outputs { get; init; }

    /// <summary>Nodes that read <paramref name="value"/>.</summary>
    public IEnumerable<OnnxNode> Consumers(string value) => Nodes.Where(n => n.Inputs.Contains(value));

    internal static OnnxGraph Read(ProtoReader r)
    {
        string name = "";
        var nodes = new List<OnnxNode>();
        var inits = new Dictionary<string, OnnxTensor>();
        var inputs = new List<OnnxValueInfo>();
        var outputs = new List<OnnxValueInfo>();
        while (r.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (1, 2): nodes.Add(OnnxNode.Read(r.Sub())); break;
                case (2, 2): name = r.String(); break;
                case (5, 2):
                    var t = OnnxTensor.Read(r.Sub());
                    if (!inits.TryAdd(t.Name, t)) throw new ProtoException($"initializer '{t.Name}' appears twice");
                    break;
                case (11, 2): inputs.Add(OnnxValueInfo.Read(r.Sub())); break;
                case (12, 2): outputs.Add(OnnxValueInfo.Read(r.Sub())); break;
                default: r.Skip(wire); break;
            }
        }
        return new OnnxGraph { Name = name, Nodes = nodes, Initializers = inits, Inputs = inputs, Outputs = outputs };
    }
}

/// <summary>A graph input or output: name, element type (<see cref="OnnxTensor.DataType"/> codes) and shape (null where symbolic).</summary>
public sealed record OnnxValueInfo(string Name, int ElemType, long?[] Shape)
{
    internal static OnnxValueInfo Read(ProtoReader r)
    {
        string name = ""; int elem = 0; var shape = new List<long?>();
        while (r.Next(out int field, out int wire))
        {
            if (field == 1 && wire == 2) name = r.String();
            else if (field == 2 && wire == 2)
            {
                var type = r.Sub();                                   // TypeProto
                while (type.Next(out int tf, out int tw))
                {
                    if (tf != 1 || tw != 2) { type.Skip(tw); continue; }
                    var tensor = type.Sub();                          // TypeProto.Tensor
                    while (tensor.Next(out int f, out int w))
                    {
                        if (f == 1 && w == 0) elem = (int)tensor.Varint();
                        else if (f == 2 && w == 2)
                        {
                            var shp = tensor.Sub();                   // TensorShapeProto
                            while (shp.Next(out int sf, out int sw))
                            {
                                if (sf != 1 || sw != 2) { shp.Skip(sw); continue; }
                                var dim = shp.Sub(); long? v = null;  // Dimension: dim_value or dim_param
                                while (dim.Next(out int df, out int dw))
                                    if (df == 1 && dw == 0) v = (long)dim.Varint(); else dim.Skip(dw);
                                shape.Add(v);
                            }
                        }
                        else tensor.Skip(w);
                    }
                }
            }
            else r.Skip(wire);
        }
        return new OnnxValueInfo(name, elem, shape.ToArray());
    }
}

/// <summary>An ONNX <c>NodeProto</c>.</summary>
public sealed class OnnxNode
{
    public string Name { get; private init; } = "";
    public string OpType { get; private init; } = "";
    public string Domain { get; private init; } = "";
    public required IReadOnlyList<string> Inputs { get; init; }
    public required IReadOnlyList<string> Outputs { get; init; }
    public required IReadOnlyDictionary<string, OnnxAttribute> Attributes { get; init; }

    public override string ToString() => $"{OpType} '{Name}'";

    public long Int(string name, long fallback) => Attributes.TryGetValue(name, out var a) ? a.I : fallback;
    public double Float(string name, double fallback) => Attributes.TryGetValue(name, out var a) ? a.F : fallback;
    public string Str(string name, string fallback) => Attributes.TryGetValue(name, out var a) ? a.S : fallback;
    public long[] Ints(string name, long[] fallback) => Attributes.TryGetValue(name, out var a) ? a.Ints : fallback;

    internal static OnnxNode Read(ProtoReader r)
    {
        var inputs = new List<string>(); var outputs = new List<string>();
        var attrs = new Dictionary<string, OnnxAttribute>();
        string name = "", op = "", domain = "";
        while (r.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (1, 2): inputs.Add(r.String()); break;
                case (2, 2): outputs.Add(r.String()); break;
                case (3, 2): name = r.String(); break;
                case (4, 2): op = r.String(); break;
                case (5, 2): var a = OnnxAttribute.Read(r.Sub()); attrs[a.Name] = a; break;
                case (7, 2): domain = r.String(); break;
                default: r.Skip(wire); break;
            }
        }
        return new OnnxNode { Name = name, OpType = op, Domain = domain, Inputs = inputs, Outputs = outputs, Attributes = attrs };
    }
}

/// <summary>An ONNX <c>AttributeProto</c>, reduced to the scalar and list kinds (tensor and graph values are skipped).</summary>
public sealed record OnnxAttribute(string Name, double F, long I, string S, long[] Ints, float[] Floats)
{
    internal static OnnxAttribute Read(ProtoReader r)
    {
        string name = "", s = ""; double f = 0; long i = 0;
        var ints = new List<long>(); var floats = new List<float>();
        while (r.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (1, 2): name = r.String(); break;
                case (2, 5): f = r.Fixed32Float(); break;
                case (3, 0): i = (long)r.Varint(); break;
                case (4, 2): s = r.String(); break;
                case (7, 5): floats.Add(r.Fixed32Float()); break;
                case (7, 2): floats.AddRange(r.PackedFloats()); break;
                case (8, 0): ints.Add((long)r.Varint()); break;
                case (8, 2): var p = r.Sub(); while (!p.End) ints.Add((long)p.Varint()); break;
                default: r.Skip(wire); break;
            }
        }
        return new OnnxAttribute(name, f, i, s, ints.ToArray(), floats.ToArray());
    }
}

/// <summary>An initializer (<c>TensorProto</c>) with its data decoded; float, double, int32 and int64 are supported.</summary>
public sealed class OnnxTensor
{
    public const int Float = 1, Int32 = 6, Int64 = 7, Double = 11;

    public required string Name { get; init; }
    public required long[] Dims { get; init; }
    /// <summary>ONNX <c>TensorProto.DataType</c> code.</summary>
    public required int DataType { get; init; }
    /// <summary>float[], double[], int[] or long[] by <see cref="DataType"/>.</summary>
    public required Array Data { get; init; }

    public long Count => Dims.Aggregate(1L, (a, d) => a * d);

    /// <summary>A new CPU tensor of the matching dtype and shape.</summary>
    public Tensor ToTorch() => Data switch
    {
        float[] f => torch.tensor(f, Dims),
        double[] d => torch.tensor(d, Dims),
        int[] i => torch.tensor(i, Dims),
        long[] l => torch.tensor(l, Dims),
        _ => throw new InvalidOperationException(),
    };

    internal static OnnxTensor Read(ProtoReader r)
    {
        string name = ""; int dt = 0; var dims = new List<long>();
        bool external = false;
        ReadOnlyMemory<byte> raw = default; bool hasRaw = false;
        var floats = new List<float>(); var doubles = new List<double>(); var ints = new List<long>();
        float[]? packedFloats = null;
        while (r.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (1, 0): dims.Add((long)r.Varint()); break;
                case (1, 2): var pd = r.Sub(); while (!pd.End) dims.Add((long)pd.Varint()); break;
                case (2, 0): dt = (int)r.Varint(); break;
                case (4, 5): Unpack(); floats.Add(r.Fixed32Float()); break;
                case (4, 2):
                    // Usually one packed run: keep its array rather than copying it through the list.
                    var pf = r.PackedFloats();
                    if (packedFloats == null && floats.Count == 0) packedFloats = pf;
                    else { Unpack(); floats.AddRange(pf); }
                    break;
                case (5, 0) or (7, 0): ints.Add((long)r.Varint()); break;
                case (5, 2) or (7, 2): var pi = r.Sub(); while (!pi.End) ints.Add((long)pi.Varint()); break;
                case (8, 2): name = r.String(); break;
                case (9, 2): raw = r.Bytes(); hasRaw = true; break;
                case (10, 1): doubles.Add(BitConverter.Int64BitsToDouble((long)r.Fixed64())); break;
                case (10, 2): var pdd = r.Bytes(); doubles.AddRange(MemoryMarshal.Cast<byte, double>(pdd.Span).ToArray()); break;
                case (14, 0): external = r.Varint() == 1; break;
                default: r.Skip(wire); break;
            }
        }
        void Unpack()
        {
            if (packedFloats != null) { floats.AddRange(packedFloats); packedFloats = null; }
        }
        if (external) throw new ProtoException($"initializer '{name}' keeps its data in an external file, which is not supported");
        long count = dims.Aggregate(1L, (a, d) => a * d);
        if (count > int.MaxValue || count < 0) throw new ProtoException($"initializer '{name}' has an invalid shape [{string.Join(", ", dims)}]");
        Array data = dt switch
        {
            Float => hasRaw ? MemoryMarshal.Cast<byte, float>(raw.Span).ToArray() : packedFloats ?? floats.ToArray(),
            Double => hasRaw ? MemoryMarshal.Cast<byte, double>(raw.Span).ToArray() : doubles.ToArray(),
            Int32 => hasRaw ? MemoryMarshal.Cast<byte, int>(raw.Span).ToArray() : ints.Select(v => (int)v).ToArray(),
            Int64 => hasRaw ? MemoryMarshal.Cast<byte, long>(raw.Span).ToArray() : ints.ToArray(),
            _ => throw new ProtoException($"initializer '{name}' has unsupported data type {dt}"),
        };
        int elementSize = dt is Double or Int64 ? 8 : 4;
        if (hasRaw && raw.Length != count * elementSize)
            throw new ProtoException($"initializer '{name}' has {raw.Length} raw bytes for shape [{string.Join(", ", dims)}]");
        if (data.Length != count)
            throw new ProtoException($"initializer '{name}' holds {data.Length} values for shape [{string.Join(", ", dims)}]");
        return new OnnxTensor { Name = name, Dims = dims.ToArray(), DataType = dt, Data = data };
    }
}

/// <summary>Malformed protobuf; turned into an <see cref="SvgdException"/> naming the file.</summary>
sealed class ProtoException(string message) : Exception(message);

/// <summary>Protobuf wire format over a byte range: varints, fixed 32/64-bit values and length-delimited fields.</summary>
struct ProtoReader(byte[] buf, int start, int end)
{
    int pos = start;

    public readonly bool End => pos >= end;

    /// <summary>Reads the next field key; false at the end of the range.</summary>
    public bool Next(out int field, out int wire)
    {
        if (pos >= end) { field = wire = 0; return false; }
        ulong key = Varint();
        field = (int)(key >> 3); wire = (int)(key & 7);
        if (field == 0) throw new ProtoException($"field number 0 at byte {pos}");
        return true;
    }

    public ulong Varint()
    {
        ulong v = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= end) throw new ProtoException("varint runs past the end of its message");
            byte b = buf[pos++];
            v |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return v;
        }
        throw new ProtoException($"varint longer than 10 bytes at byte {pos}");
    }

    public uint Fixed32()
    {
        Need(4);
        uint v = BitConverter.ToUInt32(buf, pos); pos += 4; return v;
    }

    public ulong Fixed64()
    {
        Need(8);
        ulong v = BitConverter.ToUInt64(buf, pos); pos += 8; return v;
    }

    public float Fixed32Float() => BitConverter.Int32BitsToSingle((int)Fixed32());

    /// <summary>The payload of a length-delimited field.</summary>
    public ReadOnlyMemory<byte> Bytes()
    {
        ulong n = Varint();
        if (n > (ulong)(end - pos)) throw new ProtoException($"field of {n} bytes runs past the end of its message at byte {pos}");
        var m = new ReadOnlyMemory<byte>(buf, pos, (int)n);
        pos += (int)n;
        return m;
    }

    /// <summary>A reader over the payload of a length-delimited field (an embedded message or packed list).</summary>
    public ProtoReader Sub()
    {
        ulong n = Varint();
        if (n > (ulong)(end - pos)) throw new ProtoException($"message of {n} bytes runs past the end of its parent at byte {pos}");
        var sub = new ProtoReader(buf, pos, pos + (int)n);
        pos += (int)n;
        return sub;
    }

    public string String()
    {
        var b = Bytes();
        return Encoding.UTF8.GetString(b.Span);
    }

    public float[] PackedFloats()
    {
        var b = Bytes();
        if (b.Length % 4 != 0) throw new ProtoException($"packed float list of {b.Length} bytes");
        return MemoryMarshal.Cast<byte, float>(b.Span).ToArray();
    }

    public void Skip(int wire)
    {
        switch (wire)
        {
            case 0: Varint(); break;
            case 1: Need(8); pos += 8; break;
            case 2: Bytes(); break;
            case 5: Need(4); pos += 4; break;
            default: throw new ProtoException($"unsupported wire type {wire} at byte {pos}");
        }
    }

    readonly void Need(int n)
    {
        if (end - pos < n) throw new ProtoException("fixed-width value runs past the end of its message");
    }
}
