using System.Net.Sockets;
using System.Text;

namespace SvgDiffusion.Tests;

/// <summary>
/// HTTP/1.1 as bytes over a socket, for what HttpClient will not send (bad chunked framing, broken request
/// lines): one request per connection, the answer read until the server closes it.
/// </summary>
public static class RawHttp
{
    public sealed record Response(int Status, IReadOnlyDictionary<string, string> Headers, byte[] Body)
    {
        public string Text => Encoding.UTF8.GetString(Body);
        public string? Header(string name) => Headers.TryGetValue(name, out var v) ? v : null;
    }

    /// <summary>A request head (request line and headers, CRLF-joined, Connection: close added; each char one byte, Latin-1) followed by <paramref name="body"/> as given.</summary>
    public static byte[] Request(string method, string path, IEnumerable<string> headers, byte[] body)
    {
        var head = new StringBuilder($"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        foreach (var h in headers) head.Append(h).Append("\r\n");
        head.Append("\r\n");
        return [.. Encoding.Latin1.GetBytes(head.ToString()), .. body];
    }

    public static async Task<Response> SendAsync(Uri server, byte[] request, double timeoutSeconds = 20)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(server.Host, server.Port, cts.Token);
        var stream = tcp.GetStream();
        await stream.WriteAsync(request, cts.Token);
        await stream.FlushAsync(cts.Token);
        using var ms = new MemoryStream();
        var buffer = new byte[8192];
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer, cts.Token)) > 0) ms.Write(buffer, 0, n);
        }
        catch (IOException) when (ms.Length > 0) { /* a reset after the answer: the answer is what counts */ }
        return Parse(ms.ToArray());
    }

    static Response Parse(byte[] raw)
    {
        int end = IndexOf(raw, "\r\n\r\n"u8);
        if (end < 0) throw new InvalidDataException($"no complete response head in {raw.Length} bytes: '{Encoding.ASCII.GetString(raw)}'");
        var lines = Encoding.ASCII.GetString(raw, 0, end).Split("\r\n");
        var statusLine = lines[0].Split(' ', 3);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        byte[] body = raw[(end + 4)..];
        if (headers.TryGetValue("Transfer-Encoding", out var te) && te.Contains("chunked", StringComparison.OrdinalIgnoreCase)) body = Dechunk(body);
        else if (headers.TryGetValue("Content-Length", out var cl)) body = body[..Math.Min(body.Length, int.Parse(cl))];
        return new Response(int.Parse(statusLine[1]), headers, body);
    }

    static byte[] Dechunk(byte[] data)
    {
        using var ms = new MemoryStream();
        int at = 0;
        while (at < data.Length)
        {
            int eol = IndexOf(data.AsSpan(at), "\r\n"u8);
            if (eol < 0) break;
            int size = Convert.ToInt32(Encoding.ASCII.GetString(data, at, eol).Split(';')[0].Trim(), 16);
            at += eol + 2;
            if (size == 0) break;
            ms.Write(data, at, Math.Min(size, data.Length - at));
            at += size + 2;
        }
        return ms.ToArray();
    }

    static int IndexOf(ReadOnlySpan<byte> haystack, ReadOnlySpan<byte> needle) => haystack.IndexOf(needle);
}
