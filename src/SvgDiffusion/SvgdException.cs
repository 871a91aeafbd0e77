namespace SvgDiffusion;

/// <summary>
/// A user-facing failure: bad file, key, shape or option. The message is one line that names the
/// thing at fault; the CLI prints it without a stack trace.
/// </summary>
public sealed class SvgdException : Exception
{
    public SvgdException(string message) : base(message) { }
    public SvgdException(string message, Exception inner) : base(message, inner) { }
}
