using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MmuSpec.Impl.Memory;

/// <summary>
/// Hands out zeroed, page-aligned runs of 4 KiB pages from native memory and counts them (and, for
/// large guest memory, lazily zeroed runs: <see cref="AllocateLazilyZeroedPages"/>).
/// Owners free their own runs; <see cref="Dispose"/> frees nothing (tests check
/// <see cref="PagesInUse"/> == 0 to find leaks). Thread-safe.
/// One of the two owners of raw pointers (with <see cref="GuestPhysicalMemory"/>): runs are handed out
/// and taken back only inside the impl (and to its own contract tests); the counters are public.
/// </summary>
public sealed unsafe class NativePagePool : IDisposable
{
    /// <summary>Bytes in one page (x86 4 KiB page).</summary>
    public const int PageSize = 4096;

    private long _pagesAllocated;
    private long _pagesFreed;
    private long _lazilyZeroedPagesInUse;
    private volatile bool _disposed;

#if DEBUG
    // Live runs (base -> page count, lazily zeroed or not): catches double frees, size mismatches
    // and frees through the wrong method in DEBUG builds.
    private readonly Dictionary<nuint, (long Count, bool Lazy)> _liveRuns = new();
#endif

    /// <summary>Pages handed out since creation.</summary>
    public long PagesAllocated => Interlocked.Read(ref _pagesAllocated);

    /// <summary>Pages returned since creation.</summary>
    public long PagesFreed => Interlocked.Read(ref _pagesFreed);

    /// <summary>Pages currently handed out.</summary>
    public long PagesInUse => PagesAllocated - PagesFreed;

    /// <summary>
    /// The part of <see cref="PagesInUse"/> handed out by <see cref="AllocateLazilyZeroedPages"/>: reserved,
    /// but resident only once written (e.g. guest memory), unlike the eagerly zeroed runs (e.g. table pages).
    /// </summary>
    public long LazilyZeroedPagesInUse => Interlocked.Read(ref _lazilyZeroedPagesInUse);

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
        byte* p = (byte*)NativeMemory.AlignedAlloc(bytes, alignment); // throws OutOfMemoryException on failure
        NativeMemory.Clear(p, bytes);
        Debug.Assert(p != null, "AlignedAlloc returned null");
        Debug.Assert(((nuint)p & (alignment - 1)) == 0, "run is not aligned as requested");

#if DEBUG
        lock (_liveRuns)
            _liveRuns.Add((nuint)p, (count, false));
#endif
        Interlocked.Add(ref _pagesAllocated, count);
        return p;
    }

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

        byte* p = (byte*)NativeMemory.AllocZeroed((nuint)count, PageSize); // throws OutOfMemoryException on failure
        Debug.Assert(((nuint)p & (sizeof(ulong) - 1)) == 0, "run is not 8-byte aligned");

#if DEBUG
        lock (_liveRuns)
            _liveRuns.Add((nuint)p, (count, true));
#endif
        Interlocked.Add(ref _lazilyZeroedPagesInUse, count);
        Interlocked.Add(ref _pagesAllocated, count);
        return p;
    }

    /// <summary>
    /// Returns a run obtained from <see cref="AllocateLazilyZeroedPages"/> with the same
    /// <paramref name="count"/>. Allowed after <see cref="Dispose"/>.
    /// </summary>
    internal void FreeLazilyZeroedPages(byte* p, long count)
    {
        if (p == null)
            ThrowHelper.ArgumentNull(nameof(p));
        if (count <= 0)
            ThrowHelper.ArgumentOutOfRange(nameof(count), "Page count must be positive.");
        ForgetRun(p, count, lazy: true);
        NativeMemory.Free(p);
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
        ForgetRun(p, count, lazy: false);
        NativeMemory.AlignedFree(p);
        Interlocked.Add(ref _pagesFreed, count);
    }

    [Conditional("DEBUG")]
    private void ForgetRun(byte* p, long count, bool lazy)
    {
#if DEBUG
        lock (_liveRuns)
        {
            if (!_liveRuns.TryGetValue((nuint)p, out var live))
                ThrowHelper.InvalidOperation("Double free, or a run this pool did not allocate.");
            if (live.Count != count)
                ThrowHelper.InvalidOperation($"Run was allocated with {live.Count} pages but freed with {count}.");
            if (live.Lazy != lazy)
                ThrowHelper.InvalidOperation(lazy
                    ? "Run was allocated with AllocatePages but freed with FreeLazilyZeroedPages."
                    : "Run was allocated with AllocateLazilyZeroedPages but freed with FreePages.");
            _liveRuns.Remove((nuint)p);
        }
#endif
    }

    /// <summary>Marks the pool disposed (no further allocations). Frees nothing: owners free their runs.</summary>
    public void Dispose() => _disposed = true;
}
