using Spectre.Console;

namespace SvgDiffusion.Cli;

/// <summary>One progress bar with throughput-based ETA around a loop over work items.</summary>
internal static class ProgressBars
{
    public static void Run(IAnsiConsole console, string description, long total, Action<Action<long>> body)
    {
        console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(description), maxValue: Math.Max(1, total));
                body(step => task.Increment(step));
                task.Value = task.MaxValue;
            });
    }
}
