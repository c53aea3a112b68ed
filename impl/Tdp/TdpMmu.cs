using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// KVM's TDP MMU (arch/x86/kvm/mmu/tdp_mmu.c) over the generic table library, for one entry format.
/// The behaviour is docs/tdp-model.md; comments cite its rules. Table pages live in native memory
/// (<see cref="TdpPageAllocator"/>), each with an 8-byte header; the fault path allocates nothing on
/// the managed heap and calls the pool only when its free list runs dry.
/// <para>
/// Two index spaces meet here. Slots, dirty bitmaps, page and leaf gfns never hold the shared bit
/// (<c>gfn = gpa &gt;&gt; 12 &amp; ~shared</c>). The direct root is indexed by the gfn with the bit added back,
/// the mirror root by the gfn as it is; in both cases that is simply the gpa's frame number
/// (<c>gpa &gt;&gt; 12</c>), which is what the walker is given. Range operations translate gfn ranges
/// with <see cref="_sharedGfnMask"/>.
/// </para>
/// <para>
/// Each slot also owns its host memory (<see cref="HostMemory"/>, lazily zeroed), which the guest
/// writes with <see cref="GuestStore"/> and reads through its own page walk (TdpMmu.Guest.cs).
/// </para>
/// Not thread-safe.
/// </summary>
public sealed partial class TdpMmu<TFormat> : ITdpVm where TFormat : struct, IPteFormat
{
    /// <summary>The contract's bound on a slot's host frame base.</summary>
    private const ulong HostPfnBaseLimit = 1UL << 40;

    private const int LargestLeafLevel = 3;

    private readonly TdpPageAllocator _pages;
    private readonly NativePagePool _pool;

    // The slots' host memory at their gpas, for the guest's own page walk (docs/tdp-model.md, "Guest
    // memory"): an external slot per memslot, moved and removed with it. Gfns here never hold the
    // shared bit, so a table at a shared gpa is outside every slot, as for KVM's software walker.
    private readonly GuestPhysicalMemory _guestMemory;

    // The guest's paging state; null while paging is off (the initial state).
    private GuestVcpu? _guest;
    private readonly int? _sharedBit;
    private readonly int _rootLevel;
    private readonly int _gpaBits;

    // The shared bit as a gfn bit (1 << (s - 12)), or 0 without one. Also the first gfn no slot may
    // reach, and what the direct root adds to a gfn to index it.
    private readonly ulong _sharedGfnMask;

    // Frames in the guest-physical space: ZapRange may name any of them.
    private readonly ulong _gfnLimit;

    // Slots must end at or below this: the space, or the shared bit when there is one.
    private readonly ulong _slotGfnLimit;

    // Host frames an entry of this format can hold (2^40 for EPT, 2^36 for stage-2).
    private readonly ulong _hostPfnLimit;

    // A mutable struct: never readonly, never copied (the fault path reads its last-slot cache in place).
    private HostMemslotTable _slots = new();

    private TableRef _directRoot;
    private TableRef _mirrorRoot;

    // Largest leaf level a fault may install (the mapping policy): 1, 2 or 3.
    private int _policyLevel = LargestLeafLevel;

    // Remote TLB flushes issued since TakeFlushes last ran (docs/tdp-model.md, "TLB flushes"). Inline,
    // fixed size: recording one allocates nothing.
    private TdpFlushLog _flushes;

    private bool _disposed;

    // The paging-structure cache of the fast paths (TdpMmu.Fault.cs). The small slot: frames
    // [first, first + frames) of the last slot the slow path saw whose every gfn maps at 4 KiB, writable,
    // without logging, in the index space of the root it used (direct or mirror), that root, and the host
    // frame of its first gfn; no frame is inside while _smallSlotFrames is 0. The gig tables: the level-2
    // tables walked through in that root for the slot's first GigTableCount GiBs, by GiB from the one
    // holding its first frame (frame >> 18 minus _smallSlotFirstGig); a null entry is not cached yet.
    private const int GigShift = 2 * IndexBits;
    private const int GigTableCount = 16;
    private ulong _smallSlotFirstFrame;
    private ulong _smallSlotFrames;
    private ulong _smallSlotHostPfn;
    private ulong _smallSlotFirstGig;
    private TableRef _smallSlotRoot;
    private bool _smallSlotMirror;
    private GigTables _gigTables;

    [InlineArray(GigTableCount)]
    private struct GigTables
    {
        private TableRef _table;
    }

    /// <exception cref="ArgumentOutOfRangeException">The shared bit is not null, 47 or 51.</exception>
    /// <exception cref="ArgumentException">The format cannot build the root level the shared bit needs
    /// (stage-2 with a 4 KiB granule has at most 4 levels; shared bit 51 needs 5), or is not EPT or stage-2.</exception>
    public TdpMmu(int? sharedBit, NativePagePool pool, TdpAccessedDirty accessedDirty = TdpAccessedDirty.Untracked)
    {
        ArgumentNullException.ThrowIfNull(pool);
        if (sharedBit is not (null or 47 or 51))
            ThrowHelper.ArgumentOutOfRange(nameof(sharedBit), "The shared bit must be null, 47 or 51.");
        if (typeof(TFormat) != typeof(EptFormat) && typeof(TFormat) != typeof(Stage2Format))
            ThrowHelper.Argument(nameof(TFormat), "Only the EPT and stage-2 formats are supported.");

        _rootLevel = sharedBit == 51 ? 5 : 4;
        if (_rootLevel > TFormat.MaxRootLevel)
            ThrowHelper.Argument(nameof(sharedBit),
                $"{Format} supports at most {TFormat.MaxRootLevel} levels; shared bit 51 needs a 52-bit space and 5 levels.");

        _sharedBit = sharedBit;
        _gpaBits = _rootLevel == 5 ? 52 : 48;
        _gfnLimit = 1UL << (_gpaBits - PageShift);
        _sharedGfnMask = sharedBit is int s ? 1UL << (s - PageShift) : 0;
        _slotGfnLimit = _sharedGfnMask != 0 ? _sharedGfnMask : _gfnLimit;
        _hostPfnLimit = 1UL << (TFormat.OutputAddressBits - PageShift);
        ulong addressMask = ((1UL << TFormat.OutputAddressBits) - 1) & ~((1UL << PageShift) - 1);
        _pages = new TdpPageAllocator(pool, addressMask);
        _pool = pool;
        _guestMemory = new GuestPhysicalMemory(pool);
        SetAccessedDirty(accessedDirty);
    }

    /// <summary>Bytes in one page header (the packed gfn and role).</summary>
    public static int PageHeaderBytes => Unsafe.SizeOf<TdpPageHeader>();

    public TdpFormatKind Format => typeof(TFormat) == typeof(EptFormat) ? TdpFormatKind.Ept : TdpFormatKind.Stage2;

    public int? SharedBit => _sharedBit;

    public int RootLevel => _rootLevel;

    public int GpaBits => _gpaBits;

    public string? LastRejection { get; private set; }

    public long TablePages => _pages.TablesInUse;

    public TdpFlushLog TakeFlushes()
    {
        ThrowIfDisposed();
        TdpFlushLog taken = _flushes;
        _flushes.Clear();
        return taken;
    }

    /// <summary>Slabs of table pages the MMU holds (each <see cref="TdpPageAllocator.SlabPages"/> pool pages).</summary>
    public int Slabs => _pages.Slabs;

    public SlotStatus CreateSlot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase, byte hostPageShift, bool readOnly)
    {
        ThrowIfDisposed();
        ForgetCachedTables();
        if (SlotUpdateWaits() is string waits)
            return RejectSlot(waits);
        if (_slots.CreateProblem(id, pages) is string idProblem)
            return RejectSlot(idProblem);
        if (hostPageShift is not (12 or 21 or 30))
            return RejectSlot($"host page shift {hostPageShift} is not 12, 21 or 30");
        if (hostPfnBase >= HostPfnBaseLimit)
            return RejectSlot($"host frame base 0x{hostPfnBase:X} is not below 2^40");
        if (hostPfnBase >= _hostPfnLimit || pages > _hostPfnLimit - hostPfnBase)
            return RejectSlot($"host frames reach 2^{TFormat.OutputAddressBits - PageShift}, beyond what {Format} entries address");
        if (RangeProblem(baseGfn, pages, self: null) is string problem)
            return RejectSlot(problem);
        if (_slots.HostOverlapProblem(hostPfnBase, pages) is string hostProblem)
            return RejectSlot(hostProblem);

        var host = new HostMemory(_pool, pages); // reads as zero; pages come from the OS when written
        var slot = new HostMemslot(id, baseGfn, pages, hostPfnBase, hostPageShift, readOnly, host);
        _guestMemory.AddExternalSlot(baseGfn, pages, host);
        _slots.Add(slot);
        return SlotStatus.Ok;
    }

    /// <summary>Zaps every leaf overlapping the slot (both roots), then forgets the slot, its bitmap and its host memory.</summary>
    public SlotStatus DeleteSlot(int id)
    {
        ThrowIfDisposed();
        ForgetCachedTables();
        if (_slots[id] is not HostMemslot slot)
            return RejectSlot($"no slot {id}");
        if (SlotUpdateWaits() is string waits)
            return RejectSlot(waits);
        ZapLeafs(slot.BaseGfn, slot.EndGfn);
        _slots.Remove(slot);
        _guestMemory.RemoveSlot(slot.BaseGfn);
        slot.Host.Free(); // the VMM unmapped it: a later slot on these host frames reads zero
        return SlotStatus.Ok;
    }

    /// <summary>Zaps every leaf overlapping the old range; the slot keeps its backing, flags and bitmap.</summary>
    public SlotStatus MoveSlot(int id, ulong newBaseGfn)
    {
        ThrowIfDisposed();
        ForgetCachedTables();
        if (_slots[id] is not HostMemslot slot)
            return RejectSlot($"no slot {id}");
        if (SlotUpdateWaits() is string waits)
            return RejectSlot(waits);
        if (RangeProblem(newBaseGfn, slot.Pages, self: slot) is string problem)
            return RejectSlot(problem);
        ZapLeafs(slot.BaseGfn, slot.EndGfn);
        _guestMemory.RemoveSlot(slot.BaseGfn);
        slot.MoveTo(newBaseGfn);
        _guestMemory.AddExternalSlot(newBaseGfn, slot.Pages, slot.Host); // the window moves, not the contents
        return SlotStatus.Ok;
    }

    /// <summary>
    /// No change when the flag already has that value. On: starts an empty bitmap and write-protects
    /// every leaf overlapping the slot, huge ones included. Off: drops the bitmap and zaps the links a huge leaf
    /// could now replace (KVM's kvm_mmu_zap_collapsible_sptes; TdpMmu.Collapsible.cs).
    /// </summary>
    public SlotStatus SetDirtyLogging(int id, bool on)
    {
        ThrowIfDisposed();
        ForgetCachedTables();
        if (_slots[id] is not HostMemslot slot)
            return RejectSlot($"no slot {id}");
        if (SlotUpdateWaits() is string waits)
            return RejectSlot(waits);
        if (!slot.SetDirtyLogging(on))
            return SlotStatus.Ok;
        if (on)
        {
            WriteProtectLeafs(slot.BaseGfn, slot.EndGfn);
            // KVM flushes the memslot unconditionally after enabling dirty logging
            // (kvm_mmu_slot_apply_flags, kvm_flush_remote_tlbs_memslot); no leaf extends past its slot.
            _flushes.Add(slot.BaseGfn, slot.Pages);
        }
        else
            ZapCollapsible(slot); // huge pages come back (TdpMmu.Collapsible.cs)
        return SlotStatus.Ok;
    }

    /// <summary>KVM_GET_DIRTY_LOG without manual protect: fetch, clear, write-protect what was fetched.</summary>
    public SlotStatus GetDirtyLog(int id, List<ulong> gfns)
    {
        ArgumentNullException.ThrowIfNull(gfns);
        ThrowIfDisposed();
        ForgetCachedTables();
        int first = gfns.Count;
        if (_slots.TakeDirtyLog(id, gfns, out HostMemslot? slot) is string problem)
            return RejectSlot(problem);
        // Write-protect in runs of consecutive gfns: one range walk per run, not one walk per gfn.
        for (int i = first; i < gfns.Count;)
        {
            int j = i + 1;
            while (j < gfns.Count && gfns[j] == gfns[j - 1] + 1)
                j++;
            WriteProtectLeafs(gfns[i], gfns[j - 1] + 1);
            i = j;
        }
        // KVM's kvm_get_dirty_log_protect: one flush of the memslot when the log was not empty.
        if (gfns.Count > first)
            _flushes.Add(slot!.BaseGfn, slot.Pages);
        return SlotStatus.Ok;
    }

    /// <summary>KVM's kvm_tdp_mmu_zap_leafs: every leaf overlapping [start, end) goes; tables stay, even empty.</summary>
    public TdpStatus ZapRange(ulong startGfn, ulong endGfn)
    {
        ThrowIfDisposed();
        ForgetCachedTables();
        if (startGfn >= endGfn || endGfn > _gfnLimit)
            return Reject($"zap range [0x{startGfn:X}, 0x{endGfn:X}) is empty or beyond 2^{_gpaBits - PageShift} frames");
        ZapLeafs(startGfn, endGfn);
        return TdpStatus.Ok;
    }

    /// <summary>KVM's kvm_tdp_mmu_zap_all: every page and both roots go, and everything is flushed.</summary>
    public TdpStatus ZapAll()
    {
        ThrowIfDisposed();
        ForgetCachedTables();
        // KVM's zap-all needs no flush because no vCPU runs again (the VM is going away); here the VM goes
        // on, so this is the fast zap's case: a new root is loaded with a full flush (kvm_mmu_load).
        if (!_directRoot.IsNull || !_mirrorRoot.IsNull)
            _flushes.AddAll();
        FreeRoot(ref _directRoot);
        FreeRoot(ref _mirrorRoot);
        return TdpStatus.Ok;
    }

    public TdpStatus SetMaxPageSize(byte pageShift)
    {
        ThrowIfDisposed();
        ForgetCachedTables();
        if (pageShift is not (12 or 21 or 30))
            return Reject($"page shift {pageShift} is not 12, 21 or 30");
        _policyLevel = (pageShift - PageShift) / IndexBits + 1;
        return TdpStatus.Ok;
    }

    /// <summary>Returns every table page and every slot's host memory to the pool (after this, the pool's
    /// PagesInUse no longer counts them).</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        ForgetCachedTables(); // the fast path checks no flag: a disposed MMU serves nothing from the cache
        _directRoot = default;
        _mirrorRoot = default;
        _pages.ReleaseAll();
        _guest = null;
        _guestMemory.Dispose(); // external slots only: frees nothing
        _slots.FreeAll();
    }

    /// <summary>Why [baseGfn, baseGfn + pages) cannot hold a slot, or null when it can.</summary>
    private string? RangeProblem(ulong baseGfn, ulong pages, HostMemslot? self)
    {
        if (baseGfn >= _slotGfnLimit || pages > _slotGfnLimit - baseGfn)
            return _sharedGfnMask != 0
                ? $"range [0x{baseGfn:X}, +0x{pages:X}) reaches the shared bit (gfn 0x{_sharedGfnMask:X})"
                : $"range [0x{baseGfn:X}, +0x{pages:X}) is beyond 2^{_gpaBits - PageShift} frames";
        return _slots.OverlapProblem(baseGfn, pages, self);
    }

    /// <summary>Zaps every leaf overlapping gfns [start, end) in both roots.</summary>
    private void ZapLeafs(ulong start, ulong end)
    {
        if (!ClipToSlotSpace(ref start, ref end))
            return;
        ZapLeafs(_directRoot, start + _sharedGfnMask, end + _sharedGfnMask);
        ZapLeafs(_mirrorRoot, start, end);
    }

    /// <summary>
    /// Zaps the leaves of one root and flushes each over everything it mapped, which for a huge leaf is
    /// more than [startFrame, endFrame) (KVM: tdp_mmu_zap_leafs, then a flush of the whole SPTE as in
    /// kvm_flush_remote_tlbs_gfn(gfn, level)). Flushes name gfns, so the shared bit is stripped.
    /// </summary>
    private void ZapLeafs(TableRef root, ulong startFrame, ulong endFrame)
    {
        AssertRoot(root);
        foreach (PteRef pte in new PteIterator<TFormat>(root, _rootLevel, startFrame, endFrame))
        {
            if (RadixTable<TFormat>.IsLeafEntry(pte.Value, pte.Level))
            {
                pte.Clear();
                _flushes.Add(pte.Frame & ~_sharedGfnMask, FramesPerEntry(pte.Level));
            }
        }
    }

    /// <summary>Clears W of every leaf overlapping gfns [start, end) in both roots. The callers flush the
    /// memslot afterwards, as KVM's do.</summary>
    private void WriteProtectLeafs(ulong start, ulong end)
    {
        if (!ClipToSlotSpace(ref start, ref end))
            return;
        WriteProtectLeafs(_directRoot, start + _sharedGfnMask, end + _sharedGfnMask);
        WriteProtectLeafs(_mirrorRoot, start, end);
    }

    private void WriteProtectLeafs(TableRef root, ulong startFrame, ulong endFrame)
    {
        AssertRoot(root);
        foreach (PteRef pte in new PteIterator<TFormat>(root, _rootLevel, startFrame, endFrame))
        {
            if (RadixTable<TFormat>.IsLeafEntry(pte.Value, pte.Level) && TFormat.IsWritable(pte.Value))
                pte.Write(TdpLeaf<TFormat>.ProtectedForLog(pte.Value));
        }
    }

    /// <summary>
    /// Leaves only ever map gfns below <see cref="_slotGfnLimit"/> (they lie inside slots), so a gfn range
    /// is cut there. With a shared bit that also keeps "gfn + shared bit" (the direct root's index) from
    /// carrying past the root. False when nothing is left.
    /// </summary>
    private bool ClipToSlotSpace(ref ulong start, ref ulong end)
    {
        end = Math.Min(end, _slotGfnLimit);
        return start < end;
    }

    private void FreeRoot(ref TableRef root)
    {
        if (root.IsNull)
            return;
        AssertRoot(root);
        // Freeing reads no page's key, so the role new pages would get (direct or mirror) plays no part.
        var pages = new TdpTablePages(_pages, _sharedGfnMask, mirror: false);
        RadixTable<TFormat>.FreeTree(ref pages, root, _rootLevel);
        root = default;
    }

    /// <summary>
    /// DEBUG, where a table address enters from an entry or a root field: <paramref name="table"/> is a page
    /// of one of this MMU's slabs, in use, at <paramref name="level"/> of the direct or mirror tree.
    /// </summary>
    [Conditional("DEBUG")]
    private static void AssertTable(TableRef table, int level, bool mirror)
    {
        TdpPageHeader header = TdpPageAllocator.HeaderOf(table); // asserts a page-aligned page of a slab
        Debug.Assert(header.InUse && header.Level == level && header.Mirror == mirror,
            "a table pointer that is not a table in use at that level of that root");
    }

    /// <summary>DEBUG: an empty root, or one of this MMU's two roots as its field holds it (the slab is this MMU's).</summary>
    [Conditional("DEBUG")]
    private void AssertRoot(TableRef root)
    {
        if (root.IsNull)
            return;
        Debug.Assert(root == _directRoot || root == _mirrorRoot, "a root that is not this MMU's");
        _pages.AssertOwned(root);
        AssertTable(root, _rootLevel, mirror: root == _mirrorRoot);
    }

    private TdpStatus Reject(string reason)
    {
        LastRejection = reason;
        return TdpStatus.Rejected;
    }

    private SlotStatus RejectSlot(string reason)
    {
        LastRejection = reason;
        return SlotStatus.Rejected;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
