using static TorchSharp.torch;

namespace SvgDiffusion.Distributed;

/// <summary>
/// Independent work items (shards of an evaluation, of a latent cache) spread over the ranks: in round j
/// rank r computes item j·N + r, and rank 0 receives every result, in item order, to write it. Results
/// only depend on their item, so the files are those of a single-process run; only rank 0 needs to see
/// the output folder.
/// </summary>
public static class ShardedWork
{
    /// <param name="items">The items to compute, the same list on every rank.</param>
    /// <param name="compute">An item's results (CPU tensors); on rank 0 they are passed to <paramref name="onRoot"/>, elsewhere sent there.</param>
    /// <param name="onRoot">Rank 0's consumer of each item's results, called in item order.</param>
    /// <param name="stop">Polled on every rank before each round; when any rank says stop, every rank throws <see cref="OperationCanceledException"/>.</param>
    public static void Run(ICommunicator comm, IReadOnlyList<int> items, Func<int, Dictionary<string, Tensor>> compute,
        Action<int, Dictionary<string, Tensor>> onRoot, Func<bool>? stop = null)
    {
        for (int start = 0; start < items.Count; start += comm.Size)
        {
            if (AnyRank(comm, stop?.Invoke() ?? false)) throw new OperationCanceledException();
            int mine = start + comm.Rank;
            if (comm.Size == 1)
            {
                var result = compute(items[mine]);
                try { onRoot(items[mine], result); }
                finally { foreach (var t in result.Values) t.Dispose(); }
                continue;
            }
            byte[] payload = Array.Empty<byte>();
            if (mine < items.Count)
            {
                var result = compute(items[mine]);
                try { payload = TensorMessage.Pack(result); }
                finally { foreach (var t in result.Values) t.Dispose(); }
            }
            var all = comm.Gather(payload);
            if (!comm.IsRoot) continue;
            for (int r = 0; r < comm.Size && start + r < items.Count; r++)
            {
                var result = TensorMessage.Unpack(all[r]);
                try { onRoot(items[start + r], result); }
                finally { foreach (var t in result.Values) t.Dispose(); }
            }
        }
    }

    /// <summary>True on every rank when <paramref name="flag"/> is true on any (a collective: every rank must call it).</summary>
    public static bool AnyRank(ICommunicator comm, bool flag)
    {
        if (comm.Size == 1) return flag;
        var v = new[] { flag ? 1.0 : 0.0 };
        comm.AllreduceSum(v);
        return v[0] > 0;
    }
}
