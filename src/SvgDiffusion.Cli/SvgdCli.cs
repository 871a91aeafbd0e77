using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Cli.Commands;
using SvgDiffusion.Distributed;

namespace SvgDiffusion.Cli;

/// <summary>The <c>svgd</c> command line. Every failure the user can fix is one red line, exit code 1.</summary>
public static class SvgdCli
{
    public static RootCommand Build(CliContext cli)
    {
        var root = new RootCommand("SvgDiffusion: latent diffusion without a VAE (SVG), in .NET.\n" +
                                   "Frozen DINOv3 features + residual channels form the latent; a DiT generates in it.\n" +
                                   "train, train-autoencoder, sample-eval and cache-latents run data-parallel when started by MPICH's mpiexec (or srun --mpi=pmi2).");
        // In the order people reach for them: generate and edit, train, evaluate, then tools.
        root.Subcommands.Add(SampleCommand.Create(cli));
        root.Subcommands.Add(ServeCommand.Create(cli));
        root.Subcommands.Add(MixCommand.Create(cli));
        root.Subcommands.Add(InterpolateCommand.Create(cli));
        root.Subcommands.Add(VaryCommand.Create(cli));
        root.Subcommands.Add(RecolorCommand.Create(cli));
        root.Subcommands.Add(EvaluateRecolorCommand.Create(cli));
        root.Subcommands.Add(ReconstructCommand.Create(cli));
        root.Subcommands.Add(EncodeCommand.Create(cli));
        root.Subcommands.Add(DecodeCommand.Create(cli));
        root.Subcommands.Add(TrainAutoencoderCommand.Create(cli));
        root.Subcommands.Add(LatentStatsCommand.Create(cli));
        root.Subcommands.Add(CacheLatentsCommand.Create(cli));
        root.Subcommands.Add(TrainCommand.Create(cli));
        root.Subcommands.Add(CalibrateCommand.Create(cli));
        root.Subcommands.Add(ExportCommand.Create(cli));
        root.Subcommands.Add(SampleEvalCommand.Create(cli));
        root.Subcommands.Add(FidCommand.Create(cli));
        root.Subcommands.Add(TrainEvaluatorCommand.Create(cli));
        root.Subcommands.Add(StudyCommand.Create(cli));
        root.Subcommands.Add(ProbeCommand.Create(cli));
        root.Subcommands.Add(FeaturesCommand.Create(cli));
        root.Subcommands.Add(ImportIdxCommand.Create(cli));
        root.Subcommands.Add(ImportEmojiCommand.Create(cli));
        root.Subcommands.Add(InspectCommand.Create(cli));
        root.Subcommands.Add(BenchCommand.Create(cli));
        root.Subcommands.Add(DoctorCommand.Create(cli));
        return root;
    }

    /// <summary>The commands that run over several processes when started by an MPI launcher.</summary>
    public static readonly IReadOnlySet<string> DataParallelCommands = new HashSet<string> { "train", "train-autoencoder", "sample-eval", "cache-latents" };

    public static int Run(string[] args, IAnsiConsole? console = null, TextWriter? errors = null)
    {
        if (console == null)
        {
            console = AnsiConsole.Console;
            // Piped or logged output is never wrapped: a script reading "wrote <path>" gets it on one line.
            if (Console.IsOutputRedirected) console.Profile.Width = 8192;
        }
        errors ??= Console.Error;
        Launch launch;
        try { launch = MpiLaunch.Detect(); }
        catch (SvgdException e)
        {
            // Every process of a refused launch fails alike: the first reports.
            if (LauncherRank() == 0) errors.WriteLine($"error: {e.Message}");
            return 1;
        }
        var cli = new CliContext(console, errors);
        SvgDiffusion.Runtime.TorchRuntime.EnsureInitialized();
        SvgDiffusion.Runtime.KernelGuard.Warn = cli.Warn;
        var root = Build(cli);
        var parse = root.Parse(args);
        bool help = args.Length == 0 || parse.Action is System.CommandLine.Help.HelpAction;
        if (args.Length == 0) parse = root.Parse(new[] { "--help" });
        else if (parse.Errors.Count > 0)
        {
            // One line, as for every other bad input, instead of the parser's list of errors and the full help.
            if (launch.Rank == 0) cli.Errors.WriteLine($"error: {ParseError(parse)}");
            return 1;
        }
        if (launch.IsDistributed && !(help && launch.Rank == 0))
        {
            if (JoinJob(launch, parse, help, ref cli) is int exit) return exit;
            SvgDiffusion.Runtime.KernelGuard.Warn = cli.Warn;
            // The commands capture their context: build them again for this process of the job.
            parse = Build(cli).Parse(args);
        }
        try
        {
            int code = parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null });
            return args.Length == 0 ? 1 : code;
        }
        finally
        {
            cli.Comm.Dispose();
        }
    }

    /// <summary>
    /// Makes this process one of an MPI job (loading MPI), or says why it does not run: other ranks than 0
    /// print no help, and commands that do not run data-parallel are refused once.
    /// </summary>
    /// <returns>An exit code when the process ends here, else null with <paramref name="cli"/> in the job.</returns>
    static int? JoinJob(Launch launch, ParseResult parse, bool help, ref CliContext cli)
    {
        if (help) return 0;
        string name = parse.CommandResult.Command.Name;
        if (!DataParallelCommands.Contains(name))
        {
            if (launch.Rank == 0)
                cli.Errors.WriteLine($"error: 'svgd {name}' runs in one process; under an MPI launcher only {string.Join(", ", DataParallelCommands)} run (started here as {launch.Size} processes)");
            return 1;
        }
        try { cli = cli.InJob(MpiLaunch.Connect(launch)); }
        catch (SvgdException e)
        {
            // Every process fails to load or start MPI alike: the first reports.
            if (launch.Rank == 0) cli.Errors.WriteLine($"error: {e.Message}");
            return 1;
        }
        if (MpiLaunch.ThreadsPerProcess(launch) is int threads) TorchSharp.torch.set_num_threads(threads);
        int n = TorchSharp.torch.get_num_threads();
        cli.Console.MarkupLine($"data-parallel over {cli.Comm.Size} processes ({Markup.Escape(cli.Comm.Engine)}, {n} torch thread{(n == 1 ? "" : "s")} each)");
        if (cli.Comm is MpiCommunicator { Unwatched.Count: > 0 } mpi)
            cli.Warn($"rank{(mpi.Unwatched.Count == 1 ? "" : "s")} {string.Join(", ", mpi.Unwatched)} cannot reach rank 0 over TCP: if {(mpi.Unwatched.Count == 1 ? "it is" : "they are")} lost, only the launcher notices, and no line names {(mpi.Unwatched.Count == 1 ? "it" : "them")}");
        return null;
    }

    /// <summary>This process's rank as any launcher announced it (0 when none did), for reporting before MPI is up.</summary>
    static int LauncherRank()
    {
        foreach (var name in new[] { "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID" })
            if (int.TryParse(Environment.GetEnvironmentVariable(name), out int r)) return r;
        return 0;
    }

    static readonly System.Text.RegularExpressions.Regex CannotParse =
        new(@"^Cannot parse argument '(?<value>.*)' for option '(?<option>[^']+)' as expected type '(?<type>[^']+)'$");

    /// <summary>The parser's messages in the words of the rest of the CLI: "--cfg: 'abc' is not a number".</summary>
    static string Plain(string message)
    {
        var m = CannotParse.Match(message);
        if (!m.Success) return message;
        string what = m.Groups["type"].Value switch
        {
            "System.Double" or "System.Single" => "a number (e.g. 1.5)",
            "System.Int32" or "System.Int64" => "a whole number",
            "System.Boolean" => "true or false",
            var t => $"a {t.Replace("System.", "").ToLowerInvariant()}",
        };
        return $"{m.Groups["option"].Value}: '{m.Groups["value"].Value}' is not {what}";
    }

    /// <summary>The candidate nearest to <paramref name="typed"/> by edit distance, when near enough to be a typo.</summary>
    internal static string? Nearest(string typed, IEnumerable<string> candidates)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var c in candidates.Distinct())
        {
            int d = EditDistance(typed.ToLowerInvariant(), c.ToLowerInvariant());
            if (d < bestDistance) (best, bestDistance) = (c, d);
        }
        return best != null && bestDistance <= Math.Max(2, typed.Length / 3) ? best : null;
    }

    /// <summary>Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours (sampel) cost one.</summary>
    static int EditDistance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
            {
                int v = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) v = Math.Min(v, d[i - 2, j - 2] + 1);
                d[i, j] = v;
            }
        return d[a.Length, b.Length];
    }

    static string ParseError(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        var names = new List<string>();
        for (var r = parse.CommandResult; r != null && r.Command is not RootCommand; r = r.Parent as System.CommandLine.Parsing.CommandResult) names.Insert(0, r.Command.Name);
        string path = string.Join(" ", names.Prepend("svgd"));
        if (command is RootCommand && parse.UnmatchedTokens.Count > 0)
        {
            string token = parse.UnmatchedTokens[0];
            string? near = Nearest(token, command.Subcommands.Select(c => c.Name));
            return $"unknown command '{token}'{(near != null ? $"; did you mean '{near}'?" : "")} The commands are {string.Join(", ", command.Subcommands.Select(c => c.Name))} (see svgd --help)";
        }
        // An unknown option: name it once, with the nearest real one.
        if (parse.UnmatchedTokens.FirstOrDefault(t => t.StartsWith('-')) is string unknown)
        {
            var known = command.Options.SelectMany(o => o.Aliases.Prepend(o.Name)).Where(n => n.StartsWith("--", StringComparison.Ordinal));
            string? near = Nearest(unknown, known);
            return $"unknown option '{unknown}'{(near != null ? $"; did you mean {near}?" : "")} (see {path} --help)";
        }
        return $"{string.Join("; ", parse.Errors.Select(e => Plain(e.Message.TrimEnd('.'))))} (see {path} --help)";
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
            return cli.Fail($"error: {e.Message}", e.Collective, 1);
        }
        catch (OperationCanceledException)
        {
            // Data-parallel loops agree on a stop before they throw it: every process ends here together.
            return cli.Fail("cancelled", collective: true, 130);
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("SVGD_DEBUG") != "1")
        {
            // Not a user error: still one line, with the way to get the full trace for a bug report.
            return cli.Fail($"error: {e.GetType().Name}: {e.Message.Split('\n')[0]} (set SVGD_DEBUG=1 for a stack trace)", collective: false, 2);
        }
    };
}

/// <summary>Where a command writes: normal output (Spectre, may wrap and colour) and error lines (stderr, unwrapped, one per failure).
/// In a data-parallel job only rank 0 writes output and warnings; every rank may report its own failure.</summary>
public sealed record CliContext(IAnsiConsole Console, TextWriter Errors)
{
    /// <summary>The processes this command runs on (one unless started by an MPI launcher).</summary>
    public ICommunicator Comm { get; private init; } = SingleProcess.Instance;

    /// <summary>True on the process that writes files, output and progress (rank 0).</summary>
    public bool IsRoot => Comm.Rank == 0;

    public void Warn(string message)
    {
        if (IsRoot) Errors.WriteLine($"warning: {message}");
    }

    /// <summary>The context of one process of <paramref name="comm"/>: other ranks than 0 print nothing but their own failures.</summary>
    public CliContext InJob(ICommunicator comm) => comm.Rank == 0 ? this with { Comm = comm } : new CliContext(Silent(), Errors) { Comm = comm };

    static IAnsiConsole Silent() => AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(TextWriter.Null), Interactive = InteractionSupport.No, Ansi = AnsiSupport.No,
    });

    /// <summary>
    /// Reports a failure and returns the exit code. In one process: the line. In a job, a failure every
    /// process raised together (<paramref name="collective"/>) is reported by rank 0 and the job ends in
    /// order; any other failure is this process's alone: it reports (rank 0 at once, other ranks a moment
    /// later, so a failure they all share is reported once) and ends the whole job, since the others would
    /// wait for it forever.
    /// </summary>
    public int Fail(string line, bool collective, int code)
    {
        if (Comm.Size == 1 || (collective && IsRoot))
        {
            Errors.WriteLine(line);
            return code;
        }
        if (collective) return code;
        if (!IsRoot) Thread.Sleep(1000);
        Errors.WriteLine(IsRoot ? line : line.StartsWith("error: ", StringComparison.Ordinal)
            ? $"error: rank {Comm.Rank} of {Comm.Size}: {line["error: ".Length..]}" : $"rank {Comm.Rank} of {Comm.Size}: {line}");
        Errors.Flush();
        System.Console.Out.Flush();
        Comm.Abort(code);
        return code;
    }
}
