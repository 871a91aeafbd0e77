using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace SvgDiffusion.Runtime;

/// <summary>
/// The few libtorch switches and facts TorchSharp does not expose, reached through symbols that
/// libtorch_cpu.so exports. The library is already loaded by TorchSharp; <c>dlopen</c> of its soname
/// returns that same copy, so nothing is loaded twice.
/// </summary>
public static partial class LibTorchNative
{
    const string Library = "libtorch_cpu.so";
    const int RTLD_NOW = 2, RTLD_NOLOAD = 4;

    static IntPtr _handle;
    static IntPtr Handle
    {
        get
        {
            if (_handle != IntPtr.Zero) return _handle;
            // Make sure TorchSharp has loaded libtorch first.
            _ = TorchSharp.torch.get_num_threads();
            IntPtr h = dlopen(Library, RTLD_NOW | RTLD_NOLOAD);
            if (h == IntPtr.Zero) h = dlopen(Library, RTLD_NOW);
            if (h == IntPtr.Zero) throw new InvalidOperationException($"{Library} is not loaded in this process");
            return _handle = h;
        }
    }

    /// <summary>A symbol of libtorch_cpu or of a library it loaded (its OpenMP runtime), or zero.</summary>
    internal static IntPtr TrySymbol(string name) => dlsym(Handle, name);

    static IntPtr Symbol(string name)
    {
        IntPtr p = dlsym(Handle, name);
        if (p == IntPtr.Zero) throw new InvalidOperationException($"{Library} does not export {name}");
        return p;
    }

    static unsafe IntPtr GlobalContext() => ((delegate* unmanaged<IntPtr>)Symbol("_ZN2at13globalContextEv"))();

    /// <summary>
    /// Whether libtorch may use oneDNN (MKL-DNN) kernels, <c>torch.backends.mkldnn.enabled</c>. With it
    /// off, convolutions fall back to im2col + GEMM and bf16 matmuls to libtorch's own kernels.
    /// </summary>
    public static unsafe bool OneDnnEnabled
    {
        get => ((delegate* unmanaged<IntPtr, byte>)Symbol("_ZNK2at7Context17userEnabledMkldnnEv"))(GlobalContext()) != 0;
        set => ((delegate* unmanaged<IntPtr, byte, void>)Symbol("_ZN2at7Context20setUserEnabledMkldnnEb"))(GlobalContext(), value ? (byte)1 : (byte)0);
    }

    /// <summary>
    /// Whether libtorch may use NNPACK convolutions, <c>torch.backends.nnpack.enabled</c>. Off, libtorch
    /// no longer asks whether NNPACK initialised, which on CPUs it does not support logs a warning per conv.
    /// </summary>
    public static unsafe bool NnpackEnabled
    {
        get => ((delegate* unmanaged<IntPtr, byte>)Symbol("_ZNK2at7Context17userEnabledNNPACKEv"))(GlobalContext()) != 0;
        set => ((delegate* unmanaged<IntPtr, byte, void>)Symbol("_ZN2at7Context20setUserEnabledNNPACKEb"))(GlobalContext(), value ? (byte)1 : (byte)0);
    }

    /// <summary><c>torch.__config__.show()</c>: the build's compiler, BLAS, oneDNN and CPU capability lines.</summary>
    public static unsafe string ShowConfig()
    {
        // at::show_config() returns a std::string (libstdc++ layout: data pointer, length, 16-byte
        // buffer) through a hidden result pointer. The string's heap buffer, if any, is left to the
        // process: this is read once.
        var fn = (delegate* unmanaged<byte*, byte*>)Symbol("_ZN2at11show_configB5cxx11Ev");
        byte* result = stackalloc byte[64];
        fn(result);
        byte* data = *(byte**)result;
        long length = *(long*)(result + 8);
        return length is > 0 and < 1 << 20 ? System.Text.Encoding.UTF8.GetString(data, (int)length) : "";
    }

    /// <summary>The versions that decide which kernels run, from the build configuration.</summary>
    public static LibraryVersions Versions()
    {
        string config;
        try { config = ShowConfig(); }
        catch (InvalidOperationException) { config = ""; }
        string? Find(string pattern) => Regex.Match(config, pattern) is { Success: true } m ? m.Groups[1].Value.Trim() : null;
        return new LibraryVersions(
            LibTorch: Find(@"TORCH_VERSION=([0-9][^,\s]*)") ?? TorchSharpVersion(),
            OneDnn: Find(@"(?:MKL-DNN|oneDNN)[^\n]*?(v[0-9][0-9.]*[^\n(]*)"),
            Mkl: Find(@"Math Kernel Library Version ([^\n]+)") ?? MklVersion(),
            CpuCapability: Find(@"CPU capability usage: ([^\n]+)"),
            Config: config);
    }

    static string TorchSharpVersion() =>
        typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString() is { } v ? $"(TorchSharp {v})" : "unknown";

    /// <summary>The file libtorch_cpu.so was loaded from, from the process's memory map.</summary>
    public static string NativePath()
    {
        _ = Handle;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int i = line.IndexOf('/');
                if (i >= 0 && line.EndsWith("/" + Library, StringComparison.Ordinal)) return line[i..];
            }
        }
        catch (IOException) { }
        return Library;
    }

    static unsafe string? MklVersion()
    {
        try
        {
            var fn = (delegate* unmanaged<byte*, int, void>)Symbol("MKL_Get_Version_String");
            byte* buf = stackalloc byte[256];
            fn(buf, 256);
            return Marshal.PtrToStringAnsi((IntPtr)buf)?.Trim();
        }
        catch (InvalidOperationException) { return null; }
    }

    /// <summary>Address of a tensor's first element (<c>Tensor.data_ptr()</c>); TorchSharp hands out spans, not the pointer.</summary>
    public static IntPtr DataPointer(TorchSharp.torch.Tensor t) => THSTensor_data(t.Handle);

    static IntPtr _version, _isInference;

    /// <summary>
    /// A tensor's version counter (<c>Tensor._version</c>): every in-place write to its storage — an
    /// optimizer step, an EMA update, <c>copy_</c> from a state dict — bumps it. Inference tensors have
    /// none (see <see cref="IsInference"/>); asking one throws inside libtorch.
    /// </summary>
    public static unsafe long Version(TorchSharp.torch.Tensor t)
    {
        if (_version == IntPtr.Zero) _version = Symbol("_ZNK2at10TensorBase8_versionEv");
        // A member function: the at::Tensor behind TorchSharp's handle is `this`.
        return ((delegate* unmanaged<IntPtr, long>)_version)(t.Handle);
    }

    /// <summary>Whether a tensor was made in inference mode (<c>Tensor.is_inference()</c>).</summary>
    public static unsafe bool IsInference(TorchSharp.torch.Tensor t)
    {
        if (_isInference == IntPtr.Zero) _isInference = Symbol("_ZN2at4_ops12is_inference4callERKNS_6TensorE");
        return ((delegate* unmanaged<IntPtr, byte>)_isInference)(t.Handle) != 0;
    }

    [LibraryImport("LibTorchSharp")]
    private static partial IntPtr THSTensor_data(IntPtr tensor);

    [LibraryImport("libc.so.6", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr dlopen(string file, int mode);

    [LibraryImport("libc.so.6", EntryPoint = "dlsym", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr dlsym(IntPtr handle, string symbol);
}

public sealed record LibraryVersions(string LibTorch, string? OneDnn, string? Mkl, string? CpuCapability, string Config);
