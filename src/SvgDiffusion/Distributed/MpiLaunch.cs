namespace SvgDiffusion.Distributed;

/// <summary>How this process was started: its rank and the job's size as the launcher announced them.</summary>
/// <param name="LocalSize">Processes of the job on this machine (for the torch thread count), 1 when unknown.</param>
/// <param name="Hydra">Started by MPICH's Hydra (mpiexec.mpich), which ends the whole job as soon as one process exits with an error.</param>
public sealed record Launch(int Rank, int Size, int LocalSize, bool Hydra)
{
    public static readonly Launch Alone = new(0, 1, 1, false);
    public bool IsDistributed => Size > 1;
}

/// <summary>
/// Recognises an MPI launch from the environment alone, so a process that was not started by a
/// launcher never loads MPI. MPICH's Hydra (<c>mpiexec.mpich</c>, <c>mpirun.mpich</c>), Intel MPI and
/// Slurm's <c>srun --mpi=pmi2</c> announce the job through PMI variables; Open MPI through OMPI_*
/// variables, but its library has another ABI than the MPICH one MPI.NET binds, so that launch is
/// refused with the line that says what to use instead.
/// </summary>
public static class MpiLaunch
{
    public const string Install = "install MPICH (Debian/Ubuntu: apt-get install mpich) and launch with its mpiexec (mpiexec.mpich -n 2 svgd ...) or under Slurm with srun --mpi=pmi2";

    /// <summary>The launch described by <paramref name="env"/> (the process environment when null).</summary>
    public static Launch Detect(Func<string, string?>? env = null)
    {
        env ??= Environment.GetEnvironmentVariable;
        string? pmiRank = env("PMI_RANK"), pmiSize = env("PMI_SIZE");
        if (pmiRank != null || pmiSize != null)
        {
            int size = Number(env, "PMI_SIZE"), rank = Number(env, "PMI_RANK");
            if (size < 1 || rank < 0 || rank >= size) throw new SvgdException($"the MPI launcher set PMI_RANK={rank} and PMI_SIZE={size}, which do not describe a job");
            // Hydra announces the processes per machine; srun does not (it binds each task to its CPUs instead).
            string? localRanks = env("MPI_LOCALNRANKS");
            int local = localRanks is string l && int.TryParse(l, out int n) && n > 0 ? n : 1;
            return new Launch(rank, size, local, Hydra: localRanks != null);
        }
        if (env("OMPI_COMM_WORLD_SIZE") is string ompi && ompi != "1")
            throw new SvgdException($"started by Open MPI's mpirun (OMPI_COMM_WORLD_SIZE={ompi}), whose library svgd cannot use: {Install}");
        if (env("PMIX_RANK") != null && env("PMIX_SIZE") is string pmix && pmix != "1")
            throw new SvgdException($"started through PMIx (srun --mpi=pmix or an Open MPI/PRRTE launcher), which svgd cannot use: {Install}");
        if (env("SLURM_STEP_NUM_TASKS") is string tasks && tasks != "1" && env("SLURM_PROCID") != null)
            throw new SvgdException($"started by srun as one of {tasks} tasks without MPI: each would train alone and overwrite the others' files; use srun --mpi=pmi2 (or run one task)");
        return Launch.Alone;
    }

    static int Number(Func<string, string?> env, string name) =>
        int.TryParse(env(name), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int v) ? v
            : throw new SvgdException($"the MPI launcher set {name}='{env(name)}', not a number");

    /// <summary>
    /// Joins the job: a <see cref="SingleProcess"/> when the launch has one process (MPI stays unloaded),
    /// else MPI through MPICH's library (<c>SVGD_MPI_LIBRARY</c> overrides its name or path).
    /// </summary>
    public static ICommunicator Connect(Launch launch) =>
        launch.IsDistributed ? MpiCommunicator.Start(launch, Environment.GetEnvironmentVariable("SVGD_MPI_LIBRARY") ?? MpiCommunicator.DefaultLibrary)
                             : SingleProcess.Instance;

    /// <summary>libtorch threads for one of <paramref name="launch"/>'s processes: the CPUs it may use, split
    /// between the job's processes on this machine, unless OMP_NUM_THREADS says otherwise.</summary>
    public static int? ThreadsPerProcess(Launch launch)
    {
        if (!launch.IsDistributed || Environment.GetEnvironmentVariable("OMP_NUM_THREADS") != null) return null;
        return Math.Max(1, Environment.ProcessorCount / Math.Max(1, launch.LocalSize));
    }
}
