using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Distributed;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Data;

/// <summary>How <see cref="LatentCacheWriter"/> encodes a folder.</summary>
public sealed record LatentCacheOptions
{
    /// <summary>Also store each image's horizontal flip (right after the image), as diffusion training augments.</summary>
    public bool Flip { get; init; }
    /// <summary>Images per shard (each gives one latent, two with <see cref="Flip"/>).</summary>
    public int ImagesPerShard { get; init; } = 512;
    /// <summary>Images per encoder pass; with batch alignment this also decides each latent's statistics.</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>Store latents as bfloat16 (half the disk; they are read back as float32).</summary>
    public bool BFloat16 { get; init; }
    /// <summary>Recorded in the metadata only: where the autoencoder came from.</summary>
    public string? AutoencoderPath { get; init; }
    /// <summary>Replace a cache of other images, options or weights in the folder instead of failing.</summary>
    public bool Overwrite { get; init; }

    public LatentCacheOptions Validate()
    {
        if (ImagesPerShard <= 0) throw new SvgdException($"images per shard must be positive, got {ImagesPerShard}");
        if (BatchSize <= 0) throw new SvgdException($"the encoding batch size must be positive, got {BatchSize}");
        return this;
    }
}

/// <summary>
/// Encodes an image folder (centre crops at the autoencoder's size; labels from class sub-folders) into
/// a <see cref="LatentCache"/>. Each shard is written atomically and carries a fingerprint of everything
/// that decides its latents, so a rerun keeps the shards that are complete and encodes only the rest:
/// an interrupted run resumes, and a deleted or damaged shard is re-created alone.
/// </summary>
public sealed class LatentCacheWriter
{
    static readonly System.Text.RegularExpressions.Regex ShardName = new(@"^shard-(\d{5,})\.safetensors$");

    readonly ILatentAutoencoder _model;
    readonly ImageFolder _images;
    readonly List<string> _relative;
    readonly long[] _latentShape;

    public string Directory { get; }
    public LatentCacheOptions Options { get; }
    public int ImageCount => _images.Count;
    public int LatentsPerImage => Options.Flip ? 2 : 1;
    /// <summary>Latents the finished cache holds.</summary>
    public int Total => _images.Count * LatentsPerImage;
    public int ShardCount => (_images.Count + Options.ImagesPerShard - 1) / Options.ImagesPerShard;
    public string Fingerprint { get; }
    /// <summary>Shards encoded by the last <see cref="Write"/>.</summary>
    public int ShardsWritten { get; private set; }
    /// <summary>Shards found complete and kept by the last <see cref="Write"/>.</summary>
    public int ShardsSkipped { get; private set; }

    /// <summary>The alignment mode recorded with the cache; "none" for a VAE, whose latents are not aligned.</summary>
    string Alignment => _model is SvgAutoencoder svg ? svg.Alignment.Mode.ToString().ToLowerInvariant() : "none";

    public LatentCacheWriter(ILatentAutoencoder model, ImageFolder images, string directory, LatentCacheOptions? options = null)
    {
        _model = model;
        _images = images;
        Directory = directory;
        Options = (options ?? new LatentCacheOptions()).Validate();
        if (images.Count == 0) throw new SvgdException($"{images.Root}: no images to encode");
        bool folder = System.IO.Directory.Exists(images.Root);
        _relative = images.Files.Select(f => folder ? Path.GetRelativePath(images.Root, f).Replace('\\', '/') : Path.GetFileName(f)).ToList();

        _latentShape = new long[] { model.LatentChannels, model.LatentSize, model.LatentSize };
        Fingerprint = ComputeFingerprint();
    }

    string DtypeName => Options.BFloat16 ? "bfloat16" : "float32";
    static string ShardFile(int s) => $"shard-{s:D5}.safetensors";

    string ComputeFingerprint()
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var plan = new JsonObject
        {
            ["files"] = new JsonArray(_relative.Select(f => (JsonNode)f).ToArray()),
            ["labels"] = new JsonArray(_images.Labels.Select(l => (JsonNode)l).ToArray()),
            ["class_names"] = new JsonArray(_images.ClassNames.Select(c => (JsonNode)c).ToArray()),
            ["flip"] = Options.Flip,
            ["images_per_shard"] = Options.ImagesPerShard,
            ["batch_size"] = Options.BatchSize,
            ["dtype"] = DtypeName,
            ["alignment"] = Alignment,
            ["image_size"] = _model.ImageSize,
            ["latent_shape"] = new JsonArray(_latentShape.Select(d => (JsonNode)d).ToArray()),
        };
        sha.AppendData(Encoding.UTF8.GetBytes(plan.ToJsonString()));
        // The encoding weights: everything but the decoder (and any training-loss modules).
        using var scope = torch.NewDisposeScope();
        foreach (var (name, t) in _model.Module.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (name.StartsWith("decoder.", StringComparison.Ordinal) || name.StartsWith("loss.", StringComparison.Ordinal)) continue;
            sha.AppendData(Encoding.UTF8.GetBytes($"{name}|{t.dtype}|{Checkpoint.Shape(t.shape)}"));
            var c = t.detach().cpu().contiguous();
            if (c.numel() > 0) sha.AppendData(c.bytes);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>Encodes the shards not yet complete, writes <c>index.json</c> and opens the cache.</summary>
    /// <param name="progress">(latents done, total), after every encoder pass and every shard kept.</param>
    public LatentCache Write(Action<long, long>? progress = null, CancellationToken cancel = default) =>
        Write(SingleProcess.Instance, progress, cancel)!;

    /// <summary>
    /// <see cref="Write(Action{long, long}?, CancellationToken)"/> over the processes of <paramref name="comm"/>:
    /// each encodes its share of the missing shards and rank 0 writes every file, so the cache is the
    /// one a single process writes. Every process must call it; rank 0 gets the cache, the others null.
    /// </summary>
    /// <param name="progress">On rank 0: (latents done, total), after every shard (in one process: every encoder pass).</param>
    public LatentCache? Write(ICommunicator comm, Action<long, long>? progress = null, CancellationToken cancel = default)
    {
        Replicas.CheckSameSettings(comm, "image folder, cache options or autoencoder weights", $"cache fingerprint {Fingerprint}");
        ShardsWritten = ShardsSkipped = 0;
        _model.Module.eval();
        long done = 0;
        var infos = new List<LatentCacheShardInfo>();
        for (int s = 0; s < ShardCount; s++)
        {
            int firstImage = s * Options.ImagesPerShard;
            int images = Math.Min(Options.ImagesPerShard, _images.Count - firstImage);
            infos.Add(new LatentCacheShardInfo { File = ShardFile(s), First = firstImage * LatentsPerImage, Count = images * LatentsPerImage });
        }
        // Rank 0 owns the folder: it decides what is missing and tells the others.
        var missing = new List<int>();
        if (comm.IsRoot)
        {
            PrepareDirectory();
            for (int s = 0; s < ShardCount; s++)
            {
                if (!IsComplete(Path.Combine(Directory, infos[s].File), s, infos[s])) { missing.Add(s); continue; }
                ShardsSkipped++;
                done += infos[s].Count;
                progress?.Invoke(done, Total);
            }
        }
        var list = comm.Broadcast(comm.IsRoot ? missing.SelectMany(BitConverter.GetBytes).ToArray() : null);
        missing = Enumerable.Range(0, list.Length / 4).Select(i => BitConverter.ToInt32(list, 4 * i)).ToList();
        bool alone = comm.Size == 1;
        ShardedWork.Run(comm, missing,
            s =>
            {
                int firstImage = s * Options.ImagesPerShard;
                // One process reports and stops per encoder pass; a job only between rounds, all processes together.
                return EncodeShard(firstImage, Math.Min(Options.ImagesPerShard, _images.Count - firstImage),
                    alone ? n => progress?.Invoke(done += n, Total) : null, alone ? cancel : CancellationToken.None);
            },
            (s, latents) =>
            {
                WriteShard(Path.Combine(Directory, infos[s].File), s, infos[s], latents["latents"], latents["labels"]);
                ShardsWritten++;
                if (!alone) progress?.Invoke(done += infos[s].Count, Total);
            },
            alone ? null : () => cancel.IsCancellationRequested);
        if (!comm.IsRoot) return null;
        var index = new LatentCacheIndex
        {
            Count = Total, LatentShape = _latentShape, Dtype = DtypeName, ClassNames = _images.ClassNames.ToArray(), Flip = Options.Flip,
            ImageCount = _images.Count, ImagesPerShard = Options.ImagesPerShard, ImageRoot = Path.GetFullPath(_images.Root),
            Autoencoder = Options.AutoencoderPath, Alignment = Alignment,
            Fingerprint = Fingerprint, Shards = infos,
        };
        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(index, LatentCache.IndexJson));
        AtomicFile.Write(Path.Combine(Directory, LatentCache.IndexFile), fs => fs.Write(json));
        return LatentCache.Open(Directory);
    }

    /// <summary>Creates the folder, removes leftovers of interrupted writes, and refuses (or, with Overwrite, clears) another cache.</summary>
    void PrepareDirectory()
    {
        System.IO.Directory.CreateDirectory(Directory);
        foreach (var tmp in System.IO.Directory.EnumerateFiles(Directory, "*.tmp-*"))
        {
            string name = Path.GetFileName(tmp);
            if (name.StartsWith("shard-", StringComparison.Ordinal) || name.StartsWith(LatentCache.IndexFile, StringComparison.Ordinal))
                File.Delete(tmp);
        }
        var foreign = new List<string>();
        string indexPath = Path.Combine(Directory, LatentCache.IndexFile);
        if (File.Exists(indexPath))
        {
            string? fp = null;
            try { fp = JsonNode.Parse(File.ReadAllText(indexPath))?["fingerprint"]?.GetValue<string>(); }
            catch (Exception e) when (e is JsonException or InvalidOperationException) { }
            if (fp != Fingerprint) foreign.Add(LatentCache.IndexFile);
        }
        foreach (var file in System.IO.Directory.EnumerateFiles(Directory, "shard-*.safetensors"))
        {
            var m = ShardName.Match(Path.GetFileName(file));
            if (!m.Success) continue;
            string? fp = null;
            try { SafeTensors.ReadHeader(file).Metadata.TryGetValue(LatentCache.FingerprintKey, out fp); }
            catch (SvgdException) { continue; }                     // damaged: re-encoded if it is ours, harmless otherwise
            if (fp != Fingerprint) foreign.Add(Path.GetFileName(file));
        }
        if (foreign.Count == 0) return;
        if (!Options.Overwrite)
            throw new SvgdException($"{Directory}: holds a latent cache of other images, options or encoder weights ({string.Join(", ", foreign.Take(3))}{(foreign.Count > 3 ? ", ..." : "")}); use an empty folder or overwrite it");
        foreach (var name in foreign) File.Delete(Path.Combine(Directory, name));
    }

    bool IsComplete(string path, int shard, LatentCacheShardInfo info)
    {
        if (!File.Exists(path)) return false;
        try
        {
            var h = SafeTensors.ReadHeader(path);
            var meta = h.Metadata;
            if (!meta.TryGetValue(LatentCache.FingerprintKey, out var fp) || fp != Fingerprint) return false;
            if (!meta.TryGetValue(LatentCache.ShardKey, out var sk) || sk != shard.ToString(CultureInfo.InvariantCulture)) return false;
            var lat = h.Tensors.FirstOrDefault(t => t.Name == "latents");
            var lab = h.Tensors.FirstOrDefault(t => t.Name == "labels");
            return lat != null && lab != null
                && lat.Shape.SequenceEqual(new long[] { info.Count }.Concat(_latentShape))
                && lab.Shape.SequenceEqual(new long[] { info.Count });
        }
        catch (SvgdException)
        {
            return false;
        }
    }

    /// <summary>The latents and labels of one shard.</summary>
    Dictionary<string, Tensor> EncodeShard(int firstImage, int images, Action<long>? encoded, CancellationToken cancel)
    {
        using var scope = torch.NewDisposeScope();
        var parts = new List<Tensor>();
        int size = _model.ImageSize;
        for (int b = 0; b < images; b += Options.BatchSize)
        {
            cancel.ThrowIfCancellationRequested();
            using var batchScope = torch.NewDisposeScope();
            var idx = Enumerable.Range(firstImage + b, Math.Min(Options.BatchSize, images - b)).ToList();
            Tensor z;
            using (torch.inference_mode())
            {
                var x = _images.CenterBatch(idx, size);
                z = _model.EncodeImages(x);
                if (!z.shape.Skip(1).SequenceEqual(_latentShape))
                    throw new SvgdException($"the autoencoder gave latents {Checkpoint.Shape(z.shape)}, expected [B, {string.Join(", ", _latentShape)}]");
                if (Options.Flip)
                {
                    // Encoded as a batch of its own, like the originals, then interleaved: image, its flip, next image, ...
                    var zf = _model.EncodeImages(x.flip(3));
                    z = torch.stack(new[] { z, zf }, 1).reshape(new long[] { -1 }.Concat(_latentShape).ToArray());
                }
            }
            parts.Add((Options.BFloat16 ? z.to(ScalarType.BFloat16) : z.clone()).MoveToOuterDisposeScope());
            encoded?.Invoke(idx.Count * LatentsPerImage);
        }
        var latents = torch.cat(parts);
        var imageIdx = Enumerable.Range(firstImage, images).SelectMany(i => Enumerable.Repeat(i, LatentsPerImage)).ToList();
        var labels = torch.tensor(imageIdx.Select(i => (long)_images.Labels[i]).ToArray(), dtype: ScalarType.Int64);
        return new Dictionary<string, Tensor> { ["latents"] = latents.MoveToOuterDisposeScope(), ["labels"] = labels.MoveToOuterDisposeScope() };
    }

    void WriteShard(string path, int shard, LatentCacheShardInfo info, Tensor latents, Tensor labels)
    {
        int firstImage = info.First / LatentsPerImage, images = info.Count / LatentsPerImage;
        var imageIdx = Enumerable.Range(firstImage, images).SelectMany(i => Enumerable.Repeat(i, LatentsPerImage)).ToList();
        var flipped = imageIdx.Select((_, k) => Options.Flip && k % 2 == 1).ToList();
        var meta = new Dictionary<string, string>
        {
            [LatentCache.KindKey] = LatentCache.ShardKind,
            [LatentCache.FingerprintKey] = Fingerprint,
            [LatentCache.ShardKey] = shard.ToString(CultureInfo.InvariantCulture),
            [LatentCache.FirstKey] = info.First.ToString(CultureInfo.InvariantCulture),
            [LatentCache.ClassNamesKey] = new JsonArray(_images.ClassNames.Select(c => (JsonNode)c).ToArray()).ToJsonString(),
            [LatentCache.FilesKey] = new JsonArray(imageIdx.Select(i => (JsonNode)_relative[i]).ToArray()).ToJsonString(),
            [LatentCache.FlippedKey] = new JsonArray(flipped.Select(f => (JsonNode)f).ToArray()).ToJsonString(),
            [LatentCache.AutoencoderKey] = Options.AutoencoderPath ?? "",
            [LatentCache.AlignmentKey] = Alignment,
            [LatentCache.ImageRootKey] = Path.GetFullPath(_images.Root),
        };
        Runtime.Finite.Output(latents, $"the latents of {path}");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["latents"] = latents, ["labels"] = labels }, meta);
    }
}
