using System.Text;
using System.Text.Json;
using SvgDiffusion.Server;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// Requests a hostile or broken client sends, as raw bytes over a socket: broken encodings, broken framing,
/// numbers that would poison the sampler, methods a route does not take. Each is the client's mistake, so
/// each is answered 4xx with the server's JSON error naming what is wrong, before any work; never 500.
/// Requests Kestrel refuses itself (a broken request head) never reach the app: its own empty 400.
/// </summary>
[Collection("studio")]
public class StudioHostileRequestTests(StudioFixture fx)
{
    /// <param name="Error">A fragment of the JSON error; null: Kestrel's own 400, the app never sees the request.</param>
    /// <param name="Allow">The Allow header a 405 must carry.</param>
    public sealed record Case(string Name, byte[] Request, int Status, string? Error, string? Allow = null);

    const string Boundary = "svgd-test-boundary";

    static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);
    static byte[] Latin1(string s) => Encoding.Latin1.GetBytes(s);

    static byte[] Post(string path, string contentType, byte[] body, params string[] headers) =>
        RawHttp.Request("POST", path, [$"Content-Type: {contentType}", $"Content-Length: {body.Length}", .. headers], body);

    static byte[] Json(string path, byte[] body) => Post(path, "application/json", body);

    static byte[] Chunked(string path, string contentType, string framing, params string[] headers) =>
        RawHttp.Request("POST", path, [$"Content-Type: {contentType}", "Transfer-Encoding: chunked", .. headers], Latin1(framing));

    static byte[] Method(string method, string path) => RawHttp.Request(method, path, [], []);

    /// <summary>A multipart body with one text field n=1; <paramref name="end"/> is what closes it.</summary>
    static byte[] Multipart(string bodyBoundary, string end) =>
        Utf8($"--{bodyBoundary}\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n1\r\n{end}");

    static readonly string Body = $"--{Boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nPNG?\r\n--{Boundary}--\r\n";

    public static readonly IReadOnlyList<Case> Cases =
    [
        // Invalid UTF-8 in a JSON body: in a value, in a name, overlong, an encoded surrogate, cut short.
        new("utf8-value", Json("/api/generate", [.. "{\"classes\": \""u8, 0xff, 0xfe, .. "\"}"u8]), 400, "the JSON body is not valid UTF-8 (byte 13)"),
        new("utf8-name", Json("/api/generate", [.. "{\""u8, 0xc3, 0x28, .. "\": 1}"u8]), 400, "the JSON body is not valid UTF-8 (byte 2)"),
        new("utf8-overlong", Json("/api/generate", [.. "{\"sampler\": \""u8, 0xc0, 0xaf, .. "\"}"u8]), 400, "not valid UTF-8"),
        new("utf8-surrogate", Json("/api/generate", [.. "{\"guidance\": \""u8, 0xed, 0xa0, 0x80, .. "\"}"u8]), 400, "not valid UTF-8"),
        new("utf8-truncated", Json("/api/mix", [.. "{\"precision\": \"fp32\", \"semantic\": \""u8, 0xe2, 0x82]), 400, "not valid UTF-8"),
        new("utf8-with-charset", Post("/api/generate", "application/json; charset=utf-8", [.. "{\"n\": 1, \"x\u00e9\": \""u8, 0xff, .. "\"}"u8]), 400, "not valid UTF-8"),
        // Valid UTF-8 whose escapes are not text: an unpaired surrogate, in a value and in a name.
        new("json-lone-surrogate-value", Json("/api/generate", Utf8("""{"classes": "\ud800"}""")), 400, "classes: the JSON string \"\\ud800\" is not valid Unicode"),
        new("json-lone-surrogate-name", Json("/api/generate", Utf8("""{"\udfff": 1}""")), 400, "the JSON string is not valid Unicode"),
        new("json-lone-surrogate-list", Json("/api/generate", Utf8("""{"labels": ["bag", "\ud83d"]}""")), 400, "labels: the JSON string \"\\ud83d\" is not valid Unicode"),

        // Numbers that are not numbers, or that would poison the sampler ("sampled latents hold NaN").
        new("shift-subnormal", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "shift": 1e-320}""")), 400, "shift must be a finite number in [0.001, 1000], got 1E-320"),
        new("shift-smallest", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "shift": 5e-324}""")), 400, "shift must be a finite number in [0.001, 1000], got 5E-324"),
        new("shift-overflow", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "shift": 1e400}""")), 400, "shift must be a finite number in [0.001, 1000], got Infinity"),
        new("shift-huge", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "shift": 1e300}""")), 400, "shift must be a finite number in [0.001, 1000], got 1E+300"),
        new("shift-nan-string", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "shift": "NaN"}""")), 400, "shift must be a finite number in [0.001, 1000], got NaN"),
        new("shift-form-infinity", Post("/api/generate", "application/x-www-form-urlencoded", Utf8("shift=-Infinity")), 400, "shift must be a finite number in [0.001, 1000], got -Infinity"),
        new("cfg-huge", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "cfg": 1e30}""")), 400, "cfg must be a finite number in [0, 100], got 1E+30"),
        new("cfg-overflow", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "cfg": -1e999}""")), 400, "cfg must be a finite number in [0, 100], got -Infinity"),
        new("cfg-infinity-string", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "cfg": "Infinity"}""")), 400, "cfg must be a finite number in [0, 100], got Infinity"),
        new("cfg-star-factor-huge", Json("/api/generate", Utf8("""{"n": 1, "steps": 1, "guidance": "cfg_star-1-1e300"}""")), 400, "guidance: unknown guidance mode 'cfg_star-1-1e300'"),
        new("strength-subnormal", Json("/api/vary", Utf8("""{"strength": 1e-320}""")), 400, "strength must be a finite number in [0.001, 1], got 1E-320"),
        new("strength-overflow", Json("/api/vary", Utf8("""{"strength": 1e400}""")), 400, "strength must be a finite number in [0.001, 1], got Infinity"),
        new("strength-form-nan", Post("/api/vary", "application/x-www-form-urlencoded", Utf8("strength=nan")), 400, "strength must be a finite number in [0.001, 1], got NaN"),
        new("recolor-strength-overflow", Json("/api/recolor", Utf8("""{"class": "bag", "strength": 1e400}""")), 400, "strength must be a finite number in [0.001, 1], got Infinity"),
        new("recolor-neither-like-nor-class", Post("/api/recolor", "application/x-www-form-urlencoded", Utf8("strength=0.5")), 400, "like, class: give like"),
        new("model-switch-to-a-path", Json("/api/model", Utf8("""{"name": "../../etc"}""")), 400, "name: no bundled model '../../etc' (bundled: "),
        new("model-switch-not-a-string", Json("/api/model", Utf8("""{"name": 7}""")), 400, "name must be a string, got 7"),

        // Text the error quotes, with line breaks in it: the error stays one line.
        new("newline-in-value", Json("/api/generate", Utf8("""{"sampler": "euler\r\nX-Injected: 1"}""")), 400, "sampler must be euler or heun, not 'euler\\r\\nX-Injected: 1'"),
        new("newline-in-form-name", Post("/api/generate", "application/x-www-form-urlencoded", Utf8("a%0Ab=1")), 400, "unknown field 'a\\nb'"),

        // A compressed body is named as such, not parsed as garbage.
        new("content-encoding-gzip", Post("/api/generate", "application/json", [0x1f, 0x8b, 0x08, 0x00, 0x00], "Content-Encoding: gzip"), 415, "unsupported Content-Encoding 'gzip': send the body uncompressed"),

        // Multipart whose framing is broken.
        new("multipart-boundary-mismatch", Post("/api/reconstruct", $"multipart/form-data; boundary={Boundary}", Utf8(Body.Replace(Boundary, "other-boundary"))), 400, "the form could not be read"),
        new("multipart-no-closing-boundary", Post("/api/reconstruct", $"multipart/form-data; boundary={Boundary}", Multipart(Boundary, "")), 400, "the form could not be read"),
        new("multipart-cut-in-headers", Post("/api/reconstruct", $"multipart/form-data; boundary={Boundary}", Utf8($"--{Boundary}\r\nContent-Disposition: form-da")), 400, "the form could not be read"),
        // An empty multipart body is an empty form.
        new("multipart-empty-body", Post("/api/reconstruct", $"multipart/form-data; boundary={Boundary}", []), 400, "image: no image uploaded"),
        new("multipart-no-boundary", Post("/api/reconstruct", "multipart/form-data", Utf8(Body)), 400, "the form could not be read"),
        new("multipart-boundary-too-long", Post("/api/reconstruct", $"multipart/form-data; boundary={new string('b', 129)}", Multipart(new string('b', 129), $"--{new string('b', 129)}--\r\n")), 400, "the form could not be read"),
        new("multipart-no-disposition", Post("/api/reconstruct", $"multipart/form-data; boundary={Boundary}", Utf8($"--{Boundary}\r\nContent-Type: text/plain\r\n\r\n1\r\n--{Boundary}--\r\n")), 400, "the form could not be read"),
        new("multipart-lf-only", Post("/api/reconstruct", $"multipart/form-data; boundary={Boundary}", Utf8(Body.Replace("\r\n", "\n"))), 400, "the form could not be read"),

        // Chunked transfer encoding that is not: the body cannot be read.
        new("chunked-size-not-hex", Chunked("/api/generate", "application/json", "ZZZ\r\n{}\r\n0\r\n\r\n"), 400, "the request body could not be read"),
        new("chunked-size-overflow", Chunked("/api/generate", "application/json", "FFFFFFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n"), 400, "the request body could not be read"),
        new("chunked-bad-suffix", Chunked("/api/generate", "application/json", "2\r\n{}XX0\r\n\r\n"), 400, "the request body could not be read"),
        new("chunked-bad-size-form", Chunked("/api/mix", $"multipart/form-data; boundary={Boundary}", "-1\r\n--\r\n0\r\n\r\n"), 400, "the request body could not be read"),
        // Framing that is valid, around a request that is not: the app's own refusal.
        new("chunked-valid-bad-steps", Chunked("/api/generate", "application/json", "D\r\n{\"steps\": -3}\r\n0\r\n\r\n"), 400, "steps must be a positive whole number, got -3"),
        new("chunked-and-content-length", RawHttp.Request("POST", "/api/generate", ["Content-Type: application/json", "Transfer-Encoding: chunked", "Content-Length: 3"], Latin1("D\r\n{\"steps\": -3}\r\n0\r\n\r\n")), 400, "steps must be a positive whole number, got -3"),

        // A broken request head: Kestrel answers 400 itself, before any of the app runs.
        new("head-transfer-encoding-not-chunked", RawHttp.Request("POST", "/api/generate", ["Content-Type: application/json", "Transfer-Encoding: gzip"], Utf8("{}")), 400, null),
        new("head-header-without-colon", RawHttp.Request("GET", "/api/model", ["this is no header"], []), 400, null),
        new("head-bad-content-length", RawHttp.Request("POST", "/api/generate", ["Content-Type: application/json", "Content-Length: ZZZ"], Utf8("{}")), 400, null),
        new("head-non-ascii-header", RawHttp.Request("POST", "/api/generate", ["Content-Type: application/json\u00ff", "Content-Length: 13"], Utf8("""{"steps": -3}""")), 400, null),
        // A control character in the path is taken (percent-encoded): no such endpoint.
        new("control-char-in-path", RawHttp.Request("GET", "/api/mo\u0001del", [], []), 404, "no endpoint GET /api/mo%01del"),

        // Methods a route does not take: 405 and what it does take.
        new("options-model", Method("OPTIONS", "/api/model"), 405, "OPTIONS is not allowed on /api/model (it takes GET or HEAD or POST)", "GET, HEAD, POST"),
        new("post-models", Method("POST", "/api/models"), 405, "POST is not allowed on /api/models", "GET, HEAD"),
        new("get-recolor", Method("GET", "/api/recolor"), 405, "GET is not allowed on /api/recolor", "POST"),
        new("put-status", Method("PUT", "/api/status"), 405, "PUT is not allowed on /api/status", "GET, HEAD"),
        new("delete-model", Method("DELETE", "/api/model"), 405, "DELETE is not allowed on /api/model", "GET, HEAD, POST"),
        new("get-generate", Method("GET", "/api/generate"), 405, "GET is not allowed on /api/generate", "POST"),
        new("head-generate", Method("HEAD", "/api/generate"), 405, "", "POST"),
        new("options-vary", Method("OPTIONS", "/api/vary"), 405, "OPTIONS is not allowed on /api/vary", "POST"),
        new("patch-interpolate", Method("PATCH", "/api/interpolate"), 405, "PATCH is not allowed on /api/interpolate", "POST"),
        new("trace-mix", Method("TRACE", "/api/mix"), 405, "TRACE is not allowed on /api/mix", "POST"),
        new("unknown-method-reconstruct", Method("BREW", "/api/reconstruct"), 405, "BREW is not allowed on /api/reconstruct", "POST"),
        new("options-trailing-slash", Method("OPTIONS", "/api/status/"), 405, "OPTIONS is not allowed on /api/status", "GET, HEAD"),
        new("options-unknown-endpoint", Method("OPTIONS", "/api/nothing"), 404, "no endpoint OPTIONS /api/nothing"),
    ];

    public static IEnumerable<object[]> CaseNames() => Cases.Select(c => new object[] { c.Name });

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task HostileRequestsAreTheClientsMistakeNever500(string name)
    {
        var c = Cases.Single(x => x.Name == name);
        int completed = (await fx.StatusAsync()).GetProperty("completed").GetInt32();
        int logged = fx.Log.Count;
        var res = await RawHttp.SendAsync(fx.Server.Address, c.Request);
        Assert.True(res.Status == c.Status, $"{name}: expected {c.Status}, got {res.Status}: {res.Text}");
        if (c.Allow != null) Assert.Equal(c.Allow, res.Header("Allow"));
        if (c.Error == null)
        {
            // Kestrel's own answer: no body from the app, and the app never logged the request.
            Assert.Empty(res.Body);
            Assert.Equal(logged, fx.Log.Count);
        }
        else if (c.Error.Length > 0)
        {
            Assert.StartsWith("application/json", res.Header("Content-Type"));
            using var doc = JsonDocument.Parse(res.Body);
            string error = doc.RootElement.GetProperty("error").GetString()!;
            Assert.DoesNotContain('\n', error);
            Assert.True(error.Contains(c.Error, StringComparison.Ordinal), $"{name}: '{error}' does not hold '{c.Error}'");
        }
        // Refused before any work.
        Assert.Equal(completed, (await fx.StatusAsync()).GetProperty("completed").GetInt32());
    }

    [Fact]
    public void UploadsStayInMemorySoTheLimitIsOneGibibyteAtMost()
    {
        // Above the form reader's int-sized buffer an upload would spill to a temporary file; the server writes no files.
        new StudioOptions { MaxUploadBytes = StudioOptions.MaxUploadLimit }.Validate();
        var e = Assert.Throws<SvgdException>(() => new StudioOptions { MaxUploadBytes = 4L << 30 }.Validate());
        Assert.Equal("the upload limit must be at most 1 GiB (uploads are held in memory), got 4294967296 bytes", e.Message);
        var cli = Reference.RunCli("serve", "--max-upload-mb", "4096");
        Assert.Equal(1, cli.Code);
        Assert.Equal("error: the upload limit must be at most 1 GiB (uploads are held in memory), got 4294967296 bytes", cli.Err.Trim());
    }

    [Fact]
    public async Task HeadIsGetWithoutTheBody()
    {
        foreach (var path in new[] { "/api/model", "/api/models", "/api/status" })
        {
            var get = await RawHttp.SendAsync(fx.Server.Address, Method("GET", path));
            var head = await RawHttp.SendAsync(fx.Server.Address, Method("HEAD", path));
            Assert.Equal(200, get.Status);
            Assert.Equal(200, head.Status);
            Assert.Empty(head.Body);
            Assert.Equal(get.Header("Content-Type"), head.Header("Content-Type"));
        }
    }
}
