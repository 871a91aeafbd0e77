using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using SvgDiffusion.Sampling;

namespace SvgDiffusion.Server;

/// <summary>A request the client got wrong: answered with <see cref="Status"/> and one line saying what is wrong.</summary>
public sealed class ApiException(int status, string message) : Exception(message)
{
    public int Status => status;
}

/// <summary>
/// The fields of an API request, whichever way they came: a JSON object, or a form (multipart with image
/// uploads, or url-encoded). Field names are the CLI's option names; images are uploaded files, or base64
/// strings in JSON. Everything is held in memory: uploads are decoded from their bytes, never saved.
/// </summary>
public sealed class ApiFields
{
    readonly Dictionary<string, JsonElement> _json = new(StringComparer.Ordinal);
    readonly Dictionary<string, string> _form = new(StringComparer.Ordinal);
    readonly Dictionary<string, byte[]> _files = new(StringComparer.Ordinal);

    public static async Task<ApiFields> ReadAsync(HttpRequest request, CancellationToken cancel)
    {
        var fields = new ApiFields();
        string type = request.ContentType ?? "";
        bool isForm = request.HasFormContentType;
        // A compressed body would otherwise be read as JSON or a form and refused as garbage.
        string encoding = request.Headers.ContentEncoding.ToString();
        if (encoding.Length > 0 && !encoding.Equals("identity", StringComparison.OrdinalIgnoreCase))
            throw new ApiException(415, $"unsupported Content-Encoding '{encoding}': send the body uncompressed");
        try
        {
            if (isForm)
            {
                var form = await request.ReadFormAsync(cancel);
                foreach (var (k, v) in form) fields._form[k] = v.ToString();
                foreach (var f in form.Files)
                {
                    using var ms = new MemoryStream();
                    await f.CopyToAsync(ms, cancel);
                    if (!fields._files.TryAdd(f.Name, ms.ToArray())) throw new ApiException(400, $"{f.Name}: more than one file uploaded");
                }
            }
            else if (type.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) || (type.Length == 0 && request.ContentLength is null or 0))
            {
                if (request.ContentLength is null or > 0)
                {
                    // Read whole (Kestrel bounds it by the upload limit), so its encoding is checked before any of it is parsed.
                    using var ms = new MemoryStream();
                    await request.Body.CopyToAsync(ms, cancel);
                    if (ms.Length > 0) fields.ReadJson(ms.GetBuffer().AsMemory(0, (int)ms.Length));
                }
            }
            else throw new ApiException(415, $"unsupported Content-Type '{type}': send JSON (application/json) or a form (multipart/form-data for images)");
        }
        catch (JsonException e) { throw new ApiException(400, $"the body is not valid JSON ({FirstLine(e)})"); }
        // Kestrel's framing errors (a chunk size that is not hex, a body cut short): the client's, whatever the endpoint.
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge) { throw new ApiException(413, $"the request body is larger than this server accepts ({FirstLine(e)})"); }
        catch (BadHttpRequestException e) { throw new ApiException(e.StatusCode is >= 400 and < 500 ? e.StatusCode : 400, $"the request body could not be read: {FirstLine(e)}"); }
        catch (InvalidDataException e) { throw new ApiException(FormLimitStatus(e.Message), $"the form could not be read: {FirstLine(e)}"); }
        catch (IOException e) when (!cancel.IsCancellationRequested)
        {
            // The multipart reader's "Unexpected end of Stream": the body ended before the closing boundary the
            // Content-Type header names (a different boundary in the body, or none at its end).
            if (isForm && e.Message.StartsWith("Unexpected end of Stream", StringComparison.Ordinal))
                throw new ApiException(400, $"the form could not be read: the body ends before its closing boundary '--{Boundary(type)}--' (the boundary the Content-Type header gives)");
            throw new ApiException(400, $"the request body could not be read: {FirstLine(e)}");
        }
        return fields;
    }

    /// <summary>Form limits that are the server's size limits (413); the rest (boundary or header line too long) mean a malformed form (400).</summary>
    static int FormLimitStatus(string message) =>
        new[] { "body length limit", "Form key length limit", "Form value length limit", "Form value count limit" }.Any(m => message.Contains(m, StringComparison.OrdinalIgnoreCase))
            ? StatusCodes.Status413PayloadTooLarge : StatusCodes.Status400BadRequest;

    static string Boundary(string contentType) =>
        Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(contentType, out var m) ? Microsoft.Net.Http.Headers.HeaderUtilities.RemoveQuotes(m.Boundary).ToString() : "";

    static string FirstLine(Exception e) => e.Message.Split('\n')[0].Trim();

    /// <summary>
    /// A JSON body: UTF-8 (a byte order mark allowed), an object, and every string in it text: the parser leaves
    /// invalid UTF-8 and unpaired surrogate escapes (\ud800) inside strings until they are read, deep in an endpoint.
    /// </summary>
    void ReadJson(ReadOnlyMemory<byte> body)
    {
        int bom = body.Span.StartsWith(Utf8Bom) ? Utf8Bom.Length : 0;
        int bad = FirstInvalidUtf8(body.Span[bom..]);
        if (bad >= 0) throw new ApiException(400, $"the JSON body is not valid UTF-8 (byte {bom + bad})");
        using var doc = JsonDocument.Parse(body[bom..]);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new ApiException(400, "the JSON body must be an object of fields, e.g. {\"classes\": \"sneaker\", \"n\": 4}");
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            string name = NameOf(p);
            CheckText(p.Value, name);
            _json[name] = p.Value.Clone();
        }
    }

    static ReadOnlySpan<byte> Utf8Bom => [0xEF, 0xBB, 0xBF];

    /// <summary>The offset of the first byte that is not part of well-formed UTF-8, or -1.</summary>
    static int FirstInvalidUtf8(ReadOnlySpan<byte> bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return -1;
        Span<char> chars = stackalloc char[1024];
        int offset = 0;
        while (true)
        {
            var status = System.Text.Unicode.Utf8.ToUtf16(bytes[offset..], chars, out int read, out _, replaceInvalidSequences: false);
            offset += read;
            if (status != System.Buffers.OperationStatus.DestinationTooSmall) return status == System.Buffers.OperationStatus.Done ? -1 : offset;
        }
    }

    static string NameOf(JsonProperty p)
    {
        try { return p.Name; }
        catch (InvalidOperationException) { throw new ApiException(400, "a field name: the JSON string is not valid Unicode (an unpaired surrogate escape)"); }
    }

    static void CheckText(JsonElement e, string field)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                try { e.GetString(); }
                catch (InvalidOperationException)
                {
                    string raw = e.GetRawText();
                    throw new ApiException(400, $"{field}: the JSON string {(raw.Length > 40 ? raw[..40] + "..." : raw)} is not valid Unicode (an unpaired surrogate escape)");
                }
                break;
            case JsonValueKind.Array:
                foreach (var x in e.EnumerateArray()) CheckText(x, field);
                break;
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject()) CheckText(p.Value, $"{field}.{NameOf(p)}");
                break;
        }
    }

    public IEnumerable<string> Names => _json.Keys.Concat(_form.Keys).Concat(_files.Keys);

    /// <summary>A misspelt field would otherwise be silently ignored and its default used.</summary>
    public void Allow(params string[] known)
    {
        foreach (var name in Names)
            if (!known.Contains(name)) throw new ApiException(400, $"unknown field '{name}' (fields: {string.Join(", ", known)})");
    }

    public bool Has(string name) => _json.ContainsKey(name) || _form.ContainsKey(name) || _files.ContainsKey(name);

    public string? String(string name)
    {
        if (_form.TryGetValue(name, out var s)) return s;
        if (!_json.TryGetValue(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        return e.ValueKind == JsonValueKind.String ? e.GetString() : throw new ApiException(400, $"{name} must be a string, got {e.GetRawText()}");
    }

    public long? Long(string name)
    {
        if (_form.TryGetValue(name, out var s))
            return long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) ? v : throw new ApiException(400, $"{name} must be a whole number, got '{s}'");
        if (!_json.TryGetValue(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out long l)) return l;
        if (e.ValueKind == JsonValueKind.String && long.TryParse(e.GetString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long ls)) return ls;
        throw new ApiException(400, $"{name} must be a whole number, got {e.GetRawText()}");
    }

    public int? Int(string name)
    {
        long? v = Long(name);
        if (v is null) return null;
        return v.Value is >= int.MinValue and <= int.MaxValue ? (int)v.Value : throw new ApiException(400, $"{name} {v.Value} is far too large");
    }

    public double? Double(string name)
    {
        if (_form.TryGetValue(name, out var s))
            return double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : throw new ApiException(400, $"{name} must be a number, got '{s}'");
        if (!_json.TryGetValue(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        // A number beyond double's range (1e400) is read as infinity, so the field's range check names it.
        if (e.ValueKind == JsonValueKind.Number) return e.TryGetDouble(out double d) ? d : double.Parse(e.GetRawText(), NumberStyles.Float, CultureInfo.InvariantCulture);
        if (e.ValueKind == JsonValueKind.String && double.TryParse(e.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out double ds)) return ds;
        throw new ApiException(400, $"{name} must be a number, got {e.GetRawText()}");
    }

    /// <summary>A list as "sneaker,bag", ["sneaker", "bag"], [7, 1] or 7.</summary>
    public IReadOnlyList<string>? List(string name)
    {
        if (_form.TryGetValue(name, out var s)) return ClassLabels.Split(s).ToList();
        if (!_json.TryGetValue(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        string Item(JsonElement x) => x.ValueKind switch
        {
            JsonValueKind.String => x.GetString()!,
            JsonValueKind.Number => x.GetRawText(),
            _ => throw new ApiException(400, $"{name} must hold class indices or names, got {x.GetRawText()}"),
        };
        return e.ValueKind switch
        {
            JsonValueKind.Array => e.EnumerateArray().Select(Item).ToList(),
            JsonValueKind.String => ClassLabels.Split(e.GetString()!).ToList(),
            JsonValueKind.Number => new[] { e.GetRawText() },
            _ => throw new ApiException(400, $"{name} must be a list of class indices or names, got {e.GetRawText()}"),
        };
    }

    /// <summary>An uploaded file's bytes (a form file, or base64 in JSON), or null when absent.</summary>
    public byte[]? File(string name)
    {
        if (_files.TryGetValue(name, out var bytes)) return bytes;
        if (_form.ContainsKey(name)) throw new ApiException(400, $"{name} must be an uploaded file (multipart/form-data), not a text field");
        if (!_json.TryGetValue(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        string b64 = e.ValueKind == JsonValueKind.String ? e.GetString()! : throw new ApiException(400, $"{name} must be a base64 string of the image file");
        int comma = b64.StartsWith("data:", StringComparison.Ordinal) ? b64.IndexOf(',') : -1;
        try { return Convert.FromBase64String(comma >= 0 ? b64[(comma + 1)..] : b64); }
        catch (FormatException) { throw new ApiException(400, $"{name} is not valid base64"); }
    }

    /// <summary>The sampling fields as the library's request (validated by it, not here).</summary>
    public GenerationRequest GenerationRequest(string classesField = "classes", int defaultN = Sampling.GenerationRequest.DefaultN) => new()
    {
        Classes = List(classesField),
        Labels = List("labels"),
        N = Int("n") ?? defaultN,
        Steps = Int("steps") ?? Sampling.GenerationRequest.DefaultSteps,
        Cfg = Double("cfg") ?? Sampling.GenerationRequest.DefaultCfg,
        Guidance = String("guidance") ?? "constant",
        Sampler = String("sampler") ?? "euler",
        Shift = Double("shift") ?? Transport.Sampler.DefaultShift,
        Seed = Long("seed") ?? 0,
        Precision = String("precision"),
    };
}
