using System.Text;
using System.Text.Json;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// Generated bad requests against the studio, as raw bytes: every field of every endpoint given a value of
/// the wrong type or out of its range, valid bodies with random bytes flipped or cut short, mangled
/// multipart, broken chunked framing, and every method an API path does not take. None may be a 500: a
/// value that must be refused is 400 with an error that starts with the field's name, before any work; the
/// rest are answered with either a result or the server's JSON error. Every base request is a valid one of
/// one step and one sample, so a mutation that stays valid costs little.
/// </summary>
[Collection("studio")]
public class StudioFuzzTests(StudioFixture fx)
{
    /// <param name="Status">The status it must get; null: anything but 5xx.</param>
    /// <param name="ErrorStart">How the JSON error must start (the field at fault).</param>
    public sealed record Case(string Name, byte[] Request, int? Status, string? ErrorStart = null, string? Allow = null);

    static readonly string Image = Convert.ToBase64String(File.ReadAllBytes(BundledService.ImagePath("bag")));

    enum Kind { Count, Seed, Cfg, Shift, Strength, Sampler, Guidance, Precision, Classes, Seeds, Image }

    /// <summary>An endpoint's cheap valid request: (field, JSON value, kind) in order.</summary>
    sealed record Endpoint(string Path, string Label, (string Name, string Json, Kind Kind)[] Fields);

    static readonly (string, string, Kind)[] Sampling =
    [
        ("steps", "1", Kind.Count), ("cfg", "1.5", Kind.Cfg), ("guidance", "\"constant\"", Kind.Guidance), ("sampler", "\"euler\"", Kind.Sampler),
        ("shift", "0.15", Kind.Shift), ("precision", "\"fp32\"", Kind.Precision),
    ];

    static readonly Endpoint[] Endpoints =
    [
        new("/api/generate", "generate", [("classes", "\"bag\"", Kind.Classes), ("n", "1", Kind.Count), ("seed", "1", Kind.Seed), .. Sampling]),
        new("/api/generate", "generate-labels", [("labels", "[1]", Kind.Classes), ("seed", "1", Kind.Seed), .. Sampling]),
        new("/api/vary", "vary", [("image", $"\"{Image}\"", Kind.Image), ("strength", "0.5", Kind.Strength), ("class", "\"bag\"", Kind.Classes), ("n", "1", Kind.Count), ("seed", "1", Kind.Seed), .. Sampling]),
        new("/api/recolor", "recolor", [("image", $"\"{Image}\"", Kind.Image), ("like", $"\"{Image}\"", Kind.Image), ("strength", "0.5", Kind.Strength), ("class", "\"bag\"", Kind.Classes), ("n", "1", Kind.Count), ("seed", "1", Kind.Seed), .. Sampling]),
        new("/api/interpolate", "interpolate-seeds", [("seeds", "[1, 2]", Kind.Seeds), ("class", "\"bag\"", Kind.Classes), ("frames", "2", Kind.Count), .. Sampling]),
        new("/api/interpolate", "interpolate-images", [("a", $"\"{Image}\"", Kind.Image), ("b", $"\"{Image}\"", Kind.Image), ("frames", "2", Kind.Count), ("precision", "\"fp32\"", Kind.Precision)]),
        new("/api/mix", "mix", [("semantic", $"\"{Image}\"", Kind.Image), ("detail", $"\"{Image}\"", Kind.Image), ("precision", "\"fp32\"", Kind.Precision)]),
        new("/api/reconstruct", "reconstruct", [("image", $"\"{Image}\"", Kind.Image), ("precision", "\"fp32\"", Kind.Precision)]),
    ];

    static readonly string[] WrongTypes = ["true", "{}", "[[]]"];

    /// <summary>Values every field of a kind must refuse, as JSON text.</summary>
    static IEnumerable<string> Bad(Kind kind) => kind switch
    {
        Kind.Count => [.. WrongTypes, "\"three\"", "1.5", "1e400", "-1", "0", "2147483648", "1e-320", "\"NaN\"", "100000"],
        Kind.Seed => [.. WrongTypes, "\"x\"", "1.5", "1e400", "18446744073709551616", "[1]"],
        Kind.Cfg => [.. WrongTypes, "\"x\"", "1e400", "-1e400", "\"NaN\"", "\"Infinity\"", "-1e-320", "1e308", "-1", "100.5"],
        Kind.Shift => [.. WrongTypes, "\"x\"", "1e400", "\"-Infinity\"", "\"NaN\"", "1e-320", "5e-324", "1e308", "0", "-0.15", "1000.5"],
        Kind.Strength => [.. WrongTypes, "\"x\"", "1e400", "\"NaN\"", "1e-320", "5e-324", "0", "-0.5", "1.0000001"],
        Kind.Sampler => [.. WrongTypes, "1", "\"\"", "\"rk4\"", "\"euler\\u0000\"", $"\"{new string('e', 5000)}\""],
        Kind.Guidance => [.. WrongTypes, "1", "\"early-NaN\"", "\"early-1e400\"", "\"early-2\"", "\"cfg_star-1-1e300\"", "\"cfg_star-1-NaN\"", "\"cfg_star-99999999999-0\"", "\"late-\""],
        Kind.Precision => [.. WrongTypes, "1", "\"fp16\"", "\"fp64\"", "\"bf16\"", "\"\\ud800\""],
        Kind.Classes => [.. WrongTypes, "[true]", "[{}]", "[1e400]", "\"-1\"", "[11]", "[]", "\"nothing\"", "[null]"],
        Kind.Seeds => [.. WrongTypes, "[1]", "[1, 2, 3]", "[\"a\", \"b\"]", "[1.5, 2]", "[1e400, 2]", "[true, 1]"],
        Kind.Image => [.. WrongTypes, "1", "\"%%%\"", "\"\"", "\"data:,\"", "\"AAAA\"", $"\"{Convert.ToBase64String(Encoding.UTF8.GetBytes("<svg/>"))}\"", $"\"{Image[..(Image.Length / 2 / 4 * 4)]}\""],
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    static string Body(Endpoint e, string? field = null, string? value = null) =>
        "{" + string.Join(", ", e.Fields.Select(f => $"\"{f.Name}\": {(f.Name == field ? value : f.Json)}")) + "}";

    static byte[] Json(string path, byte[] body, string contentType = "application/json") =>
        RawHttp.Request("POST", path, [$"Content-Type: {contentType}", $"Content-Length: {body.Length}"], body);

    const string Boundary = "fuzz-boundary";

    static byte[] Multipart(params (string Name, byte[] Bytes, bool File)[] parts)
    {
        using var ms = new MemoryStream();
        foreach (var (name, bytes, file) in parts)
        {
            ms.Write(Encoding.ASCII.GetBytes($"--{Boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{(file ? $"; filename=\"{name}.png\"\r\nContent-Type: image/png" : "")}\r\n\r\n"));
            ms.Write(bytes);
            ms.Write("\r\n"u8);
        }
        ms.Write(Encoding.ASCII.GetBytes($"--{Boundary}--\r\n"));
        return ms.ToArray();
    }

    public static readonly IReadOnlyList<Case> Cases = Generate();

    static List<Case> Generate()
    {
        var cases = new List<Case>();
        var rng = new Random(28);

        // Every field of every endpoint, every value its kind must refuse.
        foreach (var e in Endpoints)
            foreach (var f in e.Fields)
                foreach (var (v, i) in Bad(f.Kind).Select((v, i) => (v, i)))
                    cases.Add(new($"{e.Label}.{f.Name}#{i} = {(v.Length > 24 ? v[..24] + "..." : v)}", Json(e.Path, Encoding.UTF8.GetBytes(Body(e, f.Name, v))), 400, f.Name));

        // Valid bodies with 1-3 bytes replaced by random ones (ASCII or not), and cut short.
        var bases = Endpoints.Where(e => e.Label is "generate" or "mix" or "reconstruct" or "interpolate-seeds").ToArray();
        for (int i = 0; i < 64; i++)
        {
            var e = bases[i % bases.Length];
            byte[] body = Encoding.UTF8.GetBytes(Body(e));
            int flips = 1 + rng.Next(3);
            // Mostly in the field names and small values at the start, where a flip changes the meaning, not only the image.
            for (int k = 0; k < flips; k++) body[rng.Next(Math.Min(body.Length, 120))] = (byte)rng.Next(256);
            cases.Add(new($"flip {e.Label} #{i}", Json(e.Path, body), null));
        }
        for (int i = 0; i < 24; i++)
        {
            var e = bases[i % bases.Length];
            byte[] body = Encoding.UTF8.GetBytes(Body(e));
            cases.Add(new($"cut {e.Label} #{i}", Json(e.Path, body[..rng.Next(1, body.Length - 1)]), 400, "the body is not valid JSON"));
        }

        // Images: the PNG itself with bytes flipped anywhere (header, chunk lengths, CRCs, pixel data), and valid
        // images of shapes the editor must take (a pixel, a line, a tall strip).
        byte[] image = Convert.FromBase64String(Image);
        for (int i = 0; i < 32; i++)
        {
            byte[] b = (byte[])image.Clone();
            for (int k = 1 + rng.Next(4); k > 0; k--) b[rng.Next(b.Length)] = (byte)rng.Next(256);
            cases.Add(new($"png flip #{i}", Json("/api/reconstruct", Encoding.UTF8.GetBytes($"{{\"image\": \"{Convert.ToBase64String(b)}\"}}")), null));
        }
        foreach (var (h, w) in new[] { (1, 1), (1, 300), (300, 1), (33, 31) })
        {
            string odd;
            using (var t = TorchSharp.torch.full(new long[] { 3, h, w }, 200, dtype: TorchSharp.torch.ScalarType.Byte)) odd = Convert.ToBase64String(Data.ImageFiles.EncodePng(t));
            cases.Add(new($"image {h}x{w} reconstruct", Json("/api/reconstruct", Encoding.UTF8.GetBytes($"{{\"image\": \"{odd}\"}}")), null));
            cases.Add(new($"image {h}x{w} mix", Json("/api/mix", Encoding.UTF8.GetBytes($"{{\"semantic\": \"{odd}\", \"detail\": \"{Image}\"}}")), null));
            cases.Add(new($"image {h}x{w} interpolate", Json("/api/interpolate", Encoding.UTF8.GetBytes($"{{\"a\": \"{Image}\", \"b\": \"{odd}\", \"frames\": 2}}")), null));
        }

        // Multipart: valid uploads with their framing mangled.
        byte[] png = Convert.FromBase64String(Image);
        byte[] form = Multipart(("image", png, true), ("precision", "fp32"u8.ToArray(), false));
        string type = $"multipart/form-data; boundary={Boundary}";
        for (int i = 0; i < 24; i++)
        {
            byte[] b = (byte[])form.Clone();
            int at = rng.Next(2) == 0 ? rng.Next(120) : form.Length - 1 - rng.Next(60);
            b[at] = (byte)rng.Next(256);
            cases.Add(new($"multipart flip @{at} #{i}", Json("/api/reconstruct", b, type), null));
        }
        for (int i = 0; i < 16; i++)
        {
            int cut = rng.Next(1, form.Length - 1);
            cases.Add(new($"multipart cut @{cut} #{i}", Json("/api/reconstruct", form[..cut], type), null));
        }
        foreach (var (label, t) in new[]
        {
            ("other boundary", "multipart/form-data; boundary=not-the-one"), ("quoted boundary", $"multipart/form-data; boundary=\"{Boundary}\""),
            ("empty boundary", "multipart/form-data; boundary="), ("no boundary", "multipart/form-data"), ("mixed", $"multipart/mixed; boundary={Boundary}"),
            ("urlencoded", "application/x-www-form-urlencoded"), ("json", "application/json"), ("charset", "application/json; charset=utf-16"),
        })
            cases.Add(new($"multipart as {label}", Json("/api/reconstruct", form, t), null));
        cases.Add(new("multipart two images", Json("/api/reconstruct", Multipart(("image", png, true), ("image", png, true)), type), 400, "image: more than one file uploaded"));
        cases.Add(new("multipart image as text", Json("/api/reconstruct", Multipart(("image", "abc"u8.ToArray(), false)), type), 400, "image must be an uploaded file"));
        cases.Add(new("multipart strength subnormal", Json("/api/vary", Multipart(("image", png, true), ("strength", "1e-320"u8.ToArray(), false)), type), 400, "strength must be a finite number in [0.001, 1]"));
        cases.Add(new("multipart shift nan", Json("/api/vary", Multipart(("image", png, true), ("shift", "NaN"u8.ToArray(), false)), type), 400, "shift must be a finite number in [0.001, 1000]"));
        cases.Add(new("multipart field invalid utf8", Json("/api/reconstruct", Multipart(("image", png, true), ("precision", [0xff, 0xfe], false)), type), 400, "precision"));
        cases.Add(new("urlencoded invalid escapes", Json("/api/generate", "n=%ZZ&steps=%"u8.ToArray(), "application/x-www-form-urlencoded"), 400, "n must be a whole number"));
        cases.Add(new("urlencoded invalid utf8", Json("/api/generate", "sampler=%FF%FE&n=1&steps=1"u8.ToArray(), "application/x-www-form-urlencoded"), 400, "sampler must be euler or heun"));

        // Chunk sizes that are not.
        foreach (var size in new[] { "g", "0x10", "-5", "+5", "5;\u0001", "", "ffffffffffffffffffff", "1 2", "\u00ff" })
            cases.Add(new($"chunk size '{size}'", RawHttp.Request("POST", "/api/generate", ["Content-Type: application/json", "Transfer-Encoding: chunked"],
                Encoding.Latin1.GetBytes($"{size}\r\n{{\"steps\": -1}}\r\n0\r\n\r\n")), 400));

        // Every method an API path does not take; HEAD where it takes GET is GET without the body.
        var paths = new[] { ("/api/model", "GET, HEAD, POST"), ("/api/models", "GET, HEAD"), ("/api/status", "GET, HEAD"), ("/api/generate", "POST"), ("/api/vary", "POST"), ("/api/recolor", "POST"), ("/api/interpolate", "POST"), ("/api/mix", "POST"), ("/api/reconstruct", "POST") };
        foreach (var (path, allow) in paths)
            foreach (var method in new[] { "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECTX", "PROPFIND" })
            {
                if (allow.Contains(method)) continue;
                cases.Add(new($"{method} {path}", RawHttp.Request(method, path, ["Content-Length: 0"], []), 405, method == "HEAD" ? null : method, allow));
            }
        foreach (var path in new[] { "/api/%ED%A0%80", "/api/%FF", "/api/model/x", "/api/" })
            cases.Add(new($"no endpoint {path}", RawHttp.Request("GET", path, [], []), 404, "no endpoint"));
        return cases;
    }

    public static IEnumerable<object[]> CaseNames() => Cases.Select(c => new object[] { c.Name });

    [Fact]
    public void TheSuiteHasEnoughDistinctCases()
    {
        Assert.Equal(Cases.Count, Cases.Select(c => c.Name).Distinct().Count());
        Assert.True(Cases.Count >= 400, $"{Cases.Count} cases");
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task FuzzedRequestIsNeverA500(string name)
    {
        var c = Cases.Single(x => x.Name == name);
        int completed = c.Status is >= 400 ? (await fx.StatusAsync()).GetProperty("completed").GetInt32() : 0;
        var res = await RawHttp.SendAsync(fx.Server.Address, c.Request, timeoutSeconds: 60);
        Assert.True(res.Status < 500, $"{name}: {res.Status}: {res.Text}");
        if (c.Status is int status) Assert.True(res.Status == status, $"{name}: expected {status}, got {res.Status}: {res.Text}");
        if (c.Allow != null) Assert.Equal(c.Allow, res.Header("Allow"));
        bool head = Encoding.ASCII.GetString(c.Request, 0, 5) == "HEAD ";
        if (res.Status >= 400 && !head && res.Body.Length > 0 || c.ErrorStart != null)
        {
            Assert.StartsWith("application/json", res.Header("Content-Type"));
            using var doc = JsonDocument.Parse(res.Body);
            string error = doc.RootElement.GetProperty("error").GetString()!;
            Assert.DoesNotContain('\n', error);
            if (c.ErrorStart != null) Assert.True(error.StartsWith(c.ErrorStart, StringComparison.Ordinal), $"{name}: '{error}' does not start with '{c.ErrorStart}'");
        }
        if (c.Status is >= 400) Assert.Equal(completed, (await fx.StatusAsync()).GetProperty("completed").GetInt32());
    }
}
