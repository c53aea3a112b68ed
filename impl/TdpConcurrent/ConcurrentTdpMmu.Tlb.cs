using System.Runtime.CompilerServices;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// Per-vCPU TLBs and remote flush requests (docs/tdp-concurrency.md, "Per-vCPU TLBs"). Each vCPU answers an
/// access from its <see cref="VcpuTlb"/> when it can, and fills it when it translated. A flush the MMU owes
/// (<see cref="AddFlush"/>) is a request to every vCPU, as kvm_flush_remote_tlbs makes KVM_REQ_TLB_FLUSH
/// (or a ranged flush) on each: the ranges join the vCPU's pending ones under the side lock, then its request
/// bit is set with an atomic. The flushing operation returns only after that, and a vCPU serves its requests at
/// the start of its next access (vcpu_enter_guest), so an access that begins after the operation returned
/// sees the flush; one already running may still use what it cached (spec/Tdp/VcpuTlbs.cs allows exactly that).
/// <para>
/// The TLB stays empty when the VM tracks accessed/dirty bits: a hardware hit sets no bit a walk would set,
/// and the spec's access sets them.
/// </para>
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
    /// <summary>TLB hits of every vCPU (for tests and coverage; read it while no vCPU runs).</summary>
    public long TlbHits
    {
        get
        {
            long n = 0;
            for (int i = 0; i < Volatile.Read(ref _vcpuCount); i++)
                n += _vcpus[i]!.TlbHitCount;
            return n;
        }
    }

    /// <summary>Remote flush requests served by every vCPU.</summary>
    public long FlushRequestsServed
    {
        get
        {
            long n = 0;
            for (int i = 0; i < Volatile.Read(ref _vcpuCount); i++)
                n += _vcpus[i]!.FlushRequestsServedCount;
            return n;
        }
    }

    /// <summary>Translations dropped from the vCPUs' TLBs by the flush requests they served.</summary>
    public long TlbEntriesFlushed
    {
        get
        {
            long n = 0;
            for (int i = 0; i < Volatile.Read(ref _vcpuCount); i++)
                n += Volatile.Read(ref _vcpus[i]!.TlbEntriesFlushed);
            return n;
        }
    }

    /// <summary>
    /// What the tables map <paramref name="gpa"/> to now, by a plain walk from the root (false for a hole or a
    /// frozen entry). For tests: call it while no vCPU runs, or from a systematic test's thread while the others
    /// are stopped at schedule points (the walk follows only linked tables, which are never freed).
    /// </summary>
    public bool TryTranslate(ulong gpa, out ulong hpa, out int pageShift, out bool writable)
    {
        hpa = 0;
        pageShift = 0;
        writable = false;
        ulong frame = gpa >> PageShift;
        bool mirror = _sharedGfnMask != 0 && (frame & _sharedGfnMask) == 0;
        ulong root = Volatile.Read(ref mirror ? ref _mirrorRoot : ref _directRoot);
        if ((gpa >> _gpaBits) != 0 || root == 0)
            return false;
        TableRef table = TableRef.At(root, _rootLevel);
        for (int level = _rootLevel; level > 0; level--)
        {
            ulong value = Volatile.Read(ref table[Index(frame, level)]);
            if (value == TFormat.FrozenEntry || !TFormat.IsPresent(value))
                return false;
            if (TFormat.IsLeaf(value, level))
            {
                hpa = ((TFormat.LeafPfn(value) + (frame & (FramesPerEntry(level) - 1))) << PageShift) | (gpa & PageOffsetMask);
                pageShift = PageShiftOf(level);
                writable = TFormat.IsWritable(value);
                return true;
            }
            table = TableRef.At(TFormat.TableAddress(value), level - 1);
        }
        return false;
    }

    /// <summary>The vCPU enters: its pending flushes first, then its TLB, which answers when it holds a translation that allows the access.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryTlb(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gpa, AccessType type, out TdpVcpuOutcome hit)
    {
        // Entering the guest is a schedule point: a systematic test can run the vCPU between a change and its request.
        TSched.Yield(SchedulePointKind.TlbRequest);
        if (Volatile.Read(ref vcpu.TlbRequested) != 0)
            ServeFlushRequests(vcpu);
        ulong frame = gpa >> PageShift;
        if (_accessedMask == 0 && vcpu.Tlb.TryHit(frame, type == AccessType.Write, out ulong hostPfn, out int level))
        {
            vcpu.TlbHits++;
            hit = TdpAccessOutcome.Mapped((hostPfn << PageShift) | (gpa & PageOffsetMask), PageShiftOf(level), faulted: false);
            return true;
        }
        hit = default;
        return false;
    }

    /// <summary>What the access translated goes into the vCPU's TLB (a read leaves it read-only there: the walk's leaf may not be writable).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TdpVcpuOutcome Cache(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gpa, AccessType type, TdpVcpuOutcome outcome)
    {
        if (_accessedMask == 0 && !outcome.IsRetry && outcome.Access.Status == TdpAccessStatus.Mapped)
        {
            int level = (outcome.Access.PageShift - PageShift) / IndexBits + 1;
            vcpu.Tlb.Fill(gpa >> PageShift, outcome.Access.Hpa >> PageShift, level, type == AccessType.Write);
        }
        return outcome;
    }

    /// <summary>kvm_check_request(KVM_REQ_TLB_FLUSH) and the flush: the pending ranges (or everything) go from the TLB.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ServeFlushRequests(ConcurrentTdpVcpu<TFormat, TSched> vcpu)
    {
        Interlocked.Exchange(ref vcpu.TlbRequested, 0);
        LockPending(vcpu);
        ref TdpFlushLog pending = ref vcpu.PendingFlushes;
        int held = vcpu.Tlb.Count;
        if (pending.FlushedAll)
            vcpu.Tlb.FlushAll();
        for (int i = 0; i < pending.Count; i++)
            vcpu.Tlb.Flush(pending[i].StartGfn, pending[i].EndGfn, _sharedGfnMask);
        pending.Clear();
        Volatile.Write(ref vcpu.PendingLock, 0);
        vcpu.FlushRequestsServed++;
        vcpu.TlbEntriesFlushed += held - vcpu.Tlb.Count;
    }

    /// <summary>
    /// kvm_make_all_cpus_request: every vCPU's request for gfns [startGfn, startGfn + count), or for everything
    /// (<paramref name="all"/>). Under the side lock (flushers are serialised); the request bit goes up after the ranges.
    /// </summary>
    private void RequestFlush(ulong startGfn, ulong count, bool all)
    {
        int vcpus = Volatile.Read(ref _vcpuCount);
        for (int i = 0; i < vcpus; i++)
        {
            ConcurrentTdpVcpu<TFormat, TSched> vcpu = _vcpus[i]!;
            // One vCPU at a time, as kvm_make_all_cpus_request: a vCPU may enter before its own request is up.
            TSched.Yield(SchedulePointKind.TlbRequest);
            LockPending(vcpu);
            if (all)
                vcpu.PendingFlushes.AddAll();
            else
                vcpu.PendingFlushes.Add(startGfn, count);
            Volatile.Write(ref vcpu.PendingLock, 0);
            Interlocked.Exchange(ref vcpu.TlbRequested, 1);
        }
    }

    /// <summary>
    /// The vCPU's pending-flush word. No schedule point while it is held (a systematic scheduler switches threads
    /// only at one, so no thread it stopped holds it), and it is held for a few stores: a spin is enough.
    /// </summary>
    private static void LockPending(ConcurrentTdpVcpu<TFormat, TSched> vcpu)
    {
        SpinWait spin = default;
        while (Interlocked.CompareExchange(ref vcpu.PendingLock, 1, 0) != 0)
            spin.SpinOnce();
    }
}
