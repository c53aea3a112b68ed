using System.Runtime.CompilerServices;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Tdp;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// KVM's fast_page_fault (mmu.c) on the TDP MMU: a write to a present leaf is answered without mmu_lock,
/// inside the walker's epoch (kvm_tdp_mmu_walk_lockless_begin, an RCU read section). A writable leaf is
/// a hit; a read-only leaf the MMU may make writable (MMU-writable set, <see cref="TdpLeaf{TFormat}.FastFixed"/>)
/// becomes writable by one compare-and-exchange against the value read (fast_pf_fix_direct_spte), and the
/// gfn is logged when its slot logs. Everything else takes the slow path under the read side, which
/// answers as it always did: no slot, a read-only slot, a hole or a frozen entry, a leaf that is not
/// MMU-writable (write tracking), a huge leaf of a logging slot (its other 4 KiB pages would go unlogged;
/// the slow path splits it), or a lost exchange.
/// <para>
/// The write side excludes fast faults: it raises <see cref="LocklessWalkers{TSched}"/>'s flag and waits
/// for the fast faults in flight, and a fast fault that sees the flag takes the slow path (which waits for
/// mmu_lock). KVM gets the same from SRCU (a memslot change waits for every vCPU's read section) and RCU
/// (tables freed under the write lock only after a grace period); operations under the read side race
/// with fast faults only through compare-and-exchange.
/// </para>
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
    private readonly LocklessWalkers<TSched> _lockless = new();

    // Set (and never cleared) when a slot first turns dirty logging on or a gfn is first write-tracked: before
    // that no leaf is read-only in a writable slot, so a write finds a hole or a writable leaf, which the slow
    // path serves as well. Checked
    // before the fast path's epoch and flag stores and its walk: a write miss without it paid a second walk
    // and a fence (ConcurrentTdpFaultBenchmarks: 1 vCPU 47.6 ns with, ~30 ns without). A stale false only
    // sends a write to the slow path, which answers everything; the fast-fault tests turn logging on and
    // count fast faults, so a flag that is never set fails them.
    private volatile bool _fastFaultsUseful;

    /// <summary>Write faults fixed without mmu_lock, over every vCPU (read when no vCPU runs).</summary>
    public long FastFaultsTaken => SumVcpus(static v => v.FastFaultsTaken);

    /// <summary>Write faults on a present read-only leaf the fast path left to the slow path (not MMU-writable, a
    /// huge leaf of a logging slot, or a lost exchange).</summary>
    public long FastFaultsRefused => SumVcpus(static v => v.FastFaultsRefused);

    private long SumVcpus(Func<ConcurrentTdpVcpu<TFormat, TSched>, long> count)
    {
        long sum = 0;
        for (int i = 0; i < Volatile.Read(ref _vcpuCount); i++)
            sum += count(_vcpus[i]!);
        return sum;
    }

    /// <summary>
    /// The fast path of a write (page_fault_can_be_fast: a write to a present leaf). True with the outcome
    /// when it answered; false when the slow path must (nothing changed).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryFastFault(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gpa, out TdpVcpuOutcome outcome)
    {
        outcome = default;
        _epochs.Enter(vcpu.Id);
        // The flag's store and its fence order the epoch too before the walk's first read (Epochs' rule).
        if (!_lockless.TryEnter(vcpu.Id))
        {
            _epochs.Exit(vcpu.Id);
            return false; // a write-side operation runs: the slow path waits for it
        }
        try
        {
            return FastFault(vcpu, gpa, out outcome);
        }
        finally
        {
            _lockless.Exit(vcpu.Id);
            DebugWalkDone(vcpu.Id);
            _epochs.Exit(vcpu.Id);
        }
    }

    private bool FastFault(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gpa, out TdpVcpuOutcome outcome)
    {
        outcome = default;
        // Two states the fast path leaves to the slow path (both change only under the write side, which no
        // fast fault overlaps): accessed/dirty kept, where an access also sets A/D or is an access-flag fault
        // (TouchHit); and a host invalidation in progress, where the spec retries every fault in the retry
        // range, the hull of the open ranges, which may hold present leaves between them (mmu_invalidate_retry_gfn).
        if (_accessedDirty != TdpAccessedDirty.Untracked || _notifier.InProgress != 0)
            return false;
        ulong frame = gpa >> PageShift;
        ulong gfn = frame & ~_sharedGfnMask;
        bool mirror = _sharedGfnMask != 0 && frame == gfn;
        // Slots change only under the write side, which no fast fault overlaps.
        if (FindSlot(vcpu, gfn) is not HostMemslot slot || slot.ReadOnly)
            return false; // the slow path answers the exit

        TSched.Yield(SchedulePointKind.SpteRead);
        ulong root = mirror ? Volatile.Read(ref _mirrorRoot) : Volatile.Read(ref _directRoot);
        if (root == 0)
            return false;
        TableRef table = TableRef.At(root, _rootLevel);
        AssertTable(table, _rootLevel, mirror);
        int level = _rootLevel;
        PteRef pte;
        ulong value;
        while (true)
        {
            pte = new PteRef(table, Index(frame, level), level, AlignDown(frame, level), 0);
            TSched.Yield(SchedulePointKind.SpteRead);
            value = pte.CurrentAcquire;
            if (!TFormat.IsPresent(value))
                return false; // a hole, or frozen (never present): the slow path maps or retries
            if (TFormat.IsLeaf(value, level))
                break;
            level--;
            table = TableRef.At(TFormat.TableAddress(value), level);
            AssertTable(table, level, mirror);
            DebugWalking(vcpu.Id, table, level);
        }

        ulong hpa = ((TFormat.LeafPfn(value) + (frame & (FramesPerEntry(level) - 1))) << PageShift) | (gpa & PageOffsetMask);
        if (TFormat.IsWritable(value))
        {
            outcome = TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: false); // step 4: a hit
            return true;
        }
        // Step 5 without the lock: only where MMU-writable allows it, and never for a huge leaf of a
        // logging slot (fast_page_fault: the bitmap is per 4 KiB page).
        ulong fixedLeaf = TdpLeaf<TFormat>.FastFixed(value);
        if (fixedLeaf == 0 || (level > 1 && slot.DirtyLogging) || !TryExchange(pte.WithValue(value), fixedLeaf))
        {
            vcpu.FastFaultsRefused++;
            return false;
        }
        MarkDirty(slot, gfn); // after the exchange, as mark_page_dirty_in_slot follows it; only a logging slot has a bitmap
        vcpu.FastFaultsTaken++;
        outcome = TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: true);
        return true;
    }
}

/// <summary>
/// Which vCPUs are inside a fast fault, and whether the write side runs: each vCPU raises its own flag and
/// then reads the writer's; a writer raises its flag and then waits for every vCPU's to fall. Both sides
/// store, fence, then read, so at least one sees the other: a fast fault never overlaps the write side.
/// </summary>
internal sealed class LocklessWalkers<TSched> where TSched : struct, ISchedulePoint
{
    // Flags 128 bytes apart, as the epochs.
    private const int Stride = 16;

    private readonly int[] _inside = new int[Epochs<TSched>.MaxVcpus * Stride];
    private int _writer;

    /// <summary>False when the write side runs (the vCPU's flag is down again).</summary>
    public bool TryEnter(int vcpu)
    {
        TSched.Yield(SchedulePointKind.Other); // not mmu_lock: a fast fault takes no lock
        Interlocked.Exchange(ref _inside[vcpu * Stride], 1); // a full fence before the writer's flag is read
        if (Volatile.Read(ref _writer) == 0)
            return true;
        Volatile.Write(ref _inside[vcpu * Stride], 0);
        return false;
    }

    public void Exit(int vcpu)
    {
        TSched.Yield(SchedulePointKind.Other);
        Volatile.Write(ref _inside[vcpu * Stride], 0); // release: the fast fault's accesses come before
    }

    /// <summary>Under mmu_lock held for write: keeps new fast faults out and waits for those inside.</summary>
    public void BlockAndDrain(int vcpus)
    {
        Interlocked.Exchange(ref _writer, 1);
        for (int i = 0; i < vcpus; i++)
        {
            SpinWait spin = default;
            while (true)
            {
                TSched.Yield(SchedulePointKind.LockAcquire);
                if (Volatile.Read(ref _inside[i * Stride]) == 0)
                    break;
                MmuLock<TSched>.Spin(ref spin);
            }
        }
    }

    /// <summary>Before mmu_lock's write side is released.</summary>
    public void Unblock() => Volatile.Write(ref _writer, 0);

    /// <summary>Whether the write side keeps fast faults out (for DEBUG checks).</summary>
    public bool IsBlocked => Volatile.Read(ref _writer) != 0;
}
