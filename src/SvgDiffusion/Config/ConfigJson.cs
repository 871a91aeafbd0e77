using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace SvgDiffusion.Config;

/// <summary>
/// JSON configs use the reference code's hyper-parameter names (snake_case); unknown keys are ignored so
/// the reference case files and released configs are valid as they are.
/// </summary>
public static class ConfigJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        WriteIndented = false,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>Reads <paramref name="path"/>, optionally descending into <paramref name="section"/> when present.</summary>
    public static T Load<T>(string path, string? section = null)
    {
        if (!File.Exists(path)) throw new SvgdException($"{path}: config file not found");
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new SvgdException($"{path}: invalid JSON ({e.Message})"); }
        if (section != null && node is JsonObject o && o[section] is JsonObject inner) node = inner;
        return Parse<T>(node, path);
    }

    public static T Parse<T>(JsonNode? node, string source)
    {
        if (node is not JsonObject) throw new SvgdException($"{source}: config must be a JSON object");
        try { return node.Deserialize<T>(Options) ?? throw new SvgdException($"{source}: empty config"); }
        catch (JsonException e) { throw new SvgdException($"{source}: invalid value at {e.Path ?? "?"} ({FirstLine(e.Message)})"); }
    }

    /// <summary>A config stored as a JSON string (checkpoint metadata); broken JSON is reported against <paramref name="source"/>.</summary>
    public static T ParseText<T>(string json, string source)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (JsonException e) { throw new SvgdException($"{source}: config is not valid JSON ({FirstLine(e.Message)})"); }
        return Parse<T>(node, source);
    }

    public static string Serialize<T>(T value) => JsonSerializer.Serialize(value, Options);

    static string FirstLine(string s) => s.Split('\n')[0];
}
