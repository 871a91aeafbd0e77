using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Data;

/// <summary>
/// An image folder as a dataset: images in class sub-folders (labels = sorted sub-folder names, as
/// torchvision's ImageFolder) or loose (one unnamed class). Decoded images are cached in memory up to a
/// budget, since small training sets are read many times.
/// </summary>
public sealed class ImageFolder
{
    readonly Dictionary<int, Tensor> _cache = new();
    long _cachedBytes;

    public string Root { get; }
    public IReadOnlyList<string> Files { get; }
    public IReadOnlyList<int> Labels { get; }
    public IReadOnlyList<string> ClassNames { get; }
    public long CacheBudgetBytes { get; init; } = 2L << 30;
    public int Count => Files.Count;

    /// <param name="checkHeaders">Read every file's header now (<see cref="ImageFiles.CheckHeaders"/>): a corrupt image is
    /// refused before training starts, not when a batch first draws it.</param>
    public ImageFolder(string root, bool checkHeaders = true)
    {
        Root = root;
        var files = ImageFiles.List(root);
        if (checkHeaders) ImageFiles.CheckHeaders(files);
        bool isFolder = Directory.Exists(root);
        var classOf = files.Select(f =>
        {
            if (!isFolder) return "";
            var rel = Path.GetRelativePath(root, f);
            int slash = rel.IndexOfAny(new[] { '/', '\\' });
            return slash < 0 ? "" : rel[..slash];
        }).ToList();
        var names = classOf.Distinct().OrderBy(n => n, StringComparer.Ordinal).ToList();
        Files = files;
        ClassNames = names;
        Labels = classOf.Select(c => names.IndexOf(c)).ToList();
    }

    /// <summary>RGB uint8 [3, H, W] of image <paramref name="index"/>.</summary>
    public Tensor Rgb(int index)
    {
        if (_cache.TryGetValue(index, out var t)) return t.alias();
        var img = ImageFiles.LoadRgb(Files[index]);
        long bytes = img.numel();
        if (_cachedBytes + bytes <= CacheBudgetBytes)
        {
            _cache[index] = img.alias().DetachFromDisposeScope();
            _cachedBytes += bytes;
        }
        return img;
    }

    /// <summary>
    /// A training batch in [-1, 1]: shorter side resized to <paramref name="size"/>, a random
    /// size x size crop and a random horizontal flip, drawn from <paramref name="generator"/>.
    /// </summary>
    public Tensor TrainingBatch(IReadOnlyList<int> indices, int size, Generator generator) =>
        TrainingBatch(indices, size, _ => generator);

    /// <summary>Like the above, image k's crop and flip drawn from <paramref name="random"/>'s k-th stream (see <see cref="Distributed.SampleRandom"/>).</summary>
    public Tensor TrainingBatch(IReadOnlyList<int> indices, int size, Distributed.SampleRandom random)
    {
        if (indices.Count != random.Count) throw new InvalidOperationException($"{indices.Count} images but {random.Count} sample streams");
        return TrainingBatch(indices, size, k => random[k]);
    }

    Tensor TrainingBatch(IReadOnlyList<int> indices, int size, Func<int, Generator> generatorOf)
    {
        using var scope = torch.NewDisposeScope();
        var items = new List<Tensor>();
        for (int k = 0; k < indices.Count; k++)
        {
            int i = indices[k];
            var generator = generatorOf(k);
            var x = ResizeShorter(Rgb(i), size);
            long h = x.shape[1], w = x.shape[2];
            long top = h > size ? torch.randint(0, h - size + 1, new long[] { 1 }, generator: generator).item<long>() : 0;
            long left = w > size ? torch.randint(0, w - size + 1, new long[] { 1 }, generator: generator).item<long>() : 0;
            x = x.narrow(1, top, size).narrow(2, left, size);
            if (torch.rand(1, generator: generator).item<float>() < 0.5f) x = x.flip(2);
            items.Add(x);
        }
        return (torch.stack(items) * 2.0 - 1.0).MoveToOuterDisposeScope();
    }

    /// <summary>An evaluation batch in [-1, 1]: shorter side resized, centre crop.</summary>
    public Tensor CenterBatch(IEnumerable<int> indices, int size)
    {
        using var scope = torch.NewDisposeScope();
        var items = indices.Select(i => CenterCrop(ResizeShorter(Rgb(i), size), size)).ToList();
        return (torch.stack(items) * 2.0 - 1.0).MoveToOuterDisposeScope();
    }

    /// <summary>[3, h, w] uint8 -> [3, H, W] float in [0, 1] with min(H, W) = size (antialiased bilinear).</summary>
    public static Tensor ResizeShorter(Tensor rgb, int size)
    {
        long h = rgb.shape[1], w = rgb.shape[2];
        double s = (double)size / Math.Min(h, w);
        int nh = Math.Max(size, (int)Math.Round(h * s)), nw = Math.Max(size, (int)Math.Round(w * s));
        return new Preprocessing(nh, nw).ResizeUnit(rgb);
    }

    public static Tensor CenterCrop(Tensor x, int size)
    {
        long h = x.shape[1], w = x.shape[2];
        return x.narrow(1, (h - size) / 2, size).narrow(2, (w - size) / 2, size);
    }
}
