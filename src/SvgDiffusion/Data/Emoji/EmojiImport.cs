using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Data.Emoji;

/// <summary>How <see cref="EmojiImport"/> lays out a data set.</summary>
public sealed record EmojiImportOptions
{
    /// <summary>"category" (9 classes) or "subcategory" (about 99): the class folders.</summary>
    public string By { get; init; } = "category";
    /// <summary>The colour transparent pixels are composited onto.</summary>
    public (byte R, byte G, byte B) Background { get; init; } = (255, 255, 255);
    /// <summary>A vendor whose images go to <c>test/</c> (the rest to <c>train/</c>); null: all to <c>train/</c>.</summary>
    public string? TestVendor { get; init; }
    /// <summary>emoji.json's "Component" category (skin-tone swatches, hair styles) is not an emoji to draw: left out unless asked.</summary>
    public bool IncludeComponents { get; init; }
    /// <summary>Also write <c>segmentation/&lt;split&gt;/images</c> and <c>labels</c> (foreground 1 where alpha &gt;= 128, else 0), the layout <c>svgd probe segment</c> reads.</summary>
    public bool Segmentation { get; init; }

    public EmojiImportOptions Validate()
    {
        if (By is not ("category" or "subcategory")) throw new SvgdException($"--by must be category or subcategory, not '{By}'");
        return this;
    }

    /// <summary>"white", "black", "#rrggbb" or "r,g,b".</summary>
    public static (byte R, byte G, byte B) ParseColour(string s, string option = "--background")
    {
        string t = s.Trim().ToLowerInvariant();
        if (t == "white") return (255, 255, 255);
        if (t == "black") return (0, 0, 0);
        if (t.StartsWith('#') && t.Length == 7 && int.TryParse(t[1..], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int rgb))
            return ((byte)(rgb >> 16), (byte)(rgb >> 8), (byte)rgb);
        var parts = t.Split(',');
        if (parts.Length == 3 && parts.All(p => byte.TryParse(p.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out _)))
            return (byte.Parse(parts[0].Trim(), CultureInfo.InvariantCulture), byte.Parse(parts[1].Trim(), CultureInfo.InvariantCulture), byte.Parse(parts[2].Trim(), CultureInfo.InvariantCulture));
        throw new SvgdException($"{option} '{s}' is not a colour (white, black, #rrggbb or r,g,b)");
    }
}

/// <summary>What an import wrote.</summary>
public sealed record EmojiImportResult(string Directory, int Train, int Test, IReadOnlyList<string> Classes, IReadOnlyDictionary<string, int> PerVendor);

/// <summary>
/// Turns emoji-datasource tarballs into the layouts the trainers and probes read: class folders
/// (<c>train/&lt;class&gt;/&lt;vendor&gt;-&lt;image&gt;.png</c>, RGBA composited onto a background), the alpha masks
/// (<c>masks/&lt;vendor&gt;-&lt;image&gt;.png</c>, for the segmentation probe and shape metrics), one caption record per image
/// (<c>captions.jsonl</c>) and the licence and attribution of every vendor (<c>LICENSES.md</c>, <c>attribution.json</c>).
/// The folder is built beside <c>--out</c> and renamed into place at the end: a failure leaves nothing half-written.
/// </summary>
public static class EmojiImport
{
    static readonly JsonSerializerOptions Readable = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public const string CaptionsFile = "captions.jsonl", LicensesFile = "LICENSES.md", AttributionFile = "attribution.json";

    /// <summary>Folder name of a category or subcategory: "Smileys &amp; Emotion" -> "smileys-emotion".</summary>
    public static string Slug(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s.ToLowerInvariant())
        {
            if (char.IsAsciiLetterOrDigit(c)) sb.Append(c);
            else if (sb.Length > 0 && sb[^1] != '-') sb.Append('-');
        }
        return sb.ToString().Trim('-') is { Length: > 0 } slug ? slug : "other";
    }

    public static EmojiImportResult Run(IReadOnlyList<EmojiPackage> packages, string outDir, EmojiImportOptions options, Action<int, int>? progress = null)
    {
        options.Validate();
        if (packages.Count == 0) throw new SvgdException("--package: give at least one emoji-datasource tarball");
        var vendors = packages.Select(p => p.Vendor.Name).ToList();
        if (vendors.Distinct().Count() != vendors.Count) throw new SvgdException($"--package: vendor '{vendors.GroupBy(v => v).First(g => g.Count() > 1).Key}' given twice");
        if (options.TestVendor is string tv && !vendors.Contains(tv))
            throw new SvgdException($"--test-vendor {tv}: not among the packages given ({string.Join(", ", vendors)})");
        string full = Path.GetFullPath(outDir);
        if (File.Exists(full)) throw new SvgdException($"--out {outDir}: is a file, expected a folder");
        if (Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any())
            throw new SvgdException($"--out {outDir}: the folder exists and is not empty; remove it or choose another");

        string staging = full.TrimEnd('/') + $".importing-{Environment.ProcessId}";
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        Directory.CreateDirectory(Path.Combine(staging, "masks"));
        try
        {
            var captions = new StringBuilder();
            var classes = new SortedSet<string>(StringComparer.Ordinal);
            var perVendor = new Dictionary<string, int>();
            int train = 0, test = 0, done = 0;
            int total = packages.Sum(p => p.Records.Count);
            foreach (var package in packages)
            {
                string split = package.Vendor.Name == options.TestVendor ? "test" : "train";
                foreach (var r in package.Records.OrderBy(r => r.SortOrder).ThenBy(r => r.Image, StringComparer.Ordinal))
                {
                    done++;
                    if (r.Category == "Component" && !options.IncludeComponents) continue;
                    if (!package.Images.TryGetValue(r.Image, out var png))
                        throw new SvgdException($"{package.Path}: emoji.json lists {r.Image} ('{r.Name}') but img/{package.Vendor.Name}/64/{r.Image} is missing");
                    string cls = Slug(options.By == "category" ? r.Category : r.Subcategory);
                    string file = $"{r.Vendor}-{Path.GetFileNameWithoutExtension(r.Image)}.png";
                    string rel = Path.Combine(split, cls, file), maskRel = Path.Combine("masks", file);
                    using (var scope = torch.NewDisposeScope())
                    {
                        var rgba = ImageFiles.DecodeRgba(png, $"{package.Path}: img/{package.Vendor.Name}/64/{r.Image}");
                        if (rgba.shape[0] != 4) throw new SvgdException($"{package.Path}: img/{package.Vendor.Name}/64/{r.Image} has no alpha channel");
                        // Plain writes: the staging folder as a whole is what becomes visible, by one rename at the end.
                        Directory.CreateDirectory(Path.Combine(staging, split, cls));
                        File.WriteAllBytes(Path.Combine(staging, rel), ImageFiles.EncodePng(ImageFiles.Composite(rgba, options.Background)));
                        File.WriteAllBytes(Path.Combine(staging, maskRel), ImageFiles.EncodePng(rgba.narrow(0, 3, 1).contiguous()));
                        if (options.Segmentation)
                        {
                            string seg = Path.Combine(staging, "segmentation", split);
                            Directory.CreateDirectory(Path.Combine(seg, "images"));
                            Directory.CreateDirectory(Path.Combine(seg, "labels"));
                            File.Copy(Path.Combine(staging, rel), Path.Combine(seg, "images", file));
                            File.WriteAllBytes(Path.Combine(seg, "labels", file), ImageFiles.EncodePng((rgba.narrow(0, 3, 1) >= 128).to(ScalarType.Byte).contiguous()));
                        }
                    }
                    classes.Add(cls);
                    var rec = new JsonObject
                    {
                        ["file"] = rel.Replace('\\', '/'),
                        ["split"] = split,
                        ["vendor"] = r.Vendor,
                        ["name"] = r.Name,
                        ["short_names"] = new JsonArray(r.ShortNames.Select(x => (JsonNode)JsonValue.Create(x)!).ToArray()),
                        ["category"] = r.Category,
                        ["subcategory"] = r.Subcategory,
                        ["class"] = cls,
                        ["skin_tone"] = r.SkinTone,
                        ["unified"] = r.Unified,
                        ["mask"] = maskRel.Replace('\\', '/'),
                    };
                    captions.Append(rec.ToJsonString(Readable)).Append('\n');
                    if (split == "test") test++; else train++;
                    perVendor[r.Vendor] = perVendor.GetValueOrDefault(r.Vendor) + 1;
                    progress?.Invoke(done, total);
                }
            }
            Write(staging, CaptionsFile, captions.ToString());
            Write(staging, LicensesFile, Licenses(packages, perVendor, options));
            Write(staging, AttributionFile, JsonSerializer.Serialize(packages.Select(p => new
            {
                vendor = p.Vendor.Name, package = $"emoji-datasource-{p.Vendor.Name}@{p.Version}", artwork = p.Vendor.Artwork,
                license = p.Vendor.License, license_url = p.Vendor.LicenseUrl, attribution = p.Vendor.Attribution, images = perVendor.GetValueOrDefault(p.Vendor.Name),
                split = p.Vendor.Name == options.TestVendor ? "test" : "train",
            }), new JsonSerializerOptions(Readable) { WriteIndented = true }));
            if (Directory.Exists(full)) Directory.Delete(full);
            Directory.Move(staging, full);
            return new EmojiImportResult(full, train, test, classes.ToList(), perVendor);
        }
        catch
        {
            try { Directory.Delete(staging, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    static void Write(string dir, string name, string text) =>
        Checkpoints.AtomicFile.Write(Path.Combine(dir, name), fs => fs.Write(Encoding.UTF8.GetBytes(text)));

    /// <summary>The licence text that goes with the images, and with every model card trained on them.</summary>
    public static string Licenses(IReadOnlyList<EmojiPackage> packages, IReadOnlyDictionary<string, int> perVendor, EmojiImportOptions options)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Emoji images: licences and attribution").AppendLine();
        sb.AppendLine("Imported by `svgd import-emoji` from the npm packages below (emoji data and packaging: emoji-datasource by Cal Henderson, MIT).");
        sb.AppendLine($"Classes by {options.By}; transparent pixels composited onto rgb({options.Background.R}, {options.Background.G}, {options.Background.B}); alpha masks in masks/.").AppendLine();
        sb.AppendLine("| vendor | package | artwork | licence | images | split |").AppendLine("|---|---|---|---|---:|---|");
        foreach (var p in packages)
            sb.AppendLine($"| {p.Vendor.Name} | emoji-datasource-{p.Vendor.Name}@{p.Version} | {p.Vendor.Artwork} | [{p.Vendor.License}]({p.Vendor.LicenseUrl}) | {perVendor.GetValueOrDefault(p.Vendor.Name)} | {(p.Vendor.Name == options.TestVendor ? "test" : "train")} |");
        sb.AppendLine();
        foreach (var p in packages) sb.AppendLine($"- {p.Vendor.Attribution}");
        sb.AppendLine().AppendLine("The images were composited onto a background and written as PNG; no other change was made. Models trained on them must carry this attribution.");
        return sb.ToString();
    }
}
