using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace SvgDiffusion.Runtime;

/// <summary>How libtorch was made loadable on this machine.</summary>
public enum LibStdCxxCompat
{
    /// <summary>The system libstdc++ is new enough: TorchSharp runs as shipped.</summary>
    NotNeeded,
    /// <summary>libLibTorchSharp.so was patched at build time and the GLIBCXX_3.4.32 shim is loaded.</summary>
    ShimLoaded,
}

/// <summary>
/// Prepares the process before TorchSharp's native library loads. On distributions whose libstdc++
/// predates GLIBCXX_3.4.32 the build (build/LibTorchCompat.targets) leaves a shim beside the
/// assemblies (the packages carry it in runtimes/linux-x64/native/); it must be global before libLibTorchSharp.so resolves its symbols.
/// </summary>
public static class TorchRuntime
{
    public const string ShimFileName = "libsvgd_glibcxx_shim.so";
    const int RTLD_NOW = 2, RTLD_GLOBAL = 0x100;
    static readonly object Gate = new();
    static LibStdCxxCompat? _compat;

#pragma warning disable CA2255 // a library initializer is the point: nothing may touch torch first
    [ModuleInitializer]
    internal static void Initialize() => EnsureInitialized();
#pragma warning restore CA2255

    /// <summary>Idempotent; every entry point (CLI, tests, benchmarks) reaches it through the module initializer.</summary>
    public static LibStdCxxCompat EnsureInitialized()
    {
        lock (Gate)
        {
            if (_compat is { } known) return known;
            MallocTuning.Apply();
            _compat = LoadShimIfPresent();
            return _compat.Value;
        }
    }

    public static LibStdCxxCompat Compat => EnsureInitialized();

    static LibStdCxxCompat LoadShimIfPresent()
    {
        if (!OperatingSystem.IsLinux()) return LibStdCxxCompat.NotNeeded;
        string? path = NativeFiles.Find(ShimFileName);
        if (path == null) return LibStdCxxCompat.NotNeeded;
        // The packages ship the shim (and a patched libLibTorchSharp.so) for every machine; where the system
        // libstdc++ has the real symbol the shim must not shadow it.
        if (SystemHasIosBaseLibraryInit()) return LibStdCxxCompat.NotNeeded;
        if (DlOpen(path) == IntPtr.Zero)
            throw new InvalidOperationException($"{path}: cannot load the libstdc++ compatibility shim: {DlError()}");
        return LibStdCxxCompat.ShimLoaded;
    }

    /// <summary>Whether the process's libstdc++.so.6 defines std::ios_base_library_init() at GLIBCXX_3.4.32.</summary>
    static bool SystemHasIosBaseLibraryInit()
    {
        try
        {
            if (!NativeLibrary.TryLoad("libstdc++.so.6", out IntPtr lib)) return false;
            return dlvsym(lib, "_ZSt21ios_base_library_initv", "GLIBCXX_3.4.32") != IntPtr.Zero;
        }
        catch (Exception) { return false; }
    }

    static IntPtr DlOpen(string path)
    {
        try { return dlopen_libc(path, RTLD_NOW | RTLD_GLOBAL); }
        catch (EntryPointNotFoundException) { return dlopen_libdl(path, RTLD_NOW | RTLD_GLOBAL); }
        catch (DllNotFoundException) { return dlopen_libdl(path, RTLD_NOW | RTLD_GLOBAL); }
    }

    static string DlError()
    {
        try { return Marshal.PtrToStringAnsi(dlerror_libc()) ?? "unknown error"; }
        catch (Exception) { return "unknown error"; }
    }

    [DllImport("libc.so.6", EntryPoint = "dlopen")] static extern IntPtr dlopen_libc(string file, int mode);
    [DllImport("libdl.so.2", EntryPoint = "dlopen")] static extern IntPtr dlopen_libdl(string file, int mode);
    [DllImport("libc.so.6")] static extern IntPtr dlvsym(IntPtr handle, string symbol, string version);
    [DllImport("libc.so.6", EntryPoint = "dlerror")] static extern IntPtr dlerror_libc();
}
