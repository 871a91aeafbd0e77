using SvgDiffusion.Runtime;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

public class RuntimeTests(ITestOutputHelper output)
{
    static bool SystemLibStdCxxHas(string version)
    {
        foreach (var dir in new[] { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/aarch64-linux-gnu", "/usr/lib" })
        {
            string p = Path.Combine(dir, "libstdc++.so.6");
            if (!File.Exists(p)) continue;
            var bytes = File.ReadAllBytes(p);
            var needle = System.Text.Encoding.ASCII.GetBytes(version + "\0");
            return bytes.AsSpan().IndexOf(needle) >= 0;
        }
        return true;
    }

    [Fact]
    public void TorchLoadsThroughTheRightPath()
    {
        var compat = TorchRuntime.Compat;
        bool needsShim = OperatingSystem.IsLinux() && !SystemLibStdCxxHas("GLIBCXX_3.4.32");
        output.WriteLine($"libstdc++ compatibility: {compat} (system lacks GLIBCXX_3.4.32: {needsShim})");
        Assert.Equal(needsShim ? LibStdCxxCompat.ShimLoaded : LibStdCxxCompat.NotNeeded, compat);
        Assert.Equal(needsShim, File.Exists(Path.Combine(AppContext.BaseDirectory, TorchRuntime.ShimFileName)));

        using var a = torch.arange(6, dtype: torch.float32).reshape(2, 3);
        using var b = a.matmul(a.t());
        Assert.Equal(new float[] { 5, 14, 14, 50 }, b.data<float>().ToArray());
    }

    [Fact]
    public void MallocKeepsLargeBlocksOnTheHeapOnGlibc()
    {
        // The test host starts through the same TorchRuntime initialiser as the CLI.
        bool glibc = OperatingSystem.IsLinux() && File.Exists("/lib/x86_64-linux-gnu/libc.so.6") | File.Exists("/usr/lib/x86_64-linux-gnu/libc.so.6") | File.Exists("/lib/aarch64-linux-gnu/libc.so.6");
        bool optedOut = Environment.GetEnvironmentVariable("SVGD_MALLOC") == "default";
        Assert.Equal(glibc && !optedOut, MallocTuning.Applied);
    }
}
