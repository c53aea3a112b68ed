using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Dirty logging turned off zaps the collapsible links (TdpMmu.Collapsible.cs, ConcurrentTdpMmu.Collapsible.cs;
/// KVM's kvm_tdp_mmu_zap_collapsible_sptes): in the single-threaded MMU, and in the concurrent one under the read
/// side, where a fault runs beside the walk, a fault that replaced the link first makes the walk's exchange lose
/// (it reads the link again and passes the huge leaf), the tables go by a deferred free, and every vCPU's TLB
/// drops what the dropped link served. Races forced with <see cref="ScriptedSchedule"/>.
/// </summary>
public sealed class ConcurrentTdpCollapsibleRaceTests : ScriptedTdpFixture
{
    public ConcurrentTdpCollapsibleRaceTests()
    {
        // 16 MiB on 2 MiB host pages, logging: faults map 4 KiB leaves under 2 MiB links.
        CreateVm(maxPageSize: 21);
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
    }

    static TdpAccessOutcome Access(ConcurrentTdpVcpu<EptFormat, ScriptedSchedule> vcpu, ulong gfn, AccessType type) => NotRetried(vcpu.Access(gfn << 12, type));

    [Fact]
    public void The_single_threaded_mmu_frees_the_collapsible_tables_and_the_next_fault_maps_2M()
    {
        using var pool = new NativePagePool();
        using var mmu = new TdpMmu<EptFormat>(sharedBit: null, pool);
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, 0x1000, HostBase, 21, readOnly: false));
        Assert.Equal(SlotStatus.Ok, mmu.SetDirtyLogging(0, true));
        Assert.Equal(Mapped(5, 12, true), mmu.Access(5 << 12, AccessType.Write));
        Assert.Equal(Mapped(0x205, 12, true), mmu.Access(0x205 << 12, AccessType.Read));
        Assert.Equal(5, mmu.TablePages);             // root, 512 GiB and 1 GiB tables, two 4 KiB tables
        mmu.TakeFlushes();
        Assert.Equal(SlotStatus.Ok, mmu.SetDirtyLogging(0, false));
        Assert.Equal(3, mmu.TablePages);
        Assert.Equal("[0x0, 0x400)", mmu.TakeFlushes().ToString());
        Assert.Equal(Mapped(5, 21, true), mmu.Access(5 << 12, AccessType.Read));
    }

    [Fact]
    public void The_zap_runs_under_the_read_side_beside_a_fault_and_retires_the_table_for_a_deferred_free()
    {
        Assert.Equal(Mapped(5, 12, true), Access(_a, 5, AccessType.Write));
        long tables = _mmu.TablePages;
        // At the walk's first exchange (the 2 MiB link over gfn 5), vCPU B faults in another 2 MiB range: under the
        // read side the walk holds too (a write side here would never let B in).
        TdpAccessOutcome b = default;
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 0x205, AccessType.Read));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, false));
        Assert.True(ScriptedSchedule.Fired);
        Assert.Equal(Mapped(0x205, 21, true), b);    // logging is off: B maps 2 MiB
        Assert.Equal(1, _mmu.CollapsibleLinksZapped);
        Assert.Equal(1, _mmu.DeferredTablesRetired);
        Assert.Equal(0, _mmu.DeferredTablesPending);  // freed once the walk's epoch left
        Assert.Equal(tables - 1, _mmu.TablePages);
        Assert.All(Entries().Where(e => e.IsLeaf), e => Assert.Equal(2, e.LeafLevel));
    }

    [Fact]
    public void A_fault_that_replaced_the_link_first_makes_the_walk_s_exchange_lose_and_read_it_again()
    {
        Assert.Equal(Mapped(5, 12, true), Access(_a, 5, AccessType.Write));
        // Between the walk's read of the 2 MiB link and its exchange, B reads gfn 7: logging is off, so B's fault
        // replaces the link with a 2 MiB leaf (frozen, subtree retired, leaf). The walk's exchange loses; it reads
        // the entry again, finds a leaf and passes it.
        TdpAccessOutcome b = default;
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 7, AccessType.Read));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, false));
        Assert.True(ScriptedSchedule.Fired);
        Assert.Equal(Mapped(7, 21, true), b);
        Assert.Equal(1, _mmu.RangeWalkExchangesLost);
        Assert.Equal(0, _mmu.CollapsibleLinksZapped);
        Assert.Equal(1, _mmu.DeferredTablesRetired);  // once, by B
        var leaf = Assert.Single(Entries(), e => e.IsLeaf);
        Assert.Equal((0UL, 2), (leaf.LeafGfn, leaf.LeafLevel));
    }

    [Fact]
    public void Every_vcpu_drops_what_the_dropped_link_served()
    {
        Assert.Equal(Mapped(5, 12, true), Access(_a, 5, AccessType.Write));
        Assert.Equal(Mapped(5, 12, false), Access(_a, 5, AccessType.Write));    // now in A's TLB
        Assert.Equal(1, _a.TlbHitCount);
        long served = _a.FlushRequestsServedCount;
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, false));
        // The 4 KiB translation went with its table: A serves the flush request on entry and faults 2 MiB.
        Assert.Equal(Mapped(5, 21, true), Access(_a, 5, AccessType.Read));
        Assert.Equal(1, _a.TlbHitCount);
        Assert.Equal(served + 1, _a.FlushRequestsServedCount);
    }

    [Fact]
    public void A_link_the_fault_could_not_map_huge_stays()
    {
        Assert.Equal(Mapped(5, 12, true), Access(_a, 5, AccessType.Write));
        Assert.Equal(TdpStatus.Ok, _mmu.TrackWrites(0x1ff));    // a tracked gfn in the same 2 MiB range: no huge leaf there
        Assert.Equal(Mapped(0x205, 12, true), Access(_a, 0x205, AccessType.Read));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, false));
        Assert.Equal(1, _mmu.CollapsibleLinksZapped);
        Assert.Equal([5UL], Entries().Where(e => e.IsLeaf).Select(e => e.LeafGfn));
    }
}
