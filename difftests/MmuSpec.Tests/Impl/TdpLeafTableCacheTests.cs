using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The TDP fault's fast paths (impl/Tdp/TdpMmu.Fault.cs) serve accesses in a cached slot (every gfn
/// 4 KiB, writable, not logging) from a cached level-2 table. Each test first makes the cache hold gfn
/// <see cref="Gfn"/>'s slot and tables (a 4 KiB write fault and a hit), then does what must forget it,
/// then accesses a neighbour in the same 2 MiB or GiB: a stale cache would answer there with a 4 KiB
/// mapping in a freed or wrong table. The differential tdp-* properties check the rest.
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

    // ---- through the cached level-2 table ----
    // Each test first leaves the cache holding the slot and its GiB's level-2 table, with two leaf tables
    // under it (the last access a hit in one, through the inline path), then does what must forget it,
    // then accesses gfns of the other leaf table or of a third 2 MiB of the same GiB: a stale cache would
    // answer from a freed table, a wrong slot or a stale decision.

    const ulong Other = Base + 0x800, Third = Base + 0xC00; // other 2 MiB of the slot, in Gfn's GiB

    void CacheTheGig()
    {
        AssertFault4K(Other, AccessType.Write);
        AssertHit4K(Gfn, AccessType.Read);
        AssertHit4K(Other, AccessType.Read);
    }

    [Fact]
    public void Zap_all_then_a_fault_under_the_cached_level_2_table_builds_new_tables()
    {
        CacheTheGig();
        Assert.Equal(TdpStatus.Ok, _vm.ZapAll());
        AssertFault4K(Other + 1, AccessType.Write);
        Assert.Equal(4, _vm.TablePages); // not a leaf stored into the freed level-2 or leaf table
        Assert.Equal(1, Leaves());
        AssertFault4K(Gfn, AccessType.Read);
        Assert.Equal(5, _vm.TablePages);
    }

    [Fact]
    public void Zap_range_then_the_other_leaf_table_faults_again()
    {
        CacheTheGig();
        Assert.Equal(TdpStatus.Ok, _vm.ZapRange(Other, Other + 1));
        AssertFault4K(Other, AccessType.Read);
        AssertHit4K(Gfn, AccessType.Write);
        Assert.Equal(2, Leaves());
    }

    [Fact]
    public void A_moved_slot_leaves_the_whole_gig_unmapped()
    {
        CacheTheGig();
        Assert.Equal(SlotStatus.Ok, _vm.MoveSlot(0, Base + Pages));
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access(Other << 12, AccessType.Read).Status);
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access(Third << 12, AccessType.Write).Status);
        // The slot's new frames map from its new place (host frames unchanged).
        Assert.Equal(TdpAccessOutcome.Mapped((HostBase + 0x800) << 12, 12, faulted: true), _vm.Access((Other + Pages) << 12, AccessType.Write));
    }

    [Fact]
    public void A_deleted_slot_exits_to_userspace_in_the_whole_gig()
    {
        CacheTheGig();
        Assert.Equal(SlotStatus.Ok, _vm.DeleteSlot(0));
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access(Other << 12, AccessType.Read).Status);
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access(Third << 12, AccessType.Read).Status);
    }

    [Fact]
    public void Dirty_logging_maps_the_other_leaf_tables_read_only_and_logs_their_writes()
    {
        CacheTheGig();
        Assert.Equal(SlotStatus.Ok, _vm.SetDirtyLogging(0, true));
        AssertFault4K(Other + 1, AccessType.Read);  // read-only: the slot logs
        AssertFault4K(Other + 1, AccessType.Write); // a write-protection fault, logged
        AssertFault4K(Other, AccessType.Write);     // write-protected when logging started
        AssertFault4K(Third, AccessType.Write);
        var dirty = new List<ulong>();
        Assert.Equal(SlotStatus.Ok, _vm.GetDirtyLog(0, dirty));
        Assert.Equal([Other, Other + 1, Third], dirty.Order());
    }

    [Fact]
    public void A_write_protected_leaf_left_by_dirty_logging_faults_once_through_the_gig()
    {
        CacheTheGig();
        Assert.Equal(SlotStatus.Ok, _vm.SetDirtyLogging(0, true));
        Assert.Equal(SlotStatus.Ok, _vm.SetDirtyLogging(0, false)); // the leaves stay write-protected
        AssertHit4K(Gfn, AccessType.Read); // caches the slot and the gig again
        AssertFault4K(Other, AccessType.Write);
        AssertHit4K(Other, AccessType.Write);
    }

    [Fact]
    public void A_larger_policy_maps_a_third_2_MiB_huge_and_replaces_a_leaf_table()
    {
        CacheTheGig();
        Assert.Equal(TdpStatus.Ok, _vm.SetMaxPageSize(21));
        Assert.Equal(TdpAccessOutcome.Mapped((HostBase + 0xC00) << 12 | 0x5000, 21, faulted: true), _vm.Access((Third + 5) << 12, AccessType.Read));
        Assert.Equal(TdpAccessOutcome.Mapped((HostBase + 0x800) << 12 | 0x7000, 21, faulted: true), _vm.Access((Other + 7) << 12, AccessType.Read));
        Assert.Equal(3, Leaves()); // Gfn's 4 KiB leaf and the two 2 MiB leaves: Other's 4 KiB leaf went with its table
    }

    /// <summary>A 2 MiB leaf from an earlier policy stays in the cached GiB: the fast path must see a leaf there, not a table.</summary>
    [Fact]
    public void A_huge_leaf_under_the_cached_level_2_table_is_a_2_MiB_hit()
    {
        Assert.Equal(TdpStatus.Ok, _vm.SetMaxPageSize(21));
        Assert.True(_vm.Access(Third << 12, AccessType.Read).Faulted);
        Assert.Equal(TdpStatus.Ok, _vm.SetMaxPageSize(12));
        CacheTheGig();
        var huge = TdpAccessOutcome.Mapped((HostBase + 0xC00) << 12 | 0x3123, 21, faulted: false);
        Assert.Equal(huge, _vm.Access((Third + 3) << 12 | 0x123, AccessType.Write));
        AssertHit4K(Other, AccessType.Read);
        Assert.Equal(huge, _vm.Access((Third + 3) << 12 | 0x123, AccessType.Read));
    }

    /// <summary>The level-2 table covers the whole GiB, the slot only its first 16 MiB: past the slot's end is MMIO.</summary>
    [Fact]
    public void Past_the_slots_end_in_the_cached_gig_is_mmio()
    {
        CacheTheGig();
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((Base + Pages) << 12, AccessType.Read).Status);
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((Base + 0x3_FFFF) << 12, AccessType.Write).Status);
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((Base - 1) << 12, AccessType.Write).Status);
        Assert.Equal(2, Leaves());
    }

    /// <summary>A slot ending inside a leaf table of the cached GiB: the next gfn, under that very table, is MMIO.</summary>
    [Fact]
    public void Past_a_slots_end_inside_its_last_leaf_table_is_mmio()
    {
        const ulong shortBase = Base + 0x2000, shortHost = 0x300000;
        Assert.Equal(SlotStatus.Ok, _vm.CreateSlot(1, shortBase, 0x100, shortHost, 12, readOnly: false));
        Assert.Equal(TdpAccessOutcome.Mapped((shortHost + 0xFF) << 12, 12, faulted: true), _vm.Access((shortBase + 0xFF) << 12, AccessType.Write));
        Assert.Equal(TdpAccessOutcome.Mapped((shortHost + 0xFF) << 12, 12, faulted: false), _vm.Access((shortBase + 0xFF) << 12, AccessType.Read));
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((shortBase + 0x100) << 12, AccessType.Write).Status);
        Assert.Equal(TdpAccessStatus.MmioExit, _vm.Access((shortBase + 0x1FF) << 12, AccessType.Read).Status);
        Assert.Equal(2, Leaves());
    }

    /// <summary>A second slot in the same GiB, its host frames elsewhere: each gfn maps its own slot's frame.</summary>
    [Fact]
    public void A_second_slot_in_the_cached_gig_maps_its_own_host_frames()
    {
        CacheTheGig();
        const ulong secondBase = Base + 0x2000, secondHost = 0x300000;
        Assert.Equal(SlotStatus.Ok, _vm.CreateSlot(1, secondBase, 0x1000, secondHost, 12, readOnly: false));
        Assert.Equal(TdpAccessOutcome.Mapped((secondHost + 0x10) << 12, 12, faulted: true), _vm.Access((secondBase + 0x10) << 12, AccessType.Write));
        Assert.Equal(TdpAccessOutcome.Mapped((secondHost + 0x810) << 12, 12, faulted: true), _vm.Access((secondBase + 0x810) << 12, AccessType.Read));
        AssertFault4K(Other + 2, AccessType.Write); // slot 0, under a leaf table of the cached GiB: slot 0's host frames
        AssertFault4K(Third, AccessType.Write);
        Assert.Equal(TdpAccessOutcome.Mapped((secondHost + 0x811) << 12, 12, faulted: true), _vm.Access((secondBase + 0x811) << 12, AccessType.Read));
    }

    [Fact]
    public void A_destroyed_vm_refuses_an_access_under_the_cached_level_2_table()
    {
        CacheTheGig();
        _vm.Dispose();
        Assert.Throws<ObjectDisposedException>(() => _vm.Access(Other << 12, AccessType.Read));
        Assert.Throws<ObjectDisposedException>(() => _vm.Access(Third << 12, AccessType.Read));
    }

    /// <summary>The private gpas cached the mirror root's level-2 table: a shared gpa of the same gfns faults in the direct root.</summary>
    [Fact]
    public void A_shared_gpa_beside_a_cached_private_gig_faults_in_the_direct_root()
    {
        using var pool = new NativePagePool();
        using var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: 47, pool);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, Base, Pages, HostBase, 30, readOnly: false));
        Assert.Equal(TdpStatus.Ok, vm.SetMaxPageSize(12));
        const ulong shared = 1UL << 47;
        Assert.True(vm.Access(Gfn << 12, AccessType.Write).Faulted);
        Assert.True(vm.Access(Other << 12, AccessType.Write).Faulted);
        Assert.False(vm.Access(Gfn << 12, AccessType.Read).Faulted);
        Assert.True(vm.Access(shared | Other << 12, AccessType.Write).Faulted);
        Assert.True(vm.Access(shared | Gfn << 12, AccessType.Write).Faulted);
        Assert.False(vm.Access(Other << 12, AccessType.Write).Faulted);
        Assert.True(vm.Access(Third << 12, AccessType.Write).Faulted);
        Assert.True(vm.Access(shared | Third << 12, AccessType.Write).Faulted);
        Assert.Equal(2 * 6, vm.TablePages); // each root: root, level 3, level 2 and three leaf tables
    }

    // ---- level-2 tables of several GiBs ----

    const ulong Gig = 0x40000; // frames per GiB

    static ITdpVm FourKiBVm(NativePagePool pool)
    {
        var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: null, pool);
        Assert.Equal(TdpStatus.Ok, vm.SetMaxPageSize(12));
        return vm;
    }

    static void Expect(ITdpVm vm, ulong gfn, ulong hostPfn, AccessType type, bool faulted) =>
        Assert.Equal(TdpAccessOutcome.Mapped(hostPfn << 12 | 0x9A, 12, faulted), vm.Access(gfn << 12 | 0x9A, type));

    /// <summary>
    /// The cached level-2 tables are indexed by GiB from the small slot's first: a new small slot (another
    /// slot faulted last) must not use the old one's tables for its own GiBs, which sit at the same indexes.
    /// </summary>
    [Fact]
    public void A_new_small_slot_does_not_reuse_the_old_ones_level_2_tables()
    {
        using var pool = new NativePagePool();
        using var vm = FourKiBVm(pool);
        const ulong aBase = Gig, aHost = 0x1000000, bBase = 5 * Gig + 0x20000, bHost = 0x2000000;
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, aBase, 3 * Gig, aHost, 12, readOnly: false));
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(1, bBase, 3 * Gig, bHost, 12, readOnly: false));
        for (ulong g = 0; g < 3; g++)
        {
            Expect(vm, aBase + g * Gig + 0x1000, aHost + g * Gig + 0x1000, AccessType.Write, faulted: true);
            Expect(vm, aBase + g * Gig + 0x1000, aHost + g * Gig + 0x1000, AccessType.Read, faulted: false);
        }
        Assert.Equal(2 + 2 * 3, vm.TablePages); // root and level 3; per GiB a level-2 and a leaf table
        Expect(vm, bBase, bHost, AccessType.Write, faulted: true);          // GiB 5: slot 1 is the small slot now
        Expect(vm, bBase, bHost, AccessType.Read, faulted: false);
        // GiB 6, slot 1's second: same level-2 and leaf indexes as slot 0's gfn in GiB 2.
        ulong gfn = 6 * Gig + 0x1000 + 1;
        Expect(vm, gfn, bHost + (gfn - bBase), AccessType.Write, faulted: true);
        Assert.Equal(8 + 2 + 2, vm.TablePages); // GiB 5's level-2 and leaf table, GiB 6's: none written into slot 0's
        Expect(vm, 2 * Gig + 0x1000 + 1, aHost + Gig + 0x1000 + 1, AccessType.Read, faulted: true);
        Expect(vm, gfn, bHost + (gfn - bBase), AccessType.Read, faulted: false);
    }

    /// <summary>Only the first 16 GiBs of a slot get cached level-2 tables; beyond, every access walks, with the same results.</summary>
    [Fact]
    public void A_slot_beyond_16_GiB_maps_past_the_cached_level_2_tables()
    {
        using var pool = new NativePagePool();
        using var vm = FourKiBVm(pool);
        const ulong host = 0x1000000;
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, Gig, 18 * Gig, host, 12, readOnly: false));
        foreach (ulong g in new ulong[] { 0, 15, 16, 17, 16, 0 })
        {
            ulong gfn = Gig + g * Gig + 0x2345 + (ulong)vm.TablePages; // a new page each time
            Expect(vm, gfn, host + (gfn - Gig), AccessType.Read, faulted: true);
            Expect(vm, gfn, host + (gfn - Gig), AccessType.Write, faulted: false);
            Expect(vm, gfn + 1, host + (gfn + 1 - Gig), AccessType.Fetch, faulted: true);
        }
        Assert.Equal(12, (int)Leaves(vm));
    }

    static int Leaves(ITdpVm vm)
    {
        int leaves = 0;
        vm.VisitPages((_, entries) => leaves += entries.Count(e => e.IsLeaf));
        return leaves;
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
