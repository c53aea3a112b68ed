using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for the spec's TDP MMU model (docs/tdp-model.md), written by hand: they pin the
/// model itself, independent of the impl.
/// </summary>
public sealed class TdpModelTests
{
    static TdpState Run(TdpState s, params TdpOp[] ops)
    {
        foreach (var op in ops) s = s.Step(op).State;
        return s;
    }

    static VmResult Last(TdpState s, TdpOp op) => s.Step(op).Result;

    static readonly TdpOp OneGiBSlot = new TdpOp.CreateSlot(0, 0x40000, 0x40000, 0x80000, PageSize.Size1G, ReadOnly: false);

    [Fact]
    public void A_read_in_an_aligned_1GiB_slot_with_1GiB_host_pages_maps_a_1GiB_page()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), OneGiBSlot);
        var r = Last(s, new TdpOp.AccessGpa(0x4000_1234, AccessType.Read));
        // gfn 0x40001 is frame 1 of the slot: host pfn 0x80001, hpa 0x8000_1234.
        Assert.Equal(new TdpResult.Mapped(0x8000_1234, PageSize.Size1G, Faulted: true), r);
    }

    [Fact]
    public void Host_frames_misaligned_with_the_gfn_limit_the_mapping_to_4KiB()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)),
            new TdpOp.CreateSlot(0, 0x40000, 0x40000, 0x80001, PageSize.Size1G, ReadOnly: false));
        var r = Last(s, new TdpOp.AccessGpa(0x4000_0000, AccessType.Read));
        Assert.Equal(new TdpResult.Mapped(0x8000_1000, PageSize.Size4K, Faulted: true), r);
    }

    [Fact]
    public void The_max_page_size_policy_caps_the_mapping_at_2MiB()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), OneGiBSlot, new TdpOp.SetMaxPageSize(PageSize.Size2M));
        var r = Last(s, new TdpOp.AccessGpa(0x4030_0000, AccessType.Write));
        Assert.Equal(new TdpResult.Mapped(0x8030_0000, PageSize.Size2M, Faulted: true), r);
    }

    [Fact]
    public void A_second_access_hits_without_a_fault()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), OneGiBSlot, new TdpOp.AccessGpa(0x4000_0000, AccessType.Read));
        Assert.Equal(new TdpResult.Mapped(0x8000_0008, PageSize.Size1G, Faulted: false), Last(s, new TdpOp.AccessGpa(0x4000_0008, AccessType.Write)));
    }

    [Fact]
    public void An_access_outside_every_memslot_is_an_MMIO_exit_and_changes_nothing()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), OneGiBSlot);
        var step = s.Step(new TdpOp.AccessGpa(0x1000, AccessType.Read));
        Assert.Equal(new TdpResult.MmioExit(0x1000), step.Result);
        Assert.Equal(s, step.State);
    }

    [Fact]
    public void A_write_to_a_read_only_slot_exits_while_a_read_maps_read_only()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), new TdpOp.CreateSlot(0, 0x10, 4, 0x100, PageSize.Size4K, ReadOnly: true));
        Assert.Equal(new TdpResult.MmioExit(0x10000), Last(s, new TdpOp.AccessGpa(0x10000, AccessType.Write)));
        s = Run(s, new TdpOp.AccessGpa(0x10000, AccessType.Read));
        var leaf = Assert.Single(s.Leaves()).Leaf;
        Assert.Equal(new Spte.Leaf(0x10, 1, 0x100, Writable: false), leaf);
    }

    [Fact]
    public void Dirty_logging_maps_4KiB_write_protected_and_logs_the_first_write()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), OneGiBSlot, new TdpOp.SetDirtyLogging(0, true),
            new TdpOp.AccessGpa(0x4000_5000, AccessType.Read));
        Assert.Equal(new Spte.Leaf(0x40005, 1, 0x80005, Writable: false), Assert.Single(s.Leaves()).Leaf);
        s = Run(s, new TdpOp.AccessGpa(0x4000_5000, AccessType.Write));
        Assert.Equal(new VmResult.DirtyLog([0x40005]), Last(s, new TdpOp.GetDirtyLog(0)));
        // Fetching the log write-protects the page again and empties the log.
        s = Run(s, new TdpOp.GetDirtyLog(0));
        Assert.False(Assert.Single(s.Leaves()).Leaf.Writable);
        Assert.Equal(new VmResult.DirtyLog([]), Last(s, new TdpOp.GetDirtyLog(0)));
    }

    [Fact]
    public void A_write_to_a_huge_page_of_a_logged_slot_replaces_it_with_a_4KiB_mapping()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), OneGiBSlot, new TdpOp.AccessGpa(0x4000_0000, AccessType.Read),
            new TdpOp.SetDirtyLogging(0, true));
        var r = Last(s, new TdpOp.AccessGpa(0x4000_3000, AccessType.Write));
        Assert.Equal(new TdpResult.Mapped(0x8000_3000, PageSize.Size4K, Faulted: true), r);
        s = Run(s, new TdpOp.AccessGpa(0x4000_3000, AccessType.Write));
        Assert.Equal(new Spte.Leaf(0x40003, 1, 0x80003, Writable: true), Assert.Single(s.Leaves()).Leaf);
    }

    [Fact]
    public void Shared_bit_47_is_stripped_from_gfns_and_shared_gpas_use_the_upper_half_of_the_direct_root()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept, 47)),
            new TdpOp.CreateSlot(0, 0x100, 1, 0x500, PageSize.Size4K, ReadOnly: false),
            new TdpOp.AccessGpa((1UL << 47) | 0x10_0000, AccessType.Read),    // shared
            new TdpOp.AccessGpa(0x10_0000, AccessType.Read));                 // private
        Assert.Equal(new PageKey(0, new MmuRole(4, false)), s.DirectRoot);
        Assert.Equal(new PageKey(0, new MmuRole(4, true)), s.MirrorRoot);
        // Bit 47 of the gpa is index bit 8 of the 4-level root: the shared path starts at entry 256.
        Assert.Equal([256], s.Pages[s.DirectRoot!].Entries.Keys);
        Assert.Equal([0], s.Pages[s.MirrorRoot!].Entries.Keys);
        // Both leaves record gfn 0x100, without the shared bit (the GFN-direct-bits series, Rick Edgecombe, 2024).
        Assert.All(s.Leaves(), l => Assert.Equal(new Spte.Leaf(0x100, 1, 0x500, Writable: true), l.Leaf));
        // The direct root's child for entry 256 has gfn 0, not 1 << 35.
        Assert.Equal(new Spte.Table(new PageKey(0, new MmuRole(3, false))), s.Pages[s.DirectRoot!].Entries[256]);
    }

    [Fact]
    public void Zapping_a_range_removes_overlapping_leaves_but_keeps_tables()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), new TdpOp.CreateSlot(0, 0x10, 16, 0x10, PageSize.Size4K, ReadOnly: false),
            new TdpOp.AccessGpa(0x10000, AccessType.Read), new TdpOp.AccessGpa(0x11000, AccessType.Read));
        s = Run(s, new TdpOp.ZapRange(0x11, 0x12));
        Assert.Equal(0x10UL, Assert.Single(s.Leaves()).Leaf.Gfn);
        Assert.Equal(4, s.Pages.Count);
        s = Run(s, new TdpOp.ZapAll());
        Assert.Empty(s.Pages);
        Assert.Null(s.DirectRoot);
    }

    [Fact]
    public void A_huge_fault_over_existing_4KiB_tables_frees_the_subtree()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), new TdpOp.SetMaxPageSize(PageSize.Size4K),
            new TdpOp.CreateSlot(0, 0x200, 0x200, 0x400, PageSize.Size2M, ReadOnly: false),
            new TdpOp.AccessGpa(0x20_0000, AccessType.Read), new TdpOp.ZapRange(0x200, 0x201),
            new TdpOp.SetMaxPageSize(PageSize.Size2M));
        Assert.Equal(4, s.Pages.Count);                      // root, PDPT, PD, PT (now empty)
        s = Run(s, new TdpOp.AccessGpa(0x20_0000, AccessType.Read));
        Assert.Equal(3, s.Pages.Count);                      // the PT is gone
        Assert.Equal(new Spte.Leaf(0x200, 2, 0x400, Writable: true), Assert.Single(s.Leaves()).Leaf);
    }

    [Fact]
    public void Invalid_operations_are_rejected_and_change_nothing()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept, 47)), new TdpOp.CreateSlot(0, 0x10, 16, 0x10, PageSize.Size4K, ReadOnly: false));
        foreach (var op in new TdpOp[]
        {
            new TdpOp.CreateSlot(1, 0x18, 16, 0x10, PageSize.Size4K, false),        // overlaps slot 0
            new TdpOp.CreateSlot(0, 0x100, 1, 0x10, PageSize.Size4K, false),        // id in use
            new TdpOp.CreateSlot(2, 1UL << 35, 1, 0x10, PageSize.Size4K, false),    // holds the shared bit
            new TdpOp.DeleteSlot(7),
            new TdpOp.GetDirtyLog(0),                                              // not logging
            new TdpOp.ZapRange(5, 5),
            new TdpOp.AccessGpa(1UL << 48, AccessType.Read),
        })
        {
            var step = s.Step(op);
            Assert.IsType<VmResult.Rejected>(step.Result);
            Assert.Equal(s, step.State);
        }
    }

    // ---- TLB flush obligations (docs/tdp-model.md, "TLB flushes") ----

    /// <summary>Slot 0: gfns [0x200, 0x600) on 2 MiB host pages, equally aligned: two 2 MiB leaves fit.</summary>
    static readonly TdpOp TwoHugePagesSlot = new TdpOp.CreateSlot(0, 0x200, 0x400, 0x1200, PageSize.Size2M, ReadOnly: false);

    static FlushObligation Obligation(TdpState before, TdpOp op) => TdpTlb.MustFlush(before, before.Step(op).State);

    [Fact]
    public void A_one_page_zap_of_a_2MiB_leaf_must_flush_all_2MiB()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), TwoHugePagesSlot, new TdpOp.AccessGpa(0x23_4000, AccessType.Read));
        Assert.Equal(new Spte.Leaf(0x200, 2, 0x1200, Writable: true), Assert.Single(s.Leaves()).Leaf);
        var must = Obligation(s, new TdpOp.ZapRange(0x234, 0x235));
        // The zap names one gfn, but the leaf it removes mapped 512: a cached copy may serve any of them.
        Assert.Equal(GfnRanges.Of(new GfnRange(0x200, 0x400)), must.Gfns);
        Assert.Contains("was unmapped", Assert.Single(must.Duties).Why);
    }

    [Fact]
    public void A_zap_that_misses_every_leaf_needs_no_flush()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), TwoHugePagesSlot, new TdpOp.AccessGpa(0x23_4000, AccessType.Read));
        Assert.True(Obligation(s, new TdpOp.ZapRange(0x400, 0x401)).IsEmpty);
    }

    [Fact]
    public void Switching_dirty_logging_on_must_flush_every_leaf_it_write_protects_and_only_those()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), TwoHugePagesSlot,
            new TdpOp.CreateSlot(1, 0x10, 4, 0x10, PageSize.Size4K, ReadOnly: true),
            new TdpOp.AccessGpa(0x20_0000, AccessType.Write), new TdpOp.AccessGpa(0x40_0000, AccessType.Read),
            new TdpOp.AccessGpa(0x1_1000, AccessType.Read));
        var must = Obligation(s, new TdpOp.SetDirtyLogging(0, true));
        // Both 2 MiB leaves lose W over their whole range; they are adjacent, so one range.
        Assert.Equal(GfnRanges.Of(new GfnRange(0x200, 0x600)), must.Gfns);
        Assert.All(must.Duties, d => Assert.Contains("lost write access", d.Why));
        Assert.Equal(2, must.Duties.Length);
        // The read-only slot's leaf has no W to lose: nothing to flush.
        Assert.True(Obligation(s, new TdpOp.SetDirtyLogging(1, true)).IsEmpty);
    }

    [Fact]
    public void Giving_rights_or_mappings_needs_no_flush()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), TwoHugePagesSlot, new TdpOp.SetDirtyLogging(0, true));
        Assert.True(Obligation(s, new TdpOp.AccessGpa(0x20_0000, AccessType.Read)).IsEmpty);          // a new mapping
        s = Run(s, new TdpOp.AccessGpa(0x20_0000, AccessType.Read));
        Assert.True(Obligation(s, new TdpOp.AccessGpa(0x20_0000, AccessType.Write)).IsEmpty);         // W added, logged
        // Logging off drops the 2 MiB link a huge leaf could replace (TdpState.Collapsible.cs): its table's whole range.
        var must = Obligation(s, new TdpOp.SetDirtyLogging(0, false));
        Assert.Equal(GfnRanges.Of(new GfnRange(0x200, 0x400)), must.Gfns);
        Assert.Contains(must.Duties, d => d.Why.Contains("table"));
    }

    [Fact]
    public void A_logged_write_to_a_huge_leaf_must_flush_the_rest_of_it()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), TwoHugePagesSlot, new TdpOp.AccessGpa(0x20_0000, AccessType.Read),
            new TdpOp.SetDirtyLogging(0, true));
        var must = Obligation(s, new TdpOp.AccessGpa(0x20_3000, AccessType.Write));
        // The 2 MiB leaf goes; the 4 KiB leaf at 0x203 maps the same frame with more rights, so a cached
        // copy of the old translation for 0x203 is merely read-only (a spurious fault). Every other gfn
        // of the old leaf is unmapped.
        Assert.Equal(GfnRanges.Of(new GfnRange(0x200, 0x203), new GfnRange(0x204, 0x400)), must.Gfns);
    }

    [Fact]
    public void A_table_replaced_by_a_huge_leaf_must_be_flushed_over_everything_it_covered()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), TwoHugePagesSlot, new TdpOp.SetMaxPageSize(PageSize.Size4K),
            new TdpOp.AccessGpa(0x20_1000, AccessType.Read), new TdpOp.SetMaxPageSize(PageSize.Size2M));
        var must = Obligation(s, new TdpOp.AccessGpa(0x20_5000, AccessType.Read));
        // The 4 KiB leaf's translation survives in the 2 MiB leaf, but its table is freed: the hardware
        // may hold the 2 MiB entry's old link to it for any of the 512 gfns.
        var duty = Assert.Single(must.Duties);
        Assert.Equal(new GfnRange(0x200, 0x400), duty.Gfns);
        Assert.Contains("table page (0x200, L1) was freed", duty.Why);
    }

    [Fact]
    public void Zap_all_must_flush_each_root_over_its_whole_space()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), TwoHugePagesSlot, new TdpOp.AccessGpa(0x20_0000, AccessType.Read));
        var must = Obligation(s, new TdpOp.ZapAll());
        Assert.Equal(GfnRanges.Of(new GfnRange(0, 1UL << 36)), must.Gfns);
        Assert.Contains(must.Duties, d => d.Why.Contains("table page (0x0, L4) was freed"));
        Assert.DoesNotContain(must.Duties, d => d.Why.Contains("L3"));    // below a freed table: said by its parent
    }

    [Fact]
    public void With_a_shared_bit_a_flush_names_gfns_and_covers_both_roots()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept, 47)),
            new TdpOp.CreateSlot(0, 0x100, 1, 0x500, PageSize.Size4K, ReadOnly: false),
            new TdpOp.AccessGpa((1UL << 47) | 0x10_0000, AccessType.Read), new TdpOp.AccessGpa(0x10_0000, AccessType.Read));
        var must = Obligation(s, new TdpOp.ZapRange(0x100, 0x101));
        Assert.Equal(GfnRanges.Of(new GfnRange(0x100, 0x101)), must.Gfns);           // never the shared bit
        Assert.Equal(2, must.Duties.Length);
        Assert.Contains(must.Duties, d => d.Why.Contains("in the direct root"));
        Assert.Contains(must.Duties, d => d.Why.Contains("in the mirror root"));
    }

    [Fact]
    public void Gfn_ranges_merge_touching_ranges_and_subtract()
    {
        var a = GfnRanges.Of(new GfnRange(0x10, 0x20), new GfnRange(0x20, 0x30), new GfnRange(0x40, 0x50), new GfnRange(5, 5));
        Assert.Equal(new[] { new GfnRange(0x10, 0x30), new GfnRange(0x40, 0x50) }, a.Ranges);
        Assert.Equal(0x30UL, a.Count);
        var b = a.Except(GfnRanges.Of(new GfnRange(0x18, 0x44)));
        Assert.Equal(new[] { new GfnRange(0x10, 0x18), new GfnRange(0x44, 0x50) }, b.Ranges);
        Assert.True(a.Covers(b));
        Assert.False(b.Covers(a));
        Assert.True(GfnRanges.Empty.Except(a).IsEmpty);
    }

    // ---- the guest's own paging over TDP ----

    /// <summary>A 4-level guest: PML4 at gpa 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000; gva 0x5000 -> gpa 0x9000.</summary>
    static TdpState GuestWithTables()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)),
            new TdpOp.CreateSlot(0, 0, 16, 0x100, PageSize.Size4K, ReadOnly: false),
            new TdpOp.GuestStore(0x1000, 0x2007, 8), new TdpOp.GuestStore(0x2000, 0x3007, 8),
            new TdpOp.GuestStore(0x3000, 0x4007, 8), new TdpOp.GuestStore(0x4028, 0x9007, 8),
            new TdpOp.GuestSetPaging(new PagingControls(PagingMode.Long4), 0x1000));
        return s;
    }

    [Fact]
    public void Guest_stores_land_in_host_memory_through_the_slot()
    {
        var s = GuestWithTables();
        // gpa 0x1000 is host frame 0x101: the PML4E is at hpa 0x101000.
        Assert.Equal(0x2007UL, s.HostMemory[0x10_1000]);
        Assert.Equal(0x9007UL, s.HostMemory[0x10_4028]);
    }

    [Fact]
    public void A_guest_write_walks_the_guest_tables_faults_them_in_sets_AD_and_maps_the_data_page()
    {
        var s = GuestWithTables().Step(new TdpOp.GuestAccess(Access.Write(0x5123))).State;
        var r = GuestWithTables().Step(new TdpOp.GuestAccess(Access.Write(0x5123))).Result;
        // gpa 0x9123 is host frame 0x109: hpa 0x109123, a fault (the data page was never touched).
        Assert.Equal(new TdpResult.Mapped(0x10_9123, PageSize.Size4K, Faulted: true), r);
        // A on every guest entry used, D on the guest PTE, written into host memory.
        Assert.Equal(0x2027UL, s.HostMemory[0x10_1000]);
        Assert.Equal(0x3027UL, s.HostMemory[0x10_2000]);
        Assert.Equal(0x4027UL, s.HostMemory[0x10_3000]);
        Assert.Equal(0x9067UL, s.HostMemory[0x10_4028]);
        // The four table pages and the data page are mapped by the MMU.
        Assert.Equal(new ulong[] { 0x1, 0x2, 0x3, 0x4, 0x9 }, s.Leaves().Select(l => l.Leaf.Gfn).Order());
    }

    [Fact]
    public void A_guest_page_fault_still_reads_the_tables_through_the_MMU_but_writes_nothing()
    {
        var s0 = GuestWithTables();
        var step = s0.Step(new TdpOp.GuestAccess(Access.Read(0x6000)));   // PTE index 6: not present
        Assert.Equal(new TdpResult.GuestFault(new WalkResult.PageFault(PageFaultErrorCode.None)), step.Result);
        Assert.Equal(s0.HostMemory, step.State.HostMemory);
        Assert.Equal(new ulong[] { 0x1, 0x2, 0x3, 0x4 }, step.State.Leaves().Select(l => l.Leaf.Gfn).Order());
    }

    [Fact]
    public void Deleting_a_slot_discards_its_host_memory()
    {
        var s = Run(GuestWithTables(), new TdpOp.DeleteSlot(0));
        Assert.Empty(s.HostMemory);
    }
}
