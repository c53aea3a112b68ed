using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// Shadow pages and their bookkeeping, from slabs of <see cref="SlabPages"/> pool pages aligned to their
/// own size (256 KiB). Page 0 of a slab holds the headers: header i (24 bytes) for slab page i, so a page's
/// header is found from its spte address with one AND and one shift (the TDP allocator's trick, KVM's
/// vmemmap idea), with no pointer stored anywhere. Two slab kinds:
/// <list type="bullet">
/// <item><b>Direct slabs</b>: pages 1..63 are spte pages. A direct page costs its 24-byte header (plus 1/63 of
/// the header page).</item>
/// <item><b>Indirect slabs</b>: 31 page pairs at (1,2), (3,4), ..., (61,62): the spte page, then its per-entry
/// translations page (512 x 8 bytes, KVM's shadowed_translation), so the translation of entry i is the
/// spte address plus 4 KiB. The header page also holds the 31 <see cref="IndirectExtra"/> blocks after the
/// 64 headers (1536 + 31 x 72 = 3768 bytes). Page 63 stays unused (an odd page out).</item>
/// </list>
/// Freed pages are cleared and kept on a free list per kind (threaded through entry 0), so steady-state
/// faults never call the pool; slabs are returned only by <see cref="ReleaseAll"/>.
/// </summary>
internal sealed unsafe class ShadowPageAllocator
{
    public const int PageBytes = 4096;
    public const int PageShift = 12;
    public const int SlabPages = 64;
    private const nuint SlabBytes = (nuint)SlabPages * PageBytes;
    private const nuint SlabOffsetMask = SlabBytes - 1;
    private const int ExtrasOffset = SlabPages * ShadowPageHeader.Bytes;
    private const int IndirectPairsPerSlab = (SlabPages - 2) / 2;

    private readonly NativePagePool _pool;
    private readonly List<(nint Base, bool Indirect)> _slabs = new();
    private ulong* _freeDirect;
    private ulong* _freeIndirect;
    private long _inUse;

    public ShadowPageAllocator(NativePagePool pool)
    {
        Debug.Assert(sizeof(ShadowPageHeader) == ShadowPageHeader.Bytes, "header layout changed");
        Debug.Assert(sizeof(IndirectExtra) == IndirectExtra.Bytes, "indirect data layout changed");
        Debug.Assert(ExtrasOffset + IndirectPairsPerSlab * IndirectExtra.Bytes <= PageBytes, "header page overflows");
        _pool = pool;
    }

    public long PagesInUse => _inUse;

    /// <summary>An empty page (zeroed entries, translations and indirect data); its header is not yet set.</summary>
    public ShadowPage Allocate(bool direct)
    {
        ref ulong* head = ref direct ? ref _freeDirect : ref _freeIndirect;
        if (head == null)
            AddSlab(indirect: !direct);
        ulong* page = head;
        head = (ulong*)page[0];
        page[0] = 0;
        _inUse++;
        Debug.Assert(!HeaderOf(page).InUse, "allocated a page in use");
        return new ShadowPage(page);
    }

    /// <summary>Clears the page and its bookkeeping and puts it on its kind's free list.</summary>
    public void Free(ShadowPage page)
    {
        ulong* p = (ulong*)page.Address;
        ref ShadowPageHeader header = ref HeaderOf(p);
        Debug.Assert(header.InUse, "double free of a shadow page");
        bool direct = header.Role.Direct;
        NativeMemory.Clear(p, PageBytes);
        if (!direct)
        {
            NativeMemory.Clear(TranslationsOf(p), PageBytes);
            ExtraOf(p) = default;
        }
        header = default;
        ref ulong* head = ref direct ? ref _freeDirect : ref _freeIndirect;
        p[0] = (ulong)head;
        head = p;
        _inUse--;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref ShadowPageHeader HeaderOf(ulong* sptes)
    {
        nuint address = (nuint)sptes;
        nuint page = (address & SlabOffsetMask) >> PageShift;
        Debug.Assert((address & (PageBytes - 1)) == 0 && page != 0, "not a shadow page of a slab");
        return ref ((ShadowPageHeader*)(address & ~SlabOffsetMask))[page];
    }

    /// <summary>An indirect page's translations: the page right after its spte page.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* TranslationsOf(ulong* sptes)
    {
        Debug.Assert((((nuint)sptes & SlabOffsetMask) >> PageShift & 1) == 1, "indirect spte pages sit at odd slab pages");
        return sptes + PageBytes / sizeof(ulong);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref IndirectExtra ExtraOf(ulong* sptes)
    {
        nuint address = (nuint)sptes;
        nuint page = (address & SlabOffsetMask) >> PageShift;
        Debug.Assert((page & 1) == 1 && page < SlabPages - 1, "indirect spte pages sit at odd slab pages below 63");
        byte* slab = (byte*)(address & ~SlabOffsetMask);
        return ref *(IndirectExtra*)(slab + ExtrasOffset + (int)(page >> 1) * IndirectExtra.Bytes);
    }

    /// <summary>Every page in use (zapped ones awaiting their free included). Cold paths only: allocates.</summary>
    public List<ShadowPage> PagesInUseList()
    {
        var pages = new List<ShadowPage>();
        foreach ((nint slabBase, bool indirect) in _slabs)
        {
            byte* slab = (byte*)slabBase;
            int step = indirect ? 2 : 1;
            int end = indirect ? SlabPages - 1 : SlabPages;
            for (int page = 1; page < end; page += step)
            {
                ulong* sptes = (ulong*)(slab + (nuint)page * PageBytes);
                if (HeaderOf(sptes).InUse)
                    pages.Add(new ShadowPage(sptes));
            }
        }
        return pages;
    }

    /// <summary>Returns every slab to the pool; pages become invalid.</summary>
    public void ReleaseAll()
    {
        foreach ((nint slab, _) in _slabs)
            _pool.FreePages((byte*)slab, SlabPages);
        _slabs.Clear();
        _freeDirect = null;
        _freeIndirect = null;
        _inUse = 0;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddSlab(bool indirect)
    {
        byte* slab = _pool.AllocatePages(SlabPages, alignmentPages: SlabPages); // zeroed
        _slabs.Add(((nint)slab, indirect));
        ref ulong* head = ref indirect ? ref _freeIndirect : ref _freeDirect;
        int step = indirect ? 2 : 1;
        int last = indirect ? SlabPages - 3 : SlabPages - 1; // indirect: the last pair is (61, 62)
        for (int page = last; page >= 1; page -= step)
        {
            ulong* sptes = (ulong*)(slab + (nuint)page * PageBytes);
            sptes[0] = (ulong)head;
            head = sptes;
        }
    }
}
