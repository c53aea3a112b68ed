using System.Diagnostics;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Tdp;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>Table pages: the vCPUs' caches, unlinked subtrees and their deferred freeing; and the state for tests.</summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
    private readonly record struct DeferredTable(ulong Address, int Level, long Tag);

    /// <summary>Tables linked in the trees (not counting pages in vCPU caches or waiting to be freed). Quiescent MMU only.</summary>
    public long TablePages
    {
        get
        {
            ThrowIfDisposed();
            _side.Enter();
            long inUse = _pages.TablesInUse - _deferredCount;
            _side.Exit();
            for (int i = 0; i < Volatile.Read(ref _vcpuCount); i++)
                inUse -= _vcpus[i]!.CachedPages;
            return inUse;
        }
    }

    /// <summary>Tables unlinked under the read side since creation (each waits for the epochs to drain).</summary>
    public long DeferredTablesRetired => Interlocked.Read(ref _deferredRetired);

    /// <summary>Of those, the ones freed (after every vCPU that might have walked them had left).</summary>
    public long DeferredTablesFreed => Interlocked.Read(ref _deferredFreed);

    /// <summary>Tables waiting for the epochs to drain now.</summary>
    public int DeferredTablesPending => Volatile.Read(ref _deferredCount);

    /// <summary>
    /// KVM's mmu_topup_memory_caches: before a fault takes mmu_lock, its vCPU's cache gets enough zeroed
    /// pages for the deepest fault (a root and a table per level below it), so the fault allocates nothing
    /// from shared state. The allocator is shared, so under the side lock.
    /// </summary>
    private void TopUp(ConcurrentTdpVcpu<TFormat, TSched> vcpu)
    {
        if (vcpu.CachedPages >= _rootLevel)
            return;
        _side.Enter();
        try
        {
            while (vcpu.CachedPages < _rootLevel)
                vcpu.AddToCache(_pages.Allocate(0, 1, mirror: false)); // header set when the page is used
        }
        finally
        {
            _side.Exit();
        }
    }

    /// <summary>Gives a vCPU's cached pages back to the allocator (the vCPU is done).</summary>
    internal void ReturnCache(ConcurrentTdpVcpu<TFormat, TSched> vcpu)
    {
        if (_disposed)
            return;
        _side.Enter();
        try
        {
            while (vcpu.CachedPages > 0)
            {
                TableRef page = vcpu.TakeForFree(out int level);
                _pages.Free(page, level);
            }
        }
        finally
        {
            _side.Exit();
        }
    }

    /// <summary>
    /// KVM's handle_removed_pt: <paramref name="table"/> (at <paramref name="level"/>) was unlinked by a
    /// frozen parent entry this fault owns. Every entry is frozen with an exchange, so a vCPU still walking
    /// it fails its compare-and-exchange and retries instead of changing a table that is going away; an
    /// entry another fault froze is waited for (that fault writes its final value next). Tables found below
    /// are handled the same way; each is freed once the epochs have drained past <paramref name="tag"/>.
    /// The leaves' flush is the caller's (one flush over everything the parent entry covered).
    /// </summary>
    private void HandleRemovedTable(TableRef table, int level, long tag)
    {
        AssertTable(table, level, TdpPageAllocator.HeaderOf(table).Mirror);
        for (int i = 0; i < EntriesPerTable; i++)
        {
            var entry = new PteRef(table, i, level, 0, 0);
            ulong old;
            SpinWait spin = default;
            while (true)
            {
                TSched.Yield(SchedulePointKind.SpteExchange);
                old = entry.Exchange(TFormat.FrozenEntry);
                if (old != TFormat.FrozenEntry)
                    break;
                MmuLock<TSched>.Spin(ref spin);
            }
            if (TFormat.IsPresent(old) && !TFormat.IsLeaf(old, level))
                HandleRemovedTable(TableRef.At(TFormat.TableAddress(old), level - 1), level - 1, tag);
        }
        Defer(table, level, tag);
    }

    private void Defer(TableRef table, int level, long tag)
    {
        _side.Enter();
        try
        {
            if (_deferredCount == _deferred.Length)
                Array.Resize(ref _deferred, _deferred.Length * 2); // grows only past the largest backlog so far
            _deferred[_deferredCount] = new DeferredTable(table.Address, level, tag);
            Volatile.Write(ref _deferredCount, _deferredCount + 1);
            _deferredRetired++;
        }
        finally
        {
            _side.Exit();
        }
    }

    /// <summary>
    /// Frees every deferred table whose tag the epochs have passed: no vCPU inside entered before its
    /// unlink. Tags need not be in order (vCPUs append concurrently), so the whole list is scanned.
    /// </summary>
    private void ReclaimDeferred()
    {
        if (Volatile.Read(ref _deferredCount) == 0)
            return;
        _side.Enter();
        try
        {
            long oldest = _epochs.OldestActive(Volatile.Read(ref _vcpuCount));
            int kept = 0;
            for (int i = 0; i < _deferredCount; i++)
            {
                DeferredTable d = _deferred[i];
                if (d.Tag <= oldest)
                {
                    TSched.Yield(SchedulePointKind.PageFree);
                    DebugAssertNoWalkerHolds(d.Address);
                    _pages.Free(TableRef.At(d.Address, d.Level), d.Level);
                    _deferredFreed++;
                }
                else
                {
                    _deferred[kept++] = d;
                }
            }
            Volatile.Write(ref _deferredCount, kept);
        }
        finally
        {
            _side.Exit();
        }
    }

    // ---- the abstract state, for tests (allocates; quiescent MMU) ----

    public IReadOnlyList<HostMemslotInfo> Slots => _slots.Infos();

    public byte MaxPageShift => (byte)PageShiftOf(_policyLevel);

    public IEnumerable<ulong> DirtyOffsets(int id) => _slots.DirtyOffsets(id);

    public TdpPageKey? DirectRoot => _directRoot == 0 ? null : TdpPageAllocator.HeaderOf(RootRef(_directRoot)).Key;

    public TdpPageKey? MirrorRoot => _mirrorRoot == 0 ? null : TdpPageAllocator.HeaderOf(RootRef(_mirrorRoot)).Key;

    /// <summary>Every table page, pre-order, direct tree first, as <see cref="TdpMmu{TFormat}.VisitPages"/> reports them.</summary>
    public void VisitPages(Action<TdpPageKey, IReadOnlyList<TdpEntryInfo>> visit)
    {
        ArgumentNullException.ThrowIfNull(visit);
        EnterWrite();
        try
        {
            if (_directRoot != 0)
                VisitTree(RootRef(_directRoot), visit);
            if (_mirrorRoot != 0)
                VisitTree(RootRef(_mirrorRoot), visit);
        }
        finally
        {
            ExitWrite();
        }
    }

    private void VisitTree(TableRef table, Action<TdpPageKey, IReadOnlyList<TdpEntryInfo>> visit)
    {
        TdpPageHeader header = TdpPageAllocator.HeaderOf(table);
        Debug.Assert(header.InUse, "a linked table page that is free");
        int level = header.Level;
        var entries = new List<TdpEntryInfo>();
        var children = new List<TableRef>();
        for (int i = 0; i < EntriesPerTable; i++)
        {
            ulong pte = table[i];
            Debug.Assert(pte != TFormat.FrozenEntry, "a frozen entry in a quiescent MMU");
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
            var linked = new TdpPageKey(header.EntryGfn(i, _sharedGfnMask), level - 1, header.Mirror);
            entries.Add(new TdpEntryInfo(i, IsLeaf: false, linked, 0, 0, 0, false, pte));
            children.Add(child);
        }
        visit(header.Key, entries);
        foreach (TableRef child in children)
            VisitTree(child, visit);
    }
}
