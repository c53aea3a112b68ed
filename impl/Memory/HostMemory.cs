using System.Diagnostics;
using MmuSpec.Impl.Memory;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Memory;

/// <summary>
/// The host memory behind one memslot (docs/tdp-model.md, "Guest memory"): one contiguous run that reads
/// as zero until written, from <see cref="NativePagePool.AllocateLazilyZeroedPages"/>, so a 1 GiB slot
/// costs only the pages the guest touches. Remembers which pages were ever written, so the abstract
/// state's "every non-zero word" is found without scanning (and faulting in) the whole run.
/// </summary>
internal sealed unsafe class HostMemory
{
    /// <summary>No memory at all (the placeholder slot's).</summary>
    public static readonly HostMemory None = new();

    private readonly NativePagePool? _pool;
    private readonly ulong _pages;
    private readonly HashSet<ulong> _writtenPages = new();

    // _writtenPages ascending, rebuilt by Visit only after a store wrote a page for the first time.
    private ulong[] _sortedPages = [];
    private bool _sortedStale;
    private byte* _base;

    // The VM's log of host frames written since the harness last took it (HostMemslotTable.TrackHostWrites),
    // and this run's first host frame; null while nobody asked.
    private HashSet<ulong>? _writeLog;
    private ulong _logPfnBase;

    private HostMemory() { }

    /// <exception cref="OutOfMemoryException">The OS refused the reservation.</exception>
    public HostMemory(NativePagePool pool, ulong pages)
    {
        if (pages > long.MaxValue)
            throw new OutOfMemoryException($"{pages} pages of host memory cannot be reserved.");
        _pool = pool;
        _pages = pages;
        _base = pool.AllocateLazilyZeroedPages((long)pages);
    }

    /// <summary>Byte 0 of the run: the slot's first host frame.</summary>
    public byte* Base => _base;

    public ulong Bytes => _pages << PageShift;

    /// <summary>Stores the low <paramref name="size"/> (4 or 8) bytes of <paramref name="value"/> at byte <paramref name="offset"/>, aligned to the size.</summary>
    public void Store(ulong offset, ulong value, int size)
    {
        Debug.Assert(_base != null && offset < Bytes && (offset & (ulong)(size - 1)) == 0, "store outside the run or misaligned");
        if (_writtenPages.Add(offset >> PageShift))
            _sortedStale = true;
        _writeLog?.Add(_logPfnBase + (offset >> PageShift));
        if (size == sizeof(ulong))
            *(ulong*)(_base + offset) = value;
        else
            *(uint*)(_base + offset) = (uint)value;
    }

    /// <summary>Every non-zero 8-byte word, ascending, as (host-physical address, value).</summary>
    public void Visit(ulong baseHpa, Action<ulong, ulong> visit)
    {
        if (_sortedStale)
        {
            _sortedPages = [.. _writtenPages];
            Array.Sort(_sortedPages);
            _sortedStale = false;
        }
        foreach (ulong page in _sortedPages)
        {
            var words = new ReadOnlySpan<ulong>(_base + (page << PageShift), TableBytes / sizeof(ulong));
            // Written pages are mostly zero: skip runs of zero words 32 bytes at a time.
            for (int i = words.IndexOfAnyExcept(0UL); i >= 0;)
            {
                visit(baseHpa + (page << PageShift) + (ulong)(i * sizeof(ulong)), words[i]);
                int next = words[(i + 1)..].IndexOfAnyExcept(0UL);
                i = next < 0 ? -1 : i + 1 + next;
            }
        }
    }

    /// <summary>
    /// From now on, adds to <paramref name="log"/> the host frame (<paramref name="hostPfnBase"/> + page) of
    /// every store, and when the run is freed, of every page written (they read zero afterwards).
    /// </summary>
    public void LogWritesTo(HashSet<ulong> log, ulong hostPfnBase)
    {
        _writeLog = log;
        _logPfnBase = hostPfnBase;
    }

    /// <summary>Page <paramref name="page"/>'s words as <see cref="Visit"/> reports them: zero unless a store wrote the page.</summary>
    public void CopyPage(ulong page, ulong[] words)
    {
        Debug.Assert(words.Length == TableBytes / sizeof(ulong) && page < _pages, "a page of the run, into a page of words");
        if (_base == null || !_writtenPages.Contains(page))
            Array.Clear(words);
        else
            new ReadOnlySpan<ulong>(_base + (page << PageShift), words.Length).CopyTo(words);
    }

    /// <summary>Returns the run to the pool: the contents are gone (a later slot on these frames reads zero).</summary>
    public void Free()
    {
        if (_base == null || _pool is null)
            return;
        if (_writeLog is not null)
        {
            foreach (ulong page in _writtenPages)
                _writeLog.Add(_logPfnBase + page);
            _writeLog = null;
        }
        // Every write went through Store, so the pool can zero just those pages and reuse the run.
        _pool.FreeLazilyZeroedPages(_base, (long)_pages, _writtenPages);
        _base = null;
        _writtenPages.Clear();
        _sortedPages = [];
        _sortedStale = false;
    }
}
