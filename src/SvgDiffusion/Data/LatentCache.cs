using System.Text.Json;
using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Data;

/// <summary>One shard's entry in <c>index.json</c>: latents <c>First .. First + Count - 1</c> of the cache.</summary>
public sealed record LatentCacheShardInfo
{
    public string File { get; init; } = "";
    public int First { get; init; }
    public int Count { get; init; }
}

/// <summary>The <c>index.json</c> of a latent cache (snake_case keys).</summary>
public sealed record LatentCacheIndex
{
    public const string FormatName = "svgd_latent_cache";

    public string Format { get; init; } = FormatName;
    public int Version { get; init; } = 1;
    /// <summary>Latents in the cache (images, twice that with flips).</summary>
    public int Count { get; init; }
    /// <summary>[C, h, w] of one latent.</summary>
    public long[] LatentShape { get; init; } = Array.Empty<long>();
    /// <summary><c>float32</c> or <c>bfloat16</c>: how latents are stored; they are read as float32.</summary>
    public string Dtype { get; init; } = "float32";
    public string[] ClassNames { get; init; } = Array.Empty<string>();
    public bool Flip { get; init; }
    public int ImageCount { get; init; }
    public int ImagesPerShard { get; init; }
    public string ImageRoot { get; init; } = "";
    public string? Autoencoder { get; init; }
    /// <summary>The autoencoder's alignment mode while encoding (batch, stored, none).</summary>
    public string Alignment { get; init; } = "";
    /// <summary>SHA-256 of everything that decides the latents (files, labels, options, encoder weights); every shard carries it.</summary>
    public string Fingerprint { get; init; } = "";
    public List<LatentCacheShardInfo> Shards { get; init; } = new();
}

/// <summary>
/// SVG latents of an image folder, encoded once by <see cref="LatentCacheWriter"/> into safetensors
/// shards (<c>latents</c> [n, C, h, w], <c>labels</c> [n] int64) described by <c>index.json</c>.
/// Labels are read when the cache is opened; latents lazily, a whole shard at a time (kept in memory)
/// while the cache fits the memory budget, else row by row from the files.
/// </summary>
public sealed class LatentCache : IDisposable
{
    public const string IndexFile = "index.json";
    internal const string ShardKind = "latent_cache_shard";
    internal const string KindKey = "svgd.kind", FingerprintKey = "svgd.fingerprint", ShardKey = "svgd.shard", FirstKey = "svgd.first";
    internal const string ClassNamesKey = "svgd.class_names", FilesKey = "svgd.files", FlippedKey = "svgd.flipped";
    internal const string AutoencoderKey = "svgd.autoencoder", AlignmentKey = "svgd.alignment", ImageRootKey = "svgd.image_root";

    internal static readonly JsonSerializerOptions IndexJson = new(ConfigJson.Options) { WriteIndented = true };

    sealed class Shard
    {
        public required LatentCacheShardInfo Info { get; init; }
        public required string Path { get; init; }
        public required SafeTensors.Header Header { get; init; }
        public required SafeTensorInfo Latents { get; init; }
        public Tensor? Loaded { get; set; }
    }

    readonly List<Shard> _shards;
    readonly long[] _labels;
    readonly bool _keepInMemory;

    public string Directory { get; }
    public LatentCacheIndex Index { get; }
    public int Count => Index.Count;
    /// <summary>[C, h, w].</summary>
    public IReadOnlyList<long> LatentShape => Index.LatentShape;
    public int Channels => (int)Index.LatentShape[0];
    public IReadOnlyList<string> ClassNames => Index.ClassNames;
    public int NumClasses => Index.ClassNames.Length;
    public int ShardCount => _shards.Count;
    /// <summary>Bytes of all latents as stored.</summary>
    public long StoredBytes { get; }
    /// <summary>Whether shards are kept in memory once read (the cache fits the budget given to <see cref="Open"/>).</summary>
    public bool InMemory => _keepInMemory;

    LatentCache(string directory, LatentCacheIndex index, List<Shard> shards, long[] labels, long memoryBudgetBytes)
    {
        Directory = directory;
        Index = index;
        _shards = shards;
        _labels = labels;
        StoredBytes = shards.Sum(s => s.Latents.End - s.Latents.Begin);
        _keepInMemory = StoredBytes <= memoryBudgetBytes;
    }

    /// <summary>Opens a cache written by <see cref="LatentCacheWriter"/>, checking every shard's header against the index.</summary>
    /// <param name="memoryBudgetBytes">Caches up to this size are kept in memory once read.</param>
    public static LatentCache Open(string directory, long memoryBudgetBytes = 4L << 30)
    {
        string indexPath = Path.Combine(directory, IndexFile);
        if (!System.IO.Directory.Exists(directory)) throw new SvgdException($"{directory}: no such latent cache folder");
        if (!File.Exists(indexPath))
            throw new SvgdException($"{directory}: not a complete latent cache (no {IndexFile}; an interrupted 'cache-latents' run resumes when started again)");
        LatentCacheIndex index;
        try { index = JsonSerializer.Deserialize<LatentCacheIndex>(File.ReadAllText(indexPath), IndexJson) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new SvgdException($"{indexPath}: not a valid latent cache index ({e.Message.Split('\n')[0]})"); }
        // JSON null in place of a list or string: one line, not a null dereference further down.
        if (index.LatentShape == null || index.ClassNames == null || index.Dtype == null || index.Shards == null || index.ClassNames.Any(n => n == null))
            throw new SvgdException($"{indexPath}: latent_shape, class_names, dtype and shards must be present and not null");
        if (index.Format != LatentCacheIndex.FormatName) throw new SvgdException($"{indexPath}: format '{index.Format}' is not '{LatentCacheIndex.FormatName}'");
        if (index.Version != 1) throw new SvgdException($"{indexPath}: latent cache version {index.Version} is not supported (this build reads version 1)");
        if (index.LatentShape.Length != 3 || index.LatentShape.Any(d => d <= 0))
            throw new SvgdException($"{indexPath}: latent_shape must be [C, h, w], got {Checkpoint.Shape(index.LatentShape)}");
        if (index.ClassNames.Length == 0) throw new SvgdException($"{indexPath}: no class names");
        var storedType = ParseDtype(index.Dtype, indexPath);
        if (index.Count < 0) throw new SvgdException($"{indexPath}: count is {index.Count}; a latent cache holds 0 or more latents");
        if (index.Shards.Any(x => x == null || x.File == null)) throw new SvgdException($"{indexPath}: 'shards' must be a list of shard entries with a file name");

        var shards = new List<Shard>();
        var labels = new long[index.Count];
        int next = 0;
        foreach (var info in index.Shards)
        {
            string path = Path.Combine(directory, info.File);
            if (info.First != next || info.Count <= 0)
                throw new SvgdException($"{indexPath}: shard {info.File} covers latents {info.First}..{info.First + info.Count - 1}, expected to start at {next}");
            if (!File.Exists(path)) throw new SvgdException($"{path}: shard listed in {IndexFile} is missing (run 'cache-latents' again to re-create it)");
            var header = SafeTensors.ReadHeader(path);
            string where = $"{path}";
            if (!header.Metadata.TryGetValue(FingerprintKey, out var fp) || fp != index.Fingerprint)
                throw new SvgdException($"{where}: shard does not belong to this cache (its fingerprint differs from {IndexFile}'s; it was written from other images, options or encoder weights)");
            var lat = header.Tensors.FirstOrDefault(t => t.Name == "latents") ?? throw new SvgdException($"{where}: shard has no 'latents' tensor");
            var lab = header.Tensors.FirstOrDefault(t => t.Name == "labels") ?? throw new SvgdException($"{where}: shard has no 'labels' tensor");
            long[] want = new long[] { info.Count }.Concat(index.LatentShape).ToArray();
            if (!lat.Shape.SequenceEqual(want) || lat.Dtype != storedType)
                throw new SvgdException($"{where}: latents are {Checkpoint.Shape(lat.Shape)} {lat.DtypeName}, {IndexFile} says {Checkpoint.Shape(want)} {index.Dtype}");
            if (!lab.Shape.SequenceEqual(new long[] { info.Count }) || lab.Dtype != ScalarType.Int64)
                throw new SvgdException($"{where}: labels are {Checkpoint.Shape(lab.Shape)} {lab.DtypeName}, expected [{info.Count}] I64");
            using (var l = SafeTensors.Load(path, new[] { "labels" })["labels"])
            {
                var values = l.data<long>().ToArray();
                long bad = values.FirstOrDefault(v => v < 0 || v >= index.ClassNames.Length, -1);
                if (bad != -1) throw new SvgdException($"{where}: label {bad} is outside the {index.ClassNames.Length} classes");
                values.CopyTo(labels, info.First);
            }
            shards.Add(new Shard { Info = info, Path = path, Header = header, Latents = lat });
            next += info.Count;
        }
        if (next != index.Count) throw new SvgdException($"{indexPath}: shards hold {next} latents, the index says {index.Count}");
        if (index.Count == 0) throw new SvgdException($"{indexPath}: the cache is empty");
        return new LatentCache(directory, index, shards, labels, memoryBudgetBytes);
    }

    internal static ScalarType ParseDtype(string name, string source) => name switch
    {
        "float32" => ScalarType.Float32,
        "bfloat16" => ScalarType.BFloat16,
        _ => throw new SvgdException($"{source}: latent dtype '{name}' is not float32 or bfloat16"),
    };

    /// <summary>The label of latent <paramref name="index"/>.</summary>
    public long Label(int index) => _labels[CheckIndex(index)];

    /// <summary>All labels in cache order.</summary>
    public IReadOnlyList<long> Labels => _labels;

    int CheckIndex(int i) => (uint)i < (uint)Count ? i : throw new SvgdException($"latent index {i} is outside the cache's {Count} latents");

    (Shard Shard, int Row) Locate(int i)
    {
        int lo = 0, hi = _shards.Count - 1;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (_shards[mid].Info.First <= i) lo = mid; else hi = mid - 1;
        }
        return (_shards[lo], i - _shards[lo].Info.First);
    }

    /// <summary>Latents [B, C, h, w] float32 and labels [B] int64 of the given cache positions, in that order.</summary>
    public (Tensor Latents, Tensor Labels) Batch(IReadOnlyList<int> indices)
    {
        if (indices.Count == 0) throw new SvgdException("a latent batch needs at least one index");
        foreach (int i in indices) CheckIndex(i);
        using var scope = torch.NewDisposeScope();
        var rows = new Tensor[indices.Count];
        // Grouped by shard so each file is opened (or loaded) once per batch.
        foreach (var group in indices.Select((i, k) => (Pos: k, Loc: Locate(i))).GroupBy(x => x.Loc.Shard))
        {
            var shard = group.Key;
            if (_keepInMemory || shard.Loaded is not null)
            {
                var all = Load(shard);
                foreach (var (pos, loc) in group) rows[pos] = all[loc.Row];
            }
            else
            {
                using var fs = File.OpenRead(shard.Path);
                foreach (var (pos, loc) in group) rows[pos] = ReadRow(fs, shard, loc.Row);
            }
        }
        var latents = torch.stack(rows).to(ScalarType.Float32);
        var labels = torch.tensor(indices.Select(i => _labels[i]).ToArray(), dtype: ScalarType.Int64);
        return (latents.MoveToOuterDisposeScope(), labels.MoveToOuterDisposeScope());
    }

    /// <summary>A whole shard's latents as stored; kept when the cache is in memory.</summary>
    Tensor Load(Shard shard)
    {
        if (shard.Loaded is not null) return shard.Loaded;
        var t = SafeTensors.Load(shard.Path, new[] { "latents" })["latents"];
        if (_keepInMemory)
        {
            t.DetachFromDisposeScope();
            shard.Loaded = t;
        }
        return t;
    }

    static Tensor ReadRow(FileStream fs, Shard shard, int row)
    {
        var info = shard.Latents;
        long rowBytes = (info.End - info.Begin) / info.Shape[0];
        var bytes = new byte[rowBytes];
        fs.Seek(shard.Header.DataStart + info.Begin + row * rowBytes, SeekOrigin.Begin);
        try { fs.ReadExactly(bytes); }
        catch (EndOfStreamException) { throw new SvgdException($"{shard.Path}: latent {row} is cut short (truncated shard?)"); }
        return TensorBytes.FromBytes(bytes, info.Dtype, info.Shape[1..]);
    }

    /// <summary>Exact per-channel statistics over every latent of the cache (the normalisation diffusion trains with).</summary>
    public LatentStatistics ComputeStatistics(Action<long, long>? progress = null)
    {
        var acc = new LatentStatistics.Accumulator();
        long done = 0;
        foreach (var shard in _shards)
        {
            using var scope = torch.NewDisposeScope();
            var all = Load(shard);
            for (long s = 0; s < all.shape[0]; s += 256)
                acc.Add(all.narrow(0, s, Math.Min(256, all.shape[0] - s)));
            done += shard.Info.Count;
            progress?.Invoke(done, Count);
        }
        return acc.Result();
    }

    /// <summary>The source file (relative to the image root) and flip flag of each latent, from the shards' metadata.</summary>
    public IReadOnlyList<(string File, bool Flipped)> Sources()
    {
        var result = new List<(string, bool)>(Count);
        foreach (var shard in _shards)
        {
            var meta = shard.Header.Metadata;
            if (!meta.TryGetValue(FilesKey, out var f) || !meta.TryGetValue(FlippedKey, out var fl))
                throw new SvgdException($"{shard.Path}: no source file list in the metadata");
            var files = JsonNode.Parse(f)!.AsArray().Select(n => n!.GetValue<string>()).ToList();
            var flipped = JsonNode.Parse(fl)!.AsArray().Select(n => n!.GetValue<bool>()).ToList();
            if (files.Count != shard.Info.Count || flipped.Count != shard.Info.Count)
                throw new SvgdException($"{shard.Path}: the source list has {files.Count} entries for {shard.Info.Count} latents");
            result.AddRange(files.Zip(flipped));
        }
        return result;
    }

    public void Dispose()
    {
        foreach (var s in _shards)
        {
            s.Loaded?.Dispose();
            s.Loaded = null;
        }
    }
}
