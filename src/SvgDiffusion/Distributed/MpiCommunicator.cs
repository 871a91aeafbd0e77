using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;
using U = MPI.Unsafe;

namespace SvgDiffusion.Distributed;

/// <summary>
/// MPI through MPI.NET. MPI.NET is compiled against MS-MPI's library name; MS-MPI and MPICH share one
/// ABI (handles, MPI_Status layout, MPI_IN_PLACE), so its imports are pointed at MPICH's
/// <c>libmpich.so.12</c>. Bulk data goes straight from tensor memory through MPI.NET's low-level
/// bindings; errors are returned, not fatal, so a failed call is one line instead of an MPICH trace.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    public const string DefaultLibrary = "libmpich.so.12";
    // Counts are C ints: large buffers go in chunks.
    const int Chunk = 1 << 30;
    const int GatherTag = 7;
    static readonly IntPtr InPlace = new(-1);       // MPI_IN_PLACE in the MPICH (and MS-MPI) ABI

    static readonly object Gate = new();
    static string? _library;
    static IntPtr _handle;

    readonly MPI.Environment _env;
    readonly Launch _launch;
    PeerWatch? _watch;
    bool _disposed;

    public int Rank { get; }
    public int Size { get; }
    public string Engine { get; }

    MpiCommunicator(MPI.Environment env, Launch launch, int rank, int size, string engine)
    {
        _env = env;
        _launch = launch;
        Rank = rank;
        Size = size;
        Engine = engine;
    }

    /// <summary>Loads <paramref name="library"/>, initialises MPI and checks the job matches <paramref name="launch"/>.</summary>
    public static MpiCommunicator Start(Launch launch, string library)
    {
        Resolve(library);
        var args = Array.Empty<string>();
        var env = new MPI.Environment(ref args, MPI.Threading.Serialized);
        // Errors come back as codes (turned into one line each) instead of MPICH aborting with its own trace.
        U.MPI_Errhandler_set(U.MPI_COMM_WORLD, U.MPI_ERRORS_RETURN);
        int rank = 0, size = 0;
        Check(U.MPI_Comm_rank(U.MPI_COMM_WORLD, out rank), "MPI_Comm_rank");
        Check(U.MPI_Comm_size(U.MPI_COMM_WORLD, out size), "MPI_Comm_size");
        if (rank != launch.Rank || size != launch.Size)
            throw new SvgdException($"MPI says rank {rank} of {size} but the launcher said rank {launch.Rank} of {launch.Size}: {library} does not belong to the launcher ({MpiLaunch.Install})");
        var comm = new MpiCommunicator(env, launch, rank, size, $"MPI ({Path.GetFileName(library)})");
        comm._watch = PeerWatch.Start(comm, Console.Error);
        return comm;
    }

    /// <summary>Ranks whose loss only the launcher would notice: they cannot reach rank 0 over TCP (<see cref="PeerWatch"/>).</summary>
    public IReadOnlyList<int> Unwatched => _watch?.Unwatched ?? Array.Empty<int>();

    /// <summary>Points MPI.NET's imports at <paramref name="library"/>; one line when it cannot be loaded.</summary>
    static void Resolve(string library)
    {
        lock (Gate)
        {
            if (_library != null)
            {
                if (_library != library) throw new InvalidOperationException($"MPI is already bound to {_library}");
                return;
            }
            if (!NativeLibrary.TryLoad(library, out _handle))
                throw new SvgdException($"started by an MPI launcher but the MPI library {library} cannot be loaded: {MpiLaunch.Install}");
            NativeLibrary.SetDllImportResolver(typeof(MPI.Communicator).Assembly, (name, _, _) =>
                name.StartsWith("msmpi", StringComparison.OrdinalIgnoreCase) ? _handle : IntPtr.Zero);
            _library = library;
        }
    }

    static void Check(int code, string call)
    {
        if (code == 0) return;
        var text = new byte[512];
        int len = 0;
        string what = U.MPI_Error_string(code, text, ref len) == 0 ? System.Text.Encoding.ASCII.GetString(text, 0, Math.Clamp(len, 0, text.Length)).Trim() : $"error {code}";
        throw new SvgdException($"{call} failed ({what}): another process of the job has probably died; see its message");
    }

    static void ForChunks(long count, Action<long, int> body)
    {
        for (long off = 0; off < count; off += Chunk) body(off, (int)Math.Min(Chunk, count - off));
    }

    public void AllreduceSum(Tensor values)
    {
        SingleProcess.CheckBuffer(values);
        long n = values.numel();
        if (n == 0) return;
        int type = values.dtype == ScalarType.Float64 ? U.MPI_DOUBLE : U.MPI_FLOAT;
        int elem = values.dtype == ScalarType.Float64 ? 8 : 4;
        fixed (byte* p = values.bytes)
        {
            byte* q = p;
            ForChunks(n, (off, count) => Check(U.MPI_Allreduce(InPlace, (IntPtr)(q + off * elem), count, type, U.MPI_SUM, U.MPI_COMM_WORLD), "MPI_Allreduce"));
        }
    }

    public void AllreduceSum(double[] values)
    {
        if (values.Length == 0) return;
        fixed (double* p = values)
            Check(U.MPI_Allreduce(InPlace, (IntPtr)p, values.Length, U.MPI_DOUBLE, U.MPI_SUM, U.MPI_COMM_WORLD), "MPI_Allreduce");
    }

    public void Broadcast(Tensor values, int root = 0)
    {
        if (values.device_type != DeviceType.CPU || !values.is_contiguous()) throw new ArgumentException("broadcast needs a contiguous CPU tensor");
        var span = values.bytes;
        if (span.Length == 0) return;
        fixed (byte* p = span) BroadcastRaw(p, span.Length, root);
    }

    void BroadcastRaw(byte* p, long length, int root) =>
        ForChunks(length, (off, count) => Check(U.MPI_Bcast((IntPtr)(p + off), count, U.MPI_BYTE, root, U.MPI_COMM_WORLD), "MPI_Bcast"));

    public byte[] Broadcast(byte[]? data, int root = 0)
    {
        long length = Rank == root ? (data ?? throw new ArgumentNullException(nameof(data))).LongLength : 0;
        Check(U.MPI_Bcast((IntPtr)(&length), 1, U.MPI_LONG_LONG, root, U.MPI_COMM_WORLD), "MPI_Bcast");
        var result = Rank == root ? data! : new byte[length];
        if (result.Length > 0) fixed (byte* p = result) BroadcastRaw(p, result.LongLength, root);
        return result;
    }

    long[] Lengths(long mine)
    {
        var all = new long[Size];
        fixed (long* p = all) Check(U.MPI_Allgather((IntPtr)(&mine), 1, U.MPI_LONG_LONG, (IntPtr)p, 1, U.MPI_LONG_LONG, U.MPI_COMM_WORLD), "MPI_Allgather");
        return all;
    }

    public byte[][] Allgather(byte[] data)
    {
        // Rare and small (fingerprints, checksums): one broadcast per rank keeps it simple for any size.
        var result = new byte[Size][];
        for (int r = 0; r < Size; r++) result[r] = Broadcast(r == Rank ? data : null, r);
        return result;
    }

    public byte[][] Gather(byte[] data, int root = 0)
    {
        var lengths = Lengths(data.LongLength);
        if (Rank != root)
        {
            if (data.Length > 0)
                fixed (byte* p = data)
                {
                    byte* q = p;
                    ForChunks(data.LongLength, (off, count) => Check(U.MPI_Send((IntPtr)(q + off), count, U.MPI_BYTE, root, GatherTag, U.MPI_COMM_WORLD), "MPI_Send"));
                }
            return Array.Empty<byte[]>();
        }
        var result = new byte[Size][];
        for (int r = 0; r < Size; r++)
        {
            if (r == root) { result[r] = data; continue; }
            var buffer = new byte[lengths[r]];
            if (buffer.Length > 0)
                fixed (byte* p = buffer)
                {
                    byte* q = p;
                    int from = r;
                    ForChunks(buffer.LongLength, (off, count) =>
                    {
                        var status = new U.MPI_Status();
                        Check(U.MPI_Recv((IntPtr)(q + off), count, U.MPI_BYTE, from, GatherTag, U.MPI_COMM_WORLD, out status), "MPI_Recv");
                    });
                }
            result[r] = buffer;
        }
        return result;
    }

    public void Barrier() => Check(U.MPI_Barrier(U.MPI_COMM_WORLD), "MPI_Barrier");

    public void Abort(int code)
    {
        // The other processes end without reporting this one lost (also under mpiexec -disable-auto-cleanup).
        _watch?.Abort();
        // Hydra ends the job when a process exits with an error, silently; MPI_Abort (for other launchers,
        // which may not) adds MPICH's own line to the one the caller already printed.
        if (!_launch.Hydra) U.MPI_Abort(U.MPI_COMM_WORLD, code);
        Environment.Exit(code);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        // Goodbyes first: a process that ends now is not lost.
        _watch?.Dispose();
        _env.Dispose();
    }
}
