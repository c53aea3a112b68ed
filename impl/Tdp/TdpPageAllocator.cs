using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// Table pages and their headers, from slabs of <see cref="SlabPages"/> pages taken from the
/// <see cref="NativePagePool"/>.
/// <para>
/// Finding a header from a table: a slab is aligned to its own size (256 KiB), and its page 0 holds
/// the headers of its pages, header i for page i. So a table's header is at
/// <c>(address &amp; ~(SlabBytes - 1)) + 8 * ((address &amp; (SlabBytes - 1)) &gt;&gt; 12)</c>: one AND, one shift,
/// no search and no side table (the vmemmap idea: struct page found from the address). Header 0
/// would describe the header page itself and stays unused. Cost: one page in 64 (1.6%).
/// </para>
/// <para>
/// No allocation at steady state: freed tables are cleared and pushed on a free list threaded through
/// their first entry; the pool (NativeMemory) is called only when the list is empty, once per
/// <see cref="TablesPerSlab"/> tables. Slabs stay with the MMU until <see cref="ReleaseAll"/> (the VM's
/// Dispose) returns them all, so a VM that zaps and refaults never goes back to NativeMemory.
/// </para>
/// <para>
/// Large VMs: past <see cref="SlabsBeforeHugePageChunks"/> slabs, slabs are carved in address order from 2 MiB
/// chunks advised for transparent huge pages (<see cref="NativePagePool.AllocateHugePageChunk"/>), 8 slabs a
/// chunk, so a chunk's 504 tables share one TLB entry where THP is on (a 16 GiB VM's 32 MiB of tables: 8,210
/// 4 KiB TLB entries, or the 16 ordinary slabs' 1,024 and 15 huge ones). A carved slab is aligned to its
/// size like any other, so headers are found the same way. The first slabs stay ordinary pool runs: a
/// campaign's small MMUs never map a 2 MiB chunk, and the pool reuses their runs case after case.
/// Measured (docs/performance.md, "Issue 19, session 13"): a cold populate of 16 GiB 1.3-4.8x faster per
/// fault (one kernel page fault per chunk instead of per table); warm faults and hits unchanged on the
/// machine measured.
/// </para>
/// </summary>
internal sealed unsafe class TdpPageAllocator
{
    public const int SlabPages = 64;
    public const int TablesPerSlab = SlabPages - 1;
    private const nuint SlabBytes = (nuint)SlabPages * TableGeometry.TableBytes;
    private const nuint SlabOffsetMask = SlabBytes - 1;

    /// <summary>
    /// Slabs taken as ordinary pool runs before the rest come from 2 MiB chunks: 1,008 tables, about 2 GiB of
    /// 4 KiB mappings, whose 4 MiB of tables the TLB still reaches. Smaller VMs keep their footprint (a 1 GiB
    /// populate's 9 slabs would otherwise take a whole chunk for its last 11 tables).
    /// </summary>
    public const int SlabsBeforeHugePageChunks = 16;

    private const int SlabsPerChunk = NativePagePool.HugePageChunkPages / SlabPages;

    private readonly NativePagePool _pool;

    // Entry bits that can hold a table address in this VM's format: every table must fit.
    private readonly ulong _addressMask;

    // Every slab base, for ReleaseAll. Grows only when a slab is added (not on the fault path).
    private readonly List<nint> _slabs = new();

    // Every chunk base, for ReleaseAll, and the part of the newest chunk not yet carved into slabs.
    private readonly List<nint> _chunks = new();
    private byte* _chunkRest;
    private int _chunkSlabsLeft;

    // Free tables, linked through entry 0 (null-terminated); every other entry is zero (in DEBUG, FreedEntryPoison).
    private ulong* _freeHead;

    private long _tablesInUse;

    public TdpPageAllocator(NativePagePool pool, ulong addressMask)
    {
        _pool = pool;
        _addressMask = addressMask;
    }

    public long TablesInUse => _tablesInUse;

    public int Slabs => _slabs.Count;

    /// <summary>A zeroed table, its header set to (gfn, level, mirror).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TableRef Allocate(ulong gfn, int level, bool mirror)
    {
        ulong* table = _freeHead;
        if (table == null)
            table = AddSlab();
        _freeHead = (ulong*)table[0];
        table[0] = 0;
        Unpoison(table);
        HeaderOf(table) = new TdpPageHeader(gfn, level, mirror);
        _tablesInUse++;
        return TableRef.FromPage(table, level);
    }

    /// <summary>Clears the table (used at <paramref name="level"/>) and puts it on the free list.</summary>
    public void Free(TableRef table, int level)
    {
        ulong* page = table.Page;
        AssertOwned(table);
        Debug.Assert(HeaderOf(page).InUse, "double free of a table page");
        Debug.Assert(HeaderOf(page).Level == level, "freeing a table as another level than its header's");
        table.Clear();
        Poison(page);
        HeaderOf(page) = default;
        page[0] = (ulong)_freeHead;
        _freeHead = page;
        _tablesInUse--;
    }

    /// <summary>
    /// DEBUG: what a freed table's entries 1..511 hold until it is allocated again (entry 0 is the free-list
    /// link). A present leaf at every level in both formats (bit 0: EPT read, stage-2 valid; bit 7: EPT
    /// huge page; bit 1 clear: stage-2 block), of a 1 GiB-aligned frame no memslot backs: a walk that reads
    /// a table after it was freed (a concurrent walker the epochs should have waited for) answers a mapping
    /// of 0xbadc0000000, which no spec state explains, instead of reading a hole that hides the use after free.
    /// </summary>
    public const ulong FreedEntryPoison = 0xBAD_C000_0000UL | 0x81;

    [Conditional("DEBUG")]
    private static void Poison(ulong* page)
    {
        for (int i = 1; i < TableGeometry.EntriesPerTable; i++)
            page[i] = FreedEntryPoison;
    }

    [Conditional("DEBUG")]
    private static void Unpoison(ulong* page)
    {
        for (int i = 1; i < TableGeometry.EntriesPerTable; i++)
            page[i] = 0;
    }

    /// <summary>DEBUG: <paramref name="table"/> lies in one of this allocator's slabs (a search: cold paths only).</summary>
    [Conditional("DEBUG")]
    public void AssertOwned(TableRef table)
    {
        nint slab = (nint)((nuint)table.Page & ~SlabOffsetMask);
        Debug.Assert(_slabs.Contains(slab), "a table page outside this allocator's slabs");
    }

    /// <summary>The header of <paramref name="table"/> (see the class comment).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref TdpPageHeader HeaderOf(TableRef table) => ref HeaderOf(table.Page);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ref TdpPageHeader HeaderOf(ulong* table)
    {
        nuint address = (nuint)table;
        nuint slab = address & ~SlabOffsetMask;
        nuint page = (address & SlabOffsetMask) >> TableGeometry.PageShift;
        Debug.Assert((address & (TableGeometry.TableBytes - 1)) == 0 && page != 0, "not a table page of a slab");
        return ref ((TdpPageHeader*)slab)[page];
    }

    /// <summary>Returns every slab to the pool. Tables and headers become invalid.</summary>
    public void ReleaseAll()
    {
        for (int i = 0; i < Math.Min(_slabs.Count, SlabsBeforeHugePageChunks); i++)
            _pool.FreePages((byte*)_slabs[i], SlabPages);
        foreach (nint chunk in _chunks)
            _pool.FreeHugePageChunk((byte*)chunk);
        _slabs.Clear();
        _chunks.Clear();
        _chunkRest = null;
        _chunkSlabsLeft = 0;
        _freeHead = null;
        _tablesInUse = 0;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong* AddSlab()
    {
        byte* slab;
        if (_slabs.Count < SlabsBeforeHugePageChunks)
        {
            slab = _pool.AllocatePages(SlabPages, alignmentPages: SlabPages);
            if (!Addressable(slab, SlabBytes))
            {
                _pool.FreePages(slab, SlabPages);
                ThrowUnaddressable();
            }
        }
        else
        {
            if (_chunkSlabsLeft == 0)
            {
                byte* chunk = _pool.AllocateHugePageChunk();
                if (!Addressable(chunk, (nuint)SlabsPerChunk * SlabBytes))
                {
                    _pool.FreeHugePageChunk(chunk);
                    ThrowUnaddressable();
                }
                _chunks.Add((nint)chunk);
                _chunkRest = chunk;
                _chunkSlabsLeft = SlabsPerChunk;
            }
            slab = _chunkRest; // a chunk is aligned to 2 MiB, so each of its slabs to 256 KiB
            _chunkRest += SlabBytes;
            _chunkSlabsLeft--;
        }
        Debug.Assert(((nuint)slab & SlabOffsetMask) == 0, "a slab not aligned to its size: headers would be found in the wrong page");
        _slabs.Add((nint)slab);
        // Thread pages 1..63 on the free list, lowest first (the pool returned them zeroed; fresh chunks read as zero).
        for (int page = SlabPages - 1; page >= 1; page--)
        {
            ulong* table = (ulong*)(slab + (nuint)page * TableGeometry.TableBytes);
            table[0] = (ulong)_freeHead;
            _freeHead = table;
        }
        return _freeHead;
    }

    // Every table address must fit the entry format's address bits (the run's first and last byte).
    private bool Addressable(byte* run, nuint bytes) =>
        ((ulong)run & ~_addressMask) == 0 && (((ulong)run + bytes - 1) & ~(_addressMask | 0xFFF)) == 0;

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void ThrowUnaddressable() =>
        ThrowHelper.InvalidOperation("Host memory for table pages lies above what this entry format can address.");
}
