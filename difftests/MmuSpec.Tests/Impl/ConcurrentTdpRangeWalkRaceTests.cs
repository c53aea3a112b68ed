using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Range walks of the concurrent TDP MMU (ConcurrentTdpMmu.Yield.cs) with the competing vCPU forced in by
/// <see cref="ScriptedSchedule"/>: between a read-side walk's read and its compare-and-exchange (the walk
/// re-reads and decides again, losing nothing), and while a zap has dropped mmu_lock to yield (a fault behind
/// the cursor stays, the entry at the cursor is still zapped: upstream 3a0f64de479c).
/// </summary>
public sealed class ConcurrentTdpRangeWalkRaceTests : ScriptedTdpFixture
{
    // Each test picks its A/D mode and yield interval: the VM is built there.
    void Vm(TdpAccessedDirty ad, int yieldEvery = 0) => CreateVm(maxPageSize: 12, ad: ad, yieldEvery: yieldEvery);

    TdpVcpuOutcome Access(ConcurrentTdpVcpu<EptFormat, ScriptedSchedule> vcpu, ulong gfn, AccessType type) => vcpu.Access(gfn << 12, type);

    List<TdpEntryInfo> Leaves() => Entries().Where(e => e.IsLeaf).OrderBy(l => l.LeafGfn).ToList();

    [Fact]
    public void Dirty_log_write_protection_runs_beside_a_fault_and_a_lost_exchange_reads_the_entry_again()
    {
        Vm(TdpAccessedDirty.Enabled);
        Assert.False(Access(_a, 5, AccessType.Write).IsRetry);
        Assert.Equal(TdpStatus.Ok, _mmu.Age(_a, 0, 0x1000, out bool young));
        Assert.True(young);
        // Between the walk's read of gfn 5's writable, old leaf and its exchange, vCPU B reads it: the CPU
        // sets A, by exchange, under the read side the walk holds too.
        TdpVcpuOutcome b = default;
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 5, AccessType.Read));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.True(ScriptedSchedule.Fired);
        Assert.False(b.IsRetry);
        Assert.Equal(1, _mmu.RangeWalkExchangesLost);
        var leaf = Assert.Single(Leaves());
        Assert.False(leaf.Writable);
        Assert.True(leaf.Accessed);     // B's A survived: the walk exchanged against the value it read again
        Assert.True(leaf.Dirty);
    }

    [Fact]
    public void Aging_under_the_read_side_keeps_a_dirty_bit_set_between_its_read_and_its_exchange()
    {
        // The mistake of upstream ba3a6120a4e7's family: a plain store of the aged value would drop B's D.
        Vm(TdpAccessedDirty.Enabled);
        Assert.False(Access(_a, 5, AccessType.Read).IsRetry);
        TdpVcpuOutcome b = default;
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 5, AccessType.Write));
        Assert.Equal(TdpStatus.Ok, _mmu.Age(_a, 0, 0x1000, out bool young));
        Assert.True(ScriptedSchedule.Fired);
        Assert.False(b.IsRetry);
        Assert.True(young);
        var leaf = Assert.Single(Leaves());
        Assert.False(leaf.Accessed);
        Assert.True(leaf.Dirty);
    }

    [Fact]
    public void A_zap_that_yields_keeps_a_fault_behind_its_cursor_and_zaps_the_entry_at_the_cursor()
    {
        Vm(TdpAccessedDirty.Untracked, yieldEvery: 2);
        for (ulong g = 0; g < 8; g++) Assert.False(Access(_a, g, AccessType.Write).IsRetry);
        // The first yield comes after gfns 0 and 1: with mmu_lock dropped, B faults gfn 0 in again and gfn 9
        // outside the range. The walk restarts at gfn 2, which must not be skipped.
        ScriptedSchedule.At(SchedulePointKind.Other, 1, () =>
        {
            Assert.False(Access(_b, 0, AccessType.Write).IsRetry);
            Assert.False(Access(_b, 9, AccessType.Write).IsRetry);
        });
        Assert.Equal(TdpStatus.Ok, _mmu.ZapRange(0, 8));
        Assert.True(ScriptedSchedule.Fired);
        Assert.Equal([0UL, 9UL], Leaves().Select(l => l.LeafGfn));
        Assert.Equal(3, _mmu.RangeWalkRestarts);    // at gfns 2, 4 and 6: after progress each time, never at the end
    }

    [Fact]
    public void Aging_waits_out_a_walk_restart_and_ages_what_a_fault_mapped_ahead_of_it()
    {
        Vm(TdpAccessedDirty.Enabled, yieldEvery: 1);
        Assert.False(Access(_a, 0, AccessType.Read).IsRetry);
        Assert.False(Access(_a, 1, AccessType.Read).IsRetry);
        Assert.Equal(TdpStatus.Ok, _mmu.Age(_a, 0, 0x1000, out _));
        Assert.False(Access(_a, 3, AccessType.Read).IsRetry);   // only gfn 3 is young now
        // At the walk's first yield (after the old leaf at gfn 0), B touches gfn 1 (young again, ahead of the cursor).
        ScriptedSchedule.At(SchedulePointKind.Other, 1, () => Assert.False(Access(_b, 1, AccessType.Read).IsRetry));
        Assert.Equal(TdpStatus.Ok, _mmu.Age(_a, 0, 4, out bool young));
        Assert.True(ScriptedSchedule.Fired);
        Assert.True(young);
        Assert.All(Leaves(), l => Assert.False(l.Accessed));
        Assert.True(_mmu.RangeWalkRestarts >= 1);
    }

    [Fact]
    public void Range_walks_allocate_nothing()
    {
        Vm(TdpAccessedDirty.Enabled, yieldEvery: 3);
        Assert.Equal(SlotStatus.Ok, _mmu.CreateSlot(1, 0x1000, 0x200, HostBase + 0x1000, 21, readOnly: false));
        for (ulong g = 0; g < 64; g++) Assert.False(Access(_a, g, AccessType.Write).IsRetry);
        Assert.Equal(TdpStatus.Ok, _mmu.Age(_a, 0, 0x1000, out _));   // warm every path once
        Toggle(0);
        Toggle(1);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++)
        {
            _mmu.Age(_a, 0, 0x1000, out _);
            _mmu.TestAge(_a, 0, 0x1000, out _);
            _mmu.ZapRange(0x20, 0x40);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        // Turning logging on allocates the slot's bitmap, nothing more: the same over 64 leaves as over none.
        Assert.Equal(Toggle(1), Toggle(0));
    }

    long Toggle(int slot)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(slot, true));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(slot, false));
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }
}
