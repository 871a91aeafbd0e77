using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Data;

/// <summary>Decoding, listing and writing images; SkiaSharp does the codecs, tensors do the arithmetic.</summary>
public static class ImageFiles
{
    public static readonly string[] Extensions = { ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp" };

    public static bool IsImage(string path) => Extensions.Contains(Path.GetExtension(path).ToLowerInvariant());

    /// <summary>
    /// A single image file, or every image below a folder (recursively, sorted by relative path). Symbolic links
    /// to folders are followed once: a folder reached again (a link loop, or two links to one folder) is not
    /// listed twice, so a data set never silently grows copies of itself.
    /// </summary>
    public static IReadOnlyList<string> List(string fileOrFolder)
    {
        if (File.Exists(fileOrFolder)) return new[] { fileOrFolder };
        if (!Directory.Exists(fileOrFolder)) throw new SvgdException($"{fileOrFolder}: no such file or folder");
        var found = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var linked = new Queue<string>();
        void Walk(string dir)
        {
            string real = RealPath(dir);
            if (!seen.Add(real)) return;
            IEnumerable<string> entries;
            try { entries = Directory.EnumerateFileSystemEntries(dir).ToList(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new SvgdException($"{dir}: cannot list the folder ({e.Message.Split('\n')[0].TrimEnd('.')})"); }
            foreach (var entry in entries.OrderBy(e => e, StringComparer.Ordinal))
            {
                // Real sub-folders first, linked ones after the whole tree: a folder is listed under its own name.
                if (Directory.Exists(entry)) { if (new DirectoryInfo(entry).LinkTarget != null) linked.Enqueue(entry); else Walk(entry); }
                else if (IsImage(entry) && File.Exists(entry)) found.Add(entry);
            }
        }
        Walk(fileOrFolder);
        while (linked.Count > 0) Walk(linked.Dequeue());
        var files = found.OrderBy(f => Path.GetRelativePath(fileOrFolder, f), StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new SvgdException($"{fileOrFolder}: folder holds no images ({string.Join(" ", Extensions)})");
        return files;
    }

    /// <summary>The folder's path with every symbolic link on the way resolved (a loop that cannot be resolved is its own path).</summary>
    static string RealPath(string dir)
    {
        string full = Path.GetFullPath(dir);
        if (full.Length > 1) full = full.TrimEnd(Path.DirectorySeparatorChar);
        string? parent = Path.GetDirectoryName(full);
        if (parent == null) return full;
        try
        {
            string here = Path.Combine(RealPath(parent), Path.GetFileName(full));
            var info = new DirectoryInfo(here);
            return info.LinkTarget != null ? RealPath(info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? here) : here;
        }
        catch (IOException) { return full; }
    }

    /// <summary>
    /// Reads the header of every file (format and size, not the pixels): a file that is not an image, or claims
    /// an impossible size, is refused before training starts rather than when a batch first draws it, hours in.
    /// </summary>
    public static void CheckHeaders(IEnumerable<string> files)
    {
        foreach (var f in files)
        {
            using var data = SKData.Create(f);
            using var codec = data == null ? null : SKCodec.Create(data);
            CheckHeader(codec, f, MaxPixels);
        }
    }

    /// <summary>A codec that exists and a size this program decodes; one line naming <paramref name="name"/> otherwise.</summary>
    static void CheckHeader([System.Diagnostics.CodeAnalysis.NotNull] SKCodec? codec, string name, long maxPixels)
    {
        if (codec == null) throw new SvgdException($"{name}: not a decodable image (corrupt or unsupported format)");
        int w = codec.Info.Width, h = codec.Info.Height;
        if (w <= 0 || h <= 0) throw new SvgdException($"{name}: image header gives an empty size {w}x{h}");
        if (w > MaxSide || h > MaxSide || (long)w * h > maxPixels)
            throw new SvgdException($"{name}: image header claims {w}x{h} pixels, more than this program decodes ({Math.Min(MaxSide, maxPixels)} a side, {maxPixels} in all; corrupt header?)");
    }

    /// <summary>Largest image side and pixel count decoded: a header may claim any size, and is believed only this far.</summary>
    public const int MaxSide = 16384;
    public const long MaxPixels = 1L << 28;

    /// <summary>Decodes to RGB uint8 [3, H, W]; an alpha channel is dropped, as PIL's convert("RGB") does.</summary>
    public static Tensor LoadRgb(string path)
    {
        if (Directory.Exists(path)) throw new SvgdException($"{path}: is a directory, not an image file");
        if (!File.Exists(path)) throw new SvgdException($"{path}: no such image file");
        using var data = SKData.Create(path);
        return Decode(data, path, MaxPixels);
    }

    /// <summary>Decodes to RGBA uint8 [4, H, W] (255 alpha where the format has none); see <see cref="ToRgb"/>.</summary>
    public static Tensor LoadRgba(string path)
    {
        if (Directory.Exists(path)) throw new SvgdException($"{path}: is a directory, not an image file");
        if (!File.Exists(path)) throw new SvgdException($"{path}: no such image file");
        using var data = SKData.Create(path);
        return Decode(data, path, MaxPixels, keepAlpha: true);
    }

    /// <summary>RGBA [4, H, W] to RGB [3, H, W]: composited onto <paramref name="background"/> (a model's training background), or alpha dropped when that is null.</summary>
    public static Tensor ToRgb(Tensor rgba, (byte R, byte G, byte B)? background) =>
        background is { } bg ? Composite(rgba, bg) : rgba.narrow(0, 0, 3).contiguous();

    /// <summary>Like <see cref="DecodeRgb(ReadOnlySpan{byte}, string, long)"/>, alpha composited onto <paramref name="background"/> (null: dropped).</summary>
    public static Tensor DecodeRgb(ReadOnlySpan<byte> bytes, string name, (byte R, byte G, byte B)? background, long maxPixels = MaxPixels)
    {
        if (background is not { } bg) return DecodeRgb(bytes, name, maxPixels);
        using var rgba = DecodeRgba(bytes, name, maxPixels);
        return Composite(rgba, bg);
    }

    /// <summary>
    /// Decodes image bytes held in memory (an upload) to RGB uint8 [3, H, W]; <paramref name="name"/> names them in
    /// errors, and images of more than <paramref name="maxPixels"/> pixels are refused from their header, before decoding.
    /// </summary>
    public static Tensor DecodeRgb(ReadOnlySpan<byte> bytes, string name, long maxPixels = MaxPixels)
    {
        if (bytes.IsEmpty) throw new SvgdException($"{name}: empty, not an image");
        using var data = SKData.CreateCopy(bytes);
        return Decode(data, name, maxPixels);
    }

    /// <summary>Decodes image bytes to RGBA uint8 [4, H, W] (straight, not premultiplied, alpha; 255 where the format has none).</summary>
    public static Tensor DecodeRgba(ReadOnlySpan<byte> bytes, string name, long maxPixels = MaxPixels)
    {
        if (bytes.IsEmpty) throw new SvgdException($"{name}: empty, not an image");
        using var data = SKData.CreateCopy(bytes);
        return Decode(data, name, maxPixels, keepAlpha: true);
    }

    /// <summary>
    /// An RGBA uint8 image [4, H, W] composited over a solid <paramref name="background"/> (0-255 per channel):
    /// out = alpha * rgb + (1 - alpha) * background, rounded, as uint8 RGB [3, H, W].
    /// </summary>
    public static Tensor Composite(Tensor rgba, (byte R, byte G, byte B) background)
    {
        using var scope = torch.NewDisposeScope();
        var f = rgba.to(ScalarType.Float32);
        var alpha = f.narrow(0, 3, 1) / 255f;
        var bg = torch.tensor(new float[] { background.R, background.G, background.B }).view(3, 1, 1);
        var rgb = alpha * f.narrow(0, 0, 3) + (1 - alpha) * bg;
        return rgb.round().clamp(0, 255).to(ScalarType.Byte).MoveToOuterDisposeScope();
    }

    static Tensor Decode(SKData? data, string name, long maxPixels, bool keepAlpha = false)
    {
        using var codec = data == null ? null : SKCodec.Create(data);
        CheckHeader(codec, name, maxPixels);
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result is not (SKCodecResult.Success or SKCodecResult.IncompleteInput) || info.Width == 0 || info.Height == 0)
            throw new SvgdException($"{name}: image data is corrupt ({result})");
        if (result == SKCodecResult.IncompleteInput)
            throw new SvgdException($"{name}: image data is truncated");
        var bytes = bitmap.GetPixelSpan();
        var rgba = torch.empty(new long[] { info.Height, info.Width, 4 }, dtype: ScalarType.Byte);
        bytes.CopyTo(rgba.bytes);
        using var rgb = rgba.narrow(2, 0, keepAlpha ? 4 : 3);
        var chw = rgb.permute(2, 0, 1).contiguous();
        rgba.Dispose();
        return chw;
    }

    /// <summary>
    /// Writes a [3, H, W] (or [H, W] grey) float image to PNG. <paramref name="range"/> is the value range
    /// that maps to 0..255: (-1, 1) for decoder outputs, (0, 1) for probabilities.
    /// </summary>
    public static void SavePng(Tensor image, string path, (double Lo, double Hi)? range = null)
    {
        using var encoded = Encode(image, path, range);
        Checkpoints.AtomicFile.Write(path, fs => encoded.SaveTo(fs));
    }

    /// <summary>The PNG bytes <see cref="SavePng"/> would write, for sending rather than saving.</summary>
    public static byte[] EncodePng(Tensor image, (double Lo, double Hi)? range = null)
    {
        using var encoded = Encode(image, "the image", range);
        return encoded.ToArray();
    }

    static SKData Encode(Tensor image, string what, (double Lo, double Hi)? range)
    {
        var (lo, hi) = range ?? (-1.0, 1.0);
        using var scope = torch.NewDisposeScope();
        var img = image.detach().cpu();
        if (img.dim() == 2) img = img.unsqueeze(0).expand(3, -1, -1);
        if (img.dim() != 3 || img.shape[0] is not (1 or 3))
            throw new SvgdException($"cannot write {what}: image tensor must be [3,H,W] or [H,W], got {Checkpoints.Checkpoint.Shape(img.shape)}");
        if (img.shape[0] == 1) img = img.expand(3, -1, -1);
        Tensor u8 = img.dtype == ScalarType.Byte ? img
            : ((img.to(ScalarType.Float32) - lo) / (hi - lo) * 255.0).round().clamp(0, 255).to(ScalarType.Byte);
        int h = (int)u8.shape[1], w = (int)u8.shape[2];
        var rgba = torch.cat(new[] { u8.permute(1, 2, 0), torch.full(new long[] { h, w, 1 }, 255, dtype: ScalarType.Byte) }, 2).contiguous();
        var info = new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        rgba.bytes.CopyTo(bitmap.GetPixelSpan());
        return bitmap.Encode(SKEncodedImageFormat.Png, 100) ?? throw new SvgdException($"cannot encode {what} as PNG");
    }

    /// <summary>Tiles [N, 3, H, W] images into rows of <paramref name="columns"/> with a padding border.</summary>
    public static Tensor Grid(Tensor images, int columns, int padding = 2, double padValue = 1.0)
    {
        using var scope = torch.NewDisposeScope();
        long n = images.shape[0], c = images.shape[1], h = images.shape[2], w = images.shape[3];
        columns = (int)Math.Max(1, Math.Min(columns, n));
        long rows = (n + columns - 1) / columns;
        var grid = torch.full(new[] { c, rows * (h + padding) + padding, columns * (w + padding) + padding }, padValue, dtype: images.dtype);
        for (long i = 0; i < n; i++)
        {
            long r = i / columns, col = i % columns;
            grid.narrow(1, padding + r * (h + padding), h).narrow(2, padding + col * (w + padding), w).copy_(images[i]);
        }
        return grid.MoveToOuterDisposeScope();
    }
}
