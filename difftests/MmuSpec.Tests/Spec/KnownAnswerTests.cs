using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;
using static MmuSpec.Spec.Paging.Privilege;
using static MmuSpec.Tests.Spec.PageTableBuilder;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for the spec's page walk, each derived by hand from the Intel SDM Vol. 3 ch. 4
/// (section and table cited above each test). The trees are laid out in <see cref="PageTableBuilder"/>;
/// every expected gpa, error code (Figure 4-12: P=0x1, W=0x2, U=0x4, RSVD=0x8, I/D=0x10, PK=0x20)
/// and entry value after the walk is a literal.
/// </summary>
public sealed class KnownAnswerTests
{
    static readonly PagingControls L4 = new(PagingMode.Long4);        // MAXPHYADDR 46
    static readonly PagingControls L5 = new(PagingMode.Long5);
    static readonly PagingControls Pae = new(PagingMode.Pae);
    static readonly PagingControls B32 = new(PagingMode.Bits32);

    // =========================================================================================
    // 4-level and 5-level translation
    // =========================================================================================

    // §4.5.4, Figure 4-8, Table 4-20: PTE bits 51:12 hold the frame; linear bits 11:0 are the offset.
    [Fact]
    public void Four_level_paging_translates_through_PML4E_PDPTE_PDE_and_PTE_to_a_4K_frame()
    {
        var (r, _) = Walk(L4, Long4Tree(), Access.Read(Long4Gva));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // §4.5.4: the PML4E is selected by linear bits 47:39, the PDPTE by 38:30, the PDE by 29:21 and
    // the PTE by 20:12, each index times 8 added to the table's base.
    [Fact]
    public void Four_level_paging_reads_each_entry_at_the_index_taken_from_the_linear_address()
    {
        var memory = Long4Tree();
        var e = PageWalk.Explain(Boot(L4, memory).Cpu, memory, Access.Read(Long4Gva));
        Assert.Equal(new ulong?[] { 0x1008, 0x2010, 0x3018, 0x4020 }, e.Steps.Select(s => s.EntryGpa));
        Assert.Equal(new[] { 4, 3, 2, 1 }, e.Steps.Select(s => s.Level));
    }

    // §4.5.4, Table 4-18: a PDE with PS=1 maps a 2-MByte page; bits 51:21 are the frame and linear
    // bits 20:0 the offset.
    [Fact]
    public void A_PDE_with_PS_maps_a_2M_page_that_keeps_linear_bits_20_to_0()
    {
        var memory = Long4Tree().Write64(0x3018, 0x1_2340_0000 | PS | PWU);
        var (r, _) = Walk(L4, memory, Access.Read(Long4Gva));
        AssertTranslated(r, 0x1_2340_4567, PageSize.Size2M);
    }

    // §4.5.4, Table 4-16: a PDPTE with PS=1 maps a 1-GByte page; bits 51:30 are the frame and linear
    // bits 29:0 the offset.
    [Fact]
    public void A_PDPTE_with_PS_maps_a_1G_page_that_keeps_linear_bits_29_to_0()
    {
        var memory = Long4Tree().Write64(0x2010, 0x1_4000_0000 | PS | PWU);
        var (r, _) = Walk(L4, memory, Access.Read(Long4Gva));
        AssertTranslated(r, 0x1_4060_4567, PageSize.Size1G);
    }

    // §4.5.1, §4.5.4: 5-level paging adds a PML5 whose entry is selected by linear bits 56:48.
    [Fact]
    public void Five_level_paging_adds_a_PML5_level_indexed_by_linear_bits_56_to_48()
    {
        var memory = Long5Tree();
        var e = PageWalk.Explain(Boot(L5, memory).Cpu, memory, Access.Read(Long5Gva));
        AssertTranslated(e.Result, 0x12_3567, PageSize.Size4K);
        Assert.Equal(new ulong?[] { 0x1010, 0x2008, 0x3010, 0x4018, 0x5020 }, e.Steps.Select(s => s.EntryGpa));
    }

    // §4.5.4, Table 4-16: 1-GByte pages exist in 5-level paging too.
    [Fact]
    public void Five_level_paging_maps_a_1G_page_from_a_PDPTE_with_PS()
    {
        var memory = Long5Tree().Write64(0x3010, 0x1_4000_0000 | PS | PWU);
        var (r, _) = Walk(L5, memory, Access.Read(Long5Gva));
        AssertTranslated(r, 0x1_4060_4567, PageSize.Size1G);
    }

    // =========================================================================================
    // Canonical addresses (§3.3.7.1, §4.5): #GP, never #PF
    // =========================================================================================

    // §3.3.7.1: with 4-level paging bits 63:47 must all equal bit 47. RAM is empty here, so a walk
    // would give #PF; the answer must be #GP.
    [Fact]
    public void A_non_canonical_address_is_GP_not_PF_in_four_level_paging()
    {
        var (r, _) = Walk(L4, Ram(), Access.Read(0x0000_8000_0000_0000));
        AssertGeneralProtection(r, GpReason.NonCanonical);
    }

    // §4.5.1: with 5-level paging bits 63:57 must all equal bit 56.
    [Fact]
    public void A_non_canonical_address_is_GP_not_PF_in_five_level_paging()
    {
        var (r, _) = Walk(L5, Ram(), Access.Write(0x0100_0000_0000_0000, User));
        AssertGeneralProtection(r, GpReason.NonCanonical);
    }

    // §3.3.7.1, §4.5.1: 0x0002_0080_8060_4567 has bit 49 set and bit 47 clear: canonical for 57-bit
    // linear addresses, not for 48-bit ones.
    [Fact]
    public void An_address_using_bits_56_to_48_translates_in_five_level_paging_but_is_GP_in_four_level()
    {
        var memory = Long5Tree();
        AssertGeneralProtection(Walk(L4, memory, Access.Read(Long5Gva)).Result, GpReason.NonCanonical);
        AssertTranslated(Walk(L5, memory, Access.Read(Long5Gva)).Result, 0x12_3567, PageSize.Size4K);
    }

    // §3.3.7.1: 0xFFFF_8000_0000_0000 has bits 63:47 all 1: canonical, so it is walked (PML4 index 256,
    // entry 0x1800 is zero) and faults as not present.
    [Fact]
    public void An_upper_half_address_with_bits_63_to_47_set_is_canonical_and_walks_to_a_page_fault()
    {
        var (r, _) = Walk(L4, Ram(), Access.Read(0xFFFF_8000_0000_0000));
        AssertPageFault(r, 0x0);
    }

    // §4.5.1: 0xFF00_0000_0000_0000 has bits 63:56 all 1 (canonical with LA57) but bits 55:47 clear
    // (non-canonical without it).
    [Fact]
    public void Bits_63_to_56_all_set_are_canonical_in_five_level_paging_only()
    {
        AssertPageFault(Walk(L5, Ram(), Access.Read(0xFF00_0000_0000_0000)).Result, 0x0);
        AssertGeneralProtection(Walk(L4, Ram(), Access.Read(0xFF00_0000_0000_0000)).Result, GpReason.NonCanonical);
    }

    // =========================================================================================
    // Not-present entries (§4.7: P=0 in the error code)
    // =========================================================================================

    // §4.5.4, §4.7: a PML4E with P=0 ends the walk; the error code has P=0 and, for a supervisor
    // read, nothing else.
    [Fact]
    public void A_not_present_PML4E_faults_with_error_code_0_for_a_supervisor_read()
    {
        var (r, _) = Walk(L4, Long4Tree(pml4e: W | U), Access.Read(Long4Gva));
        AssertPageFault(r, 0x0);
    }

    // §4.7: U/S=1 in the error code for a user-mode access, even when the fault is not-present.
    [Fact]
    public void A_not_present_PDPTE_faults_with_only_U_set_for_a_user_read()
    {
        var (r, _) = Walk(L4, Long4Tree(pdpte: W | U), Access.Read(Long4Gva, User));
        AssertPageFault(r, 0x4);
    }

    // §4.7: W/R=1 in the error code for a write.
    [Fact]
    public void A_not_present_PDE_faults_with_only_W_set_for_a_supervisor_write()
    {
        var (r, _) = Walk(L4, Long4Tree(pde: W | U), Access.Write(Long4Gva));
        AssertPageFault(r, 0x2);
    }

    // §4.7: a user write to a not-present PTE: W and U set, P clear.
    [Fact]
    public void A_not_present_PTE_faults_with_W_and_U_set_for_a_user_write()
    {
        var (r, _) = Walk(L4, Long4Tree(pte: W | U), Access.Write(Long4Gva, User));
        AssertPageFault(r, 0x6);
    }

    // §4.5.4: the PML5E is checked first in 5-level paging.
    [Fact]
    public void A_not_present_PML5E_faults_as_not_present()
    {
        var (r, _) = Walk(L5, Long5Tree(pml5e: W | U), Access.Read(Long5Gva));
        AssertPageFault(r, 0x0);
    }

    // Tables 4-14..4-20 ("Ignored" when P=0), §4.7: reserved bits are checked only in present
    // entries, so bit 51 in a not-present PTE still gives a not-present fault (RSVD=0).
    [Fact]
    public void Reserved_bits_in_a_not_present_entry_are_ignored()
    {
        var (r, _) = Walk(L4, Long4Tree(pte: (1UL << 51) | W | U), Access.Read(Long4Gva));
        AssertPageFault(r, 0x0);
    }

    // Not architectural (KVM behaviour): a paging structure outside every memslot is treated as
    // not present. Here the PDE points at a page table at 0x10_0000, beyond the 64 KiB slot.
    [Fact]
    public void A_page_table_outside_every_memslot_faults_as_not_present()
    {
        var memory = Long4Tree().Write64(0x3018, 0x10_0000 | PWU);
        var (r, _) = Walk(L4, memory, Access.Write(Long4Gva, User));
        AssertPageFault(r, 0x6);
    }

    // =========================================================================================
    // Reserved bits (§4.5.4 Tables 4-14..4-20, §4.7: P=1, RSVD=1)
    // =========================================================================================

    // Table 4-20: PTE bits 51:MAXPHYADDR are reserved; with MAXPHYADDR 46, bit 46 is one of them.
    [Fact]
    public void A_PTE_bit_at_MAXPHYADDR_is_reserved_and_faults_with_P_and_RSVD()
    {
        var (r, _) = Walk(L4, Long4Tree(pte: (1UL << 46) | PWU), Access.Read(Long4Gva));
        AssertPageFault(r, 0x9);
    }

    // Table 4-20: with MAXPHYADDR 52 every bit up to 51 is an address bit, so bit 46 lands in the gpa.
    [Fact]
    public void The_same_PTE_bit_is_an_address_bit_when_MAXPHYADDR_is_52()
    {
        var (r, _) = Walk(L4.WithMaxPhyAddr(52), Long4Tree(pte: (1UL << 46) | PWU), Access.Read(Long4Gva));
        AssertTranslated(r, 0x4000_0012_3567, PageSize.Size4K);
    }

    // §4.5.4 (reserved bits): if IA32_EFER.NXE = 0, bit 63 of every present entry is reserved.
    [Fact]
    public void Bit_63_is_reserved_when_EFER_NXE_is_clear()
    {
        var (r, _) = Walk(L4, Long4Tree(pde: XD | PWU), Access.Write(Long4Gva, User));
        AssertPageFault(r, 0xF);
    }

    // Table 4-19: with IA32_EFER.NXE = 1 bit 63 is XD, which does not restrict data reads.
    [Fact]
    public void Bit_63_is_XD_when_EFER_NXE_is_set_and_does_not_restrict_a_read()
    {
        var (r, _) = Walk(L4.WithEferNxe(true), Long4Tree(pde: XD | PWU), Access.Read(Long4Gva, User));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // Table 4-15: bit 7 (PS) of a PML4E is reserved (there are no 512-GByte pages).
    [Fact]
    public void PS_in_a_PML4E_is_reserved()
    {
        var (r, _) = Walk(L4, Long4Tree(pml4e: PS | PWU), Access.Read(Long4Gva));
        AssertPageFault(r, 0x9);
    }

    // Table 4-14: bit 7 (PS) of a PML5E is reserved.
    [Fact]
    public void PS_in_a_PML5E_is_reserved()
    {
        var (r, _) = Walk(L5, Long5Tree(pml5e: PS | PWU), Access.Read(Long5Gva));
        AssertPageFault(r, 0x9);
    }

    // Table 4-18: a 2-MByte PDE reserves bits 20:13 (between PAT and the frame): a misaligned
    // frame (bit 13 or bit 20 set) is a reserved-bit fault, not a rounding.
    [Fact]
    public void A_2M_page_with_any_of_bits_20_to_13_set_is_reserved()
    {
        var bit13 = Long4Tree().Write64(0x3018, 0x1_2340_2000 | PS | PWU);
        var bit20 = Long4Tree().Write64(0x3018, 0x1_2350_0000 | PS | PWU);
        AssertPageFault(Walk(L4, bit13, Access.Read(Long4Gva)).Result, 0x9);
        AssertPageFault(Walk(L4, bit20, Access.Read(Long4Gva)).Result, 0x9);
    }

    // Table 4-16: a 1-GByte PDPTE reserves bits 29:13.
    [Fact]
    public void A_1G_page_with_any_of_bits_29_to_13_set_is_reserved()
    {
        var bit13 = Long4Tree().Write64(0x2010, 0x1_4000_2000 | PS | PWU);
        var bit29 = Long4Tree().Write64(0x2010, 0x1_6000_0000 | PS | PWU);
        AssertPageFault(Walk(L4, bit13, Access.Read(Long4Gva)).Result, 0x9);
        AssertPageFault(Walk(L4, bit29, Access.Read(Long4Gva)).Result, 0x9);
    }

    // Table 4-17, §4.7: a reserved bit in a PDPTE that references a PD stops the walk at that level.
    [Fact]
    public void A_reserved_bit_in_a_non_leaf_PDPTE_stops_the_walk_there()
    {
        var memory = Long4Tree(pdpte: (1UL << 51) | PWU);
        var e = PageWalk.Explain(Boot(L4, memory).Cpu, memory, Access.Read(Long4Gva));
        AssertPageFault(e.Result, 0x9);
        Assert.Equal(new ulong?[] { 0x1008, 0x2010 }, e.Steps.Select(s => s.EntryGpa));
    }

    // §4.7: RSVD means there is no translation, so access rights are never consulted: a user write
    // to a supervisor read-only PTE with a reserved bit reports RSVD (0xF), not a protection fault (0x7).
    [Fact]
    public void A_reserved_bit_fault_is_reported_instead_of_a_rights_fault()
    {
        var (r, _) = Walk(L4, Long4Tree(pte: (1UL << 51) | P), Access.Write(Long4Gva, User));
        AssertPageFault(r, 0xF);
    }

    // Table 4-17: bits 62:52 of an IA-32e entry that references a table are ignored, not reserved.
    [Fact]
    public void Bits_62_to_52_of_a_four_level_non_leaf_entry_are_ignored()
    {
        var (r, _) = Walk(L4, Long4Tree(pde: (1UL << 55) | PWU), Access.Read(Long4Gva));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // =========================================================================================
    // U/S and R/W (§4.6.1): ANDed over every level
    // =========================================================================================

    // §4.6: U/S=0 in at least one entry makes a supervisor-mode address; user reads of it fault.
    [Fact]
    public void A_user_read_faults_when_U_S_is_clear_at_any_one_level()
    {
        AssertPageFault(Walk(L4, Long4Tree(pml4e: P | W), Access.Read(Long4Gva, User)).Result, 0x5);
        AssertPageFault(Walk(L4, Long4Tree(pde: P | W), Access.Read(Long4Gva, User)).Result, 0x5);
        AssertPageFault(Walk(L4, Long4Tree(pte: P | W), Access.Read(Long4Gva, User)).Result, 0x5);
    }

    // §4.6: U/S=1 at every level makes a user-mode address, readable from user mode.
    [Fact]
    public void A_user_read_succeeds_when_U_S_is_set_at_every_level()
    {
        var (r, _) = Walk(L4, Long4Tree(), Access.Read(Long4Gva, User));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // §4.6: the PML5E's U/S counts like any other level's.
    [Fact]
    public void In_five_level_paging_U_S_clear_in_the_PML5E_makes_a_supervisor_mode_address()
    {
        var (r, _) = Walk(L5, Long5Tree(pml5e: P | W), Access.Read(Long5Gva, User));
        AssertPageFault(r, 0x5);
    }

    // §4.6.1: user-mode writes need R/W=1 in every entry controlling the translation.
    [Fact]
    public void A_user_write_faults_when_R_W_is_clear_at_any_one_level()
    {
        AssertPageFault(Walk(L4, Long4Tree(pdpte: P | U), Access.Write(Long4Gva, User)).Result, 0x7);
        AssertPageFault(Walk(L4, Long4Tree(pte: P | U), Access.Write(Long4Gva, User)).Result, 0x7);
    }

    // §4.1.3, §4.6.1: user-mode writes to read-only addresses are never allowed, regardless of CR0.WP.
    [Fact]
    public void A_user_write_to_a_read_only_page_faults_even_when_CR0_WP_is_clear()
    {
        var (r, _) = Walk(L4.WithCr0Wp(false), Long4Tree(pte: P | U), Access.Write(Long4Gva, User));
        AssertPageFault(r, 0x7);
    }

    // §4.6.1: with CR0.WP=1, supervisor writes need R/W=1 at every level.
    [Fact]
    public void Supervisor_write_to_read_only_page_faults_when_CR0_WP_is_set()
    {
        var (r, _) = Walk(L4.WithCr0Wp(true), Long4Tree(pte: P), Access.Write(Long4Gva));
        AssertPageFault(r, 0x3);
    }

    // §4.6.1: with CR0.WP=0, supervisor writes ignore R/W; the write sets A and D in the PTE (§4.8):
    // 0x12_3001 | A | D = 0x12_3061.
    [Fact]
    public void Supervisor_write_to_read_only_page_succeeds_when_CR0_WP_is_clear()
    {
        var (r, after) = Walk(L4.WithCr0Wp(false), Long4Tree(pte: P), Access.Write(Long4Gva));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
        Assert.Equal("0x123061", Q(after, 0x4020));
    }

    // §4.6.1: an implicit supervisor-mode access is a supervisor-mode access whatever the CPL, so
    // its error code has U/S=0 (§4.7) where a user access has U/S=1.
    [Fact]
    public void An_implicit_supervisor_access_reports_U_clear_where_a_user_access_reports_U_set()
    {
        var memory = Long4Tree(pte: W | U);
        AssertPageFault(Walk(L4, memory, Access.Write(Long4Gva, ImplicitSupervisor)).Result, 0x2);
        AssertPageFault(Walk(L4, memory, Access.Write(Long4Gva, User)).Result, 0x6);
    }

    // §4.6.1: an implicit supervisor-mode access may write a supervisor page a user cannot touch.
    [Fact]
    public void An_implicit_supervisor_access_may_write_a_supervisor_mode_page()
    {
        var memory = Long4Tree(pte: P | W);
        AssertTranslated(Walk(L4, memory, Access.Write(Long4Gva, ImplicitSupervisor)).Result, 0x12_3567, PageSize.Size4K);
        AssertPageFault(Walk(L4, memory, Access.Write(Long4Gva, User)).Result, 0x7);
    }

    // =========================================================================================
    // Execute-disable (§4.6.1, Table 4-19): XD ORed over every level, only with EFER.NXE=1
    // =========================================================================================

    // §4.6.1: with NXE=1, no fetch from an address with XD=1 in any entry; I/D is reported (§4.7).
    [Fact]
    public void XD_in_the_PML4E_forbids_a_supervisor_fetch_when_NXE_is_set()
    {
        var (r, _) = Walk(L4.WithEferNxe(true), Long4Tree(pml4e: XD | PWU), Access.Fetch(Long4Gva));
        AssertPageFault(r, 0x11);
    }

    // §4.6.1, §4.7: a user fetch from an XD page: P, U and I/D.
    [Fact]
    public void XD_in_the_PDE_forbids_a_user_fetch_and_the_error_code_has_I_D()
    {
        var (r, _) = Walk(L4.WithEferNxe(true), Long4Tree(pde: XD | PWU), Access.Fetch(Long4Gva, User));
        AssertPageFault(r, 0x15);
    }

    // §4.6.1: with NXE=1 and XD=0 at every level, user fetches from user-mode addresses are allowed.
    [Fact]
    public void A_fetch_succeeds_with_NXE_set_when_no_level_has_XD()
    {
        var (r, _) = Walk(L4.WithEferNxe(true), Long4Tree(), Access.Fetch(Long4Gva, User));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // =========================================================================================
    // SMEP and SMAP (§4.6.1)
    // =========================================================================================

    // §4.6.1: with CR4.SMEP=1, instructions may not be fetched from any user-mode address in
    // supervisor mode; SMEP=1 makes I/D reported (§4.7) even with NXE=0.
    [Fact]
    public void SMEP_forbids_a_supervisor_fetch_from_a_user_mode_page()
    {
        var (r, _) = Walk(L4.WithCr4Smep(true), Long4Tree(), Access.Fetch(Long4Gva));
        AssertPageFault(r, 0x11);
    }

    // §4.6: U/S=0 in the PML4E makes a supervisor-mode address, which SMEP does not restrict.
    [Fact]
    public void SMEP_allows_a_supervisor_fetch_when_some_level_has_U_S_clear()
    {
        var (r, _) = Walk(L4.WithCr4Smep(true), Long4Tree(pml4e: P | W), Access.Fetch(Long4Gva));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.1: with SMEP=0 (and NXE=0) supervisor fetches from user-mode addresses are allowed.
    [Fact]
    public void Without_SMEP_a_supervisor_may_fetch_from_a_user_mode_page()
    {
        var (r, _) = Walk(L4, Long4Tree(), Access.Fetch(Long4Gva));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.1: SMEP governs supervisor-mode fetches only.
    [Fact]
    public void SMEP_does_not_restrict_user_fetches()
    {
        var (r, _) = Walk(L4.WithCr4Smep(true), Long4Tree(), Access.Fetch(Long4Gva, User));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.1: with CR4.SMAP=1 and EFLAGS.AC=0, supervisor data reads of user-mode addresses fault.
    [Fact]
    public void SMAP_forbids_a_supervisor_read_of_a_user_mode_page_when_AC_is_clear()
    {
        var (r, _) = Walk(L4.WithCr4Smap(true), Long4Tree(), Access.Read(Long4Gva));
        AssertPageFault(r, 0x1);
    }

    // §4.6.1: with SMAP=1, EFLAGS.AC=1 lets explicit supervisor reads of user-mode addresses through.
    [Fact]
    public void SMAP_allows_an_explicit_supervisor_read_of_a_user_mode_page_when_AC_is_set()
    {
        var (r, _) = Walk(L4.WithCr4Smap(true).WithEflagsAc(true), Long4Tree(), Access.Read(Long4Gva));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.1: implicit supervisor-mode accesses cannot use EFLAGS.AC; the fault has U/S=0.
    [Fact]
    public void SMAP_forbids_an_implicit_supervisor_read_even_when_AC_is_set()
    {
        var (r, _) = Walk(L4.WithCr4Smap(true).WithEflagsAc(true), Long4Tree(), Access.Read(Long4Gva, ImplicitSupervisor));
        AssertPageFault(r, 0x1);
    }

    // §4.6.1: with SMAP=1 and AC=0, no supervisor write to a user-mode address, even writable and
    // even with CR0.WP=0.
    [Fact]
    public void SMAP_forbids_a_supervisor_write_to_a_user_mode_page_when_AC_is_clear_even_with_WP_clear()
    {
        var (r, _) = Walk(L4.WithCr4Smap(true), Long4Tree(), Access.Write(Long4Gva));
        AssertPageFault(r, 0x3);
    }

    // §4.6.1: with SMAP=1 and AC=1, explicit supervisor writes to user-mode addresses follow CR0.WP:
    // a read-only user page faults with WP=1 and is writable with WP=0.
    [Fact]
    public void SMAP_with_AC_set_lets_supervisor_writes_to_user_pages_follow_CR0_WP()
    {
        var c = L4.WithCr4Smap(true).WithEflagsAc(true);
        var memory = Long4Tree(pte: P | U);
        AssertPageFault(Walk(c.WithCr0Wp(true), memory, Access.Write(Long4Gva)).Result, 0x3);
        AssertTranslated(Walk(c.WithCr0Wp(false), memory, Access.Write(Long4Gva)).Result, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.1: SMAP concerns user-mode addresses only; supervisor pages stay readable and writable.
    [Fact]
    public void SMAP_does_not_restrict_supervisor_accesses_to_supervisor_mode_pages()
    {
        var c = L4.WithCr4Smap(true).WithCr0Wp(true);
        var memory = Long4Tree(pte: P | W);
        AssertTranslated(Walk(c, memory, Access.Read(Long4Gva)).Result, 0x12_3567, PageSize.Size4K);
        AssertTranslated(Walk(c, memory, Access.Write(Long4Gva, ImplicitSupervisor)).Result, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.1: SMAP restricts data accesses; supervisor fetches are SMEP's business.
    [Fact]
    public void SMAP_does_not_apply_to_supervisor_fetches()
    {
        var (r, _) = Walk(L4.WithCr4Smap(true), Long4Tree(), Access.Fetch(Long4Gva));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.1: user-mode accesses are not affected by SMAP.
    [Fact]
    public void SMAP_does_not_restrict_user_mode_accesses()
    {
        var (r, _) = Walk(L4.WithCr4Smap(true), Long4Tree(), Access.Write(Long4Gva, User));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // =========================================================================================
    // The I/D bit of the error code (§4.7): only with SMEP=1, or NXE=1 outside 32-bit paging
    // =========================================================================================

    // §4.7: a user fetch from a supervisor page with NXE=0 and SMEP=0 reports P and U only.
    [Fact]
    public void A_fetch_fault_does_not_report_I_D_without_NXE_or_SMEP()
    {
        var (r, _) = Walk(L4, Long4Tree(pte: P | W), Access.Fetch(Long4Gva, User));
        AssertPageFault(r, 0x5);
    }

    // §4.7: with NXE=1 in IA-32e paging every fetch fault reports I/D, whatever the cause.
    [Fact]
    public void A_fetch_fault_reports_I_D_with_NXE_even_when_XD_is_not_the_cause()
    {
        var (r, _) = Walk(L4.WithEferNxe(true), Long4Tree(pte: P | W), Access.Fetch(Long4Gva, User));
        AssertPageFault(r, 0x15);
    }

    // §4.7: I/D is reported for a not-present fetch fault too (P=0, I/D=1).
    [Fact]
    public void A_not_present_fetch_fault_reports_I_D_when_NXE_is_set()
    {
        var (r, _) = Walk(L4.WithEferNxe(true), Long4Tree(pte: W | U), Access.Fetch(Long4Gva));
        AssertPageFault(r, 0x10);
    }

    // §4.7: 32-bit paging never reports I/D on account of NXE (there is no XD there, §4.3).
    [Fact]
    public void Thirty_two_bit_paging_does_not_report_I_D_for_NXE()
    {
        var memory = Bits32Tree(pte: (uint)(P | W));
        var (r, _) = Walk(B32.WithEferNxe(true), memory, Access.Fetch(Bits32Gva, User));
        AssertPageFault(r, 0x5);
    }

    // §4.6.1, §4.7: SMEP works in 32-bit paging and makes I/D reported there.
    [Fact]
    public void Thirty_two_bit_paging_with_SMEP_forbids_a_supervisor_fetch_from_a_user_page_and_reports_I_D()
    {
        var (r, _) = Walk(B32.WithCr4Smep(true), Bits32Tree(), Access.Fetch(Bits32Gva));
        AssertPageFault(r, 0x11);
    }

    // §4.3, §4.6.1: 32-bit paging has no XD, so EFER.NXE does not restrict fetches there.
    [Fact]
    public void Thirty_two_bit_paging_ignores_NXE_for_fetches()
    {
        var (r, _) = Walk(B32.WithEferNxe(true), Bits32Tree(), Access.Fetch(Bits32Gva, User));
        AssertTranslated(r, 0x34_5ABC, PageSize.Size4K);
    }

    // §4.4.2 Table 4-11, §4.7: in PAE paging with NXE=1, XD in a PTE forbids fetches and I/D is
    // reported; with NXE=0 the same bit 63 is reserved (P, RSVD; no I/D since NXE=0 and SMEP=0).
    [Fact]
    public void PAE_XD_forbids_fetches_with_NXE_and_is_a_reserved_bit_without_it()
    {
        var memory = PaeTree(pte: XD | PWU);
        AssertPageFault(Walk(Pae.WithEferNxe(true), memory, Access.Fetch(PaeGva)).Result, 0x11);
        AssertPageFault(Walk(Pae, memory, Access.Fetch(PaeGva)).Result, 0x9);
    }

    // =========================================================================================
    // Protection keys (§4.6.2): PKRU bit 2k = AD, bit 2k+1 = WD for key k in the leaf's bits 62:59
    // =========================================================================================

    static PagingControls Pke(uint pkru) => new(PagingMode.Long4, cr4Pke: true, pkru: pkru);

    // §4.6.2: AD for key 5 (PKRU bit 10 = 0x400) forbids every data access to user-mode addresses
    // with key 5; §4.7: PK=1 in the error code (P=1, U=1, PK=0x20).
    [Fact]
    public void PKRU_AD_forbids_a_user_read_and_the_error_code_has_PK()
    {
        var (r, _) = Walk(Pke(0x400), Long4Tree(pte: Key(5) | PWU), Access.Read(Long4Gva, User));
        AssertPageFault(r, 0x25);
    }

    // §4.6.2: AD applies to supervisor-mode data accesses to user-mode addresses too.
    [Fact]
    public void PKRU_AD_forbids_a_supervisor_read_of_a_user_mode_page()
    {
        var (r, _) = Walk(Pke(0x400), Long4Tree(pte: Key(5) | PWU), Access.Read(Long4Gva));
        AssertPageFault(r, 0x21);
    }

    // §4.6.2: WD for key 5 (PKRU bit 11 = 0x800) forbids user writes but not reads.
    [Fact]
    public void PKRU_WD_forbids_a_user_write_but_allows_a_user_read()
    {
        var memory = Long4Tree(pte: Key(5) | PWU);
        AssertPageFault(Walk(Pke(0x800), memory, Access.Write(Long4Gva, User)).Result, 0x27);
        AssertTranslated(Walk(Pke(0x800), memory, Access.Read(Long4Gva, User)).Result, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.2: for user-mode accesses WD applies whatever CR0.WP is.
    [Fact]
    public void PKRU_WD_forbids_a_user_write_even_when_CR0_WP_is_clear()
    {
        var (r, _) = Walk(Pke(0x800).WithCr0Wp(false), Long4Tree(pte: Key(5) | PWU), Access.Write(Long4Gva, User));
        AssertPageFault(r, 0x27);
    }

    // §4.6.2: supervisor-mode writes to user-mode addresses honour WD only when CR0.WP=1.
    [Fact]
    public void PKRU_WD_forbids_a_supervisor_write_to_a_user_mode_page_when_CR0_WP_is_set()
    {
        var (r, _) = Walk(Pke(0x800).WithCr0Wp(true), Long4Tree(pte: Key(5) | PWU), Access.Write(Long4Gva));
        AssertPageFault(r, 0x23);
    }

    // §4.6.2: with CR0.WP=0 WD does not stop supervisor writes; the PTE gets A and D (§4.8):
    // 0x2800_0000_0012_3007 | 0x60 = 0x2800_0000_0012_3067.
    [Fact]
    public void PKRU_WD_allows_a_supervisor_write_to_a_user_mode_page_when_CR0_WP_is_clear()
    {
        var (r, after) = Walk(Pke(0x800).WithCr0Wp(false), Long4Tree(pte: Key(5) | PWU), Access.Write(Long4Gva));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
        Assert.Equal("0x2800000000123067", Q(after, 0x4020));
    }

    // §4.6.2: protection keys do not apply to instruction fetches.
    [Fact]
    public void Protection_keys_do_not_apply_to_instruction_fetches()
    {
        var memory = Long4Tree(pte: Key(5) | PWU);
        AssertTranslated(Walk(Pke(0xC00), memory, Access.Fetch(Long4Gva, User)).Result, 0x12_3567, PageSize.Size4K);
        AssertTranslated(Walk(Pke(0xC00), memory, Access.Fetch(Long4Gva)).Result, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.2: PKRU controls user-mode addresses only; a supervisor-mode page with key 5 is readable
    // and writable by the supervisor even with AD and WD set for key 5.
    [Fact]
    public void Protection_keys_do_not_apply_to_supervisor_mode_pages()
    {
        var memory = Long4Tree(pte: Key(5) | P | W);
        var c = Pke(0xC00).WithCr0Wp(true);
        AssertTranslated(Walk(c, memory, Access.Read(Long4Gva)).Result, 0x12_3567, PageSize.Size4K);
        AssertTranslated(Walk(c, memory, Access.Write(Long4Gva)).Result, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.2: the key is bits 62:59 of the entry that maps the page; bits 62:59 of a PDE that
    // references a table are ignored. PDE key 5, PTE key 0: AD for key 5 does nothing, AD for key 0 faults.
    [Fact]
    public void The_protection_key_comes_from_the_leaf_entry_only()
    {
        var memory = Long4Tree(pde: Key(5) | PWU, pte: PWU);
        AssertTranslated(Walk(Pke(0x400), memory, Access.Read(Long4Gva, User)).Result, 0x12_3567, PageSize.Size4K);
        AssertPageFault(Walk(Pke(0x1), memory, Access.Read(Long4Gva, User)).Result, 0x25);
    }

    // §4.6.2: a 2-MByte page takes its key from the PDE that maps it (key 3: AD is PKRU bit 6 = 0x40).
    [Fact]
    public void A_2M_page_takes_its_protection_key_from_the_PDE()
    {
        var memory = Long4Tree().Write64(0x3018, 0x1_2340_0000 | Key(3) | PS | PWU);
        var (r, _) = Walk(Pke(0x40), memory, Access.Read(Long4Gva, User));
        AssertPageFault(r, 0x25);
    }

    // §4.6.2: with CR4.PKE=0 linear addresses have no protection key and PKRU is not consulted.
    [Fact]
    public void Protection_keys_are_ignored_when_CR4_PKE_is_clear()
    {
        var c = new PagingControls(PagingMode.Long4, cr4Pke: false, pkru: 0x400);
        var (r, _) = Walk(c, Long4Tree(pte: Key(5) | PWU), Access.Read(Long4Gva, User));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // §4.6.2: "if IA-32e paging is not active" there are no protection keys; AD for key 0 does not
    // restrict a PAE user read.
    [Fact]
    public void Protection_keys_do_not_apply_in_PAE_paging()
    {
        var c = new PagingControls(PagingMode.Pae, cr4Pke: true, pkru: 0x1);
        var (r, _) = Walk(c, PaeTree(), Access.Read(PaeGva, User));
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }

    // =========================================================================================
    // Accessed and dirty flags (§4.8)
    // =========================================================================================

    // §4.8: every paging-structure entry used gets A=1 (0x20); a read sets no D.
    [Fact]
    public void A_successful_read_sets_A_in_every_entry_used_and_no_D()
    {
        var (_, after) = Walk(L4, Long4Tree(), Access.Read(Long4Gva, User));
        Assert.Equal("0x2027", Q(after, 0x1008));
        Assert.Equal("0x3027", Q(after, 0x2010));
        Assert.Equal("0x4027", Q(after, 0x3018));
        Assert.Equal("0x123027", Q(after, 0x4020));
    }

    // §4.8: D (0x40) is set only in the entry that maps the page, on a write.
    [Fact]
    public void A_successful_write_sets_D_only_in_the_PTE()
    {
        var (_, after) = Walk(L4, Long4Tree(), Access.Write(Long4Gva, User));
        Assert.Equal("0x2027", Q(after, 0x1008));
        Assert.Equal("0x3027", Q(after, 0x2010));
        Assert.Equal("0x4027", Q(after, 0x3018));
        Assert.Equal("0x123067", Q(after, 0x4020));
    }

    // §4.8: for a 2-MByte page the PDE maps the page and gets D; the PTE slot is not used.
    [Fact]
    public void A_write_through_a_2M_page_sets_D_in_the_PDE_that_maps_it()
    {
        var memory = Long4Tree().Write64(0x3018, 0x1_2340_0087);
        var (_, after) = Walk(L4, memory, Access.Write(Long4Gva));
        Assert.Equal("0x2027", Q(after, 0x1008));
        Assert.Equal("0x3027", Q(after, 0x2010));
        Assert.Equal("0x1234000e7", Q(after, 0x3018));
        Assert.Equal("0x123007", Q(after, 0x4020));
    }

    // §4.8: for a 1-GByte page the PDPTE maps the page and gets D.
    [Fact]
    public void A_write_through_a_1G_page_sets_D_in_the_PDPTE_that_maps_it()
    {
        var memory = Long4Tree().Write64(0x2010, 0x1_4000_0087);
        var (_, after) = Walk(L4, memory, Access.Write(Long4Gva));
        Assert.Equal("0x2027", Q(after, 0x1008));
        Assert.Equal("0x1400000e7", Q(after, 0x2010));
        Assert.Equal("0x4007", Q(after, 0x3018));
    }

    // §4.8: five entries used, five A bits; D in the PTE.
    [Fact]
    public void A_five_level_write_sets_A_in_all_five_entries_and_D_in_the_PTE()
    {
        var (_, after) = Walk(L5, Long5Tree(), Access.Write(Long5Gva));
        Assert.Equal("0x2027", Q(after, 0x1010));
        Assert.Equal("0x3027", Q(after, 0x2008));
        Assert.Equal("0x4027", Q(after, 0x3010));
        Assert.Equal("0x5027", Q(after, 0x4018));
        Assert.Equal("0x123067", Q(after, 0x5020));
    }

    // §4.8 sets A/D for translations an access uses; a faulting access uses none. (The SDM does not
    // forbid setting A on a walk that later faults; the spec follows KVM, which writes nothing.)
    [Fact]
    public void A_faulting_walk_leaves_every_A_and_D_bit_unchanged()
    {
        var memory = Long4Tree(pte: P | U);
        var e = PageWalk.Explain(Boot(L4, memory).Cpu, memory, Access.Write(Long4Gva, User));
        AssertPageFault(e.Result, 0x7);
        Assert.Empty(e.Updates);
        Assert.Equal("0x2007", Q(e.MemoryAfter, 0x1008));
        Assert.Equal("0x3007", Q(e.MemoryAfter, 0x2010));
        Assert.Equal("0x4007", Q(e.MemoryAfter, 0x3018));
        Assert.Equal("0x123005", Q(e.MemoryAfter, 0x4020));
    }

    // §4.8: the processor sets A and D only "if it is not already set".
    [Fact]
    public void A_walk_whose_A_and_D_bits_are_already_set_writes_nothing()
    {
        var memory = Long4Tree(pml4e: PWU | A, pdpte: PWU | A, pde: PWU | A, pte: PWU | A | D);
        var e = PageWalk.Explain(Boot(L4, memory).Cpu, memory, Access.Write(Long4Gva));
        AssertTranslated(e.Result, 0x12_3567, PageSize.Size4K);
        Assert.Empty(e.Updates);
    }

    // =========================================================================================
    // 32-bit paging (§4.3, Tables 4-4..4-6)
    // =========================================================================================

    // §4.3, Figure 4-2: 10-bit indices (31:22, 21:12) into tables of 4-byte entries.
    [Fact]
    public void Thirty_two_bit_paging_uses_10_bit_indices_and_4_byte_entries()
    {
        var memory = Bits32Tree();
        var e = PageWalk.Explain(Boot(B32, memory).Cpu, memory, Access.Read(Bits32Gva));
        AssertTranslated(e.Result, 0x34_5ABC, PageSize.Size4K);
        Assert.Equal(new ulong?[] { 0x100C, 0x2014 }, e.Steps.Select(s => s.EntryGpa));
    }

    // §4.3, Table 4-4, Figure 4-3: with CR4.PSE=1 a PDE with PS=1 maps a 4-MByte page; bits 31:22
    // are the frame and linear bits 21:0 the offset.
    [Fact]
    public void Thirty_two_bit_PDE_with_PS_maps_a_4M_page_when_CR4_PSE_is_set()
    {
        var memory = Ram().Write32(0x100C, 0x0840_0087);
        var (r, _) = Walk(B32.WithCr4Pse(true), memory, Access.Read(Bits32Gva));
        AssertTranslated(r, 0x0840_5ABC, PageSize.Size4M);
    }

    // §4.3: if CR4.PSE=0 the PS flag of a PDE is ignored and the PDE references a page table.
    [Fact]
    public void Thirty_two_bit_PS_is_ignored_when_CR4_PSE_is_clear()
    {
        var (r, _) = Walk(B32, Bits32Tree(pde: (uint)(PS | PWU)), Access.Read(Bits32Gva));
        AssertTranslated(r, 0x34_5ABC, PageSize.Size4K);
    }

    // Table 4-4 (PSE-36): a 4-MByte PDE's bits (M-20):13 are physical bits (M-1):32, M = min(MAXPHYADDR, 40).
    // MAXPHYADDR 40: bits 20:13 = 0x85 give physical bits 39:32 = 0x85.
    // PDE = 0x0840_0000 | 0x85 << 13 (0x10_A000) | PS | P | W | U = 0x0850_A087.
    [Fact]
    public void PSE_36_puts_PDE_bits_20_to_13_into_physical_bits_39_to_32_with_MAXPHYADDR_40()
    {
        var memory = Ram().Write32(0x100C, 0x0850_A087);
        var (r, _) = Walk(B32.WithCr4Pse(true).WithMaxPhyAddr(40), memory, Access.Read(Bits32Gva));
        AssertTranslated(r, 0x85_0840_5ABC, PageSize.Size4M);
    }

    // Table 4-4: MAXPHYADDR 36 gives only bits 16:13 (here 0x5 << 13 = 0xA000) as physical bits 35:32.
    [Fact]
    public void PSE_36_with_MAXPHYADDR_36_takes_PDE_bits_16_to_13_as_physical_bits_35_to_32()
    {
        var memory = Ram().Write32(0x100C, 0x0840_A087);
        var (r, _) = Walk(B32.WithCr4Pse(true).WithMaxPhyAddr(36), memory, Access.Read(Bits32Gva));
        AssertTranslated(r, 0x5_0840_5ABC, PageSize.Size4M);
    }

    // Table 4-4: with MAXPHYADDR 36 bits 21:17 of a 4-MByte PDE are reserved; 0x0850_A087 sets bit 20.
    [Fact]
    public void PSE_36_with_MAXPHYADDR_36_reserves_PDE_bits_21_to_17()
    {
        var memory = Ram().Write32(0x100C, 0x0850_A087);
        var (r, _) = Walk(B32.WithCr4Pse(true).WithMaxPhyAddr(36), memory, Access.Read(Bits32Gva));
        AssertPageFault(r, 0x9);
    }

    // Table 4-4: M is capped at 40, so bit 21 of a 4-MByte PDE is reserved even with MAXPHYADDR 46.
    [Fact]
    public void A_4M_PDE_reserves_bit_21_even_with_MAXPHYADDR_above_40()
    {
        var memory = Ram().Write32(0x100C, 0x0860_0087);
        var (r, _) = Walk(B32.WithCr4Pse(true), memory, Access.Read(Bits32Gva));
        AssertPageFault(r, 0x9);
    }

    // §4.8 with 4-byte entries: A/D are set in the 32-bit entry itself; the neighbouring entries
    // that share its 8-byte word (PDE 2 at 0x1008, PTE 4 at 0x2010) are untouched.
    [Fact]
    public void Thirty_two_bit_write_sets_A_and_D_in_4_byte_entries_without_touching_neighbours()
    {
        var memory = Bits32Tree().Write32(0x1008, 0x3007).Write32(0x2010, 0x0055_5007);
        var (r, after) = Walk(B32, memory, Access.Write(Bits32Gva, User));
        AssertTranslated(r, 0x34_5ABC, PageSize.Size4K);
        Assert.Equal("0x2027", L(after, 0x100C));
        Assert.Equal("0x345067", L(after, 0x2014));
        Assert.Equal("0x3007", L(after, 0x1008));
        Assert.Equal("0x555007", L(after, 0x2010));
    }

    // §4.8: a write through a 4-MByte page sets D in the PDE that maps it.
    [Fact]
    public void Thirty_two_bit_write_through_a_4M_page_sets_D_in_the_PDE()
    {
        var memory = Ram().Write32(0x100C, 0x0840_0087);
        var (_, after) = Walk(B32.WithCr4Pse(true), memory, Access.Write(Bits32Gva));
        Assert.Equal("0x84000e7", L(after, 0x100C));
    }

    // §4.6, Table 4-5/4-6: U/S is ANDed over the PDE and PTE in 32-bit paging too.
    [Fact]
    public void Thirty_two_bit_user_read_faults_when_the_PDE_has_U_S_clear()
    {
        var (r, _) = Walk(B32, Bits32Tree(pde: (uint)(P | W)), Access.Read(Bits32Gva, User));
        AssertPageFault(r, 0x5);
    }

    // =========================================================================================
    // PAE paging (§4.4, Tables 4-7..4-11)
    // =========================================================================================

    // §4.4.2, Figure 4-5: the PDPTE register (linear bits 31:30), then a PD (29:21) and a PT (20:12)
    // of 8-byte entries; the PDPTE is not read from memory by the walk.
    [Fact]
    public void PAE_walk_uses_a_PDPTE_register_then_a_PD_and_a_PT_of_8_byte_entries()
    {
        var memory = PaeTree();
        var e = PageWalk.Explain(Boot(Pae, memory).Cpu, memory, Access.Read(PaeGva));
        AssertTranslated(e.Result, 0x12_3567, PageSize.Size4K);
        Assert.Equal(new ulong?[] { null, 0x2018, 0x3020 }, e.Steps.Select(s => s.EntryGpa));
    }

    // §4.4.2, Table 4-9: a PAE PDE with PS=1 maps a 2-MByte page (frame bits M-1:21, here above 4 GiB).
    [Fact]
    public void PAE_PDE_with_PS_maps_a_2M_page()
    {
        var memory = PaeTree().Write64(0x2018, 0x1_2340_0087);
        var (r, _) = Walk(Pae, memory, Access.Read(PaeGva));
        AssertTranslated(r, 0x1_2340_4567, PageSize.Size2M);
    }

    // §4.4.1, Table 4-8: a present PDPTE reserves bits 2:1; MOV CR3 loading it is #GP.
    [Fact]
    public void PAE_MOV_CR3_is_GP_when_a_present_PDPTE_sets_reserved_bit_1()
    {
        var memory = PaeTree(pdpte: P | W);
        Assert.Null(GuestMachine.Boot(Pae, 0x1000, memory));
        Assert.Equal(GpReason.PdpteReservedBits, CpuState.LoadCr3(Pae, 0x1000, memory).Fault);
    }

    // Table 4-8: a PDPTE reserves bits 63:MAXPHYADDR; bit 46 with MAXPHYADDR 46 is #GP, with 52 it is
    // an address bit and the load succeeds.
    [Fact]
    public void PAE_PDPTE_bits_at_or_above_MAXPHYADDR_are_reserved_at_MOV_CR3()
    {
        var memory = PaeTree(pdpte: (1UL << 46) | P);
        Assert.Null(GuestMachine.Boot(Pae, 0x1000, memory));
        Assert.NotNull(GuestMachine.Boot(Pae.WithMaxPhyAddr(52), 0x1000, memory));
    }

    // Table 4-8: the reserved bits of a PDPTE with P=0 are not checked; an access through it is a
    // not-present fault.
    [Fact]
    public void PAE_reserved_bits_of_a_not_present_PDPTE_are_not_checked()
    {
        var memory = PaeTree(pdpte: W | U);
        var (r, _) = Walk(Pae, memory, Access.Read(PaeGva, User));
        AssertPageFault(r, 0x4);
    }

    // §4.4.1: the PDPTE registers are loaded at MOV CR3; a later write to the PDPT in memory does
    // not change translations until CR3 is loaded again.
    [Fact]
    public void PAE_PDPTE_registers_are_not_reloaded_by_a_write_to_the_PDPT_until_MOV_CR3()
    {
        var access = new Op.GuestAccess(Access.Read(PaeGva));
        var machine = Boot(Pae, PaeTree());

        var cleared = machine.Step(new Op.WriteGuest(0x1010, 0, 8));
        Assert.IsType<OpResult.Completed>(cleared.Result);
        var stale = cleared.Machine.Step(access);
        AssertTranslated(Assert.IsType<OpResult.Walked>(stale.Result).Result, 0x12_3567, PageSize.Size4K);

        var reloaded = stale.Machine.Step(new Op.LoadCr3(0x1000));
        Assert.IsType<OpResult.Completed>(reloaded.Result);
        var fresh = reloaded.Machine.Step(access);
        AssertPageFault(Assert.IsType<OpResult.Walked>(fresh.Result).Result, 0x0);
    }

    // §4.4.1: a MOV CR3 that faults changes nothing: the old PDPTE registers stay in use.
    [Fact]
    public void PAE_MOV_CR3_that_faults_keeps_the_old_PDPTE_registers()
    {
        var machine = Boot(Pae, PaeTree());
        var corrupted = machine.Step(new Op.WriteGuest(0x1010, 0x2003, 8)).Machine;
        var load = corrupted.Step(new Op.LoadCr3(0x1000));
        Assert.Equal(GpReason.PdpteReservedBits, Assert.IsType<OpResult.GeneralProtection>(load.Result).Reason);
        Assert.Equal(machine.Cpu, load.Machine.Cpu);
        var walk = load.Machine.Step(new Op.GuestAccess(Access.Read(PaeGva)));
        AssertTranslated(Assert.IsType<OpResult.Walked>(walk.Result).Result, 0x12_3567, PageSize.Size4K);
    }

    // §4.4.1: MOV to CR0/CR4 reloads the PDPTEs only if it modifies CR0.CD, CR0.NW, CR0.PG,
    // CR4.PAE, CR4.PGE, CR4.PSE or CR4.SMEP. A change of CR0.WP alone keeps the old registers.
    [Fact]
    public void PAE_a_control_change_of_CR0_WP_alone_does_not_reload_the_PDPTE_registers()
    {
        var machine = Boot(Pae, PaeTree());
        var cleared = machine.Step(new Op.WriteGuest(0x1010, 0, 8)).Machine;
        var changed = cleared.Step(new Op.SetControls(Pae.WithCr0Wp(true)));
        Assert.IsType<OpResult.Completed>(changed.Result);
        var walk = changed.Machine.Step(new Op.GuestAccess(Access.Read(PaeGva)));
        AssertTranslated(Assert.IsType<OpResult.Walked>(walk.Result).Result, 0x12_3567, PageSize.Size4K);
    }

    // §4.4.1: a MOV to CR4 that modifies CR4.PSE while PAE paging is in use reloads the PDPTEs.
    [Fact]
    public void PAE_a_control_change_of_CR4_PSE_reloads_the_PDPTE_registers()
    {
        var machine = Boot(Pae, PaeTree());
        var cleared = machine.Step(new Op.WriteGuest(0x1010, 0, 8)).Machine;
        var changed = cleared.Step(new Op.SetControls(Pae.WithCr4Pse(true)));
        Assert.IsType<OpResult.Completed>(changed.Result);
        var walk = changed.Machine.Step(new Op.GuestAccess(Access.Read(PaeGva)));
        AssertPageFault(Assert.IsType<OpResult.Walked>(walk.Result).Result, 0x0);
    }

    // Table 4-11: bit 63 of a PAE PTE is reserved when EFER.NXE=0.
    [Fact]
    public void PAE_bit_63_is_reserved_in_a_PTE_when_NXE_is_clear()
    {
        var (r, _) = Walk(Pae, PaeTree(pte: XD | PWU), Access.Read(PaeGva));
        AssertPageFault(r, 0x9);
    }

    // Table 4-9: a PAE 2-MByte PDE reserves bits 20:13.
    [Fact]
    public void PAE_2M_page_with_bit_13_set_is_reserved()
    {
        var memory = PaeTree().Write64(0x2018, 0x1_2340_2087);
        var (r, _) = Walk(Pae, memory, Access.Read(PaeGva));
        AssertPageFault(r, 0x9);
    }

    // Table 4-10: PAE entries reserve bits 62:MAXPHYADDR (unlike IA-32e, where 62:52 are ignored).
    [Fact]
    public void PAE_bits_62_to_MAXPHYADDR_are_reserved_in_a_PDE()
    {
        var (r, _) = Walk(Pae, PaeTree(pde: (1UL << 62) | PWU), Access.Read(PaeGva));
        AssertPageFault(r, 0x9);
    }

    // §4.6, Table 4-8: PDPTEs carry no U/S or R/W, so the PD and PT alone decide the rights.
    [Fact]
    public void PAE_user_write_is_decided_by_the_PDE_and_PTE_only()
    {
        AssertTranslated(Walk(Pae, PaeTree(), Access.Write(PaeGva, User)).Result, 0x12_3567, PageSize.Size4K);
        AssertPageFault(Walk(Pae, PaeTree(pde: P | U), Access.Write(PaeGva, User)).Result, 0x7);
    }

    // §4.8, Table 4-8: PDPTEs have no A flag and are registers; the walk sets A in the PDE and PTE
    // only and never writes the PDPT.
    [Fact]
    public void PAE_walk_sets_A_in_the_PDE_and_PTE_and_never_writes_the_PDPT()
    {
        var (_, after) = Walk(Pae, PaeTree(), Access.Read(PaeGva));
        Assert.Equal("0x2001", Q(after, 0x1010));
        Assert.Equal("0x3027", Q(after, 0x2018));
        Assert.Equal("0x123027", Q(after, 0x3020));
    }

    // =========================================================================================
    // MOV CR3 in IA-32e mode (§4.5, Table 4-12)
    // =========================================================================================

    // Table 4-12: CR3 bits 63:MAXPHYADDR are reserved; MOV CR3 with bit 46 set (MAXPHYADDR 46) is
    // #GP and leaves CR3 and every translation as they were.
    [Fact]
    public void MOV_CR3_with_a_bit_at_MAXPHYADDR_is_GP_in_long_mode_and_changes_nothing()
    {
        var machine = Boot(L4, Long4Tree());
        var load = machine.Step(new Op.LoadCr3(0x0000_4000_0000_1000));
        Assert.Equal(GpReason.Cr3ReservedBits, Assert.IsType<OpResult.GeneralProtection>(load.Result).Reason);
        Assert.Equal(0x1000UL, load.Machine.Cpu.Cr3);
        Assert.Equal(machine.Cpu, load.Machine.Cpu);
        var walk = load.Machine.Step(new Op.GuestAccess(Access.Read(Long4Gva)));
        AssertTranslated(Assert.IsType<OpResult.Walked>(walk.Result).Result, 0x12_3567, PageSize.Size4K);
    }

    // Table 4-12: with MAXPHYADDR 52 bit 46 of CR3 is an address bit; the new PML4 at
    // 0x4000_0000_1000 is outside guest memory, so the next access faults as not present (KVM).
    [Fact]
    public void MOV_CR3_accepts_that_bit_when_MAXPHYADDR_is_52()
    {
        var machine = Boot(L4.WithMaxPhyAddr(52), Long4Tree());
        var load = machine.Step(new Op.LoadCr3(0x0000_4000_0000_1000));
        Assert.IsType<OpResult.Completed>(load.Result);
        Assert.Equal(0x0000_4000_0000_1000UL, load.Machine.Cpu.Cr3);
        var walk = load.Machine.Step(new Op.GuestAccess(Access.Read(Long4Gva)));
        AssertPageFault(Assert.IsType<OpResult.Walked>(walk.Result).Result, 0x0);
    }

    // Table 4-12: bit 63 is reserved too (no PCIDE in this model), in 4- and 5-level paging.
    [Fact]
    public void Boot_refuses_a_long_mode_CR3_with_bit_63_set()
    {
        Assert.Null(GuestMachine.Boot(L4, 0x8000_0000_0000_1000, Long4Tree()));
        Assert.Null(GuestMachine.Boot(L5, 0x8000_0000_0000_1000, Long5Tree()));
    }

    // Table 4-12: CR3 bits 11:0 (PWT, PCD, ignored bits) do not move the PML4, which is bits M-1:12.
    [Fact]
    public void Long_mode_CR3_flag_bits_below_bit_12_do_not_move_the_PML4()
    {
        var (r, _) = Walk(L4, Long4Tree(), Access.Read(Long4Gva), cr3: 0x1018);
        AssertTranslated(r, 0x12_3567, PageSize.Size4K);
    }
}
