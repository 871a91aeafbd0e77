using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Cli.Commands;

namespace SvgDiffusion.Cli;

/// <summary>The <c>svgd</c> command line. Every failure the user can fix is one red line, exit code 1.</summary>
public static class SvgdCli
{
    public static RootCommand Build(CliContext cli)
    {
        var root = new RootCommand("SvgDiffusion: latent diffusion without a VAE (SVG), in .NET.\n" +
                                   "Frozen DINOv3 features + residual channels form the latent; a DiT generates in it.");
        root.Subcommands.Add(InspectCommand.Create(cli));
        root.Subcommands.Add(ImportIdxCommand.Create(cli));
        root.Subcommands.Add(FeaturesCommand.Create(cli));
        root.Subcommands.Add(EncodeCommand.Create(cli));
        root.Subcommands.Add(DecodeCommand.Create(cli));
        root.Subcommands.Add(ReconstructCommand.Create(cli));
        root.Subcommands.Add(CalibrateCommand.Create(cli));
        root.Subcommands.Add(LatentStatsCommand.Create(cli));
        root.Subcommands.Add(TrainAutoencoderCommand.Create(cli));
        root.Subcommands.Add(CacheLatentsCommand.Create(cli));
        root.Subcommands.Add(TrainCommand.Create(cli));
        root.Subcommands.Add(SampleCommand.Create(cli));
        root.Subcommands.Add(MixCommand.Create(cli));
        root.Subcommands.Add(InterpolateCommand.Create(cli));
        root.Subcommands.Add(VaryCommand.Create(cli));
        root.Subcommands.Add(ServeCommand.Create(cli));
        root.Subcommands.Add(TrainEvaluatorCommand.Create(cli));
        root.Subcommands.Add(FidCommand.Create(cli));
        root.Subcommands.Add(SampleEvalCommand.Create(cli));
        root.Subcommands.Add(ProbeCommand.Create(cli));
        root.Subcommands.Add(ExportCommand.Create(cli));
        root.Subcommands.Add(BenchCommand.Create(cli));
        root.Subcommands.Add(DoctorCommand.Create(cli));
        return root;
    }

    public static int Run(string[] args, IAnsiConsole? console = null, TextWriter? errors = null)
    {
        if (console == null)
        {
            console = AnsiConsole.Console;
            // Piped or logged output gets no terminal width: keep tables readable instead of 80 columns.
            if (Console.IsOutputRedirected) console.Profile.Width = 160;
        }
        var cli = new CliContext(console, errors ?? Console.Error);
        SvgDiffusion.Runtime.TorchRuntime.EnsureInitialized();
        SvgDiffusion.Runtime.KernelGuard.Warn = cli.Warn;
        var root = Build(cli);
        var parse = root.Parse(args);
        if (args.Length == 0) parse = root.Parse(new[] { "--help" });
        else if (parse.Errors.Count > 0)
        {
            // One line, as for every other bad input, instead of the parser's list of errors and the full help.
            cli.Errors.WriteLine($"error: {ParseError(parse)}");
            return 1;
        }
        int code = parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null });
        return args.Length == 0 ? 1 : code;
    }

    static string ParseError(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        var names = new List<string>();
        for (var r = parse.CommandResult; r != null && r.Command is not RootCommand; r = r.Parent as System.CommandLine.Parsing.CommandResult) names.Insert(0, r.Command.Name);
        string path = string.Join(" ", names.Prepend("svgd"));
        if (command is RootCommand && parse.UnmatchedTokens.Count > 0)
            return $"unknown command '{parse.UnmatchedTokens[0]}'; the commands are {string.Join(", ", command.Subcommands.Select(c => c.Name))} (see svgd --help)";
        return $"{string.Join("; ", parse.Errors.Select(e => e.Message.TrimEnd('.')))} (see {path} --help)";
    }

    /// <summary>
    /// Wraps a command body: user errors become one line, not a stack trace. Before the body the
    /// kernel verdict for this machine is settled (cached after the first run), so no command computes
    /// on a kernel that has not been checked here.
    /// </summary>
    internal static Func<ParseResult, int> Guard(CliContext cli, Func<ParseResult, int> body, bool checkKernels = true) => parse =>
    {
        try
        {
            OptionRules.Check(parse);
            if (checkKernels) SvgDiffusion.Runtime.KernelGuard.Ensure();
            return body(parse);
        }
        catch (SvgdException e)
        {
            cli.Errors.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            cli.Errors.WriteLine("cancelled");
            return 130;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("SVGD_DEBUG") != "1")
        {
            // Not a user error: still one line, with the way to get the full trace for a bug report.
            cli.Errors.WriteLine($"error: {e.GetType().Name}: {e.Message.Split('\n')[0]} (set SVGD_DEBUG=1 for a stack trace)");
            return 2;
        }
    };
}

/// <summary>Where a command writes: normal output (Spectre, may wrap and colour) and error lines (stderr, unwrapped, one per failure).</summary>
public sealed record CliContext(IAnsiConsole Console, TextWriter Errors)
{
    public void Warn(string message) => Errors.WriteLine($"warning: {message}");
}
