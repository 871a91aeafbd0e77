using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;

namespace SvgDiffusion.Data.Emoji;

/// <summary>Who drew a vendor's images and under which licence they may be used.</summary>
public sealed record EmojiVendor(string Name, string Artwork, string License, string LicenseUrl, string Attribution)
{
    /// <summary>The openly licensed image sets of emoji-datasource.</summary>
    public static readonly IReadOnlyDictionary<string, EmojiVendor> Open = new Dictionary<string, EmojiVendor>
    {
        ["google"] = new("google", "Noto Emoji (Google)", "Apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0",
            "Noto Emoji images, Copyright Google Inc., licensed under the Apache License, Version 2.0."),
        ["twitter"] = new("twitter", "Twemoji (Twitter / X Corp. and contributors)", "CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/",
            "Twemoji graphics, Copyright Twitter, Inc. and other contributors, licensed under CC-BY 4.0."),
    };

    /// <summary>Image sets packaged by emoji-datasource whose artwork is not openly licensed: refused.</summary>
    public static readonly IReadOnlyDictionary<string, string> Closed = new Dictionary<string, string>
    {
        ["apple"] = "Apple's emoji artwork is proprietary (not openly licensed)",
        ["facebook"] = "Facebook's emoji artwork is proprietary (not openly licensed)",
    };
}

/// <summary>One emoji image of a vendor: a base emoji or one of its skin-tone variations, with its metadata.</summary>
public sealed record EmojiRecord(string Vendor, string Image, string Unified, string Name, IReadOnlyList<string> ShortNames,
    string Category, string Subcategory, string? SkinTone, int SortOrder);

/// <summary>
/// An <c>emoji-datasource-&lt;vendor&gt;</c> npm tarball (<c>npm pack emoji-datasource-google@16.0.0</c>), read as it is:
/// its <c>package.json</c> names the vendor, <c>emoji.json</c> lists every emoji (name, short names, category,
/// subcategory, skin-tone variations) and <c>img/&lt;vendor&gt;/64/*.png</c> holds the 64x64 RGBA images.
/// </summary>
public sealed class EmojiPackage
{
    public string Path { get; }
    public EmojiVendor Vendor { get; }
    public string Version { get; }
    public IReadOnlyList<EmojiRecord> Records { get; }
    /// <summary>PNG bytes by image file name (the 64-px set).</summary>
    public IReadOnlyDictionary<string, byte[]> Images { get; }

    /// <summary>Skin-tone modifiers as emoji.json writes them, and their names (the Unicode names' words).</summary>
    public static readonly IReadOnlyDictionary<string, string> SkinTones = new Dictionary<string, string>
    {
        ["1F3FB"] = "light", ["1F3FC"] = "medium-light", ["1F3FD"] = "medium", ["1F3FE"] = "medium-dark", ["1F3FF"] = "dark",
    };

    /// <summary>Largest tarball entry read into memory: the 64-px PNGs are a few KB, emoji.json about 1 MB.</summary>
    const long MaxEntryBytes = 64L << 20;

    EmojiPackage(string path, EmojiVendor vendor, string version, IReadOnlyList<EmojiRecord> records, IReadOnlyDictionary<string, byte[]> images)
    {
        Path = path; Vendor = vendor; Version = version; Records = records; Images = images;
    }

    /// <summary>Reads a tarball; anything that is not an openly licensed emoji-datasource package is one line naming the file.</summary>
    public static EmojiPackage Read(string path)
    {
        if (!File.Exists(path)) throw new SvgdException($"{path}: no such file");
        byte[]? packageJson = null, emojiJson = null;
        var pngs = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        var pending = new List<(string Vendor, string File, byte[] Bytes)>();
        try
        {
            using var fs = File.OpenRead(path);
            using var gz = new GZipStream(fs, CompressionMode.Decompress);
            using var tar = new TarReader(gz);
            while (tar.GetNextEntry() is TarEntry entry)
            {
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile) || entry.DataStream == null) continue;
                string name = entry.Name.Replace('\\', '/');
                int slash = name.IndexOf('/');
                string rel = slash >= 0 ? name[(slash + 1)..] : name;
                bool wanted = rel == "package.json" || rel == "emoji.json" || (rel.StartsWith("img/", StringComparison.Ordinal) && rel.Contains("/64/", StringComparison.Ordinal) && rel.EndsWith(".png", StringComparison.Ordinal));
                if (!wanted) continue;
                if (entry.Length > MaxEntryBytes) throw new SvgdException($"{path}: entry '{name}' claims {entry.Length} bytes; not an emoji-datasource package");
                var ms = new MemoryStream((int)Math.Max(0, entry.Length));
                entry.DataStream.CopyTo(ms);
                if (ms.Length != entry.Length) throw new SvgdException($"{path}: entry '{name}' is truncated ({ms.Length} of {entry.Length} bytes)");
                var bytes = ms.ToArray();
                if (rel == "package.json") packageJson = bytes;
                else if (rel == "emoji.json") emojiJson = bytes;
                else
                {
                    var parts = rel.Split('/');
                    if (parts.Length == 4) pending.Add((parts[1], parts[3], bytes));
                }
            }
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or FormatException or IOException or ArgumentException)
        {
            throw new SvgdException($"{path}: not a readable .tgz npm package ({e.Message.Split('\n')[0].TrimEnd('.')})");
        }
        if (packageJson == null || emojiJson == null)
            throw new SvgdException($"{path}: not an emoji-datasource package (no package/package.json and package/emoji.json; get one with 'npm pack emoji-datasource-google@16.0.0')");
        string packageName, version;
        try
        {
            using var doc = JsonDocument.Parse(packageJson);
            packageName = doc.RootElement.GetProperty("name").GetString() ?? "";
            version = doc.RootElement.TryGetProperty("version", out var v) ? v.GetString() ?? "" : "";
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new SvgdException($"{path}: package.json is not valid ({e.Message.Split('\n')[0]})");
        }
        const string prefix = "emoji-datasource-";
        if (!packageName.StartsWith(prefix, StringComparison.Ordinal))
            throw new SvgdException($"{path}: package '{packageName}' is not an emoji-datasource-<vendor> package");
        string vendorName = packageName[prefix.Length..];
        if (EmojiVendor.Closed.TryGetValue(vendorName, out var why))
            throw new SvgdException($"{path}: {packageName} is refused: {why}; use emoji-datasource-google (Apache-2.0) or emoji-datasource-twitter (CC-BY-4.0)");
        if (!EmojiVendor.Open.TryGetValue(vendorName, out var vendor))
            throw new SvgdException($"{path}: {packageName}: unknown vendor '{vendorName}' (openly licensed: {string.Join(", ", EmojiVendor.Open.Keys)})");
        foreach (var (v, file, bytes) in pending)
            if (v == vendorName) pngs[file] = bytes;
        if (pngs.Count == 0) throw new SvgdException($"{path}: {packageName} holds no img/{vendorName}/64/*.png images");
        var records = ParseRecords(emojiJson, vendorName, path);
        return new EmojiPackage(path, vendor, version, records, pngs);
    }

    /// <summary>Every base emoji and skin-tone variation that has an image of <paramref name="vendor"/>.</summary>
    static List<EmojiRecord> ParseRecords(byte[] json, string vendor, string path)
    {
        var list = new List<EmojiRecord>();
        try
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Array) throw new SvgdException($"{path}: emoji.json is not a list of emoji");
            string hasImage = "has_img_" + vendor;
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                string name = Str(e, "name") ?? Str(e, "short_name") ?? "";
                string image = Str(e, "image") ?? throw new SvgdException($"{path}: emoji.json entry '{name}' has no image");
                var shortNames = e.TryGetProperty("short_names", out var sn) && sn.ValueKind == JsonValueKind.Array
                    ? sn.EnumerateArray().Select(x => x.GetString() ?? "").Where(x => x.Length > 0).ToList() : new List<string>();
                string category = Str(e, "category") ?? "", sub = Str(e, "subcategory") ?? "";
                int order = e.TryGetProperty("sort_order", out var so) && so.ValueKind == JsonValueKind.Number ? so.GetInt32() : list.Count;
                if (Bool(e, hasImage))
                    list.Add(new EmojiRecord(vendor, image, Str(e, "unified") ?? "", name, shortNames, category, sub, null, order));
                if (e.TryGetProperty("skin_variations", out var vars) && vars.ValueKind == JsonValueKind.Object)
                    foreach (var v in vars.EnumerateObject())
                    {
                        if (!Bool(v.Value, hasImage)) continue;
                        string tones = string.Join(",", v.Name.Split('-').Select(t => SkinTones.TryGetValue(t, out var tn) ? tn : t));
                        string toneWords = string.Join(", ", v.Name.Split('-').Select(t => SkinTones.TryGetValue(t, out var tn) ? tn.Replace('-', ' ').ToUpperInvariant() + " SKIN TONE" : t));
                        list.Add(new EmojiRecord(vendor, Str(v.Value, "image") ?? throw new SvgdException($"{path}: a skin variation of '{name}' has no image"),
                            Str(v.Value, "unified") ?? "", $"{name}: {toneWords}", shortNames, category, sub, tones, order));
                    }
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new SvgdException($"{path}: emoji.json is not valid ({e.Message.Split('\n')[0]})");
        }
        return list;
    }

    static string? Str(JsonElement e, string key) => e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
    static bool Bool(JsonElement e, string key) => e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.True;
}
