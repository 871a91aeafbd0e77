using System.Collections.Concurrent;
using System.Diagnostics;

namespace SvgDiffusion.Server;

/// <summary>
/// One model, one worker: requests wait in a bounded queue and run one at a time on a dedicated thread, each
/// with all of libtorch's threads. A full queue refuses at once (the caller answers 429) rather than letting
/// latency grow without bound; work whose client has gone away is skipped, or stopped between solver steps.
/// </summary>
public sealed class WorkQueue : IDisposable
{
    readonly BlockingCollection<WorkItem> _waiting;
    readonly Thread _worker;
    readonly CancellationTokenSource _shutdown = new();
    long _tickets, _started;
    double _averageSeconds = 1.0;
    int _completed, _cancelled, _failed, _rejected;
    WorkItem? _running;

    public WorkQueue(int capacity)
    {
        if (capacity < 1) throw new SvgdException($"the queue must hold at least one request, got {capacity}");
        Capacity = capacity;
        _waiting = new BlockingCollection<WorkItem>(new ConcurrentQueue<WorkItem>(), capacity);
        _worker = new Thread(Work) { IsBackground = true, Name = "svgd-worker" };
        _worker.Start();
    }

    /// <summary>Requests that may wait while one runs.</summary>
    public int Capacity { get; }
    public int Waiting => _waiting.Count;
    public bool Busy => _running != null;
    public int Completed => _completed;
    public int Cancelled => _cancelled;
    public int Failed => _failed;
    public int Rejected => _rejected;

    /// <summary>Cancelled when the server stops: every waiting and running item sees it.</summary>
    public CancellationToken Stopping => _shutdown.Token;

    /// <summary>A guess for Retry-After: the queue ahead at the average duration of recent work, at least one second.</summary>
    public int RetryAfterSeconds => (int)Math.Clamp(Math.Ceiling((Waiting + 1) * Volatile.Read(ref _averageSeconds)), 1, 3600);

    /// <summary>
    /// Queues <paramref name="work"/>; null when the queue is full. <paramref name="resources"/> (its inputs) are
    /// disposed once the work has run, was skipped or was refused: the worker may still use them after the client left.
    /// </summary>
    public WorkItem? TryEnqueue(Func<WorkItem, object> work, CancellationToken clientGone, IDisposable? resources = null)
    {
        var item = new WorkItem(work, CancellationTokenSource.CreateLinkedTokenSource(clientGone, _shutdown.Token), this, resources);
        lock (_waiting)
        {
            item.Ticket = ++_tickets;
            bool added;
            // Stopping disposes the collection: a request that arrives then is refused like one that finds it full.
            try { added = !_shutdown.IsCancellationRequested && _waiting.TryAdd(item); }
            catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException) { added = false; }
            if (!added)
            {
                _tickets--;
                Interlocked.Increment(ref _rejected);
                item.Dispose();
                return null;
            }
        }
        return item;
    }

    /// <summary>Items queued before this one that have not started.</summary>
    internal int Ahead(WorkItem item) => (int)Math.Max(0, item.Ticket - Interlocked.Read(ref _started) - 1);

    void Work()
    {
        try
        {
            foreach (var item in _waiting.GetConsumingEnumerable(_shutdown.Token))
                Run(item);
        }
        catch (OperationCanceledException) { }
        // Whatever is still waiting at shutdown is told so rather than left hanging.
        while (_waiting.TryTake(out var left)) Finish(left, () => left.Completion.TrySetCanceled(), ref _cancelled);
    }

    void Run(WorkItem item)
    {
        Interlocked.Exchange(ref _started, item.Ticket);
        if (item.Token.IsCancellationRequested)
        {
            Finish(item, () => item.Completion.TrySetCanceled(item.Token), ref _cancelled);
            return;
        }
        _running = item;
        item.State = WorkState.Running;
        var sw = Stopwatch.StartNew();
        try
        {
            var result = item.Execute();
            double s = sw.Elapsed.TotalSeconds;
            Volatile.Write(ref _averageSeconds, 0.7 * Volatile.Read(ref _averageSeconds) + 0.3 * s);
            Finish(item, () => item.Completion.TrySetResult(result), ref _completed);
        }
        catch (OperationCanceledException) when (item.Token.IsCancellationRequested)
        {
            Finish(item, () => item.Completion.TrySetCanceled(item.Token), ref _cancelled);
        }
        catch (Exception e)
        {
            Finish(item, () => item.Completion.TrySetException(e), ref _failed);
        }
        finally
        {
            _running = null;
        }
    }

    static void Finish(WorkItem item, Action complete, ref int counter)
    {
        Interlocked.Increment(ref counter);
        item.State = WorkState.Done;
        complete();
        item.Dispose();
    }

    public void Dispose()
    {
        if (_shutdown.IsCancellationRequested) return;
        _shutdown.Cancel();
        _worker.Join(TimeSpan.FromSeconds(30));
        _waiting.Dispose();
        _shutdown.Dispose();
    }
}

public enum WorkState { Waiting, Running, Done }

/// <summary>A queued request: its work, its cancellation (client gone or server stopping), its progress and its outcome.</summary>
public sealed class WorkItem : IDisposable
{
    readonly Func<WorkItem, object> _work;
    readonly CancellationTokenSource _cancel;
    readonly WorkQueue _queue;
    readonly IDisposable? _resources;
    long _done, _total;

    internal WorkItem(Func<WorkItem, object> work, CancellationTokenSource cancel, WorkQueue queue, IDisposable? resources)
    {
        _work = work;
        _cancel = cancel;
        _queue = queue;
        _resources = resources;
        Token = cancel.Token;
    }

    internal long Ticket { get; set; }
    public CancellationToken Token { get; }
    public volatile WorkState State;
    public TaskCompletionSource<object> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Requests ahead of this one (0 once it runs).</summary>
    public int Ahead => State == WorkState.Waiting ? _queue.Ahead(this) : 0;
    public (long Done, long Total) Progress => (Interlocked.Read(ref _done), Interlocked.Read(ref _total));

    /// <summary>For the work itself: progress in its own units.</summary>
    public void Report(long done, long total)
    {
        Interlocked.Exchange(ref _total, total);
        Interlocked.Exchange(ref _done, done);
    }

    internal object Execute() => _work(this);

    public void Dispose()
    {
        _resources?.Dispose();
        try { _cancel.Dispose(); } catch (ObjectDisposedException) { }
    }
}
