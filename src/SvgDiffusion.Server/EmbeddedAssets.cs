using System.Reflection;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Http;

namespace SvgDiffusion.Server;

/// <summary>
/// The studio's page, script and style, compiled into this assembly (wwwroot/*): the server needs no files
/// beside it and the page loads nothing from elsewhere (the Content-Security-Policy says so to the browser).
/// </summary>
public static class EmbeddedAssets
{
    public sealed record Asset(byte[] Bytes, string ContentType, string ETag);

    static readonly Lazy<IReadOnlyDictionary<string, Asset>> All = new(Load);

    public static IReadOnlyDictionary<string, Asset> Files => All.Value;

    public const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    static IReadOnlyDictionary<string, Asset> Load()
    {
        var asm = typeof(EmbeddedAssets).Assembly;
        var files = new Dictionary<string, Asset>(StringComparer.Ordinal);
        foreach (var name in asm.GetManifestResourceNames().Where(n => n.StartsWith("wwwroot/", StringComparison.Ordinal)))
        {
            using var s = asm.GetManifestResourceStream(name)!;
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            var bytes = ms.ToArray();
            string etag = "\"" + Convert.ToHexString(SHA256.HashData(bytes))[..16] + "\"";
            files[name["wwwroot/".Length..]] = new Asset(bytes, ContentType(name), etag);
        }
        if (!files.ContainsKey("index.html")) throw new InvalidOperationException("the studio page (wwwroot/index.html) is missing from the assembly");
        return files;
    }

    static string ContentType(string name) => Path.GetExtension(name) switch
    {
        ".html" => "text/html; charset=utf-8",
        ".js" => "text/javascript; charset=utf-8",
        ".css" => "text/css; charset=utf-8",
        ".svg" => "image/svg+xml",
        ".png" => "image/png",
        _ => "application/octet-stream",
    };

    /// <summary>Sends one asset (304 when the browser's copy is current); false when there is no such asset.</summary>
    public static async Task<bool> TrySendAsync(HttpContext ctx, string path)
    {
        if (!Files.TryGetValue(path, out var a)) return false;
        var res = ctx.Response;
        res.Headers.ETag = a.ETag;
        res.Headers.CacheControl = "no-cache";
        res.Headers.XContentTypeOptions = "nosniff";
        if (a.ContentType.StartsWith("text/html", StringComparison.Ordinal)) res.Headers.ContentSecurityPolicy = ContentSecurityPolicy;
        if (ctx.Request.Headers.IfNoneMatch == a.ETag)
        {
            res.StatusCode = StatusCodes.Status304NotModified;
            return true;
        }
        res.ContentType = a.ContentType;
        res.ContentLength = a.Bytes.Length;
        await res.Body.WriteAsync(a.Bytes, ctx.RequestAborted);
        return true;
    }
}
