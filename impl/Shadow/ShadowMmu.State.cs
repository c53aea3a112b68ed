using System.Numerics;
using System.Runtime.InteropServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// The abstract state for tests and tools (docs/shadow-model.md, "What the tests compare"). Allocates.
/// Parent lists, reverse maps and unsync-children bitmaps are read from the structures the MMU keeps, never
/// recomputed from the entries, so the tests' scan of the entries checks them. The counters the MMU keeps
/// beside them (non-empty rmap heads per slot, unsync children per page, pages in the hash) are checked here
/// against those structures: a mismatch throws, which the tests report.
/// </summary>
internal sealed partial class ShadowMmu
{
    public IReadOnlyList<HostMemslotInfo> Slots => _slots.Infos();

    public IEnumerable<ulong> DirtyOffsets(int id) => _slots.DirtyOffsets(id);

    public PagingControls? GuestControls => _guest?.Controls;

    public ulong GuestCr3 => _guest?.Cr3 ?? 0;

    public ulong GuestPdpte(int i)
    {
        if ((uint)i >= PdpteRegisters.Count)
            ThrowHelper.ArgumentOutOfRange(nameof(i), "PDPTE register index must be 0..3.");
        GuestVcpu? guest = _guest;
        return guest is not null && guest.Controls.Mode == PagingMode.Pae ? guest.Pdpte(i) : 0;
    }

    public void VisitHostMemory(Action<ulong, ulong> visit)
    {
        ArgumentNullException.ThrowIfNull(visit);
        ThrowIfDisposed();
        _slots.VisitHostMemory(visit);
    }

    public void VisitPages(Action<ShadowPageInfo, IReadOnlyList<ShadowEntryInfo>> visit)
    {
        ArgumentNullException.ThrowIfNull(visit);
        ThrowIfDisposed();
        foreach (ShadowPage page in _pages.PagesInUseList())
        {
            if (!page.Live)
                continue;
            if (_hash.Find(page.Gfn, page.Role) != page)
                throw new InvalidOperationException($"live page {page.Key} is not found by its key in the page hash");
            // Most pages have no unsync children: they share one empty list (the visitor may keep the info).
            List<int>? unsyncChildren = null;
            int writeFlooding = 0;
            if (!page.Direct)
            {
                for (int w = 0; w < UnsyncChildBits.Words; w++)
                {
                    for (ulong bits = page.Extra.UnsyncChildren[w]; bits != 0; bits &= bits - 1)
                        (unsyncChildren ??= new List<int>()).Add(w * 64 + BitOperations.TrailingZeroCount(bits));
                }
                writeFlooding = page.Extra.WriteFlooding;
                int counted = unsyncChildren?.Count ?? 0;
                if (page.Extra.UnsyncChildCount != counted)
                    throw new InvalidOperationException($"page {page.Key}: unsync-children count {page.Extra.UnsyncChildCount}, bitmap has {counted} bits");
            }
            var entries = new List<ShadowEntryInfo>();
            // A zero spte is not present (neither a table nor a leaf): skip runs of them 32 bytes at a time.
            ReadOnlySpan<ulong> sptes = MemoryMarshal.CreateReadOnlySpan(ref page.Spte(0), ShadowPage.Entries);
            for (int i = sptes.IndexOfAnyExcept(0UL); i >= 0; i = NextNonZero(sptes, i))
            {
                ulong spte = sptes[i];
                if (ShadowSpte.IsTable(spte))
                {
                    entries.Add(new ShadowEntryInfo(i, IsLeaf: false, ShadowSpte.Child(spte).Key, 0, 0, false, false, false, 0, false));
                }
                else if (ShadowSpte.IsLeaf(spte))
                {
                    uint rights = ShadowSpte.Rights(spte);
                    entries.Add(new ShadowEntryInfo(i, IsLeaf: true, default, EntryGfn(page, i), ShadowSpte.HostPfn(spte),
                        User: (rights & ShadowRole.AccUser) != 0, Writable: (rights & ShadowRole.AccWrite) != 0,
                        NoExecute: (rights & ShadowRole.AccExec) == 0, ProtectionKey: (int)ShadowSpte.Key(spte),
                        SpteWritable: ShadowSpte.IsWritable(spte)));
                }
            }
            visit(new ShadowPageInfo(page.Key, page.Unsync, writeFlooding, (IReadOnlyList<int>?)unsyncChildren ?? []), entries);
        }
    }

    public void VisitReverseMap(Action<ulong, IReadOnlyList<ShadowEntryRef>> visit)
    {
        ArgumentNullException.ThrowIfNull(visit);
        ThrowIfDisposed();
        for (int id = 0; id < HostMemslotTable.MaxSlots; id++)
        {
            if (_slots[id] is not HostMemslot slot)
                continue;
            SlotRmap rmap = _rmapsById[slot.Id]!;
            long nonEmpty = 0;
            for (ulong offset = 0; offset < slot.Pages; offset++)
            {
                ulong head = rmap.Head(offset);
                if (head == 0)
                    continue;
                nonEmpty++;
                visit(slot.BaseGfn + offset, Refs(head));
            }
            if (nonEmpty != rmap.NonEmpty)
                throw new InvalidOperationException($"slot {slot.Id}: the rmap counts {rmap.NonEmpty} non-empty heads, {nonEmpty} found");
        }
    }

    public void VisitParents(Action<ShadowPageKey, IReadOnlyList<ShadowEntryRef>> visit)
    {
        ArgumentNullException.ThrowIfNull(visit);
        ThrowIfDisposed();
        foreach (ShadowPage page in _pages.PagesInUseList())
        {
            if (page.Live && page.Header.Parents != 0)
                visit(page.Key, Refs(page.Header.Parents));
        }
    }

    /// <summary>The index of the next non-zero spte after <paramref name="i"/>, or -1.</summary>
    private static int NextNonZero(ReadOnlySpan<ulong> sptes, int i)
    {
        int next = sptes[(i + 1)..].IndexOfAnyExcept(0UL);
        return next < 0 ? -1 : i + 1 + next;
    }

    private static List<ShadowEntryRef> Refs(ulong head)
    {
        var refs = new List<ShadowEntryRef>();
        foreach (SpteRef r in PteListPool.Enumerate(head))
            refs.Add(new ShadowEntryRef(r.Page.Key, r.Index));
        return refs;
    }
}
