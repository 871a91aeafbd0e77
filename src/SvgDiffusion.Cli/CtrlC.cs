namespace SvgDiffusion.Cli;

/// <summary>Turns Ctrl+C into a cancellation request for the duration of a long command, so it can save and stop cleanly.</summary>
internal sealed class CtrlC : IDisposable
{
    readonly CancellationTokenSource _cts = new();
    readonly ConsoleCancelEventHandler _handler;

    public CtrlC()
    {
        _handler = (_, e) => { e.Cancel = true; _cts.Cancel(); };
        Console.CancelKeyPress += _handler;
    }

    public CancellationToken Token => _cts.Token;
    public bool Requested => _cts.IsCancellationRequested;

    public void Dispose()
    {
        Console.CancelKeyPress -= _handler;
        _cts.Dispose();
    }
}
