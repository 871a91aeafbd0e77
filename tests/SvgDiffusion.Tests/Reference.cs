using System.Runtime.CompilerServices;
using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>Locates ../shared/reference beside the repository; a missing file fails the test.</summary>
public static class Reference
{
    [ModuleInitializer]
    internal static void Init()
    {
        SvgDiffusion.Runtime.TorchRuntime.EnsureInitialized();
        torch.set_num_threads(Math.Max(1, Environment.ProcessorCount));
    }

    public static string RepoRoot { get; } = FindRepoRoot();

    static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "SvgDiffusion.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("cannot find SvgDiffusion.sln above " + AppContext.BaseDirectory);
    }

    public static string Dir => Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared", "reference"));

    public static string File_(string name)
    {
        string p = Path.Combine(Dir, name);
        Assert.True(File.Exists(p), $"reference file missing: {p}");
        return p;
    }

    public static Dictionary<string, Tensor> Io(string caseName) => SafeTensors.Load(File_(caseName + ".io.safetensors"));

    public static double MaxAbs(Tensor a, Tensor b)
    {
        Assert.Equal(b.shape, a.shape);
        using var d = (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max();
        return d.item<double>();
    }

    /// <summary>Same shape, dtype and values.</summary>
    public static bool Same(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape) || a.dtype != b.dtype) return false;
        using var eq = torch.eq(a, b).all();
        return eq.item<bool>();
    }

    public static void Close(Tensor expected, Tensor actual, double tol, string what)
    {
        double err = MaxAbs(actual, expected);
        Assert.True(err <= tol, $"{what}: max abs error {err:g4} > {tol:g2}");
    }

    /// <summary>The svgd CLI in-process: exit code, standard output (200 columns wide), standard error.</summary>
    public static (int Code, string Out, string Err) RunCli(params string[] args)
    {
        var console = new Spectre.Console.Testing.TestConsole();
        console.Profile.Width = 200;
        var err = new StringWriter();
        int code = SvgDiffusion.Cli.SvgdCli.Run(args, console, err);
        return (code, console.Output, err.ToString());
    }

    public static string TempDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "svgd-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}
