using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;
using static MmuSpec.Tests.Spec.EptTableBuilder;
using PT = MmuSpec.Tests.Spec.PageTableBuilder;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for two-dimensional translation (SDM Vol. 3C §29.3.3.3 with Vol. 3A ch. 4): L2's gva through L2's
/// tables, each of their entries and the final gpa through L1's EPT. Every address and value is a literal.
///
/// L1 has 128 KiB of RAM. L1's EPT (EPTP 0x101e, 4-level, WB) maps L2's first 2 MiB with 4 KiB pages:
///   EPT PML4E @ 0x1000 -> 0x2000, PDPTE @ 0x2000 -> 0x3000, PDE @ 0x3000 -> PT 0x4000;
///   EPT PTE @ 0x4000 + 8n maps L2 gpa n*0x1000: n = 1..4 (L2's tables) -> L1 0x11000..0x14000;
///   n = 0x123 (@ 0x4918) maps L2 gpa 0x12_3000 -> L1 0x1f000.
/// L2 runs 4-level paging with CR3 0x1000 and the tree of <see cref="PageTableBuilder.Long4Tree"/> moved into L1:
///   L2 PML4E @ L2 0x1008 = L1 0x11008, PDPTE @ 0x2010 = L1 0x12010, PDE @ 0x3018 = L1 0x13018,
///   PTE @ 0x4020 = L1 0x14020 -> L2 gpa 0x12_3000; so gva 0x80_8060_4567 -> L2 gpa 0x12_3567 -> L1 gpa 0x1f567.
/// </summary>
public sealed class EptNestedWalkTests
{
    const ulong Gva = PT.Long4Gva;
    static readonly CpuState L2 = new(new PagingControls(PagingMode.Long4), 0x1000);
    const ulong EptLeaf = RWX | 0x30;   // RWX, WB

    static GuestMemory Nested(ulong ptPageEpt = EptLeaf, ulong pdPageEpt = EptLeaf, ulong dataEpt = EptLeaf, ulong l2Pte = PT.PWU) => Ram(32)
        .Write64(0x1000, 0x2000 | RWX)
        .Write64(0x2000, 0x3000 | RWX)
        .Write64(0x3000, 0x4000 | RWX)
        .Write64(0x4008, 0x11000 | EptLeaf)
        .Write64(0x4010, 0x12000 | EptLeaf)
        .Write64(0x4018, 0x13000 | pdPageEpt)
        .Write64(0x4020, 0x14000 | ptPageEpt)
        .Write64(0x4918, 0x1F000 | dataEpt)
        .Write64(0x11008, 0x2000 | PT.PWU)
        .Write64(0x12010, 0x3000 | PT.PWU)
        .Write64(0x13018, 0x4000 | PT.PWU)
        .Write64(0x14020, 0x12_3000 | l2Pte);

    static NestedExplanation Walk(GuestMemory memory, Access access, EptPointer? eptp = null, EptCapabilities? caps = null, CpuState? cpu = null) =>
        NestedWalk.Explain(caps ?? Caps, eptp ?? Eptp4, cpu ?? L2, memory, access);

    static EptResult ExitOf(NestedResult result) =>
        result is NestedResult.EptExit e ? e.Exit : throw new Xunit.Sdk.XunitException($"expected a VM exit to L1, got {result}");

    [Fact]
    public void An_L2_access_goes_through_L2s_tables_and_L1s_EPT_to_an_L1_gpa()
    {
        var e = Walk(Nested(), Access.Read(Gva));
        var t = Assert.IsType<NestedResult.Translated>(e.Result);
        Assert.Equal(("0x123567", "0x1f567", PageSize.Size4K), ($"0x{t.L2Gpa:x}", $"0x{t.L1Gpa:x}", t.GuestSize));
        // One EPT walk per L2 entry read (at its L2 gpa), then the final access, then one per A bit written into L2's entries.
        Assert.Equal(new ulong[] { 0x1008, 0x2010, 0x3018, 0x4020, 0x12_3567, 0x1008, 0x2010, 0x3018, 0x4020 },
            e.EptWalks.Select(w => w.Walk.Access.Gpa));
        const NestedEptPurpose Read = NestedEptPurpose.GuestEntryRead, AD = NestedEptPurpose.GuestAccessedDirtyUpdate;
        Assert.Equal([Read, Read, Read, Read, NestedEptPurpose.FinalAccess, AD, AD, AD, AD], e.EptWalks.Select(w => w.Purpose));
        Assert.All(e.EptWalks.Where(w => w.Purpose == AD), w => Assert.Equal((AccessType.Write, true), (w.Walk.Access.Type, w.Walk.Access.PagingStructure)));
    }

    // Exit-qualification table: a violation while reading a guest paging-structure entry has bit 7 set (the gva is
    // known) and bit 8 clear; without EPT A/D the read is a data read (bit 0).
    [Fact]
    public void An_EPT_violation_on_an_L2_paging_structure_read_reports_bit_7_set_and_bit_8_clear()
    {
        var e = Walk(Nested(pdPageEpt: 0), Access.Read(Gva));
        var v = AssertViolation(ExitOf(e.Result), QRead | QGla);
        Assert.Equal((0x3018UL, (ulong?)Gva), (v.Gpa, v.LinearAddress));
        Assert.Contains("reading the L2 PDE", e.Rule);
    }

    // Bits 7 and 8 set: the violation is on the final access, the translation of the linear address.
    [Fact]
    public void An_EPT_violation_on_the_final_access_reports_bits_7_and_8_and_leaves_L2s_AD_bits_alone()
    {
        var memory = Nested(dataEpt: R | 0x30);
        var e = Walk(memory, Access.Write(Gva));
        var v = AssertViolation(ExitOf(e.Result), QWrite | QR | QGla | QFinal);
        Assert.Equal(0x12_3567UL, v.Gpa);
        Assert.Equal("0x2007", Q(e.L1MemoryAfter, 0x11008));   // no A: the walk ended in a VM exit
        Assert.Empty(e.GuestUpdates);
    }

    // L2's own rules still apply: a not-present L2 PTE is #PF (P=0) for L2, not a VM exit.
    [Fact]
    public void A_fault_in_L2s_own_tables_is_a_page_fault_for_L2()
    {
        var e = Walk(Nested(l2Pte: 0), Access.Read(Gva));
        PT.AssertPageFault(Assert.IsType<NestedResult.GuestFault>(e.Result).Result, 0);
        Assert.Equal(4, e.EptWalks.Length);
    }

    // §29.3.4: with EPT A/D, each EPT walk sets A in the entries it used; guest paging-structure reads count as
    // writes, so the EPT PTEs mapping L2's tables get D too; the final read's EPT PTE gets A only. §4.8: L2's
    // entries get A. (EPT PTE = frame | 0x37; A = 0x100, D = 0x200; L2 entry A = 0x20.)
    [Fact]
    public void With_EPT_AD_both_dimensions_get_their_accessed_and_dirty_bits()
    {
        var after = Walk(Nested(), Access.Read(Gva), eptp: Eptp4AD).L1MemoryAfter;
        Assert.Equal(["0x2107", "0x3107", "0x4107"], new[] { Q(after, 0x1000), Q(after, 0x2000), Q(after, 0x3000) });
        Assert.Equal(["0x11337", "0x12337", "0x13337", "0x14337", "0x1f137"],
            new[] { Q(after, 0x4008), Q(after, 0x4010), Q(after, 0x4018), Q(after, 0x4020), Q(after, 0x4918) });
        Assert.Equal(["0x2027", "0x3027", "0x4027", "0x123027"],
            new[] { Q(after, 0x11008), Q(after, 0x12010), Q(after, 0x13018), Q(after, 0x14020) });
    }

    // §29.3.4: the D bits on the EPT PTEs mapping L2's tables come from the reads themselves: with L2's A bits
    // already set the walk writes nothing into L2's tables, and those EPT PTEs still get D.
    [Fact]
    public void With_EPT_AD_reading_L2s_tables_sets_D_even_with_no_L2_AD_update()
    {
        var memory = Nested(l2Pte: PT.PWU | PT.A).Write64(0x11008, 0x2027).Write64(0x12010, 0x3027).Write64(0x13018, 0x4027);
        var e = Walk(memory, Access.Read(Gva), eptp: Eptp4AD);
        Assert.Empty(e.GuestUpdates);
        Assert.DoesNotContain(e.EptWalks, w => w.Purpose == NestedEptPurpose.GuestAccessedDirtyUpdate);
        Assert.Equal(["0x11337", "0x12337", "0x13337", "0x14337", "0x1f137"],
            new[] { Q(e.L1MemoryAfter, 0x4008), Q(e.L1MemoryAfter, 0x4010), Q(e.L1MemoryAfter, 0x4018), Q(e.L1MemoryAfter, 0x4020), Q(e.L1MemoryAfter, 0x4918) });
    }

    [Fact]
    public void Without_EPT_AD_only_L2s_entries_change()
    {
        var e = Walk(Nested(), Access.Write(Gva));
        Assert.Equal(["0x2007", "0x3007", "0x4007", "0x14037", "0x1f037"],
            new[] { Q(e.L1MemoryAfter, 0x1000), Q(e.L1MemoryAfter, 0x2000), Q(e.L1MemoryAfter, 0x3000), Q(e.L1MemoryAfter, 0x4020), Q(e.L1MemoryAfter, 0x4918) });
        Assert.Equal(["0x2027", "0x3027", "0x4027", "0x123067"],
            new[] { Q(e.L1MemoryAfter, 0x11008), Q(e.L1MemoryAfter, 0x12010), Q(e.L1MemoryAfter, 0x13018), Q(e.L1MemoryAfter, 0x14020) });
        // The A bits top-down, then the PTE's D (§4.8), each written at its L1 gpa.
        Assert.Equal(new ulong[] { 0x11008, 0x12010, 0x13018, 0x14020, 0x14020 }, e.GuestUpdates.Select(u => u.Gpa));
    }

    // Without EPT A/D, reading L2's page table through a read-only EPT mapping is fine, but writing its A bit is an
    // EPT write to a paging-structure entry: bits 0 and 1 (a read-modify-write), bit 7, bit 8 clear. The A bits
    // written before it (PML4E, PDPTE, PDE) stay.
    [Fact]
    public void Without_EPT_AD_L2s_AD_update_to_a_read_only_table_is_a_write_violation()
    {
        var e = Walk(Nested(ptPageEpt: R | X | 0x30), Access.Read(Gva));
        var v = AssertViolation(ExitOf(e.Result), QRead | QWrite | QR | QX | QGla);
        Assert.Equal(0x4020UL, v.Gpa);
        Assert.Equal(NestedEptPurpose.GuestAccessedDirtyUpdate, e.EptWalks[^1].Purpose);
        Assert.Equal(new ulong[] { 0x11008, 0x12010, 0x13018 }, e.GuestUpdates.Select(u => u.Gpa));
        Assert.Equal("0x123007", Q(e.L1MemoryAfter, 0x14020));
    }

    // §29.3.4: with EPT A/D the same read-only mapping already fails the read of L2's PTE, which is treated as a write.
    [Fact]
    public void With_EPT_AD_reading_L2s_table_through_a_read_only_mapping_is_a_write_violation()
    {
        var e = Walk(Nested(ptPageEpt: R | X | 0x30), Access.Read(Gva), eptp: Eptp4AD);
        var v = AssertViolation(ExitOf(e.Result), QRead | QWrite | QR | QX | QGla);
        Assert.Equal(0x4020UL, v.Gpa);
        Assert.Equal(NestedEptPurpose.GuestEntryRead, e.EptWalks[^1].Purpose);
        Assert.Empty(e.GuestUpdates);
        Assert.Equal("0x2007", Q(e.L1MemoryAfter, 0x11008));
        Assert.Equal("0x13337", Q(e.L1MemoryAfter, 0x4018));   // the EPT walks before it keep their A/D bits
    }

    // §29.3.2: a 5-level EPT puts a PML5 above the same tree (PML5E 0 @ 0x5000 -> 0x1000; EPTP 0x5026).
    [Fact]
    public void A_2D_walk_over_a_5_level_EPT()
    {
        var memory = Nested().Write64(0x5000, 0x1000 | RWX);
        var e = Walk(memory, Access.Read(Gva), eptp: new EptPointer(0x5026));
        Assert.Equal(0x1f567UL, Assert.IsType<NestedResult.Translated>(e.Result).L1Gpa);
        Assert.All(e.EptWalks, w => Assert.Equal(0x5000UL, w.Walk.Steps[0].EntryAddress));
    }

    // §29.3.3.2 with mode-based execute control: whether the linear address is user-mode comes from L2's U/S bits
    // (all set here), not from the CPL: even a supervisor fetch from it needs XU, which these EPT entries lack.
    [Fact]
    public void With_MBEC_a_fetch_from_an_L2_user_page_needs_XU()
    {
        var mbec = Caps.WithModeBasedExecuteControl(true);
        var user = Walk(Nested(), Access.Fetch(Gva, Privilege.Supervisor), caps: mbec);
        AssertViolation(ExitOf(user.Result), QFetch | QR | QW | QX | QGla | QFinal);
        var supervisorPage = Walk(Nested(l2Pte: PT.P | PT.W), Access.Fetch(Gva, Privilege.Supervisor), caps: mbec);
        Assert.IsType<NestedResult.Translated>(supervisorPage.Result);
    }

    // §29.3.3.1: a misconfigured EPT entry met while reading L2's tables is an EPT misconfiguration.
    [Fact]
    public void An_EPT_misconfiguration_on_an_L2_paging_structure_read()
    {
        var memory = Nested().Write64(0x4010, 0x12000 | RWX | MT(7));
        AssertMisconfiguration(ExitOf(Walk(memory, Access.Read(Gva)).Result), EptMisconfigurationKind.MemoryType, 1);
    }

    // Not architectural (KVM): an L2 table the EPT maps outside L1's memory reads as not present: #PF for L2.
    [Fact]
    public void An_L2_table_mapped_outside_L1_memory_is_a_not_present_fault_for_L2()
    {
        var memory = Nested().Write64(0x4018, 0x40000 | EptLeaf);
        var e = Walk(memory, Access.Read(Gva));
        PT.AssertPageFault(Assert.IsType<NestedResult.GuestFault>(e.Result).Result, 0);
        Assert.Contains("outside L1 memory", e.Rule);
    }

    // §29.3.3.3: with L2's paging off the gva is the gpa, translated through the EPT as the final access.
    [Fact]
    public void With_L2_paging_off_the_gva_is_the_gpa()
    {
        var e = NestedWalk.Explain(Caps, Eptp4, null, Nested(dataEpt: R | 0x30), Access.Write(0x12_3567));
        AssertViolation(ExitOf(e.Result), QWrite | QR | QGla | QFinal);
        var t = NestedWalk.Translate(Caps, Eptp4, null, Nested(), Access.Read(0x12_3567)).Result;
        Assert.Equal(0x1f567UL, Assert.IsType<NestedResult.Translated>(t).L1Gpa);
    }

    // 32-bit L2 paging (4-byte entries) over an EPT 2 MiB page: EPT PDE 1 @ 0x3008 maps L2 [2 MiB, 4 MiB) to L1
    // [0, 2 MiB). L2: CR3 0x1000, PDE @ L2 0x100c (L1 0x1100c) -> PT 0x2000, PTE @ 0x2014 (L1 0x12014) -> frame
    // 0x34_5000; gva 0xc0_5abc -> L2 gpa 0x34_5abc -> L1 gpa 0x14_5abc. A write sets A in the PDE, A and D in the PTE.
    [Fact]
    public void A_32_bit_L2_over_an_EPT_2M_page()
    {
        var memory = Nested().Write64(0x3008, 0x0 | PS | EptLeaf).Write32(0x1100C, 0x2000 | (uint)PT.PWU).Write32(0x12014, 0x34_5000 | (uint)PT.PWU);
        var e = Walk(memory, Access.Write(PT.Bits32Gva), cpu: new CpuState(new PagingControls(PagingMode.Bits32), 0x1000));
        var t = Assert.IsType<NestedResult.Translated>(e.Result);
        Assert.Equal(("0x345abc", "0x145abc", PageSize.Size2M), ($"0x{t.L2Gpa:x}", $"0x{t.L1Gpa:x}", t.Ept.Size));
        Assert.Equal((0x2027u, 0x34_5067u), (e.L1MemoryAfter.Read32(0x1100C), e.L1MemoryAfter.Read32(0x12014)));
    }

    [Fact]
    public void The_explanation_shows_both_dimensions_level_by_level()
    {
        string text = Walk(Nested(dataEpt: R | 0x30), Access.Write(Gva)).ToString();
        Assert.Contains("L2 PML4E @ 0x1008", text);
        Assert.Contains("EPT PTE   @ 0x4918", text);
        Assert.Contains("final access:", text);
        Assert.Contains("VM exit to L1", text);
    }

    // A caller error, not a guest event: L2 gpas wider than the EPT translates.
    [Fact]
    public void L2s_physical_address_width_must_fit_the_EPT() =>
        Assert.Throws<ArgumentException>(() => Walk(Nested(), Access.Read(Gva), cpu: new CpuState(new PagingControls(PagingMode.Long4, maxPhyAddr: 52), 0x1000)));
}
