#nullable enable
using System;
using System.Diagnostics;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

// Marks libLibTorchSharp.so's GLIBCXX_3.4.32 requirement weak when the system libstdc++ lacks it.
public class SvgdPatchLibTorchSharp : Task
{
    const string Version = "GLIBCXX_3.4.32";

    [Required] public string OutputDirectory { get; set; } = "";
    /// <summary>Patch whatever this machine's libstdc++ is (the packages run on machines we do not know).</summary>
    public bool Force { get; set; }
    [Output] public bool NeedsShim { get; set; }

    public override bool Execute()
    {
        if (!Directory.Exists(OutputDirectory)) return true;
        var libs = Directory.GetFiles(OutputDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories);
        if (libs.Length == 0) return true;
        string? stdcxx = FindSystemLibStdCxx();
        if (!Force && stdcxx != null && Contains(File.ReadAllBytes(stdcxx), Encoding.ASCII.GetBytes(Version + "\0")))
        {
            Log.LogMessage(MessageImportance.Low, $"svgd: {stdcxx} provides {Version}; libLibTorchSharp.so left as shipped.");
            return true;
        }
        foreach (var lib in libs)
        {
            try
            {
                byte[] bytes = File.ReadAllBytes(lib);
                int state = MarkVersionWeak(bytes, Version);
                if (state == 0) continue;            // does not need the version at all
                NeedsShim = true;
                if (state == 1)
                {
                    string tmp = lib + ".svgd-tmp";
                    File.WriteAllBytes(tmp, bytes);
                    File.Delete(lib);
                    File.Move(tmp, lib);
                    Log.LogMessage(MessageImportance.High, $"svgd: marked {Version} weak in {lib} (system libstdc++ is older).");
                }
            }
            catch (Exception e)
            {
                Log.LogError($"svgd: cannot patch {lib}: {e.Message}");
                return false;
            }
        }
        return !Log.HasLoggedErrors;
    }

    static string? FindSystemLibStdCxx()
    {
        try
        {
            var psi = new ProcessStartInfo("/sbin/ldconfig", "-p") { RedirectStandardOutput = true, UseShellExecute = false };
            if (!File.Exists(psi.FileName)) psi.FileName = "ldconfig";
            using var p = Process.Start(psi)!;
            string text = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            string arch = System.Runtime.InteropServices.RuntimeInformation.OSArchitecture
                == System.Runtime.InteropServices.Architecture.Arm64 ? "AArch64" : "x86-64";
            foreach (var line in text.Split('\n'))
            {
                string t = line.Trim();
                int arrow = t.IndexOf("=> ", StringComparison.Ordinal);
                if (!t.StartsWith("libstdc++.so.6 ") || !t.Contains(arch) || arrow < 0) continue;
                string path = t.Substring(arrow + 3).Trim();
                if (File.Exists(path)) return path;
            }
        }
        catch (Exception) { }
        foreach (var dir in new[] { "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu", "/lib64" })
        {
            string path = Path.Combine(dir, "libstdc++.so.6");
            if (File.Exists(path)) return path;
        }
        return null;
    }

    static bool Contains(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
        {
            if (hay[i] != needle[0]) continue;
            int j = 1;
            while (j < needle.Length && hay[i + j] == needle[j]) j++;
            if (j == needle.Length) return true;
        }
        return false;
    }

    // 0: the library does not need the version; 1: flag set now; 2: already weak.
    static int MarkVersionWeak(byte[] elf, string version)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1) throw new InvalidDataException("only 64-bit little-endian ELF is supported");
        long shoff = BitConverter.ToInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        const uint SHT_GNU_verneed = 0x6ffffffe;
        for (int s = 0; s < shnum; s++)
        {
            long sh = shoff + (long)s * shentsize;
            if (BitConverter.ToUInt32(elf, (int)sh + 4) != SHT_GNU_verneed) continue;
            long off = BitConverter.ToInt64(elf, (int)sh + 0x18);
            int link = (int)BitConverter.ToUInt32(elf, (int)sh + 0x28);
            long strOff = BitConverter.ToInt64(elf, (int)(shoff + (long)link * shentsize) + 0x18);
            long vn = off;
            while (true)
            {
                int cnt = BitConverter.ToUInt16(elf, (int)vn + 2);
                long aux = vn + BitConverter.ToUInt32(elf, (int)vn + 8);
                for (int a = 0; a < cnt; a++)
                {
                    string name = ReadCString(elf, strOff + BitConverter.ToUInt32(elf, (int)aux + 8));
                    if (name == version)
                    {
                        int flagsAt = (int)aux + 4;
                        ushort flags = BitConverter.ToUInt16(elf, flagsAt);
                        if ((flags & 2) != 0) return 2;
                        flags |= 2; // VER_FLG_WEAK
                        elf[flagsAt] = (byte)(flags & 0xff);
                        elf[flagsAt + 1] = (byte)(flags >> 8);
                        return 1;
                    }
                    uint nextAux = BitConverter.ToUInt32(elf, (int)aux + 12);
                    if (nextAux == 0) break;
                    aux += nextAux;
                }
                uint next = BitConverter.ToUInt32(elf, (int)vn + 12);
                if (next == 0) break;
                vn += next;
            }
        }
        return 0;
    }

    static string ReadCString(byte[] b, long at)
    {
        int end = (int)at;
        while (b[end] != 0) end++;
        return Encoding.ASCII.GetString(b, (int)at, end - (int)at);
    }
}
