using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// KVM's shadow MMU (mmu.c, paging_tmpl.h, page_track.c) as docs/shadow-model.md states it; comments cite
/// its rules. Shadow pages live in native slabs (<see cref="ShadowPageAllocator"/>), found by key through
/// <see cref="ShadowPageHash"/>; leaves are reverse-mapped per slot (<see cref="SlotRmap"/>), pages know
/// their parents (<see cref="PteListPool"/>), and indirect pages keep an exact unsync-children bitmap, so
/// no rule scans all pages except the "every page" ones (zap all, the test read-back). The cached roots (current
/// and three previous, KVM's root and prev_roots) are 16-byte entries in the object (ShadowMmu.Roots.cs).
/// <para>
/// Memslots, their host memory and dirty bitmaps are shared with the TDP MMU (<see cref="HostMemslot"/>,
/// <see cref="HostMemory"/>, <see cref="DirtyBitmap"/> in impl/Memory); the guest's paging is <see cref="GuestVcpu"/>
/// over a <see cref="GuestPhysicalMemory"/> view of the slots, as in the TDP MMU.
/// </para>
/// <para>
/// Zapped pages are unlinked at once (out of the hash, their entries and the entries linking them removed)
/// but freed only at the end of the operation (KVM's invalid_list / commit_zap_page), so a rule iterating
/// pages never touches freed memory: it sees the page as not live. (Zap all frees at once: it runs only
/// where no iteration is in progress.)
/// </para>
/// Not thread-safe.
/// </summary>
internal sealed partial class ShadowMmu : IShadowVm
{
    private const ulong HostPfnLimit = 1UL << 40;
    private const int PageShift = 12;
    private const ulong PageOffsetMask = (1UL << PageShift) - 1;

    private readonly NativePagePool _pool;
    private readonly ShadowPageAllocator _pages;
    private readonly PteListPool _lists;
    private readonly ShadowPageHash _hash = new();
    private readonly GuestPhysicalMemory _guestMemory;
    private readonly int _maxPhyAddr;
    private readonly bool _allowUnsync;

    // Frames below 2^(M-12): slots and zap ranges stay below.
    private readonly ulong _gfnLimit;

    // A mutable struct: never readonly, never copied (faults read its last-slot cache in place).
    private HostMemslotTable _slots = new();
    private readonly SlotRmap?[] _rmapsById = new SlotRmap?[HostMemslotTable.MaxSlots];

    private GuestVcpu? _guest;
    private bool _disposed;

    public ShadowMmu(int maxPhyAddr, bool allowUnsync, NativePagePool pool, ShadowRootPolicy rootPolicy = ShadowRootPolicy.KeepAndResync, bool prefetch = false)
    {
        ArgumentNullException.ThrowIfNull(pool);
        if (maxPhyAddr is < WalkContext.MinMaxPhyAddr or > WalkContext.MaxMaxPhyAddr)
            ThrowHelper.ArgumentOutOfRange(nameof(maxPhyAddr), "MAXPHYADDR must be 36..52.");
        if (rootPolicy is not (ShadowRootPolicy.KeepAndResync or ShadowRootPolicy.Upstream))
            ThrowHelper.ArgumentOutOfRange(nameof(rootPolicy), "Unknown root policy.");
        _pool = pool;
        _rootPolicy = rootPolicy;
        _maxPhyAddr = maxPhyAddr;
        _allowUnsync = allowUnsync;
        _prefetch = prefetch;
        _gfnLimit = 1UL << (maxPhyAddr - PageShift);
        _pages = new ShadowPageAllocator(pool);
        _lists = new PteListPool(pool);
        _guestMemory = new GuestPhysicalMemory(pool);
        _blocks = PaeRootPage.Allocate(pool); // last: nothing above holds native memory yet
    }

    public int MaxPhyAddr => _maxPhyAddr;

    public bool AllowUnsync => _allowUnsync;

    public string? LastRejection { get; private set; }

    // ---- host-side operations ----

    public SlotStatus CreateSlot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase, bool readOnly)
    {
        ThrowIfDisposed();
        if (_slots.CreateProblem(id, pages) is string idProblem)
            return RejectSlot(idProblem);
        if (RangeProblem(baseGfn, pages, self: null) is string problem)
            return RejectSlot(problem);
        if (hostPfnBase >= HostPfnLimit || pages > HostPfnLimit - hostPfnBase)
            return RejectSlot($"host frames [0x{hostPfnBase:X}, +0x{pages:X}) are not below 2^40");
        if (_slots.HostOverlapProblem(hostPfnBase, pages) is string hostProblem)
            return RejectSlot(hostProblem);

        var host = new HostMemory(_pool, pages); // reads as zero; the OS supplies pages when written
        SlotRmap rmap;
        try
        {
            rmap = new SlotRmap(_pool, pages);
        }
        catch
        {
            host.Free();
            throw;
        }
        var slot = new HostMemslot(id, baseGfn, pages, hostPfnBase, PageShift, readOnly, host); // no host page size: every leaf is 4 KiB
        AddGuestWindow(baseGfn, pages, host);
        _slots.Add(slot);
        _rmapsById[id] = rmap;
        return SlotStatus.Ok;
    }

    /// <summary>Zaps every page and frees every root (KVM's memslot quirk), then forgets the slot, its bitmap and memory.</summary>
    public SlotStatus DeleteSlot(int id)
    {
        ThrowIfDisposed();
        if (_slots[id] is not HostMemslot slot)
            return RejectSlot($"no slot {id}");
        ZapAllPages();
        _slots.Remove(slot);
        _rmapsById[id]!.Free();
        _rmapsById[id] = null;
        _guestMemory.RemoveSlot(slot.BaseGfn);
        slot.Host.Free(); // the VMM unmapped it: a later slot on these host frames reads zero
        return SlotStatus.Ok;
    }

    /// <summary>Zaps every page and frees every root; the slot keeps its backing, flags and bitmap.</summary>
    public SlotStatus MoveSlot(int id, ulong newBaseGfn)
    {
        ThrowIfDisposed();
        if (_slots[id] is not HostMemslot slot)
            return RejectSlot($"no slot {id}");
        if (RangeProblem(newBaseGfn, slot.Pages, self: slot) is string problem)
            return RejectSlot(problem);
        ZapAllPages();
        _guestMemory.RemoveSlot(slot.BaseGfn);
        slot.MoveTo(newBaseGfn);
        AddGuestWindow(newBaseGfn, slot.Pages, slot.Host); // the window moves, not the contents
        return SlotStatus.Ok;
    }

    /// <summary>As TDP: no change when the flag already has that value; on write-protects every leaf in the slot.</summary>
    public SlotStatus SetDirtyLogging(int id, bool on)
    {
        ThrowIfDisposed();
        if (_slots[id] is not HostMemslot slot)
            return RejectSlot($"no slot {id}");
        if (slot.SetDirtyLogging(on) && on)
            WriteProtectSlot(slot);
        return SlotStatus.Ok;
    }

    /// <summary>Returns and clears the bitmap, then write-protects each returned gfn.</summary>
    public SlotStatus GetDirtyLog(int id, List<ulong> gfns)
    {
        ArgumentNullException.ThrowIfNull(gfns);
        ThrowIfDisposed();
        int first = gfns.Count;
        if (_slots.TakeDirtyLog(id, gfns, out _) is string problem)
            return RejectSlot(problem);
        for (int i = first; i < gfns.Count; i++)
            WriteProtect(gfns[i]);
        return SlotStatus.Ok;
    }

    /// <summary>KVM's rmap zap: every leaf mapping a gfn in [start, end) goes; pages stay.</summary>
    public ShadowOutcome ZapRange(ulong startGfn, ulong endGfn)
    {
        ThrowIfDisposed();
        if (startGfn >= endGfn || endGfn > _gfnLimit)
            return Reject($"zap range [0x{startGfn:X}, 0x{endGfn:X}) is empty or beyond 2^{_maxPhyAddr - PageShift} frames");
        foreach (HostMemslot slot in _slots.All)
        {
            SlotRmap rmap = _rmapsById[slot.Id]!;
            ulong lo = Math.Max(startGfn, slot.BaseGfn);
            ulong hi = Math.Min(endGfn, slot.EndGfn);
            for (ulong gfn = lo; gfn < hi && rmap.NonEmpty != 0; gfn++)
            {
                ref ulong head = ref rmap.Head(gfn - slot.BaseGfn);
                while (head != 0)
                {
                    SpteRef leaf = PteListPool.First(head);
                    RemoveEntry(leaf.Page, leaf.Index); // takes it out of this rmap
                }
            }
        }
        return ShadowOutcome.Ok;
    }

    public ShadowOutcome ZapAll()
    {
        ThrowIfDisposed();
        ZapAllPages();
        return ShadowOutcome.Ok;
    }

    /// <summary>Returns every native page (shadow pages, list descriptors, rmaps, host memory) to the pool.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        FreeAllRoots();
        FreeBlockPage();
        _zapped = default;
        _pages.ReleaseAll();
        _lists.ReleaseAll();
        _hash.Clear();
        _livePages = 0;
        _guest = null;
        _guestMemory.Dispose(); // external slots only: frees nothing
        foreach (HostMemslot slot in _slots.All)
            _rmapsById[slot.Id]?.Free();
        _slots.FreeAll();
        Array.Clear(_rmapsById);
    }

    // ---- slots ----

    /// <summary>The guest's view of a slot's host memory at its gfns (for the walker and PDPTE loads).</summary>
    private void AddGuestWindow(ulong baseGfn, ulong pages, HostMemory host) =>
        _guestMemory.AddExternalSlot(baseGfn, pages, host);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private HostMemslot? FindSlot(ulong gfn) => _slots.Find(gfn);

    /// <summary>Why [baseGfn, baseGfn + pages) cannot hold a slot, or null when it can.</summary>
    private string? RangeProblem(ulong baseGfn, ulong pages, HostMemslot? self)
    {
        if (baseGfn >= _gfnLimit || pages > _gfnLimit - baseGfn)
            return $"range [0x{baseGfn:X}, +0x{pages:X}) is not below 2^{_maxPhyAddr - PageShift} frames";
        return _slots.OverlapProblem(baseGfn, pages, self);
    }

    private ShadowOutcome Reject(string reason)
    {
        LastRejection = reason;
        return ShadowOutcome.Rejected;
    }

    private SlotStatus RejectSlot(string reason)
    {
        LastRejection = reason;
        return SlotStatus.Rejected;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
