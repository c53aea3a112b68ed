using System.Diagnostics;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Tdp;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// KVM's TDP MMU with many vCPUs (arch/x86/kvm/mmu/tdp_mmu.c): faults from every vCPU run at once under
/// mmu_lock held for read and change entries only by compare-and-exchange; memslot changes, the mapping
/// policy and zaps take it for write. The behaviour of each operation is docs/tdp-model.md's, as
/// <see cref="TdpMmu{TFormat}"/> implements it for one vCPU; the concurrency rules are docs/tdp-concurrency.md.
/// <para>
/// <typeparamref name="TSched"/> is called before every shared access that can race
/// (<see cref="ISchedulePoint"/>): production passes <see cref="NoSchedulePoints"/>, which costs nothing;
/// a systematic tester passes its scheduler.
/// </para>
/// <para>
/// Thread-safety: a vCPU (<see cref="CreateVcpu"/>) is used by one thread at a time; different vCPUs and
/// the operations here may run on any threads at once. The state queries (<see cref="VisitPages"/>,
/// <see cref="TablePages"/>, ...) are for a quiescent MMU, as in tests. Not built yet: guest memory and the
/// guest's own paging, PreFault, zaps under the read side other than the collapsible zap (see the doc).
/// </para>
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched> : IDisposable
    where TFormat : struct, IPteFormat
    where TSched : struct, ISchedulePoint
{
    /// <summary>The contract's bound on a slot's host frame base.</summary>
    private const ulong HostPfnBaseLimit = 1UL << 40;

    private const int LargestLeafLevel = 3;

    /// <summary>At most this many vCPUs per MMU (the epoch table's size).</summary>
    public const int MaxVcpus = Epochs<TSched>.MaxVcpus;

    // Table pages; only under _side (faults top up their caches from it before taking mmu_lock).
    private readonly TdpPageAllocator _pages;
    private readonly NativePagePool _pool;

    private readonly int? _sharedBit;
    private readonly int _rootLevel;
    private readonly int _gpaBits;
    private readonly ulong _sharedGfnMask;
    private readonly ulong _gfnLimit;
    private readonly ulong _slotGfnLimit;
    private readonly ulong _hostPfnLimit;

    // Changed only under the write side; faults read them under the read side. A mutable struct field.
    private HostMemslotTable _slots = new();

    // Bumped (under the write side) whenever a slot appears, goes or moves: a vCPU's last-slot cache is
    // valid only for the generation it was filled in.
    private int _slotGeneration;

    // Largest leaf level a fault may install; written under the write side.
    private int _policyLevel = LargestLeafLevel;

    // Root table addresses, 0 for none: installed by a fault's compare-and-exchange, cleared under the write side.
    private ulong _directRoot;
    private ulong _mirrorRoot;

    private MmuLock<TSched> _lock;

    // The allocator, the deferred-free list, the flush log and the dirty bitmaps (KVM's tdp_mmu_pages_lock).
    private SideLock<TSched> _side;

    private readonly Epochs<TSched> _epochs = new();

    // Remote TLB flushes since TakeFlushes; under _side.
    private TdpFlushLog _flushes;

    // Tables unlinked under the read side, freed once the epochs drain; under _side. Grows only when full.
    private DeferredTable[] _deferred = new DeferredTable[64];
    private int _deferredCount;
    private long _deferredRetired;
    private long _deferredFreed;

    private readonly ConcurrentTdpVcpu<TFormat, TSched>?[] _vcpus = new ConcurrentTdpVcpu<TFormat, TSched>?[MaxVcpus];
    private int _vcpuCount;

    private volatile bool _disposed;

    /// <exception cref="ArgumentOutOfRangeException">The shared bit is not null, 47 or 51.</exception>
    /// <exception cref="ArgumentException">The format cannot build the root level the shared bit needs, or is not EPT or stage-2.</exception>
    public ConcurrentTdpMmu(int? sharedBit, NativePagePool pool, TdpAccessedDirty accessedDirty = TdpAccessedDirty.Untracked)
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
        SetAccessedDirty(accessedDirty);
    }

    public TdpFormatKind Format => typeof(TFormat) == typeof(EptFormat) ? TdpFormatKind.Ept : TdpFormatKind.Stage2;

    public int? SharedBit => _sharedBit;

    public int RootLevel => _rootLevel;

    public int GpaBits => _gpaBits;

    /// <summary>Why the most recent rejected operation here was rejected (a vCPU keeps its own for accesses).</summary>
    public string? LastRejection { get; private set; }

    /// <summary>
    /// A new vCPU (at most <see cref="MaxVcpus"/>). Takes the write side, so no fault is in flight while
    /// the epoch table grows.
    /// </summary>
    public ConcurrentTdpVcpu<TFormat, TSched> CreateVcpu()
    {
        ThrowIfDisposed();
        _lock.EnterWrite();
        try
        {
            if (_vcpuCount == MaxVcpus)
                ThrowHelper.InvalidOperation($"An MMU has at most {MaxVcpus} vCPUs.");
            var vcpu = new ConcurrentTdpVcpu<TFormat, TSched>(this, _vcpuCount);
            _vcpus[_vcpuCount] = vcpu;
            Volatile.Write(ref _vcpuCount, _vcpuCount + 1);
            return vcpu;
        }
        finally
        {
            _lock.ExitWrite();
        }
    }

    public SlotStatus CreateSlot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase, byte hostPageShift, bool readOnly)
    {
        EnterWrite();
        try
        {
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
            _slots.Add(new HostMemslot(id, baseGfn, pages, hostPfnBase, hostPageShift, readOnly, host));
            _slotGeneration++;
            return SlotStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    /// <summary>Zaps every leaf overlapping the slot (both roots), then forgets the slot, its bitmap and its host memory.</summary>
    public SlotStatus DeleteSlot(int id)
    {
        EnterWrite();
        try
        {
            if (_slots[id] is not HostMemslot slot)
                return RejectSlot($"no slot {id}");
            if (SlotUpdateWaits() is string waits)
                return RejectSlot(waits);
            ZapLeafs(slot.BaseGfn, slot.EndGfn);
            _slots.Remove(slot);
            _slotGeneration++;
            slot.Host.Free();
            return SlotStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    /// <summary>Zaps every leaf overlapping the old range; the slot keeps its backing, flags and bitmap.</summary>
    public SlotStatus MoveSlot(int id, ulong newBaseGfn)
    {
        EnterWrite();
        try
        {
            if (_slots[id] is not HostMemslot slot)
                return RejectSlot($"no slot {id}");
            if (SlotUpdateWaits() is string waits)
                return RejectSlot(waits);
            if (RangeProblem(newBaseGfn, slot.Pages, self: slot) is string problem)
                return RejectSlot(problem);
            ZapLeafs(slot.BaseGfn, slot.EndGfn);
            slot.MoveTo(newBaseGfn);
            _slotGeneration++;
            return SlotStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    /// <summary>
    /// As <see cref="TdpMmu{TFormat}.SetDirtyLogging"/>: on write-protects the slot's leaves and flushes it. The
    /// flag changes under the write side; the write-protection then runs under the read side beside faults
    /// (ConcurrentTdpMmu.WriteProtect.cs).
    /// </summary>
    public SlotStatus SetDirtyLogging(int id, bool on)
    {
        ulong start, end;
        EnterWrite();
        try
        {
            if (_slots[id] is not HostMemslot slot)
                return RejectSlot($"no slot {id}");
            if (SlotUpdateWaits() is string waits)
                return RejectSlot(waits);
            if (!SetDirtyLoggingFlag(slot, on))
                return SlotStatus.Ok;
            if (on)
                _fastFaultsUseful = true; // before the write-protection: released by ExitWrite
            (start, end) = (slot.BaseGfn, slot.EndGfn);
        }
        finally
        {
            ExitWrite();
        }
        if (on)
            WriteProtectForLog(start, end);
        else
            ZapCollapsible(start, end); // huge pages come back (ConcurrentTdpMmu.Collapsible.cs)
        return SlotStatus.Ok;
    }

    /// <summary>KVM_GET_DIRTY_LOG without manual protect: fetch, clear, write-protect what was fetched.</summary>
    public SlotStatus GetDirtyLog(int id, List<ulong> gfns)
    {
        ArgumentNullException.ThrowIfNull(gfns);
        EnterWrite();
        try
        {
            int first = gfns.Count;
            string? problem;
            HostMemslot? slot;
            _side.Enter(); // faults mark bitmaps under the side lock; none runs now, but the rule stays simple
            try
            {
                problem = _slots.TakeDirtyLog(id, gfns, out slot);
            }
            finally
            {
                _side.Exit();
            }
            if (problem is not null)
                return RejectSlot(problem);
            for (int i = first; i < gfns.Count;)
            {
                int j = i + 1;
                while (j < gfns.Count && gfns[j] == gfns[j - 1] + 1)
                    j++;
                WriteProtectLeafs(gfns[i], gfns[j - 1] + 1);
                i = j;
            }
            if (gfns.Count > first)
                AddFlush(slot!.BaseGfn, slot.Pages); // kvm_get_dirty_log_protect: one flush of the memslot
            return SlotStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    /// <summary>
    /// KVM's kvm_tdp_mmu_zap_leafs under the write side: every leaf overlapping [start, end) goes; tables stay.
    /// A long zap drops and retakes the write side on the way (<see cref="RangeWalkYieldEvery"/>).
    /// </summary>
    public TdpStatus ZapRange(ulong startGfn, ulong endGfn)
    {
        EnterWrite();
        bool held = true;
        try
        {
            if (startGfn >= endGfn || endGfn > _gfnLimit)
                return Reject($"zap range [0x{startGfn:X}, 0x{endGfn:X}) is empty or beyond 2^{_gpaBits - PageShift} frames");
            var zap = new ZapRule();
            WalkBothRoots(ref zap, startGfn, endGfn, WalkSide.WriteLocked(canYield: true), ref held); // may yield (ConcurrentTdpMmu.Yield.cs)
            return TdpStatus.Ok;
        }
        finally
        {
            if (held)
                ExitWrite();
        }
    }

    /// <summary>Every page and both roots go, and everything is flushed (the fast zap's full flush on the next root load).</summary>
    public TdpStatus ZapAll()
    {
        EnterWrite();
        try
        {
            if (_directRoot != 0 || _mirrorRoot != 0)
                AddFlushAll();
            // No reader runs under the write side, so nothing can still walk these: freed at once.
            FreeRoot(ref _directRoot);
            FreeRoot(ref _mirrorRoot);
            return TdpStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    public TdpStatus SetMaxPageSize(byte pageShift)
    {
        EnterWrite();
        try
        {
            if (pageShift is not (12 or 21 or 30))
                return Reject($"page shift {pageShift} is not 12, 21 or 30");
            _policyLevel = (pageShift - PageShift) / IndexBits + 1;
            return TdpStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    /// <summary>The remote TLB flushes issued since the last call, by every vCPU and operation; forgets them.</summary>
    public TdpFlushLog TakeFlushes()
    {
        ThrowIfDisposed();
        _side.Enter();
        TdpFlushLog taken = _flushes;
        _flushes.Clear();
        _side.Exit();
        return taken;
    }

    /// <summary>
    /// Returns every table page (linked, cached by a vCPU or waiting for its epoch) and every slot's host
    /// memory to the pool. Call it when no vCPU runs.
    /// </summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _directRoot = 0;
        _mirrorRoot = 0;
        for (int i = 0; i < _vcpuCount; i++)
            _vcpus[i]!.DropCache(); // its pages go with the slabs
        _deferredCount = 0;
        _pages.ReleaseAll();
        _slots.FreeAll();
    }

    // ---- shared helpers ----

    /// <summary>
    /// Takes the write side and waits for the fast faults in flight (none starts until <see cref="ExitWrite"/>).
    /// Tables deferred by faults are freed first: no walker runs, so every epoch has drained.
    /// </summary>
    private void EnterWrite()
    {
        ThrowIfDisposed();
        _lock.EnterWrite();
        _lockless.BlockAndDrain(Volatile.Read(ref _vcpuCount));
        ReclaimDeferred();
    }

    private void ExitWrite()
    {
        _lockless.Unblock();
        _lock.ExitWrite();
    }

    private bool SetDirtyLoggingFlag(HostMemslot slot, bool on)
    {
        _side.Enter();
        try
        {
            return slot.SetDirtyLogging(on);
        }
        finally
        {
            _side.Exit();
        }
    }

    private string? RangeProblem(ulong baseGfn, ulong pages, HostMemslot? self)
    {
        if (baseGfn >= _slotGfnLimit || pages > _slotGfnLimit - baseGfn)
            return _sharedGfnMask != 0
                ? $"range [0x{baseGfn:X}, +0x{pages:X}) reaches the shared bit (gfn 0x{_sharedGfnMask:X})"
                : $"range [0x{baseGfn:X}, +0x{pages:X}) is beyond 2^{_gpaBits - PageShift} frames";
        return _slots.OverlapProblem(baseGfn, pages, self);
    }

    /// <summary>Zaps every leaf overlapping gfns [start, end) in both roots (write side: plain stores).</summary>
    private void ZapLeafs(ulong start, ulong end)
    {
        end = Math.Min(end, _slotGfnLimit); // leaves only map gfns inside slots
        if (start >= end)
            return;
        ZapLeafs(_directRoot, start + _sharedGfnMask, end + _sharedGfnMask);
        ZapLeafs(_mirrorRoot, start, end);
    }

    private void ZapLeafs(ulong root, ulong startFrame, ulong endFrame)
    {
        Debug.Assert(_lock.IsWriteHeld, "a zap without the write side");
        foreach (PteRef pte in new PteIterator<TFormat>(RootRef(root), _rootLevel, startFrame, endFrame))
        {
            Debug.Assert(pte.Value != TFormat.FrozenEntry, "a frozen entry outlived the fault that froze it");
            if (RadixTable<TFormat>.IsLeafEntry(pte.Value, pte.Level))
            {
                pte.Clear();
                AddFlush(pte.Frame & ~_sharedGfnMask, FramesPerEntry(pte.Level));
            }
        }
    }

    private void WriteProtectLeafs(ulong start, ulong end)
    {
        end = Math.Min(end, _slotGfnLimit);
        if (start >= end)
            return;
        WriteProtectLeafs(_directRoot, start + _sharedGfnMask, end + _sharedGfnMask);
        WriteProtectLeafs(_mirrorRoot, start, end);
    }

    private void WriteProtectLeafs(ulong root, ulong startFrame, ulong endFrame)
    {
        Debug.Assert(_lock.IsWriteHeld, "write-protection without the write side");
        foreach (PteRef pte in new PteIterator<TFormat>(RootRef(root), _rootLevel, startFrame, endFrame))
        {
            if (RadixTable<TFormat>.IsLeafEntry(pte.Value, pte.Level) && TFormat.IsWritable(pte.Value))
                pte.Write(TdpLeaf<TFormat>.ProtectedForLog(pte.Value));
        }
    }

    private void FreeRoot(ref ulong root)
    {
        if (root == 0)
            return;
        AssertTable(RootRef(root), _rootLevel, mirror: root == _mirrorRoot);
        _side.Enter();
        try
        {
            var pages = new TdpTablePages(_pages, _sharedGfnMask, mirror: false);
            RadixTable<TFormat>.FreeTree(ref pages, RootRef(root), _rootLevel);
        }
        finally
        {
            _side.Exit();
        }
        root = 0;
    }

    private TableRef RootRef(ulong root) => root == 0 ? default : TableRef.At(root, _rootLevel);

    private void AddFlush(ulong startGfn, ulong count)
    {
        _side.Enter();
        _flushes.Add(startGfn, count);
        RequestFlush(startGfn, count, all: false); // every vCPU's TLB (ConcurrentTdpMmu.Tlb.cs)
        _side.Exit();
    }

    private void AddFlushAll()
    {
        _side.Enter();
        _flushes.AddAll();
        RequestFlush(0, 0, all: true);
        _side.Exit();
    }

    /// <summary>DEBUG: <paramref name="table"/> is a table page in use at that level of that root.</summary>
    [Conditional("DEBUG")]
    private static void AssertTable(TableRef table, int level, bool mirror)
    {
        TdpPageHeader header = TdpPageAllocator.HeaderOf(table);
        Debug.Assert(header.InUse && header.Level == level && header.Mirror == mirror,
            "a table pointer that is not a table in use at that level of that root");
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

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
