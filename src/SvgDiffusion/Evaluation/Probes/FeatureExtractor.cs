using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Encoders;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation.Probes;

/// <summary>What a probe is fed: one vector per image (classification) or a grid of patch features (segmentation).</summary>
public enum ProbeFeatureKind { Vector, Grid }

/// <summary>How <see cref="FeatureExtractor"/> runs over a dataset.</summary>
public sealed record ExtractionOptions
{
    public int BatchSize { get; init; } = 32;
    /// <summary>Folder of the feature cache; null disables caching.</summary>
    public string? CacheDir { get; init; }
    /// <summary>Called after each batch the network encodes with (images done, total); never on a cache hit.</summary>
    public Action<int, int>? Progress { get; init; }
}

/// <summary>Features of a whole dataset, on the CPU, float32.</summary>
public sealed class ProbeFeatures : IDisposable
{
    /// <summary>[N, F] vectors or [N, D, h, w] grids.</summary>
    public Tensor Features { get; }
    /// <summary>Class labels [N] int64 for an <see cref="ImageFolder"/>; null otherwise.</summary>
    public Tensor? Labels { get; }
    public ProbeFeatureKind Kind { get; }
    /// <summary>True when the features were read from the cache rather than computed.</summary>
    public bool FromCache { get; }
    public string? CachePath { get; }
    /// <summary>The description the cache file is keyed by.</summary>
    public string Key { get; }
    public long Count => Features.shape[0];

    public ProbeFeatures(Tensor features, Tensor? labels, ProbeFeatureKind kind, bool fromCache, string? cachePath, string key)
    {
        Features = features; Labels = labels; Kind = kind; FromCache = fromCache; CachePath = cachePath; Key = key;
    }

    /// <summary>The rows <paramref name="indices"/> (features and labels), e.g. for a train / validation split.</summary>
    public (Tensor Features, Tensor? Labels) Select(IReadOnlyList<int> indices)
    {
        using var idx = torch.tensor(indices.Select(i => (long)i).ToArray());
        return (Features.index_select(0, idx), Labels?.index_select(0, idx));
    }

    public void Dispose() { Features.Dispose(); Labels?.Dispose(); }
}

/// <summary>
/// Turns images into the frozen features a representation probe is trained on, from either a frozen
/// encoder (DINOv3 or another <see cref="IFrozenEncoder"/>) or an SVG autoencoder's latent:
/// <list type="bullet">
/// <item>vectors: for an encoder, the global (class) token concatenated with the mean patch token, as
/// the DINOv2/v3 linear-probe protocol does ([B, 2D]; the mean patch token alone, [B, D], for an
/// encoder without a global token); for an autoencoder, the SVG latent averaged over its grid ([B, C]);</item>
/// <item>grids: the patch features as an image, [B, D, h, w] (encoder patch tokens, or the SVG latent).</item>
/// </list>
/// Images enter in [-1, 1] and are ImageNet-normalised here. Over a dataset, features are computed once
/// and cached in a safetensors file whose name and metadata carry a hash of the network (kind, identity,
/// a fingerprint of its weights), the image list (paths, sizes, modification times), the resolution and
/// the feature kind; a later run with the same inputs reads the file instead of running the network.
/// The network is put in eval mode while it runs, and restored afterwards.
/// </summary>
public sealed class FeatureExtractor
{
    public const string CacheFormat = "svgd.probe_features.v1";
    const string KeyMetadata = "svgd.probe_key", FormatMetadata = "svgd.format";

    readonly IFrozenEncoder? _encoder;
    readonly SvgAutoencoder? _autoencoder;
    readonly nn.Module? _module;

    /// <summary>"dinov3", another encoder's kind, or "svg" for an autoencoder latent.</summary>
    public string Kind { get; }
    /// <summary>What the network is (its checkpoint path, usually); part of the cache key.</summary>
    public string Identity { get; }
    /// <summary>Input pixels per grid cell: image sides must be multiples of it.</summary>
    public int Stride { get; }
    /// <summary>Length of a feature vector.</summary>
    public int VectorDim { get; }
    /// <summary>Channels of a grid feature.</summary>
    public int GridDim { get; }
    /// <summary>Images run through the network so far by the dataset extractions (cache hits add none).</summary>
    public long EncodedImages { get; private set; }

    /// <param name="identity">What the encoder is, usually its checkpoint path (whose size and modification time then also enter the cache key).</param>
    /// <param name="hasGlobalToken">Whether <paramref name="encoder"/> returns a global token (its vectors are then 2D long); DINOv3 does.</param>
    public FeatureExtractor(IFrozenEncoder encoder, string? identity = null, bool hasGlobalToken = true)
    {
        _encoder = encoder;
        _module = encoder as nn.Module;
        Kind = encoder.Kind;
        Identity = identity ?? "";
        Stride = encoder.Stride;
        GridDim = encoder.FeatureDim;
        VectorDim = hasGlobalToken ? 2 * encoder.FeatureDim : encoder.FeatureDim;
    }

    /// <param name="identity">What the autoencoder is, usually its checkpoint path.</param>
    public FeatureExtractor(SvgAutoencoder autoencoder, string? identity = null)
    {
        _autoencoder = autoencoder;
        _module = autoencoder;
        Kind = "svg";
        Identity = identity ?? "";
        Stride = autoencoder.Config.SemanticStride;
        GridDim = autoencoder.Config.LatentChannels;
        VectorDim = GridDim;
    }

    /// <summary>Feature vectors [B, <see cref="VectorDim"/>] of images in [-1, 1].</summary>
    public Tensor Vectors(Tensor images) => InEval(() => Compute(images, ProbeFeatureKind.Vector));

    /// <summary>Patch-feature grids [B, <see cref="GridDim"/>, h, w] of images in [-1, 1].</summary>
    public Tensor Grid(Tensor images) => InEval(() => Compute(images, ProbeFeatureKind.Grid));

    Tensor Compute(Tensor images, ProbeFeatureKind kind)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        // The network's own precision (bf16 after --precision bf16); its weights' fingerprint already keys the cache apart.
        var x = SvgAutoencoder.ToEncoderInput(images.to(ModelDevice)).to(ModelDtype);
        Tensor result;
        if (_autoencoder != null)
        {
            var latent = _autoencoder.Encode(x);
            result = kind == ProbeFeatureKind.Grid ? latent : latent.mean(new long[] { 2, 3 });
        }
        else
        {
            using var f = _encoder!.Encode(x);
            if (f.Patch.dim() != 3 || f.Patch.shape[1] != (long)f.GridH * f.GridW)
                throw new SvgdException($"{Kind} encoder returned patch features {Checkpoint.Shape(f.Patch.shape)} for a {f.GridH}x{f.GridW} grid");
            if (kind == ProbeFeatureKind.Grid)
                result = f.Patch.transpose(1, 2).reshape(f.Patch.shape[0], f.Patch.shape[2], f.GridH, f.GridW);
            else
            {
                var meanPatch = f.Patch.mean(new long[] { 1 });
                result = VectorDim == GridDim ? meanPatch
                    : torch.cat(new[] { f.Global ?? throw new SvgdException($"{Kind} encoder returned no global token; construct the extractor with hasGlobalToken: false"), meanPatch }, 1);
            }
        }
        return result.to(ScalarType.Float32).cpu().contiguous().MoveToOuterDisposeScope();
    }

    Device ModelDevice => _module?.parameters().FirstOrDefault()?.device ?? torch.CPU;
    ScalarType ModelDtype => _module?.parameters().FirstOrDefault()?.dtype ?? ScalarType.Float32;

    T InEval<T>(Func<T> run)
    {
        bool wasTraining = _module?.training ?? false;
        _module?.eval();
        try { return run(); }
        finally { if (wasTraining) _module!.train(); }
    }

    /// <summary>Class-probe vectors of every image of <paramref name="data"/> (centre crops of side <paramref name="size"/>), with its labels.</summary>
    public ProbeFeatures ExtractVectors(ImageFolder data, int size, ExtractionOptions? options = null) =>
        Extract(data.Files, idx => data.CenterBatch(idx, size), ProbeFeatureKind.Vector, size, options, data.Labels);

    /// <summary>Patch grids of every image of <paramref name="data"/>, with its labels.</summary>
    public ProbeFeatures ExtractGrids(ImageFolder data, int size, ExtractionOptions? options = null) =>
        Extract(data.Files, idx => data.CenterBatch(idx, size), ProbeFeatureKind.Grid, size, options, data.Labels);

    /// <summary>Patch grids of every image of a segmentation set (same crops as <see cref="SegmentationFolder.CenterBatch"/>).</summary>
    public ProbeFeatures ExtractGrids(SegmentationFolder data, int size, ExtractionOptions? options = null) =>
        Extract(data.Images, idx => data.ImageBatch(idx, size), ProbeFeatureKind.Grid, size, options, null);

    /// <summary>
    /// Features of the images <paramref name="files"/>, batches of which <paramref name="loadBatch"/> loads
    /// (in [-1, 1], side <paramref name="size"/>), cached under <see cref="ExtractionOptions.CacheDir"/>.
    /// </summary>
    public ProbeFeatures Extract(IReadOnlyList<string> files, Func<IReadOnlyList<int>, Tensor> loadBatch, ProbeFeatureKind kind, int size,
        ExtractionOptions? options = null, IReadOnlyList<int>? labels = null)
    {
        options ??= new ExtractionOptions();
        if (options.BatchSize < 1) throw new SvgdException($"batch size must be positive, got {options.BatchSize}");
        if (size <= 0 || size % Stride != 0) throw new SvgdException($"image size {size} must be a positive multiple of the {Kind} stride {Stride}");
        if (_autoencoder != null && size != _autoencoder.Config.ResidualVit.ImageSize)
            throw new SvgdException($"this SVG autoencoder encodes {_autoencoder.Config.ResidualVit.ImageSize}x{_autoencoder.Config.ResidualVit.ImageSize} images (its residual ViT's size), not {size}x{size}");
        if (files.Count == 0) throw new SvgdException("no images to extract features from");
        if (labels != null && labels.Count != files.Count) throw new SvgdException($"{labels.Count} labels for {files.Count} images");
        Tensor? labelTensor = labels == null ? null : torch.tensor(labels.Select(l => (long)l).ToArray());

        string key = CacheKey(files, kind, size, options.BatchSize);
        string? cachePath = options.CacheDir == null ? null
            : Path.Combine(options.CacheDir, $"{Kind}-{kind.ToString().ToLowerInvariant()}-{size}-{Hash(key)[..16]}.safetensors");
        if (cachePath != null && TryLoad(cachePath, key, files.Count) is { } cached)
            return new ProbeFeatures(cached, labelTensor, kind, true, cachePath, key);

        var parts = new List<Tensor>();
        try
        {
            InEval(() =>
            {
                for (int start = 0; start < files.Count; start += options.BatchSize)
                {
                    var idx = Enumerable.Range(start, Math.Min(options.BatchSize, files.Count - start)).ToList();
                    using (var images = loadBatch(idx))
                    {
                        if (images.dim() != 4 || images.shape[0] != idx.Count)
                            throw new SvgdException($"image batch has shape {Checkpoint.Shape(images.shape)}, expected [{idx.Count}, 3, {size}, {size}]");
                        parts.Add(Compute(images, kind));
                    }
                    EncodedImages += idx.Count;
                    options.Progress?.Invoke(start + idx.Count, files.Count);
                }
                return 0;
            });
            var features = torch.cat(parts, 0);
            if (cachePath != null)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(cachePath))!);
                SafeTensors.Save(cachePath, new[] { KeyValuePair.Create("features", features) },
                    new Dictionary<string, string> { [FormatMetadata] = CacheFormat, [KeyMetadata] = key });
            }
            return new ProbeFeatures(features, labelTensor, kind, false, cachePath, key);
        }
        finally { foreach (var p in parts) p.Dispose(); }
    }

    static Tensor? TryLoad(string path, string key, int count)
    {
        if (!File.Exists(path)) return null;
        try
        {
            var header = SafeTensors.ReadHeader(path);
            if (!header.Metadata.TryGetValue(KeyMetadata, out var stored) || stored != key) return null;
            var t = SafeTensors.Load(path, new[] { "features" })["features"];
            if (t.shape[0] == count) return t;
            t.Dispose();
            return null;
        }
        catch (SvgdException) { return null; }   // unreadable cache: recompute and overwrite
    }

    /// <summary>
    /// The text the cache is keyed by: format, network kind, identity (plus size and modification time when
    /// it names a file), weight fingerprint, feature kind, resolution, and a hash of the image list
    /// (full paths, sizes, modification times). An SVG latent's residual alignment may use batch statistics,
    /// so for <c>svg</c> the batch size is part of the key too.
    /// </summary>
    public string CacheKey(IReadOnlyList<string> files, ProbeFeatureKind kind, int size, int batchSize)
    {
        var sb = new StringBuilder();
        sb.Append(CacheFormat).Append('\n');
        sb.Append("kind=").Append(Kind).Append('\n');
        sb.Append("identity=").Append(Identity);
        if (Identity.Length > 0 && File.Exists(Identity))
        {
            var fi = new FileInfo(Identity);
            sb.Append(" (").Append(fi.Length).Append(" bytes, ").Append(fi.LastWriteTimeUtc.Ticks).Append(')');
        }
        sb.Append('\n');
        sb.Append("weights=").Append(WeightsFingerprint()).Append('\n');
        if (_autoencoder != null)
            sb.Append("config=").Append(Hash(ConfigJson.Serialize(_autoencoder.Config))[..16]).Append(" batch=").Append(batchSize).Append('\n');
        sb.Append("features=").Append(kind.ToString().ToLowerInvariant()).Append(" size=").Append(size).Append('\n');
        var list = new StringBuilder();
        foreach (var f in files)
        {
            var fi = new FileInfo(f);
            list.Append(Path.GetFullPath(f)).Append('|').Append(fi.Exists ? fi.Length : -1).Append('|').Append(fi.Exists ? fi.LastWriteTimeUtc.Ticks : 0).Append('\n');
        }
        sb.Append("images=").Append(files.Count).Append(' ').Append(Hash(list.ToString()));
        return sb.ToString();
    }

    /// <summary>A hash of every tensor of the network's state (sum and sum of squares in float64); empty for an encoder that is not an nn.Module.</summary>
    string WeightsFingerprint()
    {
        if (_module == null) return "";
        var sb = new StringBuilder();
        using (torch.no_grad())
            foreach (var (name, t) in _module.state_dict())
            {
                using var scope = torch.NewDisposeScope();
                var d = t.detach().to(ScalarType.Float64);
                sb.Append(name).Append(':').Append(Checkpoint.Shape(t.shape)).Append(':')
                  .Append(d.sum().item<double>().ToString("R", CultureInfo.InvariantCulture)).Append(':')
                  .Append(d.square().sum().item<double>().ToString("R", CultureInfo.InvariantCulture)).Append('\n');
            }
        return Hash(sb.ToString())[..32];
    }

    static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
