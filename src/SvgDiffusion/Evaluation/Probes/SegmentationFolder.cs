using SvgDiffusion.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation.Probes;

/// <summary>
/// A semantic-segmentation dataset on disk: <c>images/</c> and <c>labels/</c> (or <c>annotations/</c>,
/// ADE20K's name) below a root, optionally with a split sub-folder in both (<c>images/training</c>,
/// <c>annotations/training</c>). Images and labels pair by relative path without extension
/// (<c>images/a/x.jpg</c> with <c>labels/a/x.png</c>). A label map is a greyscale PNG whose pixel values
/// are class indices, 255 meaning "ignore"; palette or colour-coded PNGs are rejected, since their
/// decoded colours are not class indices (convert them to index maps first).
/// </summary>
public sealed class SegmentationFolder
{
    public const int DefaultIgnoreIndex = 255;

    public string Root { get; }
    public IReadOnlyList<string> Images { get; }
    public IReadOnlyList<string> LabelFiles { get; }
    public int Count => Images.Count;

    public SegmentationFolder(string root, string? split = null)
    {
        Root = root;
        string imageDir = Path.Combine(root, "images");
        string? labelDir = new[] { "labels", "annotations" }.Select(n => Path.Combine(root, n)).FirstOrDefault(Directory.Exists);
        if (!Directory.Exists(imageDir) || labelDir == null)
            throw new SvgdException($"{root}: a segmentation folder needs images/ and labels/ (or annotations/) sub-folders");
        if (split != null) { imageDir = Path.Combine(imageDir, split); labelDir = Path.Combine(labelDir, split); }
        if (!Directory.Exists(labelDir)) throw new SvgdException($"{labelDir}: no such folder");
        var images = ImageFiles.List(imageDir);
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var f in Directory.EnumerateFiles(labelDir, "*.png", SearchOption.AllDirectories))
            labels[Stem(labelDir, f)] = f;
        var missing = images.Where(f => !labels.ContainsKey(Stem(imageDir, f))).ToList();
        if (missing.Count > 0)
            throw new SvgdException($"{root}: {missing.Count} image(s) have no label PNG in {labelDir}, e.g. {string.Join(", ", missing.Take(3).Select(f => Path.GetRelativePath(imageDir, f)))}");
        Images = images;
        LabelFiles = images.Select(f => labels[Stem(imageDir, f)]).ToList();
    }

    static string Stem(string dir, string file)
    {
        var rel = Path.GetRelativePath(dir, file);
        return Path.Combine(Path.GetDirectoryName(rel) ?? "", Path.GetFileNameWithoutExtension(rel)).Replace('\\', '/');
    }

    /// <summary>The label map of item <paramref name="index"/>: [H, W] int64 class indices.</summary>
    public Tensor Label(int index)
    {
        using var scope = torch.NewDisposeScope();
        string path = LabelFiles[index];
        var rgb = ImageFiles.LoadRgb(path);
        if (!rgb[0].eq(rgb[1]).all().item<bool>() || !rgb[0].eq(rgb[2]).all().item<bool>())
            throw new SvgdException($"{path}: label PNG is not greyscale (a palette or colour-coded map?); labels must be 8-bit index maps, 255 = ignore");
        return rgb[0].to(ScalarType.Int64).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Images in [-1, 1] [B, 3, size, size] (shorter side resized, antialiased bilinear, centre crop, as
    /// <see cref="ImageFolder.CenterBatch"/>) and their labels [B, size, size] int64 put through the same
    /// geometry with nearest-neighbour resampling. Metrics are computed at this resolution.
    /// </summary>
    public (Tensor Images, Tensor Labels) CenterBatch(IReadOnlyList<int> indices, int size)
    {
        using var scope = torch.NewDisposeScope();
        var images = new List<Tensor>();
        var labels = new List<Tensor>();
        foreach (int i in indices)
        {
            var rgb = ImageFiles.LoadRgb(Images[i]);
            var label = Label(i);
            if (rgb.shape[1] != label.shape[0] || rgb.shape[2] != label.shape[1])
                throw new SvgdException($"{LabelFiles[i]}: label is {label.shape[1]}x{label.shape[0]} but its image {Images[i]} is {rgb.shape[2]}x{rgb.shape[1]}");
            images.Add(ImageFolder.CenterCrop(ImageFolder.ResizeShorter(rgb, size), size));
            labels.Add(ImageFolder.CenterCrop(ResizeLabelShorter(label, size).unsqueeze(0), size).squeeze(0));
        }
        var x = torch.stack(images) * 2.0 - 1.0;
        var y = torch.stack(labels);
        return (x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope());
    }

    /// <summary>Images only, as in <see cref="CenterBatch"/>.</summary>
    public Tensor ImageBatch(IReadOnlyList<int> indices, int size)
    {
        using var scope = torch.NewDisposeScope();
        var items = indices.Select(i => ImageFolder.CenterCrop(ImageFolder.ResizeShorter(ImageFiles.LoadRgb(Images[i]), size), size)).ToList();
        return (torch.stack(items) * 2.0 - 1.0).MoveToOuterDisposeScope();
    }

    /// <summary>All label maps at the probe resolution, [N, size, size] int64.</summary>
    public Tensor Labels(int size) => Labels(Enumerable.Range(0, Count).ToList(), size);

    public Tensor Labels(IReadOnlyList<int> indices, int size)
    {
        using var scope = torch.NewDisposeScope();
        var items = indices.Select(i => ImageFolder.CenterCrop(ResizeLabelShorter(Label(i), size).unsqueeze(0), size).squeeze(0)).ToList();
        return torch.stack(items).MoveToOuterDisposeScope();
    }

    /// <summary>The number of classes the labels use: the largest value other than <paramref name="ignoreIndex"/>, plus one.</summary>
    public int InferNumClasses(int ignoreIndex = DefaultIgnoreIndex)
    {
        long max = -1;
        for (int i = 0; i < Count; i++)
        {
            using var scope = torch.NewDisposeScope();
            var l = Label(i);
            var valid = l.masked_select(l.ne(ignoreIndex));
            if (valid.numel() > 0) max = Math.Max(max, valid.max().item<long>());
        }
        if (max < 0) throw new SvgdException($"{Root}: every label pixel is the ignore index {ignoreIndex}");
        return (int)max + 1;
    }

    /// <summary>[H, W] labels -> nearest-neighbour resize so that the shorter side is <paramref name="size"/> (same output size as <see cref="ImageFolder.ResizeShorter"/>).</summary>
    public static Tensor ResizeLabelShorter(Tensor label, int size)
    {
        long h = label.shape[0], w = label.shape[1];
        double s = (double)size / Math.Min(h, w);
        int nh = Math.Max(size, (int)Math.Round(h * s)), nw = Math.Max(size, (int)Math.Round(w * s));
        if (nh == h && nw == w) return label.alias();
        using var scope = torch.NewDisposeScope();
        var f = label.to(ScalarType.Float32).view(1, 1, h, w);
        var r = nn.functional.interpolate(f, new long[] { nh, nw }, mode: InterpolationMode.Nearest);
        return r.view(nh, nw).round().to(ScalarType.Int64).MoveToOuterDisposeScope();
    }
}
