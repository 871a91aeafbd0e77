using System.Text.Json;
using System.Text.RegularExpressions;

namespace SvgDiffusion.Evaluation;

/// <summary>One recolouring task: an image and a variant of the same shape in another colour (the target).</summary>
public sealed record ColourPair(string Family, string Source, string Target, string SourceName, string TargetName);

/// <summary>
/// The emoji data's colour families (from an <c>svgd import-emoji</c> folder's captions.jsonl): hearts,
/// large circles and squares and books in several colours, people and hands in five skin tones, CAT and
/// BLACK CAT. Each family yields pairs (source, target variant) of one vendor: every member with the next
/// member of its family (cyclically), and for skin tones the lightest with the darkest and back.
/// </summary>
public static class ColourFamilies
{
    static readonly string Colours = "RED|ORANGE|YELLOW|GREEN|BLUE|LIGHT BLUE|PURPLE|BROWN|BLACK|WHITE|PINK|GREY";
    static readonly (string Family, Regex Pattern)[] Patterns =
    {
        ("hearts", new Regex($"^(?:(?<c>{Colours}) HEART|HEAVY BLACK HEART)$")),
        ("circles", new Regex($"^LARGE (?<c>{Colours}) CIRCLE$")),
        ("squares", new Regex($"^LARGE (?<c>{Colours}) SQUARE$")),
        ("books", new Regex($"^(?<c>{Colours}) BOOK$")),
        ("cats", new Regex("^(?:BLACK )?CAT$")),
    };

    /// <summary>
    /// The pairs of <paramref name="vendor"/>'s images under <paramref name="root"/>, at most <paramref name="skinTonePeople"/>
    /// people for skin tones. With <paramref name="referenceVendor"/> the target of each pair is that vendor's drawing of the
    /// target variant (another artist: not aligned with the source, as a user's reference photo would not be); pairs
    /// whose target that vendor lacks are left out.
    /// </summary>
    public static IReadOnlyList<ColourPair> Pairs(string root, string vendor, int skinTonePeople = 24, string? referenceVendor = null)
    {
        var pairs = SameVendorPairs(root, vendor, skinTonePeople);
        if (referenceVendor == null) return pairs;
        var other = SameVendorPairs(root, referenceVendor, int.MaxValue).Select(p => (p.SourceName, p.Source)).Concat(
                    SameVendorPairs(root, referenceVendor, int.MaxValue).Select(p => (p.TargetName, p.Target)))
            .GroupBy(x => x.Item1).ToDictionary(g => g.Key, g => g.First().Item2);
        return pairs.Where(p => other.ContainsKey(p.TargetName)).Select(p => p with { Target = other[p.TargetName] }).ToList();
    }

    static IReadOnlyList<ColourPair> SameVendorPairs(string root, string vendor, int skinTonePeople)
    {
        string captions = Path.Combine(root, "captions.jsonl");
        if (!File.Exists(captions)) throw new SvgdException($"{captions}: no captions file (make the folder with 'svgd import-emoji')");
        var records = new List<(string File, string Name, string? Tone)>();
        int line = 0;
        foreach (var text in File.ReadLines(captions))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            try
            {
                using var doc = JsonDocument.Parse(text);
                var r = doc.RootElement;
                if (r.GetProperty("vendor").GetString() != vendor) continue;
                string file = Path.Combine(root, r.GetProperty("file").GetString()!);
                string? tone = r.TryGetProperty("skin_tone", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
                records.Add((file, r.GetProperty("name").GetString()!, tone));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            { throw new SvgdException($"{captions}:{line}: not a caption record ({e.Message.Split('\n')[0]})"); }
        }
        if (records.Count == 0) throw new SvgdException($"{captions}: no images of vendor '{vendor}'");
        var pairs = new List<ColourPair>();
        foreach (var (family, pattern) in Patterns)
        {
            var members = records.Where(r => r.Tone == null && pattern.IsMatch(r.Name)).OrderBy(r => r.Name, StringComparer.Ordinal).ToList();
            for (int i = 0; i < members.Count && members.Count > 1; i++)
            {
                var (a, b) = (members[i], members[(i + 1) % members.Count]);
                if (members.Count == 2 && i == 1) (a, b) = (members[1], members[0]);
                pairs.Add(new ColourPair(family, a.File, b.File, a.Name, b.Name));
            }
        }
        // One person in two tones: the name with its tone phrase taken out ("MAN: LIGHT SKIN TONE, CURLY HAIR").
        static string Person(string name) => Regex.Replace(name, "(MEDIUM-)?(LIGHT|DARK) SKIN TONE", "");
        var light = records.Where(r => r.Tone == "light").GroupBy(r => Person(r.Name)).ToDictionary(g => g.Key, g => g.First());
        var dark = records.Where(r => r.Tone == "dark").GroupBy(r => Person(r.Name)).ToDictionary(g => g.Key, g => g.First());
        foreach (var name in light.Keys.Where(dark.ContainsKey).Order(StringComparer.Ordinal).Take(skinTonePeople))
        {
            pairs.Add(new ColourPair("skin tones", light[name].File, dark[name].File, light[name].Name, dark[name].Name));
            pairs.Add(new ColourPair("skin tones", dark[name].File, light[name].File, dark[name].Name, light[name].Name));
        }
        return pairs.Where(p => File.Exists(p.Source) && File.Exists(p.Target)).ToList();
    }
}
