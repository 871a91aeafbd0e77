using System.Runtime.InteropServices;

namespace SvgDiffusion.Runtime;

/// <summary>
/// Where our own native libraries (the kernels, the libstdc++ shim) are looked for: beside the
/// assemblies (a build of this repository, a RID-specific publish) and in runtimes/linux-x64/native/
/// below them, where the NuGet packages put them (an installed <c>svgd</c> tool, or a portable build of
/// a project referencing the SvgDiffusion package, which keeps the package's runtimes/ layout).
/// </summary>
static class NativeFiles
{
    /// <summary>The folders searched, in order, without duplicates.</summary>
    public static IReadOnlyList<string> SearchFolders()
    {
        var roots = new[] { AppContext.BaseDirectory, Path.GetDirectoryName(typeof(NativeFiles).Assembly.Location) ?? "" }
            .Where(d => d.Length > 0).Select(Path.GetFullPath).Distinct().ToList();
        string rid = $"linux-{RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant()}";
        return roots.Concat(roots.Select(r => Path.Combine(r, "runtimes", rid, "native"))).Distinct().ToList();
    }

    /// <summary>The first existing <paramref name="fileName"/> in <see cref="SearchFolders"/>, or null.</summary>
    public static string? Find(string fileName) =>
        SearchFolders().Select(d => Path.Combine(d, fileName)).FirstOrDefault(File.Exists);
}
