using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Per-vCPU TLBs and remote flush requests of the concurrent TDP MMU (ConcurrentTdpMmu.Tlb.cs,
/// docs/tdp-concurrency.md, "Per-vCPU TLBs"): a vCPU answers from its TLB what it translated before, a flush
/// the MMU owes is a request every vCPU serves when it next enters, and a vCPU that enters between a change
/// and its request may still use what it cached. Races forced with <see cref="ScriptedSchedule"/>.
/// </summary>
public sealed class ConcurrentTdpTlbTests : ScriptedTdpFixture
{
    // The MMU's own policy: faults map 2 MiB leaves, so neighbouring gfns hit one TLB entry.
    public ConcurrentTdpTlbTests() => CreateVm(maxPageSize: null);

    static TdpAccessOutcome Access(ConcurrentTdpVcpu<EptFormat, ScriptedSchedule> vcpu, ulong gfn, AccessType type) => NotRetried(vcpu.Access(gfn << 12, type));

    bool Maps(ulong gfn) => _mmu.TryTranslate(gfn << 12, out _, out _, out _);

    [Fact]
    public void A_vcpu_answers_what_it_translated_from_its_tlb_and_a_write_through_a_read_only_entry_walks()
    {
        Assert.Equal(Mapped(5, 21, true), Access(_a, 5, AccessType.Read));
        Assert.Equal(Mapped(7, 21, false), Access(_a, 7, AccessType.Read)); // the same 2 MiB leaf
        Assert.Equal(1, _a.TlbHitCount);
        Assert.Equal(Mapped(7, 21, false), Access(_a, 7, AccessType.Write)); // cached read-only: the walk answers
        Assert.Equal(1, _a.TlbHitCount);
        Assert.Equal(Mapped(9, 21, false), Access(_a, 9, AccessType.Write)); // cached writable by the write
        Assert.Equal(2, _a.TlbHitCount);
        Assert.Equal(0, _b.TlbHitCount);
    }

    [Fact]
    public void A_zap_requests_a_flush_that_every_vcpu_serves_when_it_next_enters()
    {
        Assert.Equal(Mapped(5, 21, true), Access(_a, 5, AccessType.Read));
        Assert.Equal(Mapped(0x201, 21, true), Access(_b, 0x201, AccessType.Read));
        Assert.Equal(TdpStatus.Ok, _mmu.ZapRange(0, 0x200));
        Assert.Equal(1, _a.TlbEntries); // not served before the vCPU enters
        Assert.Equal(Mapped(7, 21, true), Access(_a, 7, AccessType.Read)); // served first: the access faults
        Assert.Equal((1L, 1L), (_a.FlushRequestsServedCount, _mmu.TlbEntriesFlushed));
        Assert.Equal(Mapped(0x203, 21, false), Access(_b, 0x203, AccessType.Read)); // B's request spared its other leaf
        Assert.Equal((1L, 1L), (_b.FlushRequestsServedCount, _b.TlbHitCount));
    }

    [Fact]
    public void A_vcpu_entering_between_a_zap_and_its_flush_request_still_uses_its_entry_and_the_next_entry_does_not()
    {
        Assert.Equal(Mapped(5, 21, true), Access(_a, 5, AccessType.Read));
        TdpAccessOutcome during = default;
        bool mappedDuring = true;
        // The zap takes mmu_lock, waits for each vCPU's lockless walkers (one point per vCPU), clears the leaf and
        // takes the side lock for its flush: the fourth point is after the clear and before the requests.
        ScriptedSchedule.At(SchedulePointKind.LockAcquire, 4, () =>
        {
            mappedDuring = Maps(7);
            during = Access(_a, 7, AccessType.Read);
        });
        Assert.Equal(TdpStatus.Ok, _mmu.ZapRange(0, 0x200));
        Assert.True(ScriptedSchedule.Fired);
        Assert.False(mappedDuring);
        Assert.Equal(Mapped(7, 21, false), during); // a stale hit: the zap had not returned
        Assert.Equal(Mapped(7, 21, true), Access(_a, 7, AccessType.Read)); // after it returned: served, faults
        Assert.Equal(1, _a.FlushRequestsServedCount);
    }

    [Fact]
    public void A_fault_that_drops_a_huge_leaf_for_dirty_logging_makes_other_vcpus_flush_it()
    {
        Assert.Equal(Mapped(5, 21, true), Access(_a, 5, AccessType.Read));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.Equal(Mapped(7, 21, false), Access(_a, 7, AccessType.Read)); // the read-only 2 MiB leaf, cached again
        // B's write drops the huge leaf (frozen, flushed, cleared) and maps 4 KiB below.
        Assert.Equal(Mapped(9, 12, true), Access(_b, 9, AccessType.Write));
        Assert.False(Maps(7));
        // A's next access serves B's request: gfn 0xf is not mapped any more, so A faults it in at 4 KiB.
        Assert.Equal(Mapped(0xf, 12, true), Access(_a, 0xf, AccessType.Read));
    }

    [Fact]
    public void A_write_through_an_entry_dirty_logging_protected_faults_and_is_logged()
    {
        Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(12));
        Assert.Equal(Mapped(5, 12, true), Access(_a, 5, AccessType.Write));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.Equal(Mapped(5, 12, true), Access(_a, 5, AccessType.Write)); // not a hit: a write-protection fault
        var dirty = new List<ulong>();
        Assert.Equal(SlotStatus.Ok, _mmu.GetDirtyLog(0, dirty));
        Assert.Equal([5UL], dirty);
    }

    [Fact]
    public void With_accessed_dirty_tracking_the_tlb_stays_empty()
    {
        using var pool = new NativePagePool();
        using var mmu = new ConcurrentTdpMmu<EptFormat, ScriptedSchedule>(sharedBit: null, pool, TdpAccessedDirty.Enabled);
        using var vcpu = mmu.CreateVcpu();
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, 0x1000, HostBase, 21, readOnly: false));
        Assert.Equal(Mapped(5, 21, true), Access(vcpu, 5, AccessType.Read));
        Assert.Equal(TdpAccessStatus.Mapped, Access(vcpu, 5, AccessType.Read).Status);
        Assert.Equal((0L, 0), (vcpu.TlbHitCount, vcpu.TlbEntries));
    }
}
