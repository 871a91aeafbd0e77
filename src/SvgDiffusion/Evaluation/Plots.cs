namespace SvgDiffusion.Evaluation;

/// <summary>One line of a chart: a name for the legend and its points.</summary>
public sealed record PlotSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>PNG line charts for training curves and study results, written atomically.</summary>
public static class Plots
{
    /// <param name="logX">Log10 x axis (training steps spread over decades); x values must then be positive.</param>
    public static void Lines(string path, string title, string xLabel, string yLabel, IReadOnlyList<PlotSeries> series,
        bool logX = false, bool logY = false, int width = 800, int height = 500)
    {
        var plot = new ScottPlot.Plot();
        foreach (var s in series)
        {
            if (s.X.Count != s.Y.Count) throw new SvgdException($"plot '{title}': series '{s.Name}' has {s.X.Count} x and {s.Y.Count} y values");
            var keep = Enumerable.Range(0, s.X.Count).Where(i => double.IsFinite(s.X[i]) && double.IsFinite(s.Y[i]) && (!logX || s.X[i] > 0) && (!logY || s.Y[i] > 0)).ToList();
            if (keep.Count == 0) continue;
            double[] xs = keep.Select(i => logX ? Math.Log10(s.X[i]) : s.X[i]).ToArray();
            double[] ys = keep.Select(i => logY ? Math.Log10(s.Y[i]) : s.Y[i]).ToArray();
            var line = plot.Add.Scatter(xs, ys);
            line.LegendText = s.Name;
            line.MarkerSize = xs.Length > 60 ? 0 : 5;
        }
        if (logX) LogTicks(plot.Axes.Bottom);
        if (logY) LogTicks(plot.Axes.Left);
        plot.Title(title);
        plot.Axes.Bottom.Label.Text = xLabel;
        plot.Axes.Left.Label.Text = yLabel;
        if (series.Count > 1) plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        var png = plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
        Checkpoints.AtomicFile.Write(path, fs => fs.Write(png));
    }

    static void LogTicks(ScottPlot.IAxis axis)
    {
        axis.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            LabelFormatter = v => Math.Pow(10, v).ToString("G4", System.Globalization.CultureInfo.InvariantCulture),
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
        };
    }
}
