using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Studies;

namespace SvgDiffusion.Cli.Commands;

internal static class StudyCommand
{
    public static Command Create(CliContext cli)
    {
        var config = new Option<string>("--config") { Description = "Study JSON (e.g. studies/fashion-mnist.json): data folders, work_dir (checkpoints, caches: not committed), results_dir (per-arm metrics.json, grids, plots, results.md), the shared autoencoder/DiT budget, the evaluation and the arms.", Required = true };
        var arms = new Option<string?>("--arms") { Description = "Comma-separated arm names to run now (default: every arm not yet finished)." };
        var reportOnly = new Option<bool>("--report-only") { Description = "Train nothing: rewrite results.md and the plots from the arms finished so far." };
        var cmd = new Command("study", "Compare latent spaces at one shared budget: per arm, train the autoencoder, measure reconstruction and a linear probe, cache latents, train the same DiT with scored checkpoints and sweep the sampling steps, all scored by the independent evaluator. Resumable at every stage; a finished arm (its metrics.json) is skipped.")
        { config, arms, reportOnly };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            using var cancel = new CtrlC();
            var cfg = StudyConfig.Load(p.GetValue(config)!);
            var study = new Study(cfg, new ConsoleObserver(cli.Console));
            if (p.GetValue(reportOnly))
            {
                study.WriteReport();
                return 0;
            }
            var only = p.GetValue(arms)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            try { study.Run(only, cancel.Token); }
            catch (OperationCanceledException)
            {
                cli.Errors.WriteLine($"stopped by {cancel.Signal ?? "a signal"}; checkpoints kept, rerun the same command to continue");
                return cancel.ExitCode == 0 ? 130 : cancel.ExitCode;
            }
            cli.Console.MarkupLine($"study [bold]{Markup.Escape(cfg.Name)}[/]: this run took {sw.Elapsed.TotalMinutes:F1} min; results in [bold]{Markup.Escape(cfg.ResultsDir)}[/]");
            return 0;
        }));
        return cmd;
    }

    sealed class ConsoleObserver(IAnsiConsole console) : IStudyObserver
    {
        public void Message(string line) => console.MarkupLine(Markup.Escape(line));
        public void Stage(string description, long total, Action<Action<long>> body) => ProgressBars.Run(console, description, total, body);
    }
}
