using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;
using Xunit;
using static MmuSpec.Tests.Spec.EptTableBuilder;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for the spec's EPT walk of L1's tables, each derived by hand from the SDM Vol. 3C (section or
/// table cited above each test). The trees are laid out in <see cref="EptTableBuilder"/>; every expected
/// address, exit qualification (bit 0 read, 1 write, 2 fetch, 3 R, 4 W, 5 X, 6 XU, 7 GLA valid, 8 final
/// access) and entry value after the walk is a literal.
/// </summary>
public sealed class EptWalkTests
{
    // =========================================================================================
    // EPTP (§25.6.11)
    // =========================================================================================

    // §25.6.11: bits 2:0 memory type (6 = WB), bits 5:3 walk length minus 1, bit 6 A/D, bits N-1:12 the root.
    [Fact]
    public void An_EPTP_decodes_its_memory_type_walk_length_AD_bit_and_root()
    {
        var eptp = new EptPointer(0x0000_0012_3456_7000 | 0x40 | (3 << 3) | 6);
        Assert.Null(eptp.Problem(Caps));
        Assert.Equal((6, 4, true, 0x12_3456_7000UL), (eptp.MemoryTypeBits, eptp.WalkLength, eptp.AccessedDirtyEnabled, eptp.RootAddress));
        Assert.Equal(0x101EUL, EptPointer.Create(0x1000).Raw);
        Assert.Equal(0x1066UL, EptPointer.Create(0x1000, levels: 5, accessedDirty: true).Raw);
    }

    // §25.6.11: memory type UC (0) or WB (6) only; walk length 4, or 5 where supported; bit 6 only with EPT A/D
    // support; bits 11:7 reserved; address bits at or above MAXPHYADDR reserved.
    [Theory]
    [InlineData(0x1018UL, null)]                                   // UC, 4-level
    [InlineData(0x1019UL, EptPointerProblem.MemoryType)]           // WC
    [InlineData(0x101FUL, EptPointerProblem.MemoryType)]           // 7
    [InlineData(0x1016UL, EptPointerProblem.WalkLength)]           // bits 5:3 = 2: 3 levels
    [InlineData(0x102EUL, EptPointerProblem.WalkLength)]           // bits 5:3 = 5: 6 levels
    [InlineData(0x109EUL, EptPointerProblem.ReservedBits)]         // bit 7
    [InlineData(0x181EUL, EptPointerProblem.ReservedBits)]         // bit 11
    [InlineData(0x4000_0000_101EUL, EptPointerProblem.AddressBeyondMaxPhyAddr)]   // bit 46 with MAXPHYADDR 46
    public void Invalid_EPTP_values_are_rejected_with_their_reason(ulong raw, EptPointerProblem? problem) =>
        Assert.Equal(problem, new EptPointer(raw).Problem(Caps));

    [Fact]
    public void A_5_level_EPTP_needs_5_level_support_and_the_AD_bit_needs_AD_support()
    {
        Assert.Null(Eptp5.Problem(Caps));
        Assert.Equal(EptPointerProblem.WalkLength, Eptp5.Problem(Caps.WithFiveLevel(false)));
        Assert.Null(Eptp4AD.Problem(Caps));
        Assert.Equal(EptPointerProblem.AccessedDirtyUnsupported, Eptp4AD.Problem(Caps.WithAccessedDirty(false)));
    }

    [Fact]
    public void The_physical_address_width_is_36_to_52_bits()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new EptCapabilities(MaxPhyAddr: 35));
        Assert.Throws<ArgumentOutOfRangeException>(() => Caps.WithMaxPhyAddr(53));
        Assert.Equal(52, Caps.WithMaxPhyAddr(52).MaxPhyAddr);
    }

    [Fact]
    public void The_walk_refuses_an_invalid_EPTP_as_VM_entry_would()
    {
        var e = Assert.Throws<ArgumentException>(() => Walk(Ept4(), EptAccess.Read(Gpa4), eptp: new EptPointer(0x1019)));
        Assert.Contains("memory type", e.Message);
    }

    // =========================================================================================
    // Translation (§29.3.2)
    // =========================================================================================

    // §29.3.2: a 4-level EPT indexes PML4, PDPT, PD and PT by gpa bits 47:39, 38:30, 29:21, 20:12; the PTE's
    // bits N-1:12 are the frame, gpa bits 11:0 the offset.
    [Fact]
    public void A_4_level_EPT_translates_through_four_entries_to_a_4K_frame()
    {
        var e = Walk(Ept4(), EptAccess.Read(Gpa4));
        var t = AssertTranslated(e.Result, 0x12_3567, PageSize.Size4K);
        Assert.Equal(new ulong[] { 0x1008, 0x2010, 0x3018, 0x4020 }, e.Steps.Select(s => s.EntryAddress));
        Assert.Equal((EptMemoryType.WriteBack, false), (t.MemoryType, t.IgnorePat));
        Assert.Equal(new EptRights(true, true, true, false), t.Rights);
    }

    // §29.3.2: a 5-level EPT adds a PML5 indexed by gpa bits 56:48.
    [Fact]
    public void A_5_level_EPT_adds_a_PML5_indexed_by_gpa_bits_56_to_48()
    {
        var e = Walk(Ept5(), EptAccess.Read(Gpa5), eptp: Eptp5);
        AssertTranslated(e.Result, 0x12_3567, PageSize.Size4K);
        Assert.Equal(new ulong[] { 0x1010, 0x2008, 0x3010, 0x4018, 0x5020 }, e.Steps.Select(s => s.EntryAddress));
        Assert.Equal(new[] { 5, 4, 3, 2, 1 }, e.Steps.Select(s => s.Level));
    }

    // A caller error: guest paging-structure entries are read or updated, never fetched.
    [Fact]
    public void A_fetch_cannot_be_a_paging_structure_access() =>
        Assert.Throws<ArgumentException>(() => Walk(Ept4(), new EptAccess(Gpa4, AccessType.Fetch, PagingStructure: true)));

    // §29.3.2: a 4-level EPT translates 48-bit gpas; a wider one is a caller error.
    [Fact]
    public void A_4_level_EPT_does_not_take_a_gpa_wider_than_48_bits() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => Walk(Ept4(), EptAccess.Read(1UL << 48)));

    // §29.3.2, EPT PDE mapping a 2-MByte page: bits N-1:21 the frame, gpa bits 20:0 the offset.
    [Fact]
    public void An_EPT_PDE_with_bit_7_maps_a_2M_page()
    {
        var memory = Ept4().Write64(0x3018, 0x1_2340_0000 | PS | RWX | WB);
        AssertTranslated(Walk(memory, EptAccess.Read(Gpa4)).Result, 0x1_2340_4567, PageSize.Size2M);
    }

    // §29.3.2, EPT PDPTE mapping a 1-GByte page: bits N-1:30 the frame, gpa bits 29:0 the offset.
    [Fact]
    public void An_EPT_PDPTE_with_bit_7_maps_a_1G_page_in_4_and_5_level_EPT()
    {
        var four = Ept4().Write64(0x2010, 0x1_4000_0000 | PS | RWX | WB);
        AssertTranslated(Walk(four, EptAccess.Read(Gpa4)).Result, 0x1_4060_4567, PageSize.Size1G);
        var five = Ept5().Write64(0x3010, 0x1_4000_0000 | PS | RWX | WB);
        AssertTranslated(Walk(five, EptAccess.Read(Gpa5), eptp: Eptp5).Result, 0x1_4060_4567, PageSize.Size1G);
    }

    // §29.3.2: bits 5:3 of the leaf are the EPT memory type and bit 6 says to ignore the guest PAT.
    [Fact]
    public void The_leaf_gives_the_memory_type_and_the_ignore_PAT_bit()
    {
        var t = AssertTranslated(Walk(Ept4(pte: RWX | MT(4) | IPAT), EptAccess.Read(Gpa4)).Result, 0x12_3567, PageSize.Size4K);
        Assert.Equal((EptMemoryType.WriteThrough, true), (t.MemoryType, t.IgnorePat));
        var big = Ept4().Write64(0x3018, 0x1_2340_0000 | PS | RWX | MT(0));
        Assert.Equal(EptMemoryType.Uncacheable, AssertTranslated(Walk(big, EptAccess.Read(Gpa4)).Result, 0x1_2340_4567, PageSize.Size2M).MemoryType);
    }

    // §29.3.2: a PTE's bit 7 and every entry's bits 63:52 are ignored.
    [Fact]
    public void A_PTEs_bit_7_and_bits_63_to_52_are_ignored()
    {
        var memory = Ept4(pml4e: RWX | 0xFFF0_0000_0000_0000, pte: RWX | WB | PS | 0x8000_0000_0000_0000);
        AssertTranslated(Walk(memory, EptAccess.Read(Gpa4)).Result, 0x12_3567, PageSize.Size4K);
    }

    // =========================================================================================
    // Permissions and exit qualifications (§29.3.3.2, table "Exit Qualification for EPT Violations")
    // =========================================================================================

    // §29.3.3.2: a not-present entry is a violation; bits 5:3 AND the not-present entry too, so they are 0.
    [Fact]
    public void A_not_present_entry_is_a_violation_whose_permission_bits_are_zero()
    {
        var v = AssertViolation(Walk(Ept4(pde: 0), EptAccess.Read(Gpa4, linearAddress: 0x7000)).Result, QRead | QGla | QFinal);
        Assert.Equal((Gpa4, (ulong?)0x7000UL), (v.Gpa, v.LinearAddress));
    }

    // §29.3.2: only bits 2:0 decide presence; the other bits of a not-present entry are ignored, reserved or not.
    [Fact]
    public void A_not_present_entry_with_other_bits_set_is_a_violation_not_a_misconfiguration() =>
        AssertViolation(Walk(Ept4(pde: 0xFFFF_FFFF_FFFF_FFF8), EptAccess.Read(Gpa4)).Result, QRead);

    // §29.3.3.2: a write needs W in every entry; bits 5:3 are R, W, X ANDed: here R-X.
    [Fact]
    public void A_write_through_an_entry_without_W_is_a_violation_reporting_R_and_X()
    {
        AssertViolation(Walk(Ept4(pml4e: R | X), EptAccess.Write(Gpa4, 0x7000)).Result, QWrite | QR | QX | QGla | QFinal);
        AssertTranslated(Walk(Ept4(pml4e: R | X), EptAccess.Read(Gpa4)).Result, 0x12_3567, PageSize.Size4K);
    }

    // §29.3.3.2: an instruction fetch needs X in every entry.
    [Fact]
    public void A_fetch_from_a_page_without_X_is_a_violation_reporting_R_and_W() =>
        AssertViolation(Walk(Ept4(pde: R | W), EptAccess.Fetch(Gpa4, linearAddress: 0x7000)).Result, QFetch | QR | QW | QGla | QFinal);

    // §29.3.3.1, §29.3.3.2: with execute-only support, 100b is a valid entry: fetches pass, reads are violations.
    [Fact]
    public void An_execute_only_page_allows_fetches_and_makes_reads_violations()
    {
        AssertTranslated(Walk(Ept4(pte: X | WB), EptAccess.Fetch(Gpa4)).Result, 0x12_3567, PageSize.Size4K);
        AssertViolation(Walk(Ept4(pte: X | WB), EptAccess.Read(Gpa4, 0x7000)).Result, QRead | QX | QGla | QFinal);
    }

    // Exit-qualification bit 7: clear when there is no guest linear address (e.g. a PDPTE load by MOV CR3); bit 8 is then 0.
    [Fact]
    public void Without_a_guest_linear_address_bits_7_and_8_are_clear() =>
        AssertViolation(Walk(Ept4(pte: 0), EptAccess.Write(Gpa4)).Result, QWrite);

    // Bit 8 clear: the access was to a guest paging-structure entry. Without EPT A/D, reading one is a data read.
    [Fact]
    public void A_guest_paging_structure_read_sets_bit_7_and_clears_bit_8()
    {
        var read = new EptAccess(Gpa4, AccessType.Read, PagingStructure: true, LinearAddress: 0x7000);
        AssertViolation(Walk(Ept4(pte: 0), read).Result, QRead | QGla);
        AssertTranslated(Walk(Ept4(pte: R | WB), read).Result, 0x12_3567, PageSize.Size4K);
    }

    // §29.3.4 and the bit-1 footnote of the exit-qualification table: with EPT A/D on, guest paging-structure
    // accesses are treated as writes; a violation then sets both bit 0 and bit 1.
    [Fact]
    public void With_EPT_AD_a_guest_paging_structure_read_is_a_write_and_sets_bits_0_and_1()
    {
        var read = new EptAccess(Gpa4, AccessType.Read, PagingStructure: true, LinearAddress: 0x7000);
        AssertViolation(Walk(Ept4(pte: R | WB), read, eptp: Eptp4AD).Result, QRead | QWrite | QR | QGla);
    }

    // A guest A/D update is a read-modify-write of the entry: bit 1, and bit 0 (implementation-specific; the model sets it).
    [Fact]
    public void A_guest_AD_update_to_a_read_only_page_is_a_write_violation_on_a_paging_structure()
    {
        var update = new EptAccess(Gpa4, AccessType.Write, PagingStructure: true, LinearAddress: 0x7000);
        AssertViolation(Walk(Ept4(pte: R | X | WB), update).Result, QRead | QWrite | QR | QX | QGla);
    }

    // §29.3.3.2 with mode-based execute control: a fetch from a user-mode linear address needs bit 10 (XU) in every
    // entry, one from a supervisor-mode address needs bit 2; exit-qualification bit 6 is the AND of bit 10.
    [Fact]
    public void With_MBEC_a_user_fetch_needs_XU_and_a_supervisor_fetch_needs_X()
    {
        var mbec = Caps.WithModeBasedExecuteControl(true);
        var xOnly = Ept4(pml4e: RWX | XU, pdpte: RWX | XU, pde: RWX | XU, pte: RWX | WB);
        AssertViolation(Walk(xOnly, EptAccess.Fetch(Gpa4, userModeLinear: true, 0x7000), mbec).Result, QFetch | QR | QW | QX | QGla | QFinal);
        AssertTranslated(Walk(xOnly, EptAccess.Fetch(Gpa4, userModeLinear: false), mbec).Result, 0x12_3567, PageSize.Size4K);

        var xuOnly = Ept4(pml4e: RWX | XU, pdpte: RWX | XU, pde: RWX | XU, pte: R | W | XU | WB);
        AssertViolation(Walk(xuOnly, EptAccess.Fetch(Gpa4, userModeLinear: false, 0x7000), mbec).Result, QFetch | QR | QW | QXU | QGla | QFinal);
        AssertTranslated(Walk(xuOnly, EptAccess.Fetch(Gpa4, userModeLinear: true), mbec).Result, 0x12_3567, PageSize.Size4K);
    }

    // Without mode-based execute control bit 10 is ignored: X alone decides, and bit 6 of the qualification stays 0.
    [Fact]
    public void Without_MBEC_bit_10_is_ignored()
    {
        AssertTranslated(Walk(Ept4(), EptAccess.Fetch(Gpa4, userModeLinear: true)).Result, 0x12_3567, PageSize.Size4K);
        var xu = Ept4(pml4e: RWX | XU, pdpte: RWX | XU, pde: RWX | XU, pte: R | W | XU | WB);
        AssertViolation(Walk(xu, EptAccess.Fetch(Gpa4, userModeLinear: true)).Result, QFetch | QR | QW);
        AssertViolation(Walk(Ept4(pte: XU | WB), EptAccess.Fetch(Gpa4, userModeLinear: true)).Result, QFetch);   // 000b: not present
    }

    // §29.3.2 with mode-based execute control: an entry with bits 2:0 = 000b and bit 10 set is present (user-execute only).
    [Fact]
    public void With_MBEC_an_entry_with_only_bit_10_is_present()
    {
        var mbec = Caps.WithModeBasedExecuteControl(true);
        var memory = Ept4(pml4e: RWX | XU, pdpte: RWX | XU, pde: RWX | XU, pte: XU | WB);
        AssertTranslated(Walk(memory, EptAccess.Fetch(Gpa4, userModeLinear: true), mbec).Result, 0x12_3567, PageSize.Size4K);
        AssertViolation(Walk(memory, EptAccess.Read(Gpa4), mbec).Result, QRead | QXU);
    }

    // Not architectural (KVM): an EPT table outside L1's memory ends the walk with a violation carrying the rights
    // ANDed over the levels above it (here PML4E RWX, PDPTE RWX, PDE R-X).
    [Fact]
    public void A_table_outside_L1_memory_is_a_violation_with_the_rights_of_the_levels_above()
    {
        var memory = Ept4().Write64(0x3018, 0x10_0000 | R | X);
        AssertViolation(Walk(memory, EptAccess.Read(Gpa4)).Result, QRead | QR | QX);
    }

    // =========================================================================================
    // Misconfigurations (§29.3.3.1)
    // =========================================================================================

    // §29.3.3.1: bits 2:0 = 010b (write-only) or 110b (write/execute) at any level.
    [Theory]
    [InlineData(3, W)]
    [InlineData(1, W | X)]
    [InlineData(4, W | X)]
    public void Writable_but_not_readable_is_a_misconfiguration_at_any_level(int level, ulong rwx)
    {
        var memory = level switch
        {
            4 => Ept4(pml4e: rwx),
            3 => Ept4(pdpte: rwx),
            _ => Ept4(pte: rwx | WB),
        };
        AssertMisconfiguration(Walk(memory, EptAccess.Read(Gpa4)).Result, EptMisconfigurationKind.WriteWithoutRead, level);
    }

    // §29.3.3.1: bits 2:0 = 100b where the processor does not support execute-only translations.
    [Fact]
    public void Execute_only_is_a_misconfiguration_where_it_is_not_supported()
    {
        var noXo = Caps.WithExecuteOnly(false);
        AssertMisconfiguration(Walk(Ept4(pte: X | WB), EptAccess.Fetch(Gpa4), noXo).Result, EptMisconfigurationKind.ExecuteOnlyUnsupported, 1);
        AssertMisconfiguration(Walk(Ept4(pdpte: X), EptAccess.Fetch(Gpa4), noXo).Result, EptMisconfigurationKind.ExecuteOnlyUnsupported, 3);
        // With mode-based execute control, 000b with bit 10 is execute-only too.
        var memory = Ept4(pml4e: RWX | XU, pdpte: RWX | XU, pde: RWX | XU, pte: XU | WB);
        AssertMisconfiguration(Walk(memory, EptAccess.Fetch(Gpa4, true), noXo.WithModeBasedExecuteControl(true)).Result,
            EptMisconfigurationKind.ExecuteOnlyUnsupported, 1);
    }

    // §29.3.2 entry formats: bits 51:N in every entry; bits 7:3 in a PML4E (incl. bit 7: no 512 GiB pages) and a
    // PML5E; bits 6:3 in a PDPTE or PDE that references a table; bits 29:12 in a 1 GiB PDPTE, 20:12 in a 2 MiB PDE.
    [Theory]
    [InlineData(4, 1UL << 46)]   // MAXPHYADDR 46
    [InlineData(4, 1UL << 51)]
    [InlineData(4, 1UL << 3)]
    [InlineData(4, 1UL << 7)]
    [InlineData(3, 1UL << 6)]
    [InlineData(2, 1UL << 3)]
    [InlineData(1, 1UL << 46)]
    public void A_reserved_bit_is_a_misconfiguration(int level, ulong bit)
    {
        var memory = level switch
        {
            4 => Ept4(pml4e: RWX | bit),
            3 => Ept4(pdpte: RWX | bit),
            2 => Ept4(pde: RWX | bit),
            _ => Ept4(pte: RWX | WB | bit),
        };
        AssertMisconfiguration(Walk(memory, EptAccess.Read(Gpa4)).Result, EptMisconfigurationKind.ReservedBits, level);
    }

    [Fact]
    public void A_PML5Es_bits_7_to_3_are_reserved() =>
        AssertMisconfiguration(Walk(Ept5(pml5e: RWX | 1UL << 5), EptAccess.Read(Gpa5), eptp: Eptp5).Result, EptMisconfigurationKind.ReservedBits, 5);

    [Fact]
    public void Large_page_frames_must_be_aligned_bits_29_to_12_and_20_to_12_are_reserved()
    {
        var big1G = Ept4().Write64(0x2010, 0x1_4000_0000 | 1UL << 21 | PS | RWX | WB);
        AssertMisconfiguration(Walk(big1G, EptAccess.Read(Gpa4)).Result, EptMisconfigurationKind.ReservedBits, 3);
        var big2M = Ept4().Write64(0x3018, 0x1_2340_0000 | 1UL << 12 | PS | RWX | WB);
        AssertMisconfiguration(Walk(big2M, EptAccess.Read(Gpa4)).Result, EptMisconfigurationKind.ReservedBits, 2);
    }

    // Appendix A.10: where 1 GiB (2 MiB) EPT pages are not supported, bit 7 of a PDPTE (PDE) is reserved.
    [Fact]
    public void Bit_7_is_reserved_where_that_page_size_is_not_supported()
    {
        var big1G = Ept4().Write64(0x2010, 0x1_4000_0000 | PS | RWX | WB);
        AssertMisconfiguration(Walk(big1G, EptAccess.Read(Gpa4), Caps.WithPages1G(false)).Result, EptMisconfigurationKind.ReservedBits, 3);
        var big2M = Ept4().Write64(0x3018, 0x1_2340_0000 | PS | RWX | WB);
        AssertMisconfiguration(Walk(big2M, EptAccess.Read(Gpa4), Caps.WithPages2M(false)).Result, EptMisconfigurationKind.ReservedBits, 2);
    }

    // §29.3.3.1: the last entry used (a PTE, or a PDE/PDPTE with bit 7) with memory type 2, 3 or 7. Types 0, 1, 4, 5, 6 are valid.
    [Theory]
    [InlineData(2, true)]
    [InlineData(3, true)]
    [InlineData(7, true)]
    [InlineData(0, false)]
    [InlineData(1, false)]
    [InlineData(4, false)]
    [InlineData(5, false)]
    [InlineData(6, false)]
    public void A_leaf_with_a_reserved_memory_type_is_a_misconfiguration(int type, bool misconfigured)
    {
        var result = Walk(Ept4(pte: RWX | MT(type)), EptAccess.Read(Gpa4)).Result;
        if (misconfigured) AssertMisconfiguration(result, EptMisconfigurationKind.MemoryType, 1);
        else AssertTranslated(result, 0x12_3567, PageSize.Size4K);
        var big = Ept4().Write64(0x3018, 0x1_2340_0000 | PS | RWX | MT(type));
        if (misconfigured) AssertMisconfiguration(Walk(big, EptAccess.Read(Gpa4)).Result, EptMisconfigurationKind.MemoryType, 2);
    }

    // §29.3.3, §29.3.3.3: a violation happens only when there is no misconfiguration: a write to a read-only page whose
    // leaf is misconfigured is a misconfiguration. But the walk stops at a not-present entry above it.
    [Fact]
    public void A_misconfiguration_wins_over_a_permission_violation_but_not_over_a_not_present_entry_above()
    {
        AssertMisconfiguration(Walk(Ept4(pte: R | MT(7)), EptAccess.Write(Gpa4)).Result, EptMisconfigurationKind.MemoryType, 1);
        AssertViolation(Walk(Ept4(pde: 0, pte: W), EptAccess.Write(Gpa4)).Result, QWrite);
    }

    // =========================================================================================
    // Accessed and dirty flags (§29.3.4)
    // =========================================================================================

    // §29.3.4: without EPTP bit 6 the processor writes no EPT A/D flags; bits 8 and 9 are ignored.
    [Fact]
    public void Without_EPTP_bit_6_the_walk_writes_nothing()
    {
        var memory = Ept4(pde: RWX | A | D);
        var e = Walk(memory, EptAccess.Write(Gpa4));
        AssertTranslated(e.Result, 0x12_3567, PageSize.Size4K);
        Assert.Empty(e.Updates);
        Assert.Same(memory, e.MemoryAfter);
    }

    // §29.3.4: bit 8 (A) is set in every entry used; bit 9 (D) only in the leaf of a write.
    [Fact]
    public void With_EPTP_bit_6_a_read_sets_A_in_every_entry_used_and_no_D()
    {
        var after = Walk(Ept4(), EptAccess.Read(Gpa4), eptp: Eptp4AD).MemoryAfter;
        Assert.Equal(["0x2107", "0x3107", "0x4107", "0x123137"],
            new[] { Q(after, 0x1008), Q(after, 0x2010), Q(after, 0x3018), Q(after, 0x4020) });
    }

    [Fact]
    public void With_EPTP_bit_6_a_write_sets_A_everywhere_and_D_in_the_leaf()
    {
        var e = Walk(Ept4(), EptAccess.Write(Gpa4), eptp: Eptp4AD);
        Assert.Equal(["0x2107", "0x3107", "0x4107", "0x123337"],
            new[] { Q(e.MemoryAfter, 0x1008), Q(e.MemoryAfter, 0x2010), Q(e.MemoryAfter, 0x3018), Q(e.MemoryAfter, 0x4020) });
        Assert.Equal(5, e.Updates.Length);   // four A bits, then the leaf's D
    }

    // §29.3.4: D goes in the entry that maps the page, here a 2 MiB PDE.
    [Fact]
    public void With_EPTP_bit_6_a_write_to_a_2M_page_sets_D_in_the_PDE()
    {
        var memory = Ept4().Write64(0x3018, 0x1_2340_0000 | PS | RWX | WB);
        Assert.Equal("0x1234003b7", Q(Walk(memory, EptAccess.Write(Gpa4), eptp: Eptp4AD).MemoryAfter, 0x3018));
    }

    // §29.3.4: with EPT A/D, a guest paging-structure access is treated as a write, so D is set on the leaf.
    [Fact]
    public void With_EPTP_bit_6_a_guest_paging_structure_read_sets_D()
    {
        var read = new EptAccess(Gpa4, AccessType.Read, PagingStructure: true, LinearAddress: 0x7000);
        Assert.Equal("0x123337", Q(Walk(Ept4(), read, eptp: Eptp4AD).MemoryAfter, 0x4020));
    }

    // The model (as the guest walk and KVM): a walk that ends in a VM exit writes no A/D flags.
    [Fact]
    public void A_walk_that_ends_in_a_violation_writes_nothing()
    {
        var memory = Ept4(pte: R | WB);
        var e = Walk(memory, EptAccess.Write(Gpa4), eptp: Eptp4AD);
        AssertViolation(e.Result, QWrite | QR);
        Assert.Same(memory, e.MemoryAfter);
    }

    // 5-level with A/D: the PML5E is used too.
    [Fact]
    public void A_5_level_walk_with_AD_sets_A_in_the_PML5E()
    {
        var after = Walk(Ept5(), EptAccess.Read(Gpa5), eptp: new EptPointer(0x1066)).MemoryAfter;
        Assert.Equal("0x2107", Q(after, 0x1010));
    }

    // =========================================================================================
    // The explanation
    // =========================================================================================

    [Fact]
    public void Explain_names_each_level_and_the_rule_that_ended_the_walk()
    {
        var e = Walk(Ept4(pte: R | WB), EptAccess.Write(Gpa4));
        Assert.Equal(["PML4E", "PDPTE", "PDE", "PTE"], e.Steps.Select(s => s.EntryName));
        Assert.Contains("needs W", e.Rule);
        Assert.Contains("§29.3.3.2", e.Rule);
        Assert.Contains("PTE   @ 0x4020", e.ToString());
    }
}
