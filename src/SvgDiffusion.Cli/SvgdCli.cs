using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Cli.Commands;

namespace SvgDiffusion.Cli;

/// <summary>The <c>svgd</c> command line. Every failure the user can fix is one red line, exit code 1.</summary>
public static class SvgdCli
{
    public static RootCommand Build(IAnsiConsole console)
    {
        var root = new RootCommand("SvgDiffusion: latent diffusion without a VAE (SVG), in .NET.\n" +
                                   "Frozen DINOv3 features + residual channels form the latent; a DiT generates in it.");
        root.Subcommands.Add(InspectCommand.Create(console));
        root.Subcommands.Add(FeaturesCommand.Create(console));
        return root;
    }

    /// <summary>Where error lines go: stderr, unwrapped, so scripts and users see exactly one line.</summary>
    internal static TextWriter Errors { get; private set; } = Console.Error;

    public static int Run(string[] args, IAnsiConsole? console = null, TextWriter? errors = null)
    {
        console ??= AnsiConsole.Console;
        Errors = errors ?? Console.Error;
        SvgDiffusion.Runtime.TorchRuntime.EnsureInitialized();
        var root = Build(console);
        var parse = root.Parse(args);
        return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }

    internal static void Warn(string message) => Errors.WriteLine($"warning: {message}");

    /// <summary>Wraps a command body: user errors become one line, not a stack trace.</summary>
    internal static Func<ParseResult, int> Guard(IAnsiConsole console, Func<ParseResult, int> body) => parse =>
    {
        try { return body(parse); }
        catch (SvgdException e)
        {
            Errors.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            console.MarkupLine("[yellow]cancelled[/]");
            return 130;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("SVGD_DEBUG") != "1")
        {
            // Not a user error: still one line, with the way to get the full trace for a bug report.
            Errors.WriteLine($"error: {e.GetType().Name}: {e.Message.Split('\n')[0]} (set SVGD_DEBUG=1 for a stack trace)");
            return 2;
        }
    };
}
