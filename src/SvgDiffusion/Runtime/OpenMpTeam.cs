namespace SvgDiffusion.Runtime;

/// <summary>
/// Runs a parallel region on libtorch's own OpenMP thread team (the libgomp it ships), as its ops do.
/// Our kernels between libtorch ops could use .NET's thread pool instead, but then two sets of threads
/// share the cores: after each op libgomp's workers spin-wait for the next region, .NET's workers spin
/// for the next work item, and a 2-core GEMM on pool threads ran at 190-250 GFLOP/s inside the DiT
/// against 300-360 alone. On the team, the spinning threads are the ones that do the work.
/// </summary>
static unsafe class OpenMpTeam
{
    static readonly delegate* unmanaged<delegate* unmanaged<IntPtr, void>, IntPtr, uint, uint, void> Parallel;
    static readonly delegate* unmanaged<int> ThreadNum, NumThreads, InParallel;

    static OpenMpTeam()
    {
        IntPtr parallel = LibTorchNative.TrySymbol("GOMP_parallel"), num = LibTorchNative.TrySymbol("omp_get_thread_num"),
            count = LibTorchNative.TrySymbol("omp_get_num_threads"), inParallel = LibTorchNative.TrySymbol("omp_in_parallel");
        if (parallel == IntPtr.Zero || num == IntPtr.Zero || count == IntPtr.Zero || inParallel == IntPtr.Zero) return;
        Parallel = (delegate* unmanaged<delegate* unmanaged<IntPtr, void>, IntPtr, uint, uint, void>)parallel;
        ThreadNum = (delegate* unmanaged<int>)num;
        NumThreads = (delegate* unmanaged<int>)count;
        InParallel = (delegate* unmanaged<int>)inParallel;
    }

    /// <summary>Whether libtorch's libgomp was found (not with a TBB or native-threads libtorch).</summary>
    public static bool Available => Parallel != null;

    /// <summary>
    /// Calls <paramref name="body"/>(<paramref name="state"/>) on each of up to <paramref name="threads"/>
    /// team threads, the calling thread included, and returns when all are done. Each call reads its
    /// share from <see cref="Thread"/> and <see cref="Threads"/>. The body must not throw: nothing can
    /// carry an exception back across libgomp. Inside another region it runs on the calling thread only.
    /// </summary>
    public static void Run(int threads, delegate* unmanaged<IntPtr, void> body, IntPtr state)
    {
        if (!Available) throw new InvalidOperationException("libtorch's OpenMP runtime is not loaded");
        Parallel(body, state, (uint)(InParallel() != 0 ? 1 : Math.Max(1, threads)), 0);
    }

    /// <summary>This thread's index in the running region, from 0.</summary>
    public static int Thread => ThreadNum();

    /// <summary>How many threads the running region has (may be fewer than asked for).</summary>
    public static int Threads => NumThreads();
}
