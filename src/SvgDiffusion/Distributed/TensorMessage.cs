using System.Text;
using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Distributed;

/// <summary>Named CPU tensors as one byte array, to send a rank's results to rank 0.</summary>
public static class TensorMessage
{
    public static byte[] Pack(IReadOnlyDictionary<string, Tensor> tensors)
    {
        using var ms = new MemoryStream();
        using var w = new BinaryWriter(ms, Encoding.UTF8);
        w.Write(tensors.Count);
        foreach (var (name, t) in tensors)
        {
            using var c = t.detach().cpu().contiguous();
            w.Write(name);
            w.Write((int)c.dtype);
            w.Write(c.dim());
            foreach (long d in c.shape) w.Write(d);
            var bytes = c.numel() > 0 ? c.bytes : Span<byte>.Empty;
            w.Write((long)bytes.Length);
            w.Write(bytes);
        }
        w.Flush();
        return ms.ToArray();
    }

    public static Dictionary<string, Tensor> Unpack(byte[] data)
    {
        using var r = new BinaryReader(new MemoryStream(data), Encoding.UTF8);
        int count = r.ReadInt32();
        var result = new Dictionary<string, Tensor>(count);
        for (int i = 0; i < count; i++)
        {
            string name = r.ReadString();
            var dtype = (ScalarType)r.ReadInt32();
            var shape = new long[r.ReadInt64()];
            for (int k = 0; k < shape.Length; k++) shape[k] = r.ReadInt64();
            long n = r.ReadInt64();
            result[name] = TensorBytes.FromBytes(r.ReadBytes(checked((int)n)), dtype, shape);
        }
        return result;
    }
}
