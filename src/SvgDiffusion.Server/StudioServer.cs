using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SvgDiffusion.Sampling;

namespace SvgDiffusion.Server;

/// <summary>
/// <c>svgd serve</c>: the studio page and the HTTP API over one <see cref="GenerationService"/>, on Kestrel.
/// Requests are parsed and validated on Kestrel's threads (a bad one is answered 400 at once, without
/// queueing) and run one at a time by <see cref="WorkQueue"/>'s worker.
/// </summary>
public sealed class StudioServer : IAsyncDisposable
{
    readonly WebApplication _app;
    readonly StudioApi _api;

    StudioServer(WebApplication app, StudioApi api, Uri address)
    {
        _app = app;
        _api = api;
        Address = address;
    }

    /// <summary>The first address the server listens on, its real port included when 0 was asked for.</summary>
    public Uri Address { get; }
    public WorkQueue Queue => _api.Queue;

    public static async Task<StudioServer> StartAsync(GenerationService service, StudioOptions options, CancellationToken cancel = default)
    {
        options.Validate();
        if (service.Editor == null) throw new SvgdException("the studio shows images: it needs an autoencoder (--autoencoder)");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = typeof(StudioServer).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
            EnvironmentName = Environments.Production,
        });
        // One line per request comes from our own log; the framework's console logging would repeat it at length.
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(5));
        // Ctrl+C and SIGTERM belong to the caller (svgd serve saves nothing, but stops in order): not the host's console lifetime.
        builder.Services.AddSingleton<IHostLifetime, CallerLifetime>();
        builder.Services.Configure<FormOptions>(f =>
        {
            f.MultipartBodyLengthLimit = options.MaxUploadBytes;
            // Above this size the framework would spill an upload to a temporary file; every upload stays in memory.
            f.MemoryBufferThreshold = (int)Math.Min(int.MaxValue, options.MaxUploadBytes + 1);
            f.ValueCountLimit = 64;
        });
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = options.MaxUploadBytes;
            if (options.IsLocalhost && options.Port != 0) k.ListenLocalhost(options.Port);
            else k.Listen(options.IsLocalhost ? IPAddress.Loopback : IPAddress.Parse(options.Host), options.Port);
        });
        var app = builder.Build();
        var api = new StudioApi(service, options);
        api.Map(app);
        try
        {
            await app.StartAsync(cancel);
        }
        catch (IOException e)
        {
            await app.DisposeAsync();
            api.Queue.Dispose();
            api.Dispose();
            throw new SvgdException($"--host {options.Host} --port {options.Port}: cannot listen ({e.Message.Split('\n')[0].TrimEnd('.')})");
        }
        var address = app.Urls.Select(u => new Uri(u)).OrderBy(u => u.Host.Contains(':') ? 1 : 0).First();
        return new StudioServer(app, api, address);
    }

    public async ValueTask DisposeAsync()
    {
        // Cancel queued and running work first, so stopping does not wait for a long request to finish.
        _api.Queue.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        // Then the models the studio loaded itself (its queue's worker, which used them, has stopped).
        _api.Dispose();
    }
}

/// <summary>The host's lifetime is the caller's: no signal handlers of its own.</summary>
internal sealed class CallerLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
