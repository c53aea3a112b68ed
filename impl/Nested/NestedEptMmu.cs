using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Nested;

/// <summary>
/// KVM's MMU for L2 when L1 runs it on EPT (docs/nested-ept.md, "The impl"): the shadow MMU's nested-EPT instance
/// (paging_tmpl.h as PTTYPE_EPT, mmu.c's kvm_init_shadow_ept_mmu, vmx/nested.c's EPTP and INVEPT handling), with
/// comments citing its rules. L1's memory is the host memslots' (<see cref="HostMemslot"/>, <see cref="HostMemory"/>,
/// shared with the other MMUs); L1's EPT walk reads it in place (NestedEptMmu.Walk.cs); shadow pages are native
/// tables (<see cref="NestedShadowPage"/>) found by (gfn, role) in a hash, L1's EPT tables they shadow are
/// write-tracked (an L1 store into one drops the shadow entries built from the entry it changed), and the cached
/// roots (current and three previous, KVM's root and prev_roots) are keyed by EPTP (NestedEptMmu.Roots.cs).
/// <para>
/// With unsync on (NestedEptMmu.Unsync.cs), a store into a table shadowed only by last-level pages unsyncs them
/// instead of zapping. Not modelled yet: write-flooding, MMIO caching, L2's own paging (accesses are by L2 gpa), and
/// write-protecting leaves that map L1's EPT tables (L2 accesses carry no data here, so that is unobservable).
/// </para>
/// Not thread-safe.
/// </summary>
internal sealed unsafe partial class NestedEptMmu : INestedEptVm
{
    private const ulong HostPfnLimit = 1UL << 40;
    private const int PageShift = 12;

    private readonly NativePagePool _pool;
    private readonly int _maxPhyAddr;
    private readonly bool _executeOnly;
    private readonly NestedRootPolicy _policy;
    private readonly bool _unsyncEnabled;
    private readonly ulong _gfnLimit;

    // L1 gpa bits N-1:12, the address field of an EPT entry and of the EPTP.
    private readonly ulong _addressMask;

    // A mutable struct: never readonly, never copied.
    private HostMemslotTable _slots = new();

    // KVM's mmu_page_hash: every live shadow page by (gfn, role).
    private readonly Dictionary<(ulong Gfn, uint Role), NestedShadowPage> _hash = new();

    // KVM's page tracking (KVM_PAGE_TRACK_WRITE): the indirect pages shadowing each of L1's EPT tables, by its gfn.
    private readonly Dictionary<ulong, List<NestedShadowPage>> _tracked = new();

    private long _pagesCreated;
    private bool _disposed;

    public NestedEptMmu(int maxPhyAddr, bool executeOnly, NativePagePool pool, NestedRootPolicy policy, bool unsync = false, bool gvaTlb = false)
    {
        ArgumentNullException.ThrowIfNull(pool);
        if (maxPhyAddr is < 36 or > 52)
            ThrowHelper.ArgumentOutOfRange(nameof(maxPhyAddr), "MAXPHYADDR must be 36..52.");
        if (policy is not (NestedRootPolicy.KeepAndResync or NestedRootPolicy.Upstream))
            ThrowHelper.ArgumentOutOfRange(nameof(policy), "Unknown root policy.");
        _pool = pool;
        _maxPhyAddr = maxPhyAddr;
        _executeOnly = executeOnly;
        _policy = policy;
        _unsyncEnabled = unsync;
        _gvaTlbEnabled = gvaTlb;
        _gfnLimit = 1UL << (maxPhyAddr - PageShift);
        _addressMask = ((1UL << maxPhyAddr) - 1) & ~0xFFFUL;
    }

    public int MaxPhyAddr => _maxPhyAddr;
    public bool ExecuteOnly => _executeOnly;
    public NestedRootPolicy RootPolicy => _policy;
    public bool Unsync => _unsyncEnabled;
    public string? LastRejection { get; private set; }

    public NestedRootCounters Counters => new(_rootsBuilt, _cachedRootHits, _rootsFreedByInvept, _rootsKeptAtInvept, _pagesCreated);

    // ---- memslots ----

    public SlotStatus CreateSlot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase)
    {
        ThrowIfDisposed();
        if (_slots.CreateProblem(id, pages) is string idProblem)
            return RejectSlot(idProblem);
        if (baseGfn >= _gfnLimit || pages > _gfnLimit - baseGfn)
            return RejectSlot($"range [0x{baseGfn:X}, +0x{pages:X}) is not below 2^{_maxPhyAddr - PageShift} frames");
        if (_slots.OverlapProblem(baseGfn, pages, self: null) is string overlap)
            return RejectSlot(overlap);
        if (hostPfnBase >= HostPfnLimit || pages > HostPfnLimit - hostPfnBase)
            return RejectSlot($"host frames [0x{hostPfnBase:X}, +0x{pages:X}) are not below 2^40");
        if (_slots.HostOverlapProblem(hostPfnBase, pages) is string hostProblem)
            return RejectSlot(hostProblem);
        // No MMIO entries are cached (a gpa outside the slots exits every time), so a new slot invalidates nothing.
        _slots.Add(new HostMemslot(id, baseGfn, pages, hostPfnBase, PageShift, readOnly: false, new HostMemory(_pool, pages)));
        SlotsChanged();
        return SlotStatus.Ok;
    }

    public SlotStatus DeleteSlot(int id)
    {
        ThrowIfDisposed();
        if (_slots[id] is not HostMemslot slot)
            return RejectSlot($"no slot {id}");
        // KVM's memslot quirk: every shadow page goes, shadowed EPT tables and leaves into the slot alike.
        ZapAll();
        FlushGvaEp4ta(null); // the zap's remote TLB flush
        _slots.Remove(slot);
        slot.Host.Free(); // the VMM unmapped it: a later slot on these host frames reads zero
        SlotsChanged();
        return SlotStatus.Ok;
    }

    // ---- L1's stores ----

    public NestedOutcome L1Store(ulong gpa, ulong value, int size)
    {
        ThrowIfDisposed();
        if (size is not (4 or 8) || (gpa & (ulong)(size - 1)) != 0)
            return Reject($"a {size}-byte store at 0x{gpa:X} is not an aligned 4- or 8-byte store");
        ulong gfn = gpa >> PageShift;
        if (gfn >= _gfnLimit || _slots.Find(gfn) is not HostMemslot slot)
            return new NestedOutcome(NestedOutcomeKind.MmioExit, gpa, gpa);
        slot.Host.Store(((gfn - slot.BaseGfn) << PageShift) | (gpa & 0xFFF), value, size);
        // A last-level table may be unsynced instead (mmu_try_to_unsync_pages, NestedEptMmu.Unsync.cs). Else
        // kvm_mmu_track_write (NestedEptMmu.Flood.cs): each shadow page of this table drops the entry built from the
        // one written, or is zapped when flooded; the next L2 access through it walks L1's EPT again.
        if (_tracked.TryGetValue(gfn, out var pages) && !(_unsyncEnabled && TryUnsync(pages)))
        {
            TrackWrite(pages, gpa);
            FlushGvaEp4ta(null); // kvm_mmu_track_write's remote TLB flush after the zap: every context
        }
        return NestedOutcome.Ok;
    }

    // ---- reading L1's memory ----

    /// <summary>The 8-byte word of L1's memory at <paramref name="gpa"/> (8-aligned), or false outside the slots.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryRead(ulong gpa, out ulong value, out HostMemslot? slot)
    {
        ulong gfn = gpa >> PageShift;
        slot = gfn < _gfnLimit ? _slots.Find(gfn) : null;
        if (slot is null)
        {
            value = 0;
            return false;
        }
        value = *(ulong*)(slot.Host.Base + (((gfn - slot.BaseGfn) << PageShift) | (gpa & 0xFF8)));
        return true;
    }

    /// <summary>ORs <paramref name="bits"/> into L1's entry at <paramref name="gpa"/> (the walker's A/D write-back; not an L1 store, so untracked).</summary>
    private void SetBits(ulong gpa, ulong bits)
    {
        if (!TryRead(gpa, out ulong old, out var slot) || (old & bits) == bits)
            return;
        slot!.Host.Store((((gpa >> PageShift) - slot.BaseGfn) << PageShift) | (gpa & 0xFF8), old | bits, sizeof(ulong));
    }

    // ---- the abstract state ----

    public IReadOnlyList<HostMemslotInfo> Slots() => _slots.Infos();

    public void VisitHostMemory(Action<ulong, ulong> visit) => _slots.VisitHostMemory(visit);

    public IReadOnlyList<NestedShadowPageInfo> ShadowPages() =>
        [.. _hash.Values.OrderBy(p => p.Role.Level).ThenBy(p => p.Gfn).ThenBy(p => p.Role.Bits)
            .Select(p => new NestedShadowPageInfo(p.Gfn, p.Role.Level, p.Role.Direct, p.Role.AccessedDirty, (byte)p.Role.Access, p.RootCount, p.PresentEntries()))];

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        ZapAll();
        _slots.FreeAll();
    }

    private NestedOutcome Reject(string reason)
    {
        LastRejection = reason;
        return NestedOutcome.Rejected;
    }

    private SlotStatus RejectSlot(string reason)
    {
        LastRejection = reason;
        return SlotStatus.Rejected;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
