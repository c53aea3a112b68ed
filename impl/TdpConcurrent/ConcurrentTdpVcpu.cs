using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// One vCPU of a <see cref="ConcurrentTdpMmu{TFormat, TSched}"/>: faults (<see cref="Access"/>), its private
/// cache of zeroed table pages (KVM's vcpu->arch.mmu_page_header_cache and friends) and its last-used
/// slot. Used by one thread at a time.
/// </summary>
public sealed class ConcurrentTdpVcpu<TFormat, TSched> : IDisposable
    where TFormat : struct, IPteFormat
    where TSched : struct, ISchedulePoint
{
    private readonly ConcurrentTdpMmu<TFormat, TSched> _mmu;

    // Zeroed pages (addresses), a stack; the pages above _cached were taken by the fault in flight.
    private PageCache _cache;
    private int _cached;

    internal ConcurrentTdpVcpu(ConcurrentTdpMmu<TFormat, TSched> mmu, int id)
    {
        _mmu = mmu;
        Id = id;
    }

    /// <summary>The vCPU's index (its epoch slot).</summary>
    public int Id { get; }

    /// <summary>Why this vCPU's most recent rejected access was rejected.</summary>
    public string? LastRejection { get; internal set; }

    // Fast-fault counters (ConcurrentTdpMmu.FastFault.cs), each written by its own vCPU only.
    internal long FastFaultsTaken;
    internal long FastFaultsRefused;

    // Its simulated TLB and its remote flush requests (ConcurrentTdpMmu.Tlb.cs). TlbRequested is KVM's
    // KVM_REQ_TLB_FLUSH bit: set by any thread with an atomic once PendingFlushes holds the ranges; taken by
    // the vCPU at the start of its next access, as vcpu_enter_guest does. PendingFlushes is guarded by
    // PendingLock, a spin word held for a few stores and never across a schedule point.
    internal VcpuTlb Tlb;
    internal int TlbRequested;
    internal int PendingLock;
    internal TdpFlushLog PendingFlushes;
    internal long TlbHits;
    internal long FlushRequestsServed;
    internal long TlbEntriesFlushed;

    /// <summary>Accesses its TLB answered without a walk.</summary>
    public long TlbHitCount => Volatile.Read(ref TlbHits);

    /// <summary>Remote flush requests it served (entering with one pending).</summary>
    public long FlushRequestsServedCount => Volatile.Read(ref FlushRequestsServed);

    /// <summary>Translations its TLB holds now (for tests; read it while the vCPU does not run).</summary>
    public int TlbEntries => Tlb.Count;

    // KVM's per-vCPU last_used_slot, valid for the slot generation it was found in.
    internal HostMemslot? LastSlot;
    internal int LastSlotGeneration;

    /// <summary>
    /// A guest access to <paramref name="gpa"/>: docs/tdp-model.md's fault handler, run under mmu_lock held
    /// for read, or <see cref="TdpVcpuOutcome.Retry"/> when it lost a race (then fault again). Allocates
    /// nothing on the managed heap.
    /// </summary>
    public TdpVcpuOutcome Access(ulong gpa, AccessType type) => _mmu.Access(this, gpa, type);

    /// <summary>Empties its TLB (for tests: the next access walks). Call it from the vCPU's own thread.</summary>
    internal void ForgetTlb() => Tlb.FlushAll();

    /// <summary>Returns the cached pages to the MMU's allocator.</summary>
    public void Dispose() => _mmu.ReturnCache(this);

    internal int CachedPages => _cached;

    internal void AddToCache(TableRef page)
    {
        Debug.Assert(_cached < PageCache.Capacity, "page cache overflow");
        _cache[_cached++] = page.Address;
    }

    /// <summary>A cached zeroed page as a table at <paramref name="level"/>, its header set (not yet linked anywhere).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal TableRef TakePage(ulong gfn, int level, bool mirror)
    {
        Debug.Assert(_cached > 0, "a fault needed more pages than it topped up");
        TableRef page = TableRef.At(_cache[--_cached], level);
        TdpPageAllocator.HeaderOf(page) = new TdpPageHeader(gfn, level, mirror);
        return page;
    }

    // Where the cache stood when the fault in flight began, or when it last published pages: the pages
    // above it were taken and not linked anywhere yet.
    private int _unlinkedFrom;

    /// <summary>A fault begins: nothing taken yet.</summary>
    internal void BeginFault() => _unlinkedFrom = _cached;

    /// <summary>The pages taken so far are linked (a compare-and-exchange published them): they stay.</summary>
    internal void CommitTaken() => _unlinkedFrom = _cached;

    /// <summary>
    /// A fault that lost its race takes back the pages it took and did not link (a root it installed
    /// earlier in the same fault stays): zeroed again, cached again.
    /// </summary>
    internal void Unwind()
    {
        for (int i = _cached; i < _unlinkedFrom; i++)
        {
            TableRef page = TableRef.At(_cache[i], TdpPageAllocator.HeaderOf(TableRef.At(_cache[i], 1)).Level);
            page.Clear();
        }
        _cached = _unlinkedFrom;
    }

    /// <summary>Pops a page to free, with the level its header has.</summary>
    internal TableRef TakeForFree(out int level)
    {
        ulong address = _cache[--_cached];
        level = TdpPageAllocator.HeaderOf(TableRef.At(address, 1)).Level;
        return TableRef.At(address, level);
    }

    /// <summary>The MMU is being disposed: its slabs take the pages with them.</summary>
    internal void DropCache() => _cached = 0;

    [InlineArray(Capacity)]
    private struct PageCache
    {
        public const int Capacity = TableGeometry.MaxLevel;
        private ulong _element0;
    }
}
