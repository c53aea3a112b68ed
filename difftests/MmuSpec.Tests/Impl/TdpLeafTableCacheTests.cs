using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The TDP fault's fast path (impl/Tdp/TdpMmu.Fault.cs) serves accesses from a cached level-1 table.
/// Each test first makes the cache hold gfn <see cref="Gfn"/>'s table (a 4 KiB write fault), then does
/// what must forget it, then accesses a neighbour in the same 2 MiB: a stale cache would answer there
/// with a 4 KiB mapping in a freed or wrong table. The differential tdp-* properties check the rest.
/// </summary>
public sealed class TdpLeafTableCacheTests : IDisposable
{
    const ulong Base = 0x40000, Pages = 0x1000, HostBase = 0x100000, Gfn = Base + 0x200;
    readonly NativePagePool _pool = new();
    readonly ITdpVm _vm;

    public TdpLeafTableCacheTests()
    {
        _vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: null, _pool);
        Assert.Equal(SlotStatus.Ok, _vm.CreateSlot(0, Base, Pages, HostBase, 30, readOnly: false));
        Assert.Equal(TdpStatus.Ok, _vm.SetMaxPageSize(12));
        AssertFault4K(Gfn, AccessType.Write);
        AssertHit4K(Gfn, AccessType.Write); // the fast path's hit
    }

    public void Dispose()
    {
        _vm.Dispose();
        _pool.Dispose();
    }

    [Fact]
    public void Zap_all_then_the_same_gfn_faults_into_new_tables()
    {
        Assert.Equal(TdpStatus.Ok, _vm.ZapAll());
        Assert.Equal(0, _vm.TablePages);
        AssertFault4K(Gfn, AccessType.Write);
        Assert.Equal(4, _vm.TablePages); // root and three tables, not a write into the freed leaf table
        Assert.Equal(1, Leaves());
    }

    [Fact]
    public void Zap_range_then_the_same_gfn_faults_again()
    {
        Assert.Equal(TdpStatus.Ok, _vm.ZapRange(Gfn, Gfn + 1));
        AssertFault4K(Gfn, AccessType.Read);
        AssertHit4K(Gfn, AccessType.Write); // a fault maps writable whatever the access: the slot neither is read-only nor logs
        Assert.Equal(1, Leaves());
    }

    [Fact]
    public void A_larger_policy_maps_the_neighbour_huge()
    {
        Assert.Equal(TdpStatus.Ok, _vm.SetMaxPageSize(21));
        var outcome = _vm.Access((Gfn + 1) << 12, AccessType.Write);
        Assert.Equal(TdpAccessOutcome.Mapped(HostBase + 0x200 << 12 | 0x1000, 21, faulted: true), outcome);
        Assert.Equal(1, Leaves()); // the 2 MiB leaf replaced the table and its 4 KiB leaf
    }

    [Fact]
    public void Dirty_logging_marks_the_neighbours_write()
    {
        Assert.Equal(SlotStatus.Ok, _vm.SetDirtyLogging(0, true));
        AssertFault4K(Gfn + 1, AccessType.Write);
        var dirty = new List<ulong>();
        Assert.Equal(SlotStatus.Ok, _vm.GetDirtyLog(0, dirty));
        Assert.Equal([Gfn + 1], dirty);
    }

    [Fact]
    public void Dirty_logging_maps_a_read_read_only()
    {
        Assert.Equal(SlotStatus.Ok, _vm.SetDirtyLogging(0, true));
        AssertFault4K(Gfn + 1, AccessType.Read);
        AssertFault4K(Gfn + 1, AccessType.Write); // a write-protection fault: the read mapped it read-only
    }

    [Fact]
    public void A_deleted_slot_exits_to_userspace()
    {
        Assert.Equal(SlotStatus.Ok, _vm.DeleteSlot(0));
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((Gfn + 1) << 12, AccessType.Read).Status);
    }

    [Fact]
    public void A_moved_slot_leaves_its_old_gfns_unmapped()
    {
        Assert.Equal(SlotStatus.Ok, _vm.MoveSlot(0, Base + Pages));
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((Gfn + 1) << 12, AccessType.Write).Status);
    }

    [Fact]
    public void A_destroyed_vm_refuses_an_access_in_the_cached_table()
    {
        _vm.Dispose();
        Assert.Throws<ObjectDisposedException>(() => _vm.Access((Gfn + 1) << 12, AccessType.Read));
    }

    [Fact]
    public void An_unknown_access_type_is_rejected_in_the_cached_table()
    {
        Assert.Equal(TdpAccessStatus.Rejected, _vm.Access(Gfn << 12, (AccessType)7).Status);
        Assert.Equal(TdpAccessStatus.Rejected, _vm.Access((Gfn + 1) << 12, (AccessType)7).Status);
    }

    /// <summary>Only a slot covering the whole 2 MiB may be cached: past a slot's end is MMIO, even beside a mapped gfn.</summary>
    [Fact]
    public void A_slot_covering_part_of_the_table_is_not_cached()
    {
        const ulong partBase = Base + Pages, partHost = HostBase + Pages;
        Assert.Equal(SlotStatus.Ok, _vm.CreateSlot(1, partBase, 0x100, partHost, 12, readOnly: false));
        AssertFault4K(partBase + 0xFF, AccessType.Write);
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((partBase + 0x100) << 12, AccessType.Write).Status);
    }

    [Fact]
    public void A_read_only_slot_is_not_cached()
    {
        const ulong roBase = Base + Pages, roHost = HostBase + Pages;
        Assert.Equal(SlotStatus.Ok, _vm.CreateSlot(1, roBase, 0x200, roHost, 12, readOnly: true));
        AssertFault4K(roBase, AccessType.Read);
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((roBase + 1) << 12, AccessType.Write).Status);
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access(roBase << 12, AccessType.Write).Status);
    }

    /// <summary>The cache is keyed by the frame with the shared bit, so the direct and the mirror root never share it.</summary>
    [Fact]
    public void The_shared_and_private_gpa_of_a_gfn_fault_in_their_own_roots()
    {
        using var pool = new NativePagePool();
        using var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: 47, pool);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, Base, Pages, HostBase, 30, readOnly: false));
        Assert.Equal(TdpStatus.Ok, vm.SetMaxPageSize(12));
        const ulong shared = 1UL << 47;
        Assert.True(vm.Access(Gfn << 12, AccessType.Write).Faulted);
        Assert.True(vm.Access(shared | (Gfn + 1) << 12, AccessType.Write).Faulted);
        Assert.True(vm.Access(shared | Gfn << 12, AccessType.Write).Faulted); // the shared table was cached last, not the private one
        Assert.True(vm.Access((Gfn + 1) << 12, AccessType.Write).Faulted);
        Assert.Equal(8, vm.TablePages);
    }

    void AssertFault4K(ulong gfn, AccessType type) =>
        Assert.Equal(TdpAccessOutcome.Mapped((HostBase + gfn - Base) << 12 | 0x123, 12, faulted: true), _vm.Access(gfn << 12 | 0x123, type));

    void AssertHit4K(ulong gfn, AccessType type) =>
        Assert.Equal(TdpAccessOutcome.Mapped((HostBase + gfn - Base) << 12 | 0x456, 12, faulted: false), _vm.Access(gfn << 12 | 0x456, type));

    int Leaves()
    {
        int leaves = 0;
        _vm.VisitPages((_, entries) => leaves += entries.Count(e => e.IsLeaf));
        return leaves;
    }
}
