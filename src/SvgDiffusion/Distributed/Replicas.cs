using System.Security.Cryptography;
using System.Text;
using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Distributed;

/// <summary>
/// Keeps the ranks' copies of a run identical: settings compared before anything else (a rank with
/// another config or dataset would silently train something else), weights and optimiser state sent
/// from rank 0, and a checksum that proves every copy equal.
/// </summary>
public static class Replicas
{
    /// <summary>
    /// Fails on every rank when a rank's <paramref name="settings"/> (one fact per line) differ from rank 0's,
    /// naming the rank and the first differing line.
    /// </summary>
    public static void CheckSameSettings(ICommunicator comm, string what, string settings)
    {
        if (comm.Size == 1) return;
        var all = comm.Allgather(Encoding.UTF8.GetBytes(settings)).Select(Encoding.UTF8.GetString).ToArray();
        for (int r = 1; r < all.Length; r++)
        {
            if (all[r] == all[0]) continue;
            var a = all[0].Split('\n');
            var b = all[r].Split('\n');
            int i = 0;
            while (i < a.Length && i < b.Length && a[i] == b[i]) i++;
            string ra = i < a.Length ? Short(a[i]) : "(nothing)", rb = i < b.Length ? Short(b[i]) : "(nothing)";
            throw new SvgdException($"rank {r} has another {what} than rank 0 ({rb} vs {ra}); every process must be started with the same options and see the same files") { Collective = true };
        }
    }

    static string Short(string line) => line.Length <= 120 ? line : line[..117] + "...";

    /// <summary>A hash of the tensors' names, dtypes, shapes and bytes.</summary>
    public static string Checksum(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var scope = torch.NewDisposeScope();
        foreach (var (name, t) in tensors)
        {
            sha.AppendData(Encoding.UTF8.GetBytes($"{name}|{t.dtype}|{Checkpoint.Shape(t.shape)}\n"));
            var c = t.detach().cpu().contiguous();
            if (c.numel() > 0) sha.AppendData(c.bytes);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>Fails on every rank unless every rank's tensors hash the same as rank 0's.</summary>
    public static void Verify(ICommunicator comm, string what, IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        if (comm.Size == 1) return;
        var sums = comm.Allgather(Encoding.ASCII.GetBytes(Checksum(tensors))).Select(Encoding.ASCII.GetString).ToArray();
        var differ = Enumerable.Range(1, sums.Length - 1).Where(r => sums[r] != sums[0]).ToList();
        if (differ.Count > 0)
            throw new SvgdException($"the {what} of rank{(differ.Count > 1 ? "s" : "")} {string.Join(", ", differ)} differ from rank 0's (checksum {sums[differ[0]][..12]} vs {sums[0][..12]})") { Collective = true };
    }

    /// <summary>Gives every rank rank 0's values of <paramref name="tensors"/> (contiguous CPU tensors, written in place)
    /// in a few flat byte broadcasts, then verifies the copies.</summary>
    public static void Broadcast(ICommunicator comm, string what, IReadOnlyList<KeyValuePair<string, Tensor>> tensors)
    {
        if (comm.Size == 1) return;
        const long GroupBytes = 256L << 20;
        var group = new List<Tensor>();
        long groupBytes = 0;
        void Flush()
        {
            if (group.Count == 0) return;
            using var flat = torch.empty(groupBytes, dtype: ScalarType.Byte);
            int off = 0;
            if (comm.IsRoot)
                foreach (var t in group) { var b = t.bytes; b.CopyTo(flat.bytes.Slice(off)); off += b.Length; }
            comm.Broadcast(flat);
            off = 0;
            if (!comm.IsRoot)
                foreach (var t in group) { var b = t.bytes; flat.bytes.Slice(off, b.Length).CopyTo(b); off += b.Length; }
            group.Clear();
            groupBytes = 0;
        }
        foreach (var (name, t) in tensors)
        {
            if (t.device_type != DeviceType.CPU || !t.is_contiguous())
                throw new InvalidOperationException($"'{name}' must be a contiguous CPU tensor to be broadcast");
            long n = t.numel() * t.ElementSize;
            if (n == 0) continue;
            if (n > GroupBytes) { Flush(); comm.Broadcast(t); continue; }
            if (groupBytes + n > GroupBytes) Flush();
            group.Add(t);
            groupBytes += n;
        }
        Flush();
        Verify(comm, what, tensors);
    }

    /// <summary>
    /// Gives every rank rank 0's Adam/AdamW state (step counts and moments, written in place into the
    /// optimiser's own tensors), then verifies the copies. Not through the serialised blob of a checkpoint:
    /// that takes several copies of the state in managed memory.
    /// </summary>
    public static void Broadcast(ICommunicator comm, string what, TorchSharp.Modules.OptimizerHelper optimizer)
    {
        if (comm.Size == 1) return;
        var states = optimizer.state_dict().State;
        var tensors = new List<KeyValuePair<string, Tensor>>();
        var steps = new long[states.Count];
        for (int i = 0; i < states.Count; i++)
        {
            (long step, Tensor?[] moments) = states[i] switch
            {
                TorchSharp.Modules.Adam.State a => (a.step, new[] { a.exp_avg, a.exp_avg_sq, a.max_exp_avg_sq }),
                TorchSharp.Modules.AdamW.State w => (w.step, new[] { w.exp_avg, w.exp_avg_sq, w.max_exp_avg_sq }),
                var other => throw new NotSupportedException($"{what}: cannot send an optimiser state of type {other.GetType().Name}"),
            };
            steps[i] = step;
            for (int k = 0; k < moments.Length; k++)
                if (moments[k] is Tensor t) tensors.Add(KeyValuePair.Create($"{i}.{k}", t));
        }
        var bytes = comm.Broadcast(comm.IsRoot ? steps.SelectMany(BitConverter.GetBytes).ToArray() : null);
        for (int i = 0; i < states.Count; i++)
        {
            long step = BitConverter.ToInt64(bytes, 8 * i);
            if (states[i] is TorchSharp.Modules.Adam.State a) a.step = step;
            else if (states[i] is TorchSharp.Modules.AdamW.State w) w.step = step;
        }
        using (torch.no_grad()) Broadcast(comm, what, tensors);
    }
}
