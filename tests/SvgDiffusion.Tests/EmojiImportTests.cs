using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using SvgDiffusion.Data;
using SvgDiffusion.Data.Emoji;
using TorchSharp;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// <c>import-emoji</c> on tarballs laid out as emoji-datasource's npm packages are, built here from the committed
/// test images (tests/data/emoji, with their attribution) and an emoji.json that lists them.
/// </summary>
public class EmojiImportTests
{
    static string Images => Path.Combine(Reference.RepoRoot, "tests", "data", "emoji");

    /// <summary>emoji.json entries for the committed images (names, categories and skin tones as the real file has them).</summary>
    static JsonArray EmojiJson(string vendor)
    {
        JsonObject E(string name, string shortName, string image, string category, string sub, int order, JsonObject? skins = null)
        {
            var o = new JsonObject
            {
                ["name"] = name, ["short_name"] = shortName, ["short_names"] = new JsonArray(shortName), ["image"] = image, ["unified"] = image[..^4].ToUpperInvariant(),
                ["category"] = category, ["subcategory"] = sub, ["sort_order"] = order, ["has_img_apple"] = true, ["has_img_google"] = true, ["has_img_twitter"] = true,
            };
            if (skins != null) o["skin_variations"] = skins;
            return o;
        }
        var thumbsSkins = new JsonObject
        {
            ["1F3FD"] = new JsonObject { ["image"] = "1f44d-1f3fd.png", ["unified"] = "1F44D-1F3FD", [$"has_img_{vendor}"] = true },
            // A variation without this vendor's image is skipped.
            ["1F3FF"] = new JsonObject { ["image"] = "1f44d-1f3ff.png", ["unified"] = "1F44D-1F3FF", [$"has_img_{vendor}"] = false },
        };
        return new JsonArray(
            E("CAT", "cat2", "1f408.png", "Animals & Nature", "animal-mammal", 1),
            E("BLACK CAT", "black_cat", "1f408-200d-2b1b.png", "Animals & Nature", "animal-mammal", 2),
            E("PURPLE HEART", "purple_heart", "1f49c.png", "Smileys & Emotion", "heart", 3),
            E("HEAVY BLACK HEART", "heart", "2764-fe0f.png", "Smileys & Emotion", "heart", 4),
            E("THUMBS UP SIGN", "+1", "1f44d.png", "People & Body", "hand-fingers-closed", 5, thumbsSkins),
            E("France Flag", "flag-fr", "1f1eb-1f1f7.png", "Flags", "country-flag", 6),
            E("EMOJI MODIFIER FITZPATRICK TYPE-1-2", "skin-tone-2", "1f3fb.png", "Component", "skin-tone", 7));
    }

    /// <summary>A .tgz as npm pack writes it: package/package.json, package/emoji.json, package/img/&lt;vendor&gt;/64/*.png.</summary>
    static string Tarball(string dir, string vendor, Func<string, byte[], byte[]>? damage = null, string? packageName = null, bool withEmojiJson = true)
    {
        string path = Path.Combine(dir, $"emoji-datasource-{vendor}-16.0.0.tgz");
        using var fs = File.Create(path);
        using var gz = new GZipStream(fs, CompressionLevel.Fastest);
        using var tar = new TarWriter(gz, TarEntryFormat.Pax);
        void Add(string name, byte[] bytes)
        {
            var e = new PaxTarEntry(TarEntryType.RegularFile, "package/" + name) { DataStream = new MemoryStream(damage?.Invoke(name, bytes) ?? bytes) };
            tar.WriteEntry(e);
        }
        Add("package.json", Encoding.UTF8.GetBytes($"{{\"name\":\"{packageName ?? "emoji-datasource-" + vendor}\",\"version\":\"16.0.0\",\"license\":\"MIT\"}}"));
        if (withEmojiJson) Add("emoji.json", Encoding.UTF8.GetBytes(EmojiJson(vendor).ToJsonString()));
        string source = Path.Combine(Images, vendor is "google" or "twitter" ? vendor : "google");
        foreach (var png in Directory.GetFiles(source, "*.png").OrderBy(f => f, StringComparer.Ordinal))
            Add($"img/{vendor}/64/{Path.GetFileName(png)}", File.ReadAllBytes(png));
        Add($"img/{vendor}/64/1f3fb.png", File.ReadAllBytes(Path.Combine(source, "1f49c.png")));
        return path;
    }

    static (int Code, string Err) Import(params string[] args)
    {
        var (code, _, err) = Reference.RunCli(new[] { "import-emoji" }.Concat(args).ToArray());
        return (code, err);
    }

    [Fact]
    public void ColourFamiliesPairVariantsOfOneShapeAndTheMeasuresSeeShapeAndColour()
    {
        string dir = Reference.TempDir(), o = Path.Combine(dir, "emoji");
        var (code, err) = Import("--package", Tarball(dir, "google"), Tarball(dir, "twitter"), "--test-vendor", "twitter", "--out", o);
        Assert.True(code == 0, err);
        var pairs = SvgDiffusion.Evaluation.ColourFamilies.Pairs(o, "twitter");
        Assert.Equal(new[] { ("cats", "BLACK CAT", "CAT"), ("cats", "CAT", "BLACK CAT"), ("hearts", "HEAVY BLACK HEART", "PURPLE HEART"), ("hearts", "PURPLE HEART", "HEAVY BLACK HEART") },
            pairs.Select(p => (p.Family, p.SourceName, p.TargetName)).OrderBy(x => x).ToArray());
        Assert.All(pairs, p => Assert.Contains("twitter-", Path.GetFileName(p.Source)));
        Assert.Throws<SvgdException>(() => SvgDiffusion.Evaluation.ColourFamilies.Pairs(o, "apple"));
        // Targets from another artist: the same variants, Noto's drawings.
        var crossed = SvgDiffusion.Evaluation.ColourFamilies.Pairs(o, "twitter", referenceVendor: "google");
        Assert.Equal(pairs.Select(p => (p.SourceName, p.TargetName)).OrderBy(x => x), crossed.Select(p => (p.SourceName, p.TargetName)).OrderBy(x => x));
        Assert.All(crossed, p => { Assert.Contains("twitter-", Path.GetFileName(p.Source)); Assert.Contains("google-", Path.GetFileName(p.Target)); });

        var bg = (1.0, 1.0, 1.0);
        TorchSharp.torch.Tensor Load(string f) => SvgDiffusion.Data.ImageFiles.LoadRgb(f).to(TorchSharp.torch.ScalarType.Float32) / 255;
        var heart = pairs.First(p => p.Family == "hearts");
        var (red, purple) = (Load(heart.Source), Load(heart.Target));
        // Twemoji draws its hearts from one outline: the same shape, other colours.
        Assert.InRange(SvgDiffusion.Evaluation.ShapeAndColour.ForegroundIoU(red, purple, bg), 0.9, 1.0);
        Assert.Equal(1.0, SvgDiffusion.Evaluation.ShapeAndColour.ForegroundIoU(red, red, bg));
        var hr = SvgDiffusion.Evaluation.ShapeAndColour.HueHistogram(red, bg);
        Assert.Equal(1.0, hr.Sum(), 6);
        Assert.Equal(0.0, SvgDiffusion.Evaluation.ShapeAndColour.Distance(hr, hr));
        Assert.InRange(SvgDiffusion.Evaluation.ShapeAndColour.Distance(hr, SvgDiffusion.Evaluation.ShapeAndColour.HueHistogram(purple, bg)), 0.5, 1.0);
        var mr = SvgDiffusion.Evaluation.ShapeAndColour.MeanColour(red, bg);
        Assert.True(mr[0] > 0.6 && mr[1] < 0.4, $"red heart's mean colour {string.Join(",", mr)}");
        var cats = pairs.First(p => p.Family == "cats" && p.SourceName == "BLACK CAT");
        var black = SvgDiffusion.Evaluation.ShapeAndColour.MeanColour(Load(cats.Source), bg);
        var orange = SvgDiffusion.Evaluation.ShapeAndColour.MeanColour(Load(cats.Target), bg);
        Assert.True(black.Sum() < orange.Sum() - 0.5, "the black cat is darker than the cat");
    }

    [Fact]
    public void TwoVendorsBecomeClassFoldersMasksCaptionsAndLicences()
    {
        string dir = Reference.TempDir(), o = Path.Combine(dir, "emoji");
        var (code, err) = Import("--package", Tarball(dir, "google"), Tarball(dir, "twitter"), "--test-vendor", "twitter", "--out", o);
        Assert.True(code == 0, err);
        // 7 images each (6 emoji + one skin tone; the dark tone has no image, the component is left out), 4 classes.
        Assert.Equal(new[] { "animals-nature", "flags", "people-body", "smileys-emotion" }, Directory.GetDirectories(Path.Combine(o, "train")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(7, Directory.GetFiles(Path.Combine(o, "train"), "*.png", SearchOption.AllDirectories).Length);
        Assert.Equal(7, Directory.GetFiles(Path.Combine(o, "test"), "*.png", SearchOption.AllDirectories).Length);
        Assert.Equal(14, Directory.GetFiles(Path.Combine(o, "masks")).Length);
        var captions = File.ReadAllLines(Path.Combine(o, EmojiImport.CaptionsFile)).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(14, captions.Count);
        var thumb = captions.Single(c => (string)c["vendor"]! == "google" && (string?)c["skin_tone"] == "medium");
        Assert.Equal("THUMBS UP SIGN: MEDIUM SKIN TONE", (string)thumb["name"]!);
        Assert.Equal("train/people-body/google-1f44d-1f3fd.png", (string)thumb["file"]!);
        Assert.Equal("hand-fingers-closed", (string)thumb["subcategory"]!);
        Assert.Equal("+1", (string)thumb["short_names"]![0]!);
        var blackCat = captions.Single(c => (string)c["vendor"]! == "twitter" && (string)c["name"]! == "BLACK CAT");
        Assert.Equal("test", (string)blackCat["split"]!);

        // The image is the RGBA composited onto white, the mask its alpha.
        using var scope = torch.NewDisposeScope();
        var rgba = ImageFiles.DecodeRgba(File.ReadAllBytes(Path.Combine(Images, "twitter", "1f408-200d-2b1b.png")), "source");
        var rgb = ImageFiles.LoadRgb(Path.Combine(o, (string)blackCat["file"]!)).to(torch.float32);
        var mask = ImageFiles.LoadRgb(Path.Combine(o, (string)blackCat["mask"]!))[0].to(torch.float32);
        var alpha = rgba[3].to(torch.float32);
        Assert.Equal(0, (mask - alpha).abs().max().item<float>());
        var expected = ((alpha / 255) * rgba.narrow(0, 0, 3).to(torch.float32) + (1 - alpha / 255) * 255).round();
        Assert.True((rgb - expected).abs().max().item<float>() <= 1, "composite onto white");
        Assert.True(alpha.min().item<float>() == 0 && alpha.max().item<float>() == 255, "the cat has a transparent background");
        Assert.Equal(255f, rgb[.., 0, 0].min().item<float>()); // a transparent corner is white

        string licences = File.ReadAllText(Path.Combine(o, EmojiImport.LicensesFile));
        Assert.Contains("Apache-2.0", licences);
        Assert.Contains("CC-BY-4.0", licences);
        Assert.Contains("Twemoji", licences);
        Assert.Contains("\"license\": \"CC-BY-4.0\"", File.ReadAllText(Path.Combine(o, EmojiImport.AttributionFile)));
        Assert.Empty(Directory.GetDirectories(dir, "*.importing-*"));
    }

    [Fact]
    public void SegmentationLayoutHoldsForegroundLabelsFromTheAlpha()
    {
        string dir = Reference.TempDir(), o = Path.Combine(dir, "emoji");
        var (code, err) = Import("--package", Tarball(dir, "google"), Tarball(dir, "twitter"), "--test-vendor", "twitter", "--segmentation", "--out", o);
        Assert.True(code == 0, err);
        var train = new SvgDiffusion.Evaluation.Probes.SegmentationFolder(Path.Combine(o, "segmentation", "train"));
        var test = new SvgDiffusion.Evaluation.Probes.SegmentationFolder(Path.Combine(o, "segmentation", "test"));
        Assert.Equal(7, train.Count);
        Assert.Equal(7, test.Count);
        int heart = train.Images.Select(Path.GetFileName).ToList().IndexOf("google-1f49c.png");
        using var label = train.Label(heart);
        using var alpha = SvgDiffusion.Data.ImageFiles.LoadRgba(Path.Combine(o, "masks", "google-1f49c.png"));
        Assert.Equal(new[] { 0L, 1L }, label.unique().output.data<long>().ToArray());
        Assert.Equal((alpha[0] >= 128).sum().item<long>(), label.sum().item<long>());
        string plain = Path.Combine(dir, "plain");
        Assert.Equal(0, Import("--package", Tarball(dir, "google"), "--out", plain).Code);
        Assert.False(Directory.Exists(Path.Combine(plain, "segmentation")), "only with --segmentation");
    }

    [Fact]
    public void SubcategoriesBackgroundsAndComponentsAreOptions()
    {
        string dir = Reference.TempDir(), o = Path.Combine(dir, "emoji");
        var (code, err) = Import("--package", Tarball(dir, "google"), "--by", "subcategory", "--background", "#000000", "--include-components", "--out", o);
        Assert.True(code == 0, err);
        Assert.Equal(new[] { "animal-mammal", "country-flag", "hand-fingers-closed", "heart", "skin-tone" },
            Directory.GetDirectories(Path.Combine(o, "train")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.False(Directory.Exists(Path.Combine(o, "test")));
        using var scope = torch.NewDisposeScope();
        var rgb = ImageFiles.LoadRgb(Path.Combine(o, "train", "animal-mammal", "google-1f408.png"));
        Assert.Equal(0, rgb[.., 0, 0].max().item<byte>()); // black under the transparent corner
    }

    [Fact]
    public void BadPackagesAreOneLineAndLeaveNothing()
    {
        string dir = Reference.TempDir();
        void Refused(string expected, params string[] args)
        {
            string o = Path.Combine(dir, "out-" + Guid.NewGuid().ToString("N")[..8]);
            var (code, err) = Import(args.Append("--out").Append(o).ToArray());
            Assert.True(code == 1, $"exit {code}: {err}");
            var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(lines.Length == 1 && lines[0].StartsWith("error: "), err);
            Assert.Contains(expected, lines[0]);
            Assert.True(!Directory.Exists(o) || !Directory.EnumerateFileSystemEntries(o).Any(), "nothing half-written");
            Assert.Empty(Directory.GetDirectories(dir, "*.importing-*"));
        }
        string apple = Tarball(Directory.CreateDirectory(Path.Combine(dir, "a")).FullName, "apple");
        Refused("not openly licensed", "--package", apple);
        Refused("not openly licensed", "--package", Tarball(Directory.CreateDirectory(Path.Combine(dir, "f")).FullName, "facebook", packageName: "emoji-datasource-facebook"));
        Refused("not an emoji-datasource", "--package", Tarball(Directory.CreateDirectory(Path.Combine(dir, "n")).FullName, "google", withEmojiJson: false));
        Refused("is not an emoji-datasource-<vendor> package", "--package", Tarball(Directory.CreateDirectory(Path.Combine(dir, "l")).FullName, "google", packageName: "left-pad"));
        // A truncated image inside an otherwise good package: found while importing, the staging folder removed.
        string truncated = Tarball(Directory.CreateDirectory(Path.Combine(dir, "t")).FullName, "google",
            (name, bytes) => name.EndsWith("1f49c.png", StringComparison.Ordinal) ? bytes[..(bytes.Length / 2)] : bytes);
        Refused("1f49c.png", "--package", truncated);
        string notGzip = Path.Combine(dir, "plain.tgz");
        File.WriteAllText(notGzip, "this is not a tarball");
        Refused("not a readable .tgz npm package", "--package", notGzip);
        Refused("no such file", "--package", Path.Combine(dir, "missing.tgz"));
        string google = Tarball(Directory.CreateDirectory(Path.Combine(dir, "g")).FullName, "google");
        Refused("--test-vendor twitter: not among the packages", "--package", google, "--test-vendor", "twitter");
        Refused("--background 'pink'", "--package", google, "--background", "pink");
        Refused("--by must be category or subcategory", "--package", google, "--by", "colour");
        Refused("given twice", "--package", google, google);
    }
}
