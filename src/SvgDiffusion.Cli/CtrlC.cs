using System.Runtime.InteropServices;

namespace SvgDiffusion.Cli;

/// <summary>
/// Turns Ctrl+C (SIGINT) and SIGTERM into a cancellation request for the duration of a long command, so it
/// can save and stop cleanly. SIGTERM is what Slurm, Kubernetes and systemd send before they kill a job;
/// without this handler the runtime would exit at once and lose the steps since the last checkpoint.
/// </summary>
internal sealed class CtrlC : IDisposable
{
    readonly CancellationTokenSource _cts = new();
    readonly ConsoleCancelEventHandler _handler;
    readonly PosixSignalRegistration? _sigterm;
    volatile string? _signal;

    public CtrlC()
    {
        _handler = (_, e) => { e.Cancel = true; Request("SIGINT"); };
        Console.CancelKeyPress += _handler;
        // Not on Windows, where services stop by other means.
        if (!OperatingSystem.IsWindows())
            _sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; Request("SIGTERM"); });
    }

    void Request(string signal)
    {
        _signal ??= signal;
        try { _cts.Cancel(); } catch (ObjectDisposedException) { }
    }

    public CancellationToken Token => _cts.Token;
    public bool Requested => _cts.IsCancellationRequested;

    /// <summary>"SIGINT" or "SIGTERM" once requested, else null.</summary>
    public string? Signal => _signal;

    /// <summary>The shell's convention, 128 + signal number: 130 after Ctrl+C, 143 after SIGTERM, 0 when not stopped.</summary>
    public int ExitCode => !Requested ? 0 : _signal == "SIGTERM" ? 143 : 130;

    public void Dispose()
    {
        Console.CancelKeyPress -= _handler;
        _sigterm?.Dispose();
        _cts.Dispose();
    }
}
