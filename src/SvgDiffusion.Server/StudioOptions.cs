using System.Net;

namespace SvgDiffusion.Server;

/// <summary>Where the studio listens and how much one request may ask for.</summary>
public sealed record StudioOptions
{
    /// <summary>"localhost" (the default: this machine only) or an IP address; 0.0.0.0 listens on every interface.</summary>
    public string Host { get; init; } = "localhost";
    /// <summary>0 picks a free port (see <see cref="StudioServer.Address"/>).</summary>
    public int Port { get; init; } = 7860;
    /// <summary>Requests that may wait while one runs; more are answered 429 with Retry-After.</summary>
    public int QueueCapacity { get; init; } = 64;
    /// <summary>
    /// Images one request may make (n times the classes; variations; frames). 80 is the CLI's default run of the
    /// bundled 10-class model (8 per class), so the studio's "all classes" at the CLI's default fits.
    /// </summary>
    public int MaxSamples { get; init; } = 80;
    public int MaxSteps { get; init; } = 200;
    public int MaxFrames { get; init; } = 32;
    /// <summary>Largest request body, uploads included.</summary>
    public long MaxUploadBytes { get; init; } = 8L << 20;
    /// <summary>Largest uploaded image, in pixels, checked from its header before decoding.</summary>
    public long MaxUploadPixels { get; init; } = 4096L * 4096;
    /// <summary>The model's name on the page and in /api/model.</summary>
    public string ModelName { get; init; } = "model";
    /// <summary>
    /// Whether the model served at start is the bundled model <see cref="ModelName"/> itself (not a file or folder
    /// that happens to have its name): switching back to that name then reuses it instead of loading it again.
    /// </summary>
    public bool ModelIsBundled { get; init; }
    /// <summary>Told one line per API request (method, path, status, time); null for silence.</summary>
    public Action<string>? Log { get; init; }

    public StudioOptions Validate()
    {
        if (Port is < 0 or > 65535) throw new SvgdException($"--port must be in 0..65535, got {Port}");
        if (!IsLocalhost && !IPAddress.TryParse(Host, out _)) throw new SvgdException($"--host must be localhost or an IP address (0.0.0.0 for every interface), not '{Host}'");
        if (QueueCapacity < 1) throw new SvgdException($"--queue must be a positive whole number, got {QueueCapacity}");
        if (MaxSamples < 1) throw new SvgdException($"--max-n must be a positive whole number, got {MaxSamples}");
        if (MaxSteps < 1) throw new SvgdException($"--max-steps must be a positive whole number, got {MaxSteps}");
        if (MaxFrames < 2) throw new SvgdException($"--max-frames must be at least 2, got {MaxFrames}");
        if (MaxUploadBytes < 1024) throw new SvgdException($"the upload limit must be at least 1 KiB, got {MaxUploadBytes} bytes");
        // Uploads are held in memory, never written: above this the form reader's buffer (an int) could not hold them and would spill to a temporary file.
        if (MaxUploadBytes > MaxUploadLimit) throw new SvgdException($"the upload limit must be at most 1 GiB (uploads are held in memory), got {MaxUploadBytes} bytes");
        if (MaxUploadPixels < 1) throw new SvgdException($"the upload pixel limit must be positive, got {MaxUploadPixels}");
        return this;
    }

    /// <summary>The largest <see cref="MaxUploadBytes"/> a server accepts: 1 GiB.</summary>
    public const long MaxUploadLimit = 1L << 30;

    public bool IsLocalhost => Host.Equals("localhost", StringComparison.OrdinalIgnoreCase);
}
