using System.Diagnostics;
using System.Text.Json;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// Two machines on one for multi-host MPI: network namespaces A and B (names unique to the run) joined by a
/// veth pair, <see cref="AddressA"/> in A and <see cref="AddressB"/> in B. The addresses exist only inside
/// the two namespaces, so nothing of the job leaves them. Needs root and iproute2's <c>ip netns</c>
/// (.ci/run installs iproute2 and runs as root); without them the test fails saying so. Disposing kills
/// whatever still runs in the namespaces and deletes them (the veth pair goes with them).
/// </summary>
/// <remarks>
/// How MPICH 4.0's Hydra (Debian 12's mpich) runs across them: mpiexec runs inside A, as on the first host
/// of a hosts file that names both by address. Hydra starts the proxy of a host that is one of its own
/// addresses (A's) itself, and the proxy of any other host through its launcher, by default
/// <c>ssh -x HOST "hydra_pmi_proxy --control-port ADDRESS_A:PORT ..."</c>; <c>-launcher ssh -launcher-exec
/// SCRIPT</c> replaces ssh by <see cref="Launcher"/>, which takes ssh's arguments and runs the command through
/// sh inside HOST's namespace, as sshd would run it on HOST. The proxy in B connects back to mpiexec at A's
/// address over the veth, and the two ranks exchange their MPI addresses through it. One thing differs from
/// two real machines: the namespaces share one kernel, memory and hostname, and UCX (MPICH's ch4 transport)
/// then reaches the other rank through shared memory (sysv, cma) instead of the network; <see cref="Transport"/>
/// (<c>UCX_TLS=tcp,self</c>) makes it take TCP, which in B can only go over the veth, and the test checks the
/// veth's byte counter for the gradients. (<c>-launcher manual</c> would need the proxies started by hand, and
/// Hydra's <c>-iface</c> is not needed: the hosts are named by address, and each namespace has no other
/// interface than the veth besides lo.)
/// </remarks>
internal sealed class NamespaceHosts : IDisposable
{
    public const string AddressA = "10.213.0.1", AddressB = "10.213.0.2";

    /// <summary>mpiexec's options in the README's multi-host lines ("hosts" is <see cref="HostsFile"/>).</summary>
    public static readonly string[] Options = { "-f", "hosts", "-n", "2", "-disable-auto-cleanup" };

    /// <summary>mpiexec options only this machine needs (see the remarks).</summary>
    public static readonly string[] Transport = { "-genv", "UCX_TLS", "tcp,self" };

    public string A { get; }
    public string B { get; }
    public string VethB { get; }
    /// <summary>Hydra's hosts file: one "address:processes" line per host.</summary>
    public string HostsFile { get; }
    /// <summary>The ssh stand-in for Hydra's ssh launcher.</summary>
    public string Launcher { get; }

    readonly string _vethA;

    NamespaceHosts(string dir)
    {
        string id = Guid.NewGuid().ToString("N")[..8];
        A = $"svgd-{id}-a";
        B = $"svgd-{id}-b";
        // Interface names have at most 15 characters.
        _vethA = $"sv{id}a";
        VethB = $"sv{id}b";
        HostsFile = Path.Combine(dir, "hosts");
        Launcher = Path.Combine(dir, "netns-ssh");
    }

    /// <summary>Creates the two namespaces; fails the test (not skips) where that is not possible.</summary>
    public static NamespaceHosts Create(string dir)
    {
        Assert.True(Environment.IsPrivilegedProcess,
            "the multi-host MPI test creates network namespaces and must run as root (CI's .ci/run does); run it as root, e.g. sudo dotnet test");
        var probe = Run("ip", "netns", "list");
        Assert.True(probe.Code == 0, $"the multi-host MPI test needs iproute2's 'ip netns' (apt-get install iproute2; .ci/run installs it): {probe.Err.Trim()}");
        var hosts = new NamespaceHosts(dir);
        try
        {
            hosts.Ip("netns", "add", hosts.A);
            hosts.Ip("netns", "add", hosts.B);
            hosts.Ip("-n", hosts.A, "link", "add", hosts._vethA, "type", "veth", "peer", "name", hosts.VethB, "netns", hosts.B);
            foreach (var (ns, veth, address) in new[] { (hosts.A, hosts._vethA, AddressA), (hosts.B, hosts.VethB, AddressB) })
            {
                hosts.Ip("-n", ns, "addr", "add", address + "/24", "dev", veth);
                hosts.Ip("-n", ns, "link", "set", "lo", "up");
                hosts.Ip("-n", ns, "link", "set", veth, "up");
            }
            File.WriteAllText(hosts.HostsFile, $"{AddressA}:1\n{AddressB}:1\n");
            File.WriteAllText(hosts.Launcher, $$"""
                #!/bin/sh
                # Hydra's ssh launcher calls "ssh -x HOST COMMAND...": run COMMAND through sh in HOST's namespace, as sshd would on HOST.
                [ "$1" = "-x" ] && shift
                host=$1; shift
                case "$host" in
                  {{AddressA}}) ns={{hosts.A}} ;;
                  {{AddressB}}) ns={{hosts.B}} ;;
                  *) echo "netns-ssh: no namespace for host $host" >&2; exit 255 ;;
                esac
                exec ip netns exec "$ns" sh -c "$*"

                """);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(hosts.Launcher, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            return hosts;
        }
        catch
        {
            hosts.Dispose();
            throw;
        }
    }

    /// <summary>The command line prefix that runs mpiexec on host A.</summary>
    public string[] OnA => new[] { "ip", "netns", "exec", A };

    /// <summary>mpiexec's options for the two hosts: the README's (<see cref="Options"/>), then this machine's launcher and <see cref="Transport"/>.</summary>
    public string[] MpiexecArgs => Options.Select(o => o == "hosts" ? HostsFile : o)
        .Concat(new[] { "-launcher", "ssh", "-launcher-exec", Launcher }).Concat(Transport).ToArray();

    /// <summary>The namespace process <paramref name="pid"/> runs in ("" for the machine's own).</summary>
    public static string NamespaceOf(int pid) => Run("ip", "netns", "identify", pid.ToString()).Out.Trim();

    /// <summary>Bytes B has sent over its end of the veth pair.</summary>
    public long BytesSentByB()
    {
        string json = Ip("-n", B, "-j", "-s", "link", "show", "dev", VethB);
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement[0].GetProperty("stats64").GetProperty("tx").GetProperty("bytes").GetInt64();
    }

    string Ip(params string[] args)
    {
        var r = Run("ip", args);
        Assert.True(r.Code == 0, $"ip {string.Join(" ", args)} failed ({r.Code}): {r.Err.Trim()}");
        return r.Out;
    }

    static (int Code, string Out, string Err) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEndAsync();
            string output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, output, err.Result);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, "", $"{file}: {e.Message}");
        }
    }

    public void Dispose()
    {
        foreach (var ns in new[] { A, B })
        {
            // A deleted namespace stays alive while processes run in it: end them first.
            foreach (var line in Run("ip", "netns", "pids", ns).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                if (int.TryParse(line.Trim(), out int pid))
                    try { Process.GetProcessById(pid).Kill(); }
                    catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception) { }
            Run("ip", "netns", "del", ns);
        }
    }
}
