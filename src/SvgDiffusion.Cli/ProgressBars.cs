using Spectre.Console;

namespace SvgDiffusion.Cli;

/// <summary>One progress bar with throughput-based ETA around a loop over work items.</summary>
internal static class ProgressBars
{
    public static void Run(IAnsiConsole console, string description, long total, Action<Action<long>> body) =>
        Track<object?>(console, description, total, set =>
        {
            long done = 0;
            body(step => set(done += step, total));
            return null;
        });

    /// <summary>A progress bar around a library call that reports (done, total) itself, e.g. <see cref="Sampling.GenerationService"/>.</summary>
    public static T Track<T>(IAnsiConsole console, string description, long total, Func<Action<long, long>, T> body)
    {
        T result = default!;
        console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(description), maxValue: Math.Max(1, total));
                result = body((done, _) => task.Value = done);
                task.Value = task.MaxValue;
            });
        return result;
    }
}
