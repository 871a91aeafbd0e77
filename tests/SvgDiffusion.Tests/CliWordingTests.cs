using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>What a newcomer reads: parse errors in plain words, near misses named, progress that ends in a log.</summary>
public class CliWordingTests
{
    static string Error(params string[] args)
    {
        var (code, _, err) = Reference.RunCli(args);
        Assert.True(code == 1, $"exit {code}: {err}");
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        return lines[0];
    }

    [Fact]
    public void ParseErrorsSayWhatTheValueShouldBe()
    {
        Assert.Equal("error: --cfg: 'abc' is not a number (e.g. 1.5) (see svgd sample --help)", Error("sample", "--cfg", "abc"));
        Assert.Equal("error: --n: '1.5' is not a whole number (see svgd sample --help)", Error("sample", "--n", "1.5"));
        Assert.DoesNotContain("System.", Error("vary", "x.png", "--seed", "1e3"));
    }

    [Fact]
    public void TyposGetTheNearestName()
    {
        Assert.StartsWith("error: unknown command 'sampel'; did you mean 'sample'?", Error("sampel"));
        Assert.StartsWith("error: unknown command 'interpolte'; did you mean 'interpolate'?", Error("interpolte"));
        Assert.Equal("error: unknown option '--clases'; did you mean --classes? (see svgd sample --help)", Error("sample", "--clases", "1"));
        Assert.DoesNotContain("did you mean", Error("sample", "--zzzzzzzz", "1"));
    }

    [Fact]
    public void HelpListsGeneratingCommandsFirst()
    {
        var root = SvgDiffusion.Cli.SvgdCli.Build(new SvgDiffusion.Cli.CliContext(new Spectre.Console.Testing.TestConsole(), new StringWriter()));
        var names = root.Subcommands.Select(c => c.Name).ToList();
        Assert.Equal(new[] { "sample", "serve", "mix", "interpolate", "vary" }, names.Take(5));
        Assert.True(names.IndexOf("inspect") > names.IndexOf("train"));
    }

    [Fact]
    public void ProgressWithoutATerminalEndsAtOneHundredPercent()
    {
        string o = Path.Combine(Reference.TempDir(), "s.png");
        var (code, output, err) = Reference.RunCli("sample", "--n", "2", "--steps", "3", "--out", o);
        Assert.True(code == 0, err);
        var progress = output.Split('\n').Where(l => l.StartsWith("sampling: ", StringComparison.Ordinal)).ToList();
        Assert.StartsWith("sampling: 0%", progress[0]);
        Assert.StartsWith("sampling: 100%", progress[^1]);
        Assert.Contains($"wrote {o}", output.Replace("\n", ""));
    }

    [Fact]
    public void EditingCommandsTakeImagesAsArgumentsAndTheBundledModel()
    {
        string dir = Reference.TempDir(), o = Path.Combine(dir, "rec.png");
        string folder = AutoencoderTrainingTests.FashionMnist;
        var (code, output, err) = Reference.RunCli("reconstruct", folder, "--out", o);
        Assert.True(code == 0, err);
        Assert.True(File.Exists(o) && File.Exists(Path.Combine(dir, "rec.json")), "a .png --out is the grid, its metrics beside it");
        Assert.Contains("the grid shows the first 32 of 40 pairs", output.Replace("\n", ""));
        var images = SvgDiffusion.Data.ImageFiles.List(folder).Take(2).ToArray();
        (code, _, err) = Reference.RunCli("mix", images[0], images[1], "--out", Path.Combine(dir, "mix.png"));
        Assert.True(code == 0, err);
        Assert.Equal("error: give two images: mix SEMANTIC.png DETAIL.png (got 1)", Error("mix", images[0], "--out", Path.Combine(dir, "m.png")));
        Assert.StartsWith("error: give the two images either as arguments", Error("mix", images[0], images[1], "--semantic", images[0], "--out", Path.Combine(dir, "m.png")));
    }
}
