using System.Buffers.Binary;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace SvgDiffusion.Distributed;

/// <summary>
/// Notices a process of the job that is gone without a word (killed, crashed, its machine down) and ends the
/// job with one line naming its rank. MPI cannot: MPICH's transports wait forever for a peer that died, and
/// when the launcher kills the others instead (Hydra's default) nobody says which rank was lost. So beside MPI
/// every rank keeps one TCP connection to rank 0 (a star) with a heartbeat: a connection that closes without
/// a goodbye, or stays silent for <see cref="Silence"/>, is a lost process. Rank 0 reports any lost rank, rank 1
/// a lost rank 0; every other process of the job ends without a line, with <see cref="LostExitCode"/>.
/// A process that fails on its own (<see cref="ICommunicator.Abort"/>) says so first, so the others end
/// silently instead of reporting it lost; rank 0 passes that on to the rest.
/// </summary>
public sealed partial class PeerWatch : IDisposable
{
    /// <summary>Exit code of the processes of a job that lost one of its processes.</summary>
    public const int LostExitCode = 4;
    /// <summary>How often every connection carries a sign of life.</summary>
    public static readonly TimeSpan Beat = TimeSpan.FromSeconds(2);
    /// <summary>A connection silent this long is a lost process (hung, or its machine or network went down).</summary>
    public static readonly TimeSpan Silence = TimeSpan.FromSeconds(60);
    static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);
    const int TokenBytes = 16;

    enum Signal : byte { Alive = 0, Bye = 1, Abort = 2, Lost = 3 }

    /// <summary>The other end of one connection: rank 0 for the other ranks, every other rank for rank 0.</summary>
    sealed class Peer(int rank, Socket socket, string where)
    {
        public int Rank { get; } = rank;
        public Socket Socket { get; } = socket;
        /// <summary>"pid P on HOST at ADDRESS", for the line that reports it lost.</summary>
        public string Where { get; } = where;
        public readonly object SendGate = new();
    }

    readonly int _rank, _size;
    readonly TextWriter _errors;
    readonly Action<int> _exit;
    readonly Dictionary<int, Peer> _peers = new();
    readonly byte[] _token = new byte[TokenBytes];
    TcpListener? _listener;
    Timer? _beat;
    // 0 while the job runs; 1 once it ends (goodbye, a lost process or an abort): only the first of those acts.
    int _ending;

    /// <summary>Ranks that could not reach rank 0 over TCP: a loss of theirs is left to the launcher (rank 0 only).</summary>
    public IReadOnlyList<int> Unwatched { get; private set; } = Array.Empty<int>();

    PeerWatch(int rank, int size, TextWriter errors, Action<int> exit)
    {
        _rank = rank;
        _size = size;
        _errors = errors;
        _exit = exit;
    }

    /// <summary>
    /// Connects every rank of <paramref name="comm"/> to rank 0 (a collective: every rank calls it, after MPI
    /// is up). Rank 0 listens on all its IPv4 addresses and broadcasts them with a random token; every other
    /// rank tries them all at once and keeps the first that answers with the token's job.
    /// </summary>
    /// <param name="exit">Ends this process with a code (tests); by default flushes the console and exits at once,
    /// whatever the other threads are doing (the main thread may be waiting inside MPI for the lost process).</param>
    public static PeerWatch Start(ICommunicator comm, TextWriter errors, Action<int>? exit = null)
    {
        var watch = new PeerWatch(comm.Rank, comm.Size, errors, exit ?? ExitNow);
        byte[]? offer = comm.Rank == 0 ? watch.Listen() : null;
        offer = comm.Broadcast(offer, 0);
        bool joined = comm.Rank == 0 || watch.Join(offer);
        var all = comm.Allgather(new[] { (byte)(joined ? 1 : 0) });
        // Every rank that could join has: the listener is done.
        watch._listener?.Stop();
        if (comm.Rank == 0)
            lock (watch._peers)
            {
                watch.Unwatched = Enumerable.Range(1, comm.Size - 1).Where(r => all[r][0] == 0 || !watch._peers.ContainsKey(r)).ToList();
                // One that answered too late for its rank to see it: not watched either.
                foreach (int r in watch.Unwatched)
                    if (watch._peers.Remove(r, out var late)) late.Socket.Dispose();
            }
        watch.Run();
        return watch;
    }

    // ---- joining ----

    /// <summary>Rank 0: listens and accepts the other ranks in the background; returns the offer they connect with.</summary>
    byte[] Listen()
    {
        RandomNumberGenerator.Fill(_token);
        _listener = new TcpListener(IPAddress.Any, 0);
        _listener.Start(Math.Max(16, _size));
        int port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        var listener = _listener;
        new Thread(() => Accept(listener)) { IsBackground = true, Name = "svgd peer watch: accept" }.Start();
        // Every address of this machine: the other ranks keep whichever reaches this process (the token tells).
        var addresses = LocalAddresses().Select(a => a.ToString());
        string offer = $"{Convert.ToHexString(_token)} {port} {Environment.ProcessId} {Environment.MachineName} {string.Join(",", addresses)}";
        return Encoding.UTF8.GetBytes(offer);
    }

    /// <summary>This machine's IPv4 addresses, loopback last.</summary>
    static List<IPAddress> LocalAddresses()
    {
        var found = new List<IPAddress>();
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces().Where(n => n.OperationalStatus != OperationalStatus.Down))
                foreach (var a in nic.GetIPProperties().UnicastAddresses)
                    if (a.Address.AddressFamily == AddressFamily.InterNetwork && !found.Contains(a.Address)) found.Add(a.Address);
        }
        catch (NetworkInformationException) { }
        if (!found.Contains(IPAddress.Loopback)) found.Add(IPAddress.Loopback);
        return found.OrderBy(IPAddress.IsLoopback).ToList();
    }

    void Accept(TcpListener listener)
    {
        while (true)
        {
            Socket s;
            try { s = listener.AcceptSocket(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException) { return; }
            try
            {
                s.ReceiveTimeout = (int)ConnectTimeout.TotalMilliseconds;
                var head = Receive(s, TokenBytes + 10);
                int rank = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(TokenBytes));
                int pid = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(TokenBytes + 4));
                int hostLength = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(TokenBytes + 8));
                string host = Encoding.UTF8.GetString(Receive(s, hostLength));
                bool ours = CryptographicOperations.FixedTimeEquals(head.AsSpan(0, TokenBytes), _token) && rank > 0 && rank < _size;
                lock (_peers)
                {
                    if (!ours || _peers.ContainsKey(rank)) { s.Dispose(); continue; }
                    string address = (s.RemoteEndPoint as IPEndPoint)?.Address.ToString() ?? "?";
                    // Registered before the answer: a rank that has its answer is known to rank 0.
                    _peers[rank] = new Peer(rank, s, $"pid {pid} on {host} at {address}");
                }
                try { s.Send(new byte[] { 1 }); }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    lock (_peers) _peers.Remove(rank);
                    throw;
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
            {
                s.Dispose();
            }
        }
    }

    /// <summary>A rank other than 0: connects to rank 0 through the first of its addresses that answers.</summary>
    bool Join(byte[] offerBytes)
    {
        var parts = Encoding.UTF8.GetString(offerBytes).Split(' ');
        var token = Convert.FromHexString(parts[0]);
        int port = int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture);
        string where = $"pid {parts[2]} on {parts[3]}";
        var addresses = parts[4].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(IPAddress.Parse).ToList();

        var host = Encoding.UTF8.GetBytes(Environment.MachineName);
        if (host.Length > ushort.MaxValue) host = host[..ushort.MaxValue];
        var hello = new byte[TokenBytes + 10 + host.Length];
        token.CopyTo(hello, 0);
        BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(TokenBytes), _rank);
        BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(TokenBytes + 4), Environment.ProcessId);
        BinaryPrimitives.WriteUInt16LittleEndian(hello.AsSpan(TokenBytes + 8), (ushort)host.Length);
        host.CopyTo(hello, TokenBytes + 10);

        using var cancel = new CancellationTokenSource(ConnectTimeout);
        var tries = addresses.Select(a => Try(new IPEndPoint(a, port), hello, cancel.Token)).ToList();
        Socket? won = null;
        while (tries.Count > 0 && won == null)
        {
            var done = Task.WhenAny(tries).GetAwaiter().GetResult();
            tries.Remove(done);
            won = done.Result;
        }
        cancel.Cancel();
        // The others lost the race or failed; close any that connected anyway.
        foreach (var t in tries) t.ContinueWith(x => x.Result?.Dispose(), TaskScheduler.Default);
        if (won == null) return false;
        _peers[0] = new Peer(0, won, $"{where} at {((IPEndPoint)won.RemoteEndPoint!).Address}");
        return true;
    }

    static async Task<Socket?> Try(IPEndPoint at, byte[] hello, CancellationToken cancel)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await s.ConnectAsync(at, cancel);
            await s.SendAsync(hello, SocketFlags.None, cancel);
            var ack = new byte[1];
            if (await s.ReceiveAsync(ack, SocketFlags.None, cancel) == 1 && ack[0] == 1) return s;
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException) { }
        s.Dispose();
        return null;
    }

    static byte[] Receive(Socket s, int count)
    {
        var buffer = new byte[count];
        for (int got = 0; got < count;)
        {
            int n = s.Receive(buffer, got, count - got, SocketFlags.None);
            if (n == 0) throw new IOException("connection closed");
            got += n;
        }
        return buffer;
    }

    // ---- watching ----

    void Run()
    {
        List<Peer> peers;
        lock (_peers) peers = _peers.Values.ToList();
        foreach (var p in peers)
        {
            p.Socket.NoDelay = true;
            p.Socket.SendTimeout = (int)ConnectTimeout.TotalMilliseconds;
            new Thread(() => Watch(p)) { IsBackground = true, Name = $"svgd peer watch: rank {p.Rank}" }.Start();
        }
        if (peers.Count > 0) _beat = new Timer(_ => SendAll(Signal.Alive, except: -1), null, TimeSpan.Zero, Beat);
    }

    /// <summary>Claims the end of the job for the caller; false when another end came first.</summary>
    bool End() => Interlocked.Exchange(ref _ending, 1) == 0;

    void Watch(Peer p)
    {
        const string gone = "it ended without a word (killed, crashed, or its machine went down)";
        var one = new byte[1];
        string why;
        try
        {
            p.Socket.ReceiveTimeout = (int)Silence.TotalMilliseconds;
            while (true)
            {
                if (p.Socket.Receive(one) == 0) { why = gone; break; }
                if ((Signal)one[0] == Signal.Bye) return;
                if ((Signal)one[0] is Signal.Abort or Signal.Lost) { Ended(p, (Signal)one[0]); return; }
            }
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock)
        {
            why = $"no sign of life for {Silence.TotalSeconds:F0} s (hung, or its machine or network went down)";
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted)
        {
            // A process that ends with signs of life unread resets its connections instead of closing them.
            why = gone;
        }
        catch (SocketException e)
        {
            why = $"its connection failed ({e.SocketErrorCode}; killed, or its machine or network went down)";
        }
        catch (ObjectDisposedException)
        {
            return;
        }
        Lost(p, why);
    }

    void Lost(Peer p, string why)
    {
        if (!End()) return;
        // Every rank sees a lost rank 0: rank 1 alone reports it.
        if (_rank == 0 || (p.Rank == 0 && _rank == 1))
        {
            _errors.WriteLine($"error: lost rank {p.Rank} of {_size} ({p.Where}): {why}; the job stops, continue from the last checkpoint with --resume");
            _errors.Flush();
        }
        if (_rank == 0) SendAll(Signal.Lost, except: p.Rank);
        _exit(LostExitCode);
    }

    /// <summary>Another process failed on its own, or rank 0 lost one, and has said so: end without a second line.</summary>
    void Ended(Peer p, Signal why)
    {
        if (!End()) return;
        if (_rank == 0) SendAll(why, except: p.Rank);
        _exit(why == Signal.Lost ? LostExitCode : 1);
    }

    void SendAll(Signal signal, int except)
    {
        List<Peer> peers;
        lock (_peers) peers = _peers.Values.Where(p => p.Rank != except).ToList();
        foreach (var p in peers)
        {
            try
            {
                lock (p.SendGate) p.Socket.Send(new[] { (byte)signal });
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        }
    }

    /// <summary>
    /// This process fails on its own and has reported it: tells the others to end without reporting it lost
    /// (rank 0 tells every rank; another rank tells rank 0, which passes it on).
    /// </summary>
    public void Abort()
    {
        if (!End()) return;
        _beat?.Dispose();
        SendAll(Signal.Abort, except: -1);
    }

    /// <summary>The job's end for this process: a goodbye on every connection, so none reads as a lost process.</summary>
    public void Dispose()
    {
        bool first = End();
        _beat?.Dispose();
        if (first) SendAll(Signal.Bye, except: -1);
        _listener?.Stop();
        List<Peer> peers;
        lock (_peers) peers = _peers.Values.ToList();
        foreach (var p in peers)
        {
            try { p.Socket.Shutdown(SocketShutdown.Send); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
            p.Socket.Dispose();
        }
    }

    static void ExitNow(int code)
    {
        try
        {
            // Bounded: the console is not worth a hang.
            Task.Run(() => { Console.Out.Flush(); Console.Error.Flush(); }).Wait(TimeSpan.FromSeconds(2));
        }
        catch (AggregateException) { }
        // Not Environment.Exit: the main thread may be inside MPI, waiting for the lost process forever,
        // and nothing of this process is worth finishing (checkpoints are written whole or not at all).
        ExitProcess(code);
    }

    [LibraryImport("libc.so.6", EntryPoint = "_exit")]
    private static partial void ExitProcess(int code);
}
