using System.Globalization;

namespace SvgDiffusion.Sampling;

/// <summary>
/// A class-conditional model's labels: indices 0..NumClasses-1, and the names stored with the model when it
/// has them, so a user can ask for "sneaker" wherever an index is accepted. NumClasses itself is the null
/// (unconditional) label, accepted only where a caller allows it.
/// </summary>
public sealed class ClassLabels
{
    public int NumClasses { get; }
    public IReadOnlyList<string>? Names { get; }
    public int NullLabel => NumClasses;

    public ClassLabels(int numClasses, IReadOnlyList<string>? names = null)
    {
        if (numClasses < 1) throw new SvgdException($"a class-conditional model needs at least one class, got {numClasses}");
        NumClasses = numClasses;
        // Names that do not cover the classes one to one would name the wrong rows: ignored rather than trusted.
        Names = names != null && names.Count == numClasses && names.Distinct(StringComparer.OrdinalIgnoreCase).Count() == numClasses ? names : null;
    }

    /// <summary>One label from an index or a class name (case-insensitive); <paramref name="field"/> names the option in errors.</summary>
    public int Resolve(string token, string field, bool allowNull = false)
    {
        string t = token.Trim();
        int max = allowNull ? NullLabel : NumClasses - 1;
        if (int.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v))
        {
            if (v >= 0 && v <= max) return v;
            throw new SvgdException($"{field}: '{t}' is not a class index in 0..{max}{NamesHint}");
        }
        if (allowNull && t.Equals("null", StringComparison.OrdinalIgnoreCase)) return NullLabel;
        if (Names != null)
            for (int i = 0; i < Names.Count; i++)
                if (string.Equals(Names[i], t, StringComparison.OrdinalIgnoreCase)) return i;
        throw new SvgdException(Names != null
            ? $"{field}: unknown class '{t}' (classes, index = position: {string.Join(", ", Names.Select((n, i) => $"{i} {n}"))}; indices follow the sorted training folder names, not a data set's own label ids)"
            : $"{field}: '{t}' is not a class index in 0..{max} (this model stores no class names)");
    }

    /// <summary>Labels from a comma-separated list (or the items of a list) of indices and names.</summary>
    public int[] ResolveAll(IEnumerable<string> tokens, string field, bool allowNull = false)
    {
        var given = tokens.ToList();
        if (given.Count > 1 && given.Any(string.IsNullOrWhiteSpace)) throw new SvgdException($"{field}: an item of the list is empty");
        var list = given.SelectMany(t => Split(t, field)).Select(t => Resolve(t, field, allowNull)).ToArray();
        return list.Length > 0 ? list : throw new SvgdException($"{field}: no classes given");
    }

    /// <summary>
    /// "sneaker,bag" or "7, 1" into its items. An empty item ("sneaker,,bag", a trailing comma) is refused, naming
    /// <paramref name="field"/>: dropping it silently would sample other rows than the user typed.
    /// </summary>
    public static IReadOnlyList<string> Split(string s, string field = "list")
    {
        var items = s.Split(',', StringSplitOptions.TrimEntries);
        if (items.Length > 1 && items.Any(i => i.Length == 0))
            throw new SvgdException($"{field} '{s}' has an empty item (two commas in a row, or a comma at an end)");
        return items.Length == 1 && items[0].Length == 0 ? Array.Empty<string>() : items;
    }

    /// <summary>The class name of a label, its index where the model has no names, "null" for the null label.</summary>
    public string Name(int label) => label == NullLabel ? "null" : Names != null && label >= 0 && label < Names.Count ? Names[label] : label.ToString(CultureInfo.InvariantCulture);

    string NamesHint => Names != null ? $" (or a name; index = position: {string.Join(", ", Names.Select((n, i) => $"{i} {n}"))})" : "";
}
