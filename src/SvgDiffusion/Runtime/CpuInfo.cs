namespace SvgDiffusion.Runtime;

/// <summary>
/// What the processor is and which vector instructions it offers, as the kernels see it. The CPU
/// model name alone does not tell Zen 4 from Zen 5 inside a VM (both say "AMD EPYC"), so the flags
/// are part of every verdict about kernels.
/// </summary>
public sealed record CpuInfo(string Model, string Vendor, int Family, int ModelNumber, IReadOnlyList<string> Flags, int LogicalCores)
{
    /// <summary>The flags that change which oneDNN/MKL kernels run, in the order doctor prints them.</summary>
    public static readonly string[] KernelFlags =
    {
        "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
        "avx512_vp2intersect", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
    };

    public bool Has(string flag) => Flags.Contains(flag);

    /// <summary>True where bf16 dot products are native (AVX512-BF16 or AMX): bf16 is then faster, not just smaller.</summary>
    public bool NativeBf16 => Has("avx512_bf16") || Has("amx_bf16");

    /// <summary>One line: "AMD EPYC (family 25, model 1): avx2 fma avx512f ...".</summary>
    public string Summary()
    {
        var present = KernelFlags.Where(Has).ToArray();
        return $"{Model} (family {Family}, model {ModelNumber}): {(present.Length == 0 ? "no AVX2" : string.Join(' ', present))}";
    }

    static CpuInfo? _current;
    public static CpuInfo Current => _current ??= Read();

    static CpuInfo Read()
    {
        string model = "unknown", vendor = "unknown";
        int family = -1, modelNumber = -1;
        var flags = new List<string>();
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                int colon = line.IndexOf(':');
                if (colon < 0) { if (flags.Count > 0) break; continue; } // first processor only
                string key = line[..colon].Trim(), value = line[(colon + 1)..].Trim();
                switch (key)
                {
                    case "model name": model = value; break;
                    case "vendor_id": vendor = value; break;
                    case "cpu family": int.TryParse(value, out family); break;
                    case "model": int.TryParse(value, out modelNumber); break;
                    case "flags": flags.AddRange(value.Split(' ', StringSplitOptions.RemoveEmptyEntries)); break;
                }
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        if (flags.Count == 0) flags.AddRange(IntrinsicFlags());
        return new CpuInfo(model, vendor, family, modelNumber, flags, Environment.ProcessorCount);
    }

    // Where /proc/cpuinfo is not readable (not Linux), ask the runtime instead.
    static IEnumerable<string> IntrinsicFlags()
    {
        if (System.Runtime.Intrinsics.X86.Avx2.IsSupported) yield return "avx2";
        if (System.Runtime.Intrinsics.X86.Fma.IsSupported) yield return "fma";
        if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported) yield return "avx512f";
        if (System.Runtime.Intrinsics.X86.Avx512BW.IsSupported) yield return "avx512bw";
    }
}
