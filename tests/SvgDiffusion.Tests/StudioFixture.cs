using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using SvgDiffusion.Server;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// The studio on a real Kestrel, on loopback with a free port, serving the bundled model: started once for
/// the API, load and browser tests (one collection, so they run one after another on the same server).
/// </summary>
public sealed class StudioFixture : IAsyncLifetime
{
    public BundledService Model { get; } = new();
    public StudioServer Server { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    public ConcurrentQueue<string> Log { get; } = new();

    /// <summary>Small on purpose, so the 413 test sends little.</summary>
    public const long UploadLimit = 256 << 10;

    public StudioOptions Options => new()
    {
        Host = "127.0.0.1", Port = 0, ModelName = "fashion-mnist", ModelIsBundled = true, MaxUploadBytes = UploadLimit, Log = Log.Enqueue,
    };

    public async Task InitializeAsync()
    {
        Server = await StudioServer.StartAsync(Model.Service, Options);
        Http = new HttpClient { BaseAddress = Server.Address, Timeout = TimeSpan.FromMinutes(2) };
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        Model.Dispose();
    }

    public static HttpRequestMessage Json(string path, string json, string? accept = null)
    {
        var m = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (accept != null) m.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(accept));
        return m;
    }

    public static HttpRequestMessage Form(string path, IEnumerable<(string Name, string Value)> fields, IEnumerable<(string Name, byte[] Bytes)> files, string? accept = null)
    {
        var content = new MultipartFormDataContent();
        foreach (var (n, v) in fields) content.Add(new StringContent(v), n);
        foreach (var (n, b) in files)
        {
            var part = new ByteArrayContent(b);
            part.Headers.ContentType = new MediaTypeHeaderValue("image/png");
            content.Add(part, n, n + ".png");
        }
        var m = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
        if (accept != null) m.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(accept));
        return m;
    }

    public async Task<JsonElement> StatusAsync()
    {
        using var doc = JsonDocument.Parse(await Http.GetStringAsync("/api/status"));
        return doc.RootElement.Clone();
    }
}

[CollectionDefinition("studio")]
public sealed class StudioCollection : ICollectionFixture<StudioFixture>;
