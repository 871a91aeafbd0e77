using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using SvgDiffusion.Server;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>
/// The HTTP API of <c>svgd serve</c> against a real Kestrel on loopback: answers are the library's own
/// results byte for byte, bad requests get 400 and one line, a full queue 429 with Retry-After, and a
/// client that goes away stops its work.
/// </summary>
[Collection("studio")]
public class StudioApiTests(StudioFixture fx, ITestOutputHelper log)
{
    static readonly GenerationLimits Limits = new(64, 200);

    static async Task<JsonElement> JsonOf(HttpResponseMessage r)
    {
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.IsSuccessStatusCode, $"{(int)r.StatusCode}: {body}");
        using var doc = JsonDocument.Parse(body);
        return doc.RootElement.Clone();
    }

    static byte[] Png(JsonElement image) => Convert.FromBase64String(image.GetProperty("png").GetString()!);

    static byte[] FileBytes(string cls, int which = 0) => File.ReadAllBytes(BundledService.ImagePath(cls, which));

    [Fact]
    public async Task ModelEndpointDescribesTheModelItsClassesAndTheLimits()
    {
        using var doc = JsonDocument.Parse(await fx.Http.GetStringAsync("/api/model"));
        var m = doc.RootElement;
        Assert.Equal("fashion-mnist", m.GetProperty("name").GetString());
        Assert.Equal(10, m.GetProperty("classes").GetArrayLength());
        Assert.Equal("sneaker", m.GetProperty("classes")[7].GetString());
        Assert.Equal(128, m.GetProperty("latent").GetProperty("semantic").GetInt32());
        Assert.Equal(8, m.GetProperty("latent").GetProperty("residual").GetInt32());
        Assert.Equal(32, m.GetProperty("image_size").GetInt32());
        Assert.Equal("fp32", m.GetProperty("precision").GetString());
        Assert.Equal(80, m.GetProperty("limits").GetProperty("n").GetInt32());
        Assert.Equal(StudioFixture.UploadLimit, m.GetProperty("limits").GetProperty("upload_bytes").GetInt64());
    }

    [Fact]
    public async Task GenerateAnswersWithTheLibrarysAndTheCommandLinesOwnPngs()
    {
        const string body = """{"classes": "sneaker,bag", "n": 2, "steps": 3, "seed": 5, "cfg": 2, "guidance": "late"}""";
        var json = await JsonOf(await fx.Http.SendAsync(StudioFixture.Json("/api/generate", body)));
        var images = json.GetProperty("images");
        Assert.Equal(4, images.GetArrayLength());
        Assert.Equal(new[] { 7, 7, 1, 1 }, images.EnumerateArray().Select(i => i.GetProperty("label").GetInt32()));
        Assert.Equal("bag", images[2].GetProperty("class").GetString());
        var settings = json.GetProperty("settings");
        Assert.Equal(3, settings.GetProperty("steps").GetInt32());
        Assert.Equal(5, settings.GetProperty("seed").GetInt64());
        Assert.Equal(2.0, settings.GetProperty("cfg").GetDouble());
        Assert.Equal("late", settings.GetProperty("guidance").GetString());
        Assert.Equal(new[] { "sneaker", "bag" }, settings.GetProperty("classes").EnumerateArray().Select(c => c.GetString()));
        Assert.Equal("fp32", settings.GetProperty("precision").GetString());

        // The library, called directly with the same request, makes the same bytes.
        var s = fx.Model.Service;
        var plan = s.Plan(new GenerationRequest { Classes = new[] { "sneaker", "bag" }, N = 2, Steps = 3, Seed = 5, Cfg = 2, Guidance = "late" }, Limits);
        using var r = s.Generate(plan);
        for (int i = 0; i < 4; i++) Assert.Equal(ImageFiles.EncodePng(r.Images![i]), Png(images[i]));
        using (var grid = r.Grid()) Assert.Equal(ImageFiles.EncodePng(grid), Convert.FromBase64String(json.GetProperty("grid").GetString()!));

        // So does svgd sample.
        string dir = Reference.TempDir();
        var cli = Reference.RunCli("sample", "--classes", "sneaker,bag", "--n", "2", "--steps", "3", "--seed", "5", "--cfg", "2", "--guidance", "late", "--precision", "fp32", "--out-dir", dir);
        Assert.True(cli.Code == 0, cli.Err + cli.Out);
        var files = Directory.GetFiles(dir, "*.png").OrderBy(f => f, StringComparer.Ordinal).ToArray();
        Assert.Equal(4, files.Length);
        for (int i = 0; i < 4; i++) Assert.Equal(File.ReadAllBytes(files[i]), Png(images[i]));

        // Accept: image/png is the grid itself, with the settings in a header.
        using var png = await fx.Http.SendAsync(StudioFixture.Json("/api/generate", body, "image/png"));
        Assert.Equal(HttpStatusCode.OK, png.StatusCode);
        Assert.Equal("image/png", png.Content.Headers.ContentType!.MediaType);
        Assert.Equal(Convert.FromBase64String(json.GetProperty("grid").GetString()!), await png.Content.ReadAsByteArrayAsync());
        using var header = JsonDocument.Parse(png.Headers.GetValues("X-Svgd-Settings").Single());
        Assert.Equal(5, header.RootElement.GetProperty("seed").GetInt64());
    }

    [Fact]
    public async Task EventStreamReportsProgressAndEndsWithTheResult()
    {
        using var req = StudioFixture.Json("/api/generate", """{"classes": [3], "n": 3, "steps": 4}""", "text/event-stream");
        using var res = await fx.Http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, res.StatusCode);
        Assert.Equal("text/event-stream", res.Content.Headers.ContentType!.MediaType);
        string text = await res.Content.ReadAsStringAsync();
        var events = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(b => (Name: Regex.Match(b, "^event: (.*)$", RegexOptions.Multiline).Groups[1].Value, Data: Regex.Match(b, "^data: (.*)$", RegexOptions.Multiline).Groups[1].Value))
            .ToList();
        Assert.Equal("result", events[^1].Name);
        var progress = events.Where(e => e.Name == "progress").Select(e => JsonDocument.Parse(e.Data).RootElement).ToList();
        Assert.NotEmpty(progress);
        long total = GenerationService.Work(3, 4, decode: true);
        Assert.All(progress, p => Assert.Equal(total, p.GetProperty("total").GetInt64()));
        var done = progress.Select(p => p.GetProperty("done").GetInt64()).ToList();
        Assert.Equal(done.OrderBy(d => d), done);
        Assert.Equal(total, done[^1]);
        using var result = JsonDocument.Parse(events[^1].Data);
        Assert.Equal(3, result.RootElement.GetProperty("images").GetArrayLength());
        log.WriteLine($"events: {string.Join(", ", events.Select(e => e.Name))}");
    }

    [Fact]
    public async Task EditEndpointsTakeUploadsAndAnswerWhatTheLibraryMakes()
    {
        byte[] a = FileBytes("sneaker"), b = FileBytes("bag");
        var e = fx.Model.Editor;
        using var ta = ImageFiles.DecodeRgb(a, "a");
        using var tb = ImageFiles.DecodeRgb(b, "b");

        var mix = await JsonOf(await fx.Http.SendAsync(StudioFixture.Form("/api/mix", [], [("semantic", a), ("detail", b)])));
        using (var scope = torch.NewDisposeScope())
            Assert.Equal(ImageFiles.EncodePng(e.Mix(ta, tb)[0]), Png(mix.GetProperty("images")[0]));
        Assert.Equal(128, mix.GetProperty("settings").GetProperty("semantic_channels").GetInt32());

        // The same images as base64 in JSON.
        string body = JsonSerializer.Serialize(new { semantic = Convert.ToBase64String(a), detail = "data:image/png;base64," + Convert.ToBase64String(b) });
        var mixJson = await JsonOf(await fx.Http.SendAsync(StudioFixture.Json("/api/mix", body)));
        Assert.Equal(Png(mix.GetProperty("images")[0]), Png(mixJson.GetProperty("images")[0]));

        var rec = await JsonOf(await fx.Http.SendAsync(StudioFixture.Form("/api/reconstruct", [], [("image", a)])));
        using (var scope = torch.NewDisposeScope())
            Assert.Equal(ImageFiles.EncodePng(e.Reconstruct(new[] { ta })[0]), Png(rec.GetProperty("images")[0]));

        var vary = await JsonOf(await fx.Http.SendAsync(StudioFixture.Form("/api/vary",
            [("strength", "0.4"), ("class", "sneaker"), ("n", "2"), ("steps", "3"), ("seed", "9")], [("image", a)])));
        var s = fx.Model.Service;
        var plan = s.Plan(new GenerationRequest { Classes = new[] { "sneaker" }, N = 2, Steps = 3, Seed = 9 }, Limits);
        using (var v = s.Vary(ta, 0.4, plan))
            for (int i = 0; i < 2; i++) Assert.Equal(ImageFiles.EncodePng(v.Images![i]), Png(vary.GetProperty("images")[i]));
        Assert.Equal(0.4, vary.GetProperty("settings").GetProperty("strength").GetDouble());

        var strip = await JsonOf(await fx.Http.SendAsync(StudioFixture.Form("/api/interpolate", [("frames", "3")], [("a", a), ("b", b)])));
        Assert.Equal(3, strip.GetProperty("images").GetArrayLength());
        using (var scope = torch.NewDisposeScope())
        {
            var frames = e.Interpolate(ta, tb, 3);
            Assert.Equal(ImageFiles.EncodePng(ImageFiles.Grid(frames, 3)), Convert.FromBase64String(strip.GetProperty("grid").GetString()!));
        }

        var seeds = await JsonOf(await fx.Http.SendAsync(StudioFixture.Json("/api/interpolate", """{"seeds": [1, 2], "class": "bag", "frames": 4, "steps": 2}""")));
        Assert.Equal(4, seeds.GetProperty("images").GetArrayLength());
        Assert.All(seeds.GetProperty("images").EnumerateArray(), i => Assert.Equal("bag", i.GetProperty("class").GetString()));
    }

    public static IEnumerable<object[]> BadRequests()
    {
        string J(string json) => json;
        yield return new object[] { "/api/generate", J("""{"steps": -3}"""), 400, "steps must be a positive whole number, got -3" };
        yield return new object[] { "/api/generate", J("""{"classes": "sneker"}"""), 400, "classes: unknown class 'sneker' (classes, index = position: 0 ankle-boot, 1 bag," };
        yield return new object[] { "/api/generate", J("""{"classes": [12]}"""), 400, "classes: '12' is not a class index in 0..9" };
        yield return new object[] { "/api/generate", J("""{"n": 100000}"""), 400, "n 100000 is more than 80 samples" };
        yield return new object[] { "/api/generate", J("""{"n": 1e12}"""), 400, "n must be a whole number, got 1e12" };
        yield return new object[] { "/api/generate", J("""{"classes": "sneaker,bag", "n": 41}"""), 400, "n 41 per class for 2 classes is more than 80 samples" };
        yield return new object[] { "/api/generate", J("""{"steps": 100000}"""), 400, "steps 100000 is more than the limit of 200" };
        yield return new object[] { "/api/generate", J("""{"cfg": "lots"}"""), 400, "cfg must be a number, got \"lots\"" };
        yield return new object[] { "/api/generate", J("""{"sampler": "rk4"}"""), 400, "sampler must be euler or heun, not 'rk4'" };
        yield return new object[] { "/api/generate", J("""{"guidance": "sometimes"}"""), 400, "guidance: unknown guidance mode 'sometimes'" };
        yield return new object[] { "/api/generate", J("""{"precision": "fp16"}"""), 400, "precision must be one of auto, fp32, bf16, not 'fp16'" };
        yield return new object[] { "/api/generate", J("""{"precision": "bf16"}"""), 400, "precision bf16 means bf16 here, but the model is loaded in fp32" };
        yield return new object[] { "/api/generate", J("""{"stpes": 3}"""), 400, "unknown field 'stpes' (fields: classes, labels, n, steps," };
        yield return new object[] { "/api/generate", J("""{"steps": 3"""), 400, "the body is not valid JSON" };
        yield return new object[] { "/api/generate", J("""[1, 2]"""), 400, "the JSON body must be an object of fields" };
        yield return new object[] { "/api/vary", J("""{"strength": 0.5}"""), 400, "image: no image uploaded" };
        yield return new object[] { "/api/interpolate", J("""{"frames": 1000, "seeds": [1, 2]}"""), 400, "frames must be a whole number in 2..32, got 1000" };
        yield return new object[] { "/api/interpolate", J("""{"seeds": [1]}"""), 400, "seeds must be two whole numbers, got [1]" };
        yield return new object[] { "/api/interpolate", J("""{"seeds": [1, 2], "class": "bag,coat"}"""), 400, "class: an interpolation between two seeds samples one class, got 2" };
        yield return new object[] { "/api/mix", J("""{"semantic": "%%%", "detail": "AAAA"}"""), 400, "semantic is not valid base64" };
        yield return new object[] { "/api/nothing", J("{}"), 404, "no endpoint POST /api/nothing" };
    }

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task BadJsonRequestsAreRefusedWithOneLineBeforeAnyWork(string path, string body, int status, string expected)
    {
        int completed = (await fx.StatusAsync()).GetProperty("completed").GetInt32();
        using var res = await fx.Http.SendAsync(StudioFixture.Json(path, body, "image/png"));
        await AssertRefused(res, status, expected);
        Assert.Equal(completed, (await fx.StatusAsync()).GetProperty("completed").GetInt32());
    }

    static async Task AssertRefused(HttpResponseMessage res, int status, string expected)
    {
        string text = await res.Content.ReadAsStringAsync();
        Assert.True((int)res.StatusCode == status, $"expected {status}, got {(int)res.StatusCode}: {text}");
        Assert.Equal("application/json", res.Content.Headers.ContentType!.MediaType);
        using var doc = JsonDocument.Parse(text);
        string error = doc.RootElement.GetProperty("error").GetString()!;
        Assert.DoesNotContain('\n', error);
        Assert.Contains(expected, error);
    }

    [Fact]
    public async Task BadUploadsAreRefusedWithOneLine()
    {
        byte[] good = FileBytes("bag");
        byte[] truncated = good.Take(good.Length * 2 / 3).ToArray();
        byte[] text = Encoding.UTF8.GetBytes("#!/bin/sh\necho this is not an image\n");
        await AssertRefused(await fx.Http.SendAsync(StudioFixture.Form("/api/mix", [], [("semantic", text), ("detail", good)])),
            400, "semantic (uploaded image): not a decodable image (corrupt or unsupported format)");
        await AssertRefused(await fx.Http.SendAsync(StudioFixture.Form("/api/reconstruct", [], [("image", truncated)])),
            400, "image (uploaded image): image data is truncated");
        await AssertRefused(await fx.Http.SendAsync(StudioFixture.Form("/api/reconstruct", [], [("image", Array.Empty<byte>())])),
            400, "image (uploaded image): empty, not an image");
        await AssertRefused(await fx.Http.SendAsync(StudioFixture.Form("/api/vary", [("strength", "0")], [("image", good)])),
            400, "strength must be a finite number in [0.001, 1], got 0");
        await AssertRefused(await fx.Http.SendAsync(StudioFixture.Form("/api/vary", [("class", "sneker")], [("image", good)])),
            400, "class: unknown class 'sneker'");
        await AssertRefused(await fx.Http.SendAsync(StudioFixture.Form("/api/mix", [("semantic", "/etc/passwd")], [("detail", good)])),
            400, "semantic must be an uploaded file (multipart/form-data), not a text field");

        // A header that claims a huge image is refused before decoding (a decompression bomb is small on the wire).
        byte[] bomb = (byte[])good.Clone();
        BitConverter.GetBytes(IPAddress.HostToNetworkOrder(20000)).CopyTo(bomb, 16);
        BitConverter.GetBytes(IPAddress.HostToNetworkOrder(20000)).CopyTo(bomb, 20);
        await AssertRefused(await fx.Http.SendAsync(StudioFixture.Form("/api/reconstruct", [], [("image", bomb)])), 400, "image (uploaded image):");

        var big = new byte[StudioFixture.UploadLimit + 1024];
        await AssertRefused(await fx.Http.SendAsync(StudioFixture.Form("/api/reconstruct", [], [("image", big)])), 413, "larger than this server accepts");
        using var plain = new HttpRequestMessage(HttpMethod.Post, "/api/generate") { Content = new StringContent("n=3", Encoding.UTF8, "text/plain") };
        await AssertRefused(await fx.Http.SendAsync(plain), 415, "unsupported Content-Type 'text/plain");
    }

    [Fact]
    public async Task AClientThatGoesAwayStopsItsWork()
    {
        var before = await fx.StatusAsync();
        using var cts = new CancellationTokenSource();
        // About 64 x 200 sample-steps: far longer than the test waits.
        var slow = fx.Http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 64, "steps": 200}"""), cts.Token);
        await WaitFor(async () => (await fx.StatusAsync()).GetProperty("running").GetBoolean(), "the slow request to start");
        var sw = Stopwatch.StartNew();
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => slow);
        await WaitFor(async () => !(await fx.StatusAsync()).GetProperty("running").GetBoolean(), "the worker to drop the work");
        log.WriteLine($"worker free {sw.Elapsed.TotalSeconds:F2} s after the client left");
        var after = await fx.StatusAsync();
        Assert.Equal(before.GetProperty("cancelled").GetInt32() + 1, after.GetProperty("cancelled").GetInt32());
        Assert.Equal(before.GetProperty("completed").GetInt32(), after.GetProperty("completed").GetInt32());
        // And the next request is served at once.
        using var next = await fx.Http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 1, "steps": 1}""", "image/png"));
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
    }

    [Fact]
    public async Task AFullQueueAnswers429WithRetryAfter()
    {
        // A second server on the same (idle) model, with room for one waiting request.
        await using var small = await StudioServer.StartAsync(fx.Model.Service, fx.Options with { QueueCapacity = 1, Log = null });
        using var http = new HttpClient { BaseAddress = small.Address };
        using var cts = new CancellationTokenSource();
        var running = http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 64, "steps": 200}"""), cts.Token);
        await WaitFor(() => Task.FromResult(small.Queue.Busy), "the first request to run");
        var waiting = http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 1, "steps": 1}"""), cts.Token);
        await WaitFor(() => Task.FromResult(small.Queue.Waiting == 1), "the second request to wait");
        using var refused = await http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 1, "steps": 1}"""));
        Assert.Equal(429, (int)refused.StatusCode);
        var retry = refused.Headers.RetryAfter;
        Assert.NotNull(retry?.Delta);
        Assert.True(retry!.Delta!.Value.TotalSeconds >= 1);
        await AssertRefused(refused, 429, "busy: 1 requests are waiting (the queue holds 1); retry after");
        Assert.Equal(1, small.Queue.Rejected);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => running);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        await WaitFor(() => Task.FromResult(!small.Queue.Busy && small.Queue.Waiting == 0), "both to be dropped");
        Assert.Equal(2, small.Queue.Cancelled);
        Assert.Equal(0, small.Queue.Completed);
    }

    static async Task WaitFor(Func<Task<bool>> condition, string what, double seconds = 30)
    {
        var sw = Stopwatch.StartNew();
        while (!await condition())
        {
            Assert.True(sw.Elapsed.TotalSeconds < seconds, $"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }

    [Fact]
    public async Task ThePageAndItsAssetsAreEmbeddedAndLoadNothingFromElsewhere()
    {
        using var page = await fx.Http.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType!.MediaType);
        string csp = page.Headers.GetValues("Content-Security-Policy").Single();
        Assert.Contains("default-src 'none'", csp);
        Assert.Contains("script-src 'self'", csp);
        string html = await page.Content.ReadAsStringAsync();
        var refs = Regex.Matches(html, "(?:src|href)=\"([^\"]+)\"").Select(m => m.Groups[1].Value).ToList();
        Assert.Contains("studio.js", refs);
        Assert.Contains("studio.css", refs);
        foreach (var r in refs)
        {
            Assert.False(r.Contains("//"), $"{r}: the page refers to another host");
            using var asset = await fx.Http.GetAsync("/" + r);
            Assert.True(asset.IsSuccessStatusCode, $"{r}: {(int)asset.StatusCode}");
            // Cached copies are revalidated by ETag.
            using var again = new HttpRequestMessage(HttpMethod.Get, "/" + r);
            again.Headers.IfNoneMatch.Add(asset.Headers.ETag!);
            using var notModified = await fx.Http.SendAsync(again);
            Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);
        }
        // Every asset is a resource of the server assembly, none a file beside it, and none names another host.
        Assert.Equal(new[] { "favicon.svg", "index.html", "studio.css", "studio.js" }, EmbeddedAssets.Files.Keys.Order(StringComparer.Ordinal));
        Assert.False(Directory.Exists(Path.Combine(AppContext.BaseDirectory, "wwwroot")));
        foreach (var (name, asset) in EmbeddedAssets.Files)
        {
            string text = Encoding.UTF8.GetString(asset.Bytes).Replace("http://www.w3.org/2000/svg", "");
            Assert.False(Regex.IsMatch(text, @"https?://|url\(\s*['""]?//|@import"), $"{name} refers to another host");
        }
        Assert.Equal(HttpStatusCode.NotFound, (await fx.Http.GetAsync("/nothing.js")).StatusCode);
    }

    [Fact]
    public async Task ItListensOnLoopbackUnlessAHostIsGiven()
    {
        Assert.Equal("localhost", new StudioOptions().Host);
        await using (var local = await StudioServer.StartAsync(fx.Model.Service, fx.Options with { Host = "localhost", Log = null }))
        {
            Assert.True(IPAddress.IsLoopback(IPAddress.Parse(local.Address.Host)), local.Address.ToString());
            using var http = new HttpClient { BaseAddress = local.Address };
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/api/status")).StatusCode);
        }
        string dir = Reference.TempDir();
        var bad = Reference.RunCli("serve", "--host", "example.com");
        Assert.Equal(1, bad.Code);
        Assert.Equal("error: --host must be localhost or an IP address (0.0.0.0 for every interface), not 'example.com'", bad.Err.Trim());
        bad = Reference.RunCli("serve", "--port", "70000");
        Assert.Equal("error: --port must be in 0..65535, got 70000", bad.Err.Trim());
        bad = Reference.RunCli("serve", "--queue", "0");
        Assert.Equal("error: --queue must be a positive whole number, got 0", bad.Err.Trim());
        // A port that is taken is one line, not a stack trace.
        var taken = await Reference_RunCliAsync("serve", "--host", "127.0.0.1", "--port", fx.Server.Address.Port.ToString());
        Assert.Equal(1, taken.Code);
        Assert.StartsWith($"error: --host 127.0.0.1 --port {fx.Server.Address.Port}: cannot listen", taken.Err.Trim());
    }

    static Task<(int Code, string Out, string Err)> Reference_RunCliAsync(params string[] args) => Task.Run(() => Reference.RunCli(args));

    [DllImport("libc", SetLastError = true)]
    static extern int kill(int pid, int sig);

    [Fact]
    public void SvgdServeServesUntilSigterm()
    {
        if (!OperatingSystem.IsLinux()) return;
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "svgd.dll"), "serve", "--port", "0", "--host", "127.0.0.1" }) psi.ArgumentList.Add(a);
        using var proc = Process.Start(psi)!;
        var stdout = new StringBuilder();
        string? url = null;
        var started = new ManualResetEventSlim();
        proc.OutputDataReceived += (_, e) =>
        {
            if (e.Data == null) return;
            lock (stdout) stdout.AppendLine(e.Data);
            var m = Regex.Match(e.Data, @"at (http://\S+);");
            if (m.Success) { url = m.Groups[1].Value; started.Set(); }
        };
        proc.BeginOutputReadLine();
        proc.BeginErrorReadLine();
        try
        {
            Assert.True(started.Wait(TimeSpan.FromSeconds(120)), $"no address printed:\n{stdout}");
            using var http = new HttpClient { BaseAddress = new Uri(url!) };
            using var png = http.Send(StudioFixture.Json("/api/generate", """{"classes": "sneaker", "n": 1, "steps": 2}""", "image/png"));
            Assert.Equal(HttpStatusCode.OK, png.StatusCode);
            Assert.Equal(0, kill(proc.Id, 15));
            Assert.True(proc.WaitForExit(30_000), "no exit after SIGTERM");
            proc.WaitForExit();
        }
        finally
        {
            if (!proc.HasExited) proc.Kill(entireProcessTree: true);
        }
        string output;
        lock (stdout) output = stdout.ToString();
        Assert.True(proc.ExitCode == 143, $"exit {proc.ExitCode}\n{output}");
        Assert.Contains("POST /api/generate 200", output);
        Assert.Contains("stopping", output);
    }
}
