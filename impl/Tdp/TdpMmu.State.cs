using System.Diagnostics;
using System.Runtime.InteropServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Tdp;

/// <summary>The abstract state, for tests and tools (docs/tdp-model.md, "What the tests compare"). Allocates.</summary>
public sealed partial class TdpMmu<TFormat>
{
    public IReadOnlyList<HostMemslotInfo> Slots => _slots.Infos();

    public byte MaxPageShift => (byte)PageShiftOf(_policyLevel);

    public IEnumerable<ulong> DirtyOffsets(int id) => _slots.DirtyOffsets(id);

    public TdpPageKey? DirectRoot => _directRoot.IsNull ? null : TdpPageAllocator.HeaderOf(_directRoot).Key;

    public TdpPageKey? MirrorRoot => _mirrorRoot.IsNull ? null : TdpPageAllocator.HeaderOf(_mirrorRoot).Key;

    /// <summary>
    /// Every table page, pre-order, direct tree first. Keys come from the page headers and leaf gfns
    /// from the direct-page formula (<see cref="TdpPageHeader.EntryGfn"/>), never from the walk, so a
    /// comparison with the spec checks both.
    /// </summary>
    public void VisitPages(Action<TdpPageKey, IReadOnlyList<TdpEntryInfo>> visit)
    {
        ArgumentNullException.ThrowIfNull(visit);
        ThrowIfDisposed();
        AssertRoot(_directRoot);
        AssertRoot(_mirrorRoot);
        if (!_directRoot.IsNull)
            VisitTree(_directRoot, visit);
        if (!_mirrorRoot.IsNull)
            VisitTree(_mirrorRoot, visit);
    }

    // One entry list and one child list per level, reused by every visit: a visitor owns the list only
    // during its call (ITdpVm.VisitPages), and a level's lists are done with before a sibling reuses them.
    private readonly List<TdpEntryInfo>[] _visitEntries = NewLists<TdpEntryInfo>();
    private readonly List<TableRef>[] _visitChildren = NewLists<TableRef>();

    private static List<T>[] NewLists<T>()
    {
        var lists = new List<T>[MaxLevel + 1];
        for (int i = 0; i < lists.Length; i++)
            lists[i] = new List<T>();
        return lists;
    }

    private void VisitTree(TableRef table, Action<TdpPageKey, IReadOnlyList<TdpEntryInfo>> visit)
    {
        TdpPageHeader header = TdpPageAllocator.HeaderOf(table);
        Debug.Assert(header.InUse, "a linked table page that is free");
        _pages.AssertOwned(table);
        int level = header.Level;
        List<TdpEntryInfo> entries = _visitEntries[level];
        List<TableRef> children = _visitChildren[level];
        entries.Clear();
        children.Clear();
        ReadOnlySpan<ulong> ptes = MemoryMarshal.CreateReadOnlySpan(ref table[0], EntriesPerTable);
        // A zero entry is not present in either format: skip runs of them vectorized.
        for (int i = ptes.IndexOfAnyExcept(0UL); i >= 0; i = NextNonZero(ptes, i))
        {
            ulong pte = ptes[i];
            if (!TFormat.IsPresent(pte))
                continue;
            if (TFormat.IsLeaf(pte, level))
            {
                entries.Add(new TdpEntryInfo(i, IsLeaf: true, Child: default, header.EntryGfn(i, _sharedGfnMask), level,
                    TFormat.LeafPfn(pte), TFormat.IsWritable(pte), pte) { Accessed = LeafAccessed(pte), Dirty = LeafDirty(pte) });
                continue;
            }
            var child = TableRef.At(TFormat.TableAddress(pte), level - 1);
            AssertTable(child, level - 1, header.Mirror);
            // The link is reported as the parent's direct-page formula computes it (gfns computed, Lai Jiangshan, 2010;
            // shared bit stripped, Rick Edgecombe, 2024),
            // while the child reports its own header: if the formula lost the shared-bit strip, the
            // link and the child's key disagree and the differential comparison shows it.
            var linked = new TdpPageKey(header.EntryGfn(i, _sharedGfnMask), level - 1, header.Mirror);
            entries.Add(new TdpEntryInfo(i, IsLeaf: false, linked, 0, 0, 0, false, pte));
            children.Add(child);
        }
        visit(header.Key, entries);
        // By index: a child's visit reuses the lists of lower levels only.
        for (int c = 0; c < children.Count; c++)
            VisitTree(children[c], visit);
    }

    /// <summary>The index of the next non-zero entry after <paramref name="i"/>, or -1.</summary>
    private static int NextNonZero(ReadOnlySpan<ulong> ptes, int i)
    {
        int next = ptes[(i + 1)..].IndexOfAnyExcept(0UL);
        return next < 0 ? -1 : i + 1 + next;
    }
}
