using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Checkpoints;

/// <summary>
/// PyTorch's legacy <c>torch.save</c> format (before 1.6, or <c>_use_new_zipfile_serialization=False</c>),
/// in which e.g. pytorch-fid's <c>pt_inception-2015-12-05-6726825d.pth</c> is published: five pickles in a
/// row (magic number, protocol version 1001, system info, the object, the list of storage keys) followed
/// by each storage as an int64 element count and its raw little-endian bytes, in key-list order. Read
/// with the same code-free pickle machine as the zip format.
/// </summary>
public static class TorchLegacyPickle
{
    static readonly BigInteger MagicNumber = BigInteger.Parse("1950a86a20f9469cfc6c", System.Globalization.NumberStyles.HexNumber);
    const long ProtocolVersion = 1001;

    /// <summary>True when the file starts with a pickle of the legacy magic number.</summary>
    public static bool IsLegacyPickle(string path)
    {
        using var fs = CheckpointFile.OpenRead(path);
        Span<byte> head = stackalloc byte[14];
        if (fs.Read(head) != 14) return false;
        // PROTO n, LONG1 of 10 bytes, the magic number little-endian.
        if (head[0] != 0x80 || head[2] != 0x8a || head[3] != 10) return false;
        return new BigInteger(head[4..14], isUnsigned: true, isBigEndian: false) == MagicNumber;
    }

    /// <summary>The unpickled object tree, tensors filled in and contiguous.</summary>
    public static object? Load(string path)
    {
        var info = new FileInfo(path);
        if (info.Length > Array.MaxLength) throw new SvgdException($"{path}: legacy PyTorch files over 2 GB are not supported; re-save it with a current torch.save");
        byte[] all = File.ReadAllBytes(path);
        int pos = 0;
        TorchPickle.Machine? main = null;
        object? Next(bool deferred = false)
        {
            var m = new TorchPickle.Machine(path, all, _ => throw new SvgdException($"{path}: unexpected tensor outside the object pickle"), pos, deferred);
            var o = m.Run();
            pos = m.Position;
            if (deferred) main = m;
            return o;
        }

        if (Next() is not BigInteger magic || magic != MagicNumber) throw new SvgdException($"{path}: not a legacy PyTorch file (bad magic number)");
        if (Next() is not long protocol || protocol != ProtocolVersion) throw new SvgdException($"{path}: unsupported legacy PyTorch protocol version");
        if (Next() is Dictionary<object, object?> sys && sys.TryGetValue("little_endian", out var le) && le is false)
            throw new SvgdException($"{path}: big-endian checkpoints are not supported");
        object? root = Next(deferred: true);
        if (Next() is not List<object?> keys) throw new SvgdException($"{path}: corrupt legacy file (no storage key list after the object)");

        var twice = main!.Storages.GroupBy(s => s.Key).FirstOrDefault(g => g.Count() > 1);
        if (twice != null) throw new SvgdException($"{path}: corrupt legacy file (storage '{twice.Key}' is used with two element types)");
        var storages = main.Storages.ToDictionary(s => s.Key, s => s.Storage);
        foreach (var k in keys)
        {
            string key = k?.ToString() ?? "";
            if (!storages.TryGetValue(key, out var storage))
                throw new SvgdException($"{path}: corrupt legacy file (storage '{key}' is listed but never used)");
            if (pos + 8 > all.Length) throw new SvgdException($"{path}: storage '{key}' is cut short (truncated file?)");
            long numel = BitConverter.ToInt64(all, pos);
            pos += 8;
            long nbytes = numel * TorchPickle.ElementSize(storage.dtype);
            if (numel != storage.numel()) throw new SvgdException($"{path}: storage '{key}' holds {numel} elements, the pickle expects {storage.numel()}");
            if (pos + nbytes > all.Length) throw new SvgdException($"{path}: storage '{key}' is cut short (truncated file?)");
            if (nbytes > 0) all.AsSpan(pos, (int)nbytes).CopyTo(storage.bytes);
            pos += (int)nbytes;
            storages.Remove(key);
        }
        if (storages.Count > 0) throw new SvgdException($"{path}: corrupt legacy file (no data for storage(s) {string.Join(", ", storages.Keys)})");
        return Contiguous(root, path, 0);
    }

    // A pickle can make a list or dict that contains itself; past this depth it is taken for corrupt.
    const int MaxNesting = 64;

    /// <summary>Replaces the storage views made while unpickling by contiguous tensors.</summary>
    /// <param name="done">Tensors and containers already visited, by reference: the pickle memo lets one tensor
    /// (tied weights) or container appear in several places, and each is converted once.</param>
    static object? Contiguous(object? o, string path, int depth, Dictionary<object, object>? done = null)
    {
        if (depth > MaxNesting) throw new SvgdException($"{path}: containers nested more than {MaxNesting} deep (corrupt or self-referencing pickle)");
        done ??= new Dictionary<object, object>(ReferenceEqualityComparer.Instance);
        if (o != null && done.TryGetValue(o, out var seen)) return seen;
        if (o is Dictionary<object, object?> or List<object?> or object?[]) done[o] = o;
        switch (o)
        {
            case Tensor t:
            {
                var c = t.contiguous().clone();
                done[t] = c;
                t.Dispose();
                return c;
            }
            case Dictionary<object, object?> d:
                foreach (var k in d.Keys.ToList()) d[k] = Contiguous(d[k], path, depth + 1, done);
                return d;
            case List<object?> l:
                for (int i = 0; i < l.Count; i++) l[i] = Contiguous(l[i], path, depth + 1, done);
                return l;
            case object?[] a:
                for (int i = 0; i < a.Length; i++) a[i] = Contiguous(a[i], path, depth + 1, done);
                return a;
            default:
                return o;
        }
    }
}
