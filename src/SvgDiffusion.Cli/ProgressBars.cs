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
        if (!console.Profile.Capabilities.Interactive) return Lines(console, description, total, body);
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

    /// <summary>
    /// Without a terminal (piped, logged, under a scheduler): one line per tenth of the work, with the time so far
    /// and an estimate of what is left, and always a last line at 100%, so a log shows that the step ended.
    /// </summary>
    static T Lines<T>(IAnsiConsole console, string description, long total, Func<Action<long, long>, T> body)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int printed = -1;
        void Print(int tenth, long done)
        {
            double elapsed = clock.Elapsed.TotalSeconds;
            string eta = done > 0 && done < total ? $", about {Seconds(elapsed * (total - done) / done)} left" : "";
            console.WriteLine($"{description}: {tenth * 10}% ({Seconds(elapsed)}{eta})");
            printed = tenth;
        }
        Print(0, 0);
        var result = body((done, _) =>
        {
            int tenth = total <= 0 ? 10 : (int)Math.Clamp(done * 10 / total, 0, 10);
            if (tenth > printed && tenth < 10) Print(tenth, done);
        });
        Print(10, total);
        return result;
    }

    static string Seconds(double s) => s < 120 ? $"{s:F1} s" : $"{s / 60:F1} min";
}
