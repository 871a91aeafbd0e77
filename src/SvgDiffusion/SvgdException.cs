namespace SvgDiffusion;

/// <summary>
/// A user-facing failure: bad file, key, shape or option. The message is one line that names the
/// thing at fault; the CLI prints it without a stack trace.
/// </summary>
public sealed class SvgdException : Exception
{
    public SvgdException(string message) : base(OneLine(message)) { }
    public SvgdException(string message, Exception inner) : base(OneLine(message), inner) { }

    /// <summary>
    /// Raised by every process of a data-parallel job at the same point (a check over all ranks, a
    /// loss summed over them): rank 0 reports it alone and the job ends in order. Any other failure is
    /// one process's, and ends the job from that process.
    /// </summary>
    public bool Collective { get; init; }

    /// <summary>
    /// Names quoted from a damaged file (a tensor key, a zip entry) can hold line breaks or terminal
    /// control characters; escaped, the message stays the single line the CLI promises (and the studio's
    /// JSON errors, which quote the client's text, use the same escapes).
    /// </summary>
    public static string OneLine(string message)
    {
        if (!message.Any(char.IsControl)) return message;
        var sb = new System.Text.StringBuilder(message.Length + 16);
        foreach (char c in message)
        {
            if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (char.IsControl(c)) sb.Append($"\\u{(int)c:x4}");
            else sb.Append(c);
        }
        return sb.ToString();
    }
}
