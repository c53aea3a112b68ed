using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;

namespace MmuSpec.Impl.Memory;

/// <summary>
/// Hands out zeroed, page-aligned runs of 4 KiB pages from native memory and counts them (and, for
/// large guest memory, lazily zeroed runs: <see cref="AllocateLazilyZeroedPages"/>; for large sets of
/// table pages, 2 MiB chunks advised for huge pages: <see cref="AllocateHugePageChunk"/>).
/// Owners free their own runs; <see cref="Dispose"/> frees nothing (tests check
/// <see cref="PagesInUse"/> == 0 to find leaks). Thread-safe.
/// A freed run is kept for reuse by the thread that freed it, for the next owner on that thread asking for the
/// same size (any pool: a campaign builds and destroys an MMU per case, and fresh native memory costs page
/// faults, and for large runs an mmap/munmap or a memset, every time). The counters do not see the difference.
/// One of the two owners of raw pointers (with <see cref="GuestPhysicalMemory"/>): runs are handed out
/// and taken back only inside the impl (and to its own contract tests); the counters are public.
/// </summary>
public sealed unsafe class NativePagePool : IDisposable
{
    /// <summary>Bytes in one page (x86 4 KiB page).</summary>
    public const int PageSize = 4096;

    // Freed runs kept for reuse, per thread so that no lock is taken; bounded (see RunCache).
    [ThreadStatic] private static RunCache? t_freedRuns;

    private long _pagesAllocated;
    private long _runsReused;
    private long _pagesFreed;
    private long _lazilyZeroedPagesInUse;
    private long _hugePageChunksInUse;
    private long _hugePageChunksAdvised;
    private volatile bool _disposed;

#if DEBUG
    // Live runs (base -> page count, kind): catches double frees, size mismatches
    // and frees through the wrong method in DEBUG builds.
    private readonly Dictionary<nuint, (long Count, RunKind Kind)> _liveRuns = new();
#endif

    // Which allocation method handed a run out, so that DEBUG builds catch a free through another.
    private enum RunKind { Eager, Lazy, HugePageChunk }

    /// <summary>Pages handed out since creation.</summary>
    public long PagesAllocated => Interlocked.Read(ref _pagesAllocated);

    /// <summary>Pages returned since creation.</summary>
    public long PagesFreed => Interlocked.Read(ref _pagesFreed);

    /// <summary>Runs this pool handed out from memory an earlier owner on the same thread had freed.</summary>
    public long RunsReused => Interlocked.Read(ref _runsReused);

    /// <summary>Pages currently handed out.</summary>
    public long PagesInUse => PagesAllocated - PagesFreed;

    /// <summary>
    /// The part of <see cref="PagesInUse"/> handed out by <see cref="AllocateLazilyZeroedPages"/>: reserved,
    /// but resident only once written (e.g. guest memory), unlike the eagerly zeroed runs (e.g. table pages).
    /// </summary>
    public long LazilyZeroedPagesInUse => Interlocked.Read(ref _lazilyZeroedPagesInUse);

    /// <summary>Chunks from <see cref="AllocateHugePageChunk"/> currently handed out (each <see cref="HugePageChunkPages"/> pages of <see cref="PagesInUse"/>).</summary>
    public long HugePageChunksInUse => Interlocked.Read(ref _hugePageChunksInUse);

    /// <summary>Chunks handed out since creation whose huge-page advice the kernel accepted.</summary>
    public long HugePageChunksAdvised => Interlocked.Read(ref _hugePageChunksAdvised);

    /// <summary>Pages in one chunk of <see cref="AllocateHugePageChunk"/> (2 MiB).</summary>
    public const int HugePageChunkPages = HugePageChunks.ChunkPages;

    /// <summary>Allocates <paramref name="count"/> contiguous zeroed pages aligned to <see cref="PageSize"/>.</summary>
    internal byte* AllocatePages(int count) => AllocatePages(count, alignmentPages: 1);

    /// <summary>
    /// Allocates <paramref name="count"/> contiguous zeroed pages whose base is aligned to
    /// <paramref name="alignmentPages"/> pages (a power of two). Owners that find per-page metadata by
    /// masking an address down to its run (e.g. the TDP MMU's page headers) need runs aligned to their size.
    /// Free with <see cref="FreePages"/> as usual.
    /// </summary>
    internal byte* AllocatePages(int count, int alignmentPages)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count <= 0)
            ThrowHelper.ArgumentOutOfRange(nameof(count), "Page count must be positive.");
        if (alignmentPages <= 0 || (alignmentPages & (alignmentPages - 1)) != 0)
            ThrowHelper.ArgumentOutOfRange(nameof(alignmentPages), "Alignment must be a positive power of two (in pages).");

        nuint bytes = (nuint)count * PageSize;
        nuint alignment = (nuint)alignmentPages * PageSize;
        byte* p = t_freedRuns is { } runs ? runs.TakeEager(count, alignmentPages) : null;
        if (p != null)
            Interlocked.Increment(ref _runsReused);
        else
            p = (byte*)NativeMemory.AlignedAlloc(bytes, alignment); // throws OutOfMemoryException on failure
        NativeMemory.Clear(p, bytes);
        Debug.Assert(p != null, "AlignedAlloc returned null");
        Debug.Assert(((nuint)p & (alignment - 1)) == 0, "run is not aligned as requested");

#if DEBUG
        lock (_liveRuns)
            _liveRuns.Add((nuint)p, (count, RunKind.Eager));
#endif
        Interlocked.Add(ref _pagesAllocated, count);
        return p;
    }

    // Runs up to 1 GiB are reserved in power-of-two sizes, so that a freed run fits the next slot of
    // about its size; larger ones exactly: rounding 18 GiB up to 32 GiB would ask the OS for more than
    // its overcommit heuristic grants on a 24 GiB machine (TdpLeafTableCacheTests' 18 GiB slot).
    private const long RoundedReservationLimit = 1L << 18;

    private static long ReservedPages(long count) =>
        count <= RoundedReservationLimit ? (long)BitOperations.RoundUpToPowerOf2((ulong)count) : count;

    /// <summary>
    /// Allocates <paramref name="count"/> contiguous pages that read as zero without being touched:
    /// <c>calloc</c>, which takes large runs straight from fresh anonymous mappings, so the OS supplies
    /// a page only when it is first written (a 1 GiB guest slot costs nothing until used). The run is
    /// 16-byte aligned, not page aligned. Counted in <see cref="PagesAllocated"/> like any run; free it
    /// with <see cref="FreeLazilyZeroedPages"/>.
    /// </summary>
    /// <exception cref="OutOfMemoryException">The OS refused the reservation.</exception>
    internal byte* AllocateLazilyZeroedPages(long count)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count <= 0)
            ThrowHelper.ArgumentOutOfRange(nameof(count), "Page count must be positive.");
        if ((ulong)count > nuint.MaxValue / PageSize)
            throw new OutOfMemoryException($"{count} pages do not fit in the address space.");

        long reserved = ReservedPages(count);
        byte* p = t_freedRuns is { } runs ? runs.TakeLazy(reserved) : null;
        if (p != null)
            Interlocked.Increment(ref _runsReused);
        else
            p = (byte*)NativeMemory.AllocZeroed((nuint)reserved, PageSize); // throws OutOfMemoryException on failure
        Debug.Assert(((nuint)p & (sizeof(ulong) - 1)) == 0, "run is not 8-byte aligned");

#if DEBUG
        lock (_liveRuns)
            _liveRuns.Add((nuint)p, (count, RunKind.Lazy));
#endif
        Interlocked.Add(ref _lazilyZeroedPagesInUse, count);
        Interlocked.Add(ref _pagesAllocated, count);
        return p;
    }

    /// <summary>
    /// Returns a run obtained from <see cref="AllocateLazilyZeroedPages"/> with the same
    /// <paramref name="count"/>. Allowed after <see cref="Dispose"/>.
    /// </summary>
    internal void FreeLazilyZeroedPages(byte* p, long count) => FreeLazilyZeroedPages(p, count, writtenPages: null);

    /// <summary>
    /// Returns a run obtained from <see cref="AllocateLazilyZeroedPages"/> whose owner knows every page it
    /// wrote (<paramref name="writtenPages"/>, page indexes in the run; null: unknown). With that list the run
    /// is zeroed again page by page and kept for reuse; without it, it goes back to the OS.
    /// </summary>
    internal void FreeLazilyZeroedPages(byte* p, long count, IReadOnlyCollection<ulong>? writtenPages)
    {
        if (p == null)
            ThrowHelper.ArgumentNull(nameof(p));
        if (count <= 0)
            ThrowHelper.ArgumentOutOfRange(nameof(count), "Page count must be positive.");
        ForgetRun(p, count, RunKind.Lazy);
        long reserved = ReservedPages(count);
        if (writtenPages is null || !(t_freedRuns ??= new()).CanKeepLazy(reserved))
            NativeMemory.Free(p);
        else
        {
            foreach (ulong page in writtenPages)
            {
                Debug.Assert(page < (ulong)count, "a written page outside the run");
                NativeMemory.Clear(p + (page << 12), PageSize);
            }
            t_freedRuns.KeepLazy(p, reserved);
        }
        Interlocked.Add(ref _lazilyZeroedPagesInUse, -count);
        Interlocked.Add(ref _pagesFreed, count);
    }

    /// <summary>
    /// Returns a run obtained from <see cref="AllocatePages"/> with the same <paramref name="count"/>.
    /// Allowed after <see cref="Dispose"/> so owners may be disposed in any order.
    /// </summary>
    internal void FreePages(byte* p, int count)
    {
        if (p == null)
            ThrowHelper.ArgumentNull(nameof(p));
        if (count <= 0)
            ThrowHelper.ArgumentOutOfRange(nameof(count), "Page count must be positive.");
        Debug.Assert(((nuint)p & (PageSize - 1)) == 0, "freeing a pointer that is not page aligned");
        ForgetRun(p, count, RunKind.Eager);
        if (!(t_freedRuns ??= new()).KeepEager(p, count, AlignmentPagesOf(p)))
            NativeMemory.AlignedFree(p);
        Interlocked.Add(ref _pagesFreed, count);
    }

    /// <summary>
    /// Allocates <see cref="HugePageChunkPages"/> zeroed pages (2 MiB) aligned to 2 MiB, advised for transparent
    /// huge pages where the kernel has them (<see cref="HugePageChunks"/>): for owners of many pages read in
    /// random order (a large VM's TDP tables), whose 4 KiB pages would each take a TLB entry. Counted in
    /// <see cref="PagesAllocated"/>; free it with <see cref="FreeHugePageChunk"/>. Not kept for reuse when
    /// freed (a campaign's small MMUs never ask for one), so it goes back to the OS.
    /// </summary>
    /// <exception cref="OutOfMemoryException">The OS refused the mapping.</exception>
    internal byte* AllocateHugePageChunk()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        byte* p = HugePageChunks.Allocate(out bool advised);
        Debug.Assert(((nuint)p & (HugePageChunks.ChunkBytes - 1)) == 0, "chunk is not aligned to 2 MiB");
#if DEBUG
        lock (_liveRuns)
            _liveRuns.Add((nuint)p, (HugePageChunkPages, RunKind.HugePageChunk));
#endif
        if (advised)
            Interlocked.Increment(ref _hugePageChunksAdvised);
        Interlocked.Increment(ref _hugePageChunksInUse);
        Interlocked.Add(ref _pagesAllocated, HugePageChunkPages);
        return p;
    }

    /// <summary>Returns a chunk from <see cref="AllocateHugePageChunk"/>. Allowed after <see cref="Dispose"/>.</summary>
    internal void FreeHugePageChunk(byte* p)
    {
        if (p == null)
            ThrowHelper.ArgumentNull(nameof(p));
        ForgetRun(p, HugePageChunkPages, RunKind.HugePageChunk);
        HugePageChunks.Free(p);
        Interlocked.Decrement(ref _hugePageChunksInUse);
        Interlocked.Add(ref _pagesFreed, HugePageChunkPages);
    }

    [Conditional("DEBUG")]
    private void ForgetRun(byte* p, long count, RunKind kind)
    {
#if DEBUG
        lock (_liveRuns)
        {
            if (!_liveRuns.TryGetValue((nuint)p, out var live))
                ThrowHelper.InvalidOperation("Double free, or a run this pool did not allocate.");
            if (live.Kind != kind)
                ThrowHelper.InvalidOperation($"Run was allocated as {Allocator(live.Kind)} but freed with {Freer(kind)}.");
            if (live.Count != count)
                ThrowHelper.InvalidOperation($"Run was allocated with {live.Count} pages but freed with {count}.");
            _liveRuns.Remove((nuint)p);
        }
#endif
    }

#if DEBUG
    private static string Allocator(RunKind kind) => kind switch
    {
        RunKind.Eager => "AllocatePages",
        RunKind.Lazy => "AllocateLazilyZeroedPages",
        _ => "AllocateHugePageChunk",
    };

    private static string Freer(RunKind kind) => kind switch
    {
        RunKind.Eager => "FreePages",
        RunKind.Lazy => "FreeLazilyZeroedPages",
        _ => "FreeHugePageChunk",
    };
#endif

    // The largest power-of-two page alignment of a run's base (at most 2^20 pages), so that a kept run serves
    // a later request for the same size with the same or a smaller alignment.
    private static int AlignmentPagesOf(byte* p) =>
        1 << Math.Min(20, BitOperations.TrailingZeroCount((ulong)p) - 12);

    /// <summary>
    /// One thread's freed runs. Eager runs are kept up to 16 MiB in all, zeroed again when reused; lazily
    /// zeroed runs (reservations, resident only where written, zeroed page by page when freed) up to four of
    /// each power-of-two size, so that the 1 GiB slots a TDP case draws do not crowd out the small ones.
    /// </summary>
    private sealed class RunCache
    {
        private const long EagerBytesLimit = 16L << 20;
        private const int LazyRunsPerSize = 4;

        private readonly List<(nuint Base, int Count, int AlignmentPages)> _eager = new();
        private readonly List<(nuint Base, long Reserved)> _lazy = new();
        private long _eagerBytes;

        public bool KeepEager(byte* p, int count, int alignmentPages)
        {
            long bytes = (long)count * PageSize;
            if (_eagerBytes + bytes > EagerBytesLimit)
                return false;
            _eager.Add(((nuint)p, count, alignmentPages));
            _eagerBytes += bytes;
            return true;
        }

        public byte* TakeEager(int count, int alignmentPages)
        {
            for (int i = _eager.Count - 1; i >= 0; i--)
            {
                var run = _eager[i];
                if (run.Count != count || run.AlignmentPages < alignmentPages)
                    continue;
                _eager.RemoveAt(i);
                _eagerBytes -= (long)count * PageSize;
                return (byte*)run.Base;
            }
            return null;
        }

        public bool CanKeepLazy(long reserved)
        {
            int kept = 0;
            foreach (var run in _lazy)
                if (run.Reserved == reserved) kept++;
            return kept < LazyRunsPerSize;
        }

        public void KeepLazy(byte* p, long reserved) => _lazy.Add(((nuint)p, reserved));

        public byte* TakeLazy(long reserved)
        {
            for (int i = _lazy.Count - 1; i >= 0; i--)
            {
                if (_lazy[i].Reserved != reserved)
                    continue;
                byte* p = (byte*)_lazy[i].Base;
                _lazy.RemoveAt(i);
                return p;
            }
            return null;
        }
    }

    /// <summary>Marks the pool disposed (no further allocations). Frees nothing: owners free their runs.</summary>
    public void Dispose() => _disposed = true;
}
