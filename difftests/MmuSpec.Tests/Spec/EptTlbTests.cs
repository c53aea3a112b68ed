using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;
using static MmuSpec.Tests.Spec.EptTableBuilder;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for the nested architecture layer (<see cref="EptTlb"/>, SDM Vol. 3C §29.4): after L1 changes its EPT
/// or L2's tables, which invalidation makes the old translation unobservable, and which leave it allowed.
/// L2 (long4, CR3 0x1000) reads gva 0x401234: PML4E 0x1000, PDPTE 0x2000, PDE 0x3010, PTE 0x4008, leaf -> L2 gpa 0x200000.
/// EPT A (root 0x10000): L2 gpa 0..2M identity (PDE 0x12000 a 2M page), L2 gpa 0x200000 -> PT 0x13000, whose entry 0 maps
/// L1 0x40000 and entry 1 L1 0x41000. EPT B (root 0x20000): the same identity, L2 gpa 0x200000 -> L1 0x60000.
/// </summary>
public sealed class EptTlbTests
{
    static readonly EptPointer A = new(0x1001E), B = new(0x2001E);
    static readonly CpuState L2 = new(new PagingControls(PagingMode.Long4), 0x1000);
    static readonly Access Read = Access.Read(0x401234);
    const ulong Leaf = RWX | 0x30;   // RWX, write-back

    static GuestMemory Memory(ulong l2Leaf = 0x200007, ulong eptPte0 = 0x40000 | Leaf) => GuestMemory.FromSlots([new Memslot(0, 0x100)])
        .Write64(0x1000, 0x2007).Write64(0x2000, 0x3007).Write64(0x3010, 0x4007).Write64(0x4008, l2Leaf)
        .Write64(0x10000, 0x11007).Write64(0x11000, 0x12007).Write64(0x12000, RWX | PS | 0x30).Write64(0x12008, 0x13007)
        .Write64(0x13000, eptPte0).Write64(0x13008, 0x41000 | Leaf)
        .Write64(0x20000, 0x21007).Write64(0x21000, 0x22007).Write64(0x22000, RWX | PS | 0x30).Write64(0x22008, 0x23007)
        .Write64(0x23000, 0x60000 | Leaf);

    static NestedResult Walk(GuestMemory m, EptPointer eptp) => NestedWalk.Translate(Caps, eptp, L2, m, Read).Result;

    static ulong L1Gpa(NestedResult r) => Assert.IsType<NestedResult.Translated>(r).L1Gpa;

    /// <summary>L1 points the EPT PTE of L2 gpa 0x200000 from L1 0x40000 to 0x50000: the stale translation is 0x40234.</summary>
    static (EptTlb Tlb, NestedResult Stale, NestedResult Now) EptRemapped(bool vpidEnabled = true)
    {
        var m0 = Memory();
        var m1 = m0.Write64(0x13000, 0x50000 | Leaf);
        var tlb = EptTlb.Start(Caps, m0, A, vpidEnabled, 1).Write(m1);
        var (stale, now) = (Walk(m0, A), Walk(m1, A));
        Assert.Equal((0x40234UL, 0x50234UL), (L1Gpa(stale), L1Gpa(now)));
        return (tlb, stale, now);
    }

    /// <summary>L2's PTE moves gva 0x401000 from L2 gpa 0x200000 to 0x201000 (L1 0x40000 to 0x41000); the EPT is unchanged.</summary>
    static (EptTlb Tlb, NestedResult Stale, NestedResult Now) L2Remapped(bool vpidEnabled = true, bool global = false)
    {
        ulong g = global ? 1UL << 8 : 0;
        var m0 = Memory(l2Leaf: 0x200007 | g);
        var m1 = m0.Write64(0x4008, 0x201007 | g);
        var tlb = EptTlb.Start(Caps, m0, A, vpidEnabled, 1, globalPages: true).Write(m1);
        var (stale, now) = (Walk(m0, A), Walk(m1, A));
        Assert.Equal((0x40234UL, 0x41234UL), (L1Gpa(stale), L1Gpa(now)));
        return (tlb, stale, now);
    }

    static void Allowed(EptTlb tlb, NestedResult r) => Assert.Null(tlb.Violation(L2, Read, r));
    static void Stale(EptTlb tlb, NestedResult r) => Assert.NotNull(tlb.Violation(L2, Read, r));

    [Fact]
    public void Without_an_invalidation_both_the_old_and_the_new_EPT_translation_may_be_used()
    {
        var (tlb, stale, now) = EptRemapped();
        Allowed(tlb, stale);
        Allowed(tlb, now);
        Assert.Equal([0x40234UL, 0x50234UL], tlb.AllowedLinear(L2, Read).Select(L1Gpa).Distinct().Order());
    }

    [Fact]
    public void INVEPT_single_context_of_the_current_EPTP_removes_the_old_EPT_translation_and_of_another_EPTP_does_not()
    {
        var (tlb, stale, now) = EptRemapped();
        var mine = tlb.Apply(new EptTlbOp.Invept(InveptType.SingleContext, A));
        Stale(mine, stale);
        Allowed(mine, now);
        Allowed(tlb.Apply(new EptTlbOp.Invept(InveptType.SingleContext, B)), stale);
    }

    [Fact]
    public void INVEPT_all_context_removes_the_old_EPT_translation()
    {
        var (tlb, stale, now) = EptRemapped();
        var after = tlb.Apply(new EptTlbOp.Invept(InveptType.AllContext));
        Stale(after, stale);
        Allowed(after, now);
    }

    [Fact]
    public void INVVPID_of_any_type_leaves_a_changed_EPT_translation_usable_because_guest_physical_mappings_survive_it()
    {
        var (tlb, stale, _) = EptRemapped();
        foreach (EptTlbOp op in new EptTlbOp[]
                 {
                     new EptTlbOp.Invvpid(InvvpidType.IndividualAddress, 1, 0x401234), new EptTlbOp.Invvpid(InvvpidType.SingleContext, 1),
                     new EptTlbOp.Invvpid(InvvpidType.AllContexts), new EptTlbOp.Invvpid(InvvpidType.SingleContextRetainingGlobals, 1),
                 })
            Allowed(tlb.Apply(op), stale);
    }

    [Fact]
    public void VM_exit_and_entry_without_VPID_leave_a_changed_EPT_translation_usable()
    {
        var (tlb, stale, _) = EptRemapped(vpidEnabled: false);
        Allowed(tlb.Apply(new EptTlbOp.VmExit()).Apply(new EptTlbOp.VmEntry(false, 0, A)), stale);
    }

    [Fact]
    public void INVVPID_single_context_removes_an_old_L2_translation_of_its_VPID_only()
    {
        var (tlb, stale, now) = L2Remapped();
        Allowed(tlb, stale);
        var mine = tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContext, 1));
        Stale(mine, stale);
        Allowed(mine, now);
        Allowed(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContext, 2)), stale);
    }

    [Fact]
    public void INVVPID_individual_address_removes_the_old_L2_translation_of_its_page_only()
    {
        var (tlb, stale, _) = L2Remapped();
        Stale(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.IndividualAddress, 1, 0x401fff)), stale);
        Allowed(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.IndividualAddress, 1, 0x402000)), stale);
        Allowed(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.IndividualAddress, 2, 0x401234)), stale);
    }

    [Fact]
    public void INVVPID_all_contexts_removes_the_old_L2_translation()
    {
        var (tlb, stale, _) = L2Remapped();
        Stale(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.AllContexts)), stale);
    }

    [Fact]
    public void INVVPID_single_context_retaining_globals_keeps_a_global_old_L2_translation_only()
    {
        var (plain, stale, _) = L2Remapped(global: false);
        Stale(plain.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContextRetainingGlobals, 1)), stale);
        var (global, staleGlobal, _) = L2Remapped(global: true);
        Allowed(global.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContextRetainingGlobals, 1)), staleGlobal);
        Stale(global.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContext, 1)), staleGlobal);
    }

    [Fact]
    public void INVVPID_naming_VPID_0_fails_and_invalidates_nothing()
    {
        var (tlb, stale, _) = L2Remapped();
        Allowed(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContext, 0)), stale);
        Allowed(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.IndividualAddress, 0, 0x401234)), stale);
        Allowed(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContextRetainingGlobals, 0)), stale);
    }

    [Fact]
    public void INVEPT_single_context_also_removes_the_combined_mappings_of_L2s_tables()
    {
        var (tlb, stale, _) = L2Remapped();
        Stale(tlb.Apply(new EptTlbOp.Invept(InveptType.SingleContext, A)), stale);
        Allowed(tlb.Apply(new EptTlbOp.Invept(InveptType.SingleContext, B)), stale);
    }

    [Fact]
    public void VM_exit_without_VPID_removes_the_old_L2_translation_and_with_VPID_does_not()
    {
        var (withoutVpid, stale, _) = L2Remapped(vpidEnabled: false);
        Allowed(withoutVpid, stale);
        Stale(withoutVpid.Apply(new EptTlbOp.VmExit()), stale);
        Stale(withoutVpid.Apply(new EptTlbOp.VmEntry(false, 0, A)), stale);

        var (withVpid, stale1, _) = L2Remapped(vpidEnabled: true);
        Allowed(withVpid.Apply(new EptTlbOp.VmExit()).Apply(new EptTlbOp.VmEntry(true, 1, A)), stale1);
        // An entry with another VPID does not see VPID 1's mappings, but a later entry with VPID 1 may.
        var other = withVpid.Apply(new EptTlbOp.VmExit()).Apply(new EptTlbOp.VmEntry(true, 2, A));
        Allowed(other.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContext, 2)).Apply(new EptTlbOp.VmEntry(true, 1, A)), stale1);
        Stale(other.Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContext, 1)).Apply(new EptTlbOp.VmEntry(true, 1, A)), stale1);
    }

    [Fact]
    public void An_EPTP_switch_invalidates_nothing_the_old_EPTPs_stale_mappings_return_with_it()
    {
        var (tlb, stale, _) = EptRemapped();
        foreach (bool vmfunc in new[] { true, false })
        {
            var onB = tlb.Apply(new EptTlbOp.EptpSwitch(B, vmfunc));
            var viaB = Walk(tlb.Memories[^1], B);
            Assert.Equal(0x60234UL, L1Gpa(viaB));
            Allowed(onB, viaB);
            Stale(onB, stale);   // EPT A's translation is not EPT B's
            Allowed(onB.Apply(new EptTlbOp.EptpSwitch(A, vmfunc)), stale);
            Stale(onB.Apply(new EptTlbOp.Invept(InveptType.SingleContext, A)).Apply(new EptTlbOp.EptpSwitch(A, vmfunc)), stale);
        }
    }

    [Fact]
    public void An_EPT_violation_for_a_linear_access_removes_the_old_mappings_of_its_gpa_and_gva()
    {
        var (tlb, stale, _) = EptRemapped();
        Stale(tlb.Apply(new EptTlbOp.EptViolation(0x200234, 0x401234)), stale);
        Allowed(tlb.Apply(new EptTlbOp.EptViolation(0x300000, 0x402000)), stale);
    }

    [Fact]
    public void An_EPT_violation_removes_the_guest_physical_mappings_of_its_page_for_accesses_by_gpa()
    {
        var (tlb, _, _) = EptRemapped();
        var byGpa = EptAccess.Read(0x200234);
        L1s(tlb, byGpa, 0x40234, 0x50234);
        L1s(tlb.Apply(new EptTlbOp.EptViolation(0x200fff, null)), byGpa, 0x50234);
        L1s(tlb.Apply(new EptTlbOp.EptViolation(0x201000, null)), byGpa, 0x40234, 0x50234);
        L1s(tlb.Apply(new EptTlbOp.Invvpid(InvvpidType.AllContexts)), byGpa, 0x40234, 0x50234);
        L1s(tlb.Apply(new EptTlbOp.Invept(InveptType.SingleContext, A)), byGpa, 0x50234);

        static void L1s(EptTlb t, EptAccess access, params ulong[] expected) =>
            Assert.Equal(expected, t.AllowedGuestPhysical(access).Select(r => Assert.IsType<EptResult.Translated>(r).L1Gpa).Distinct().Order());
    }

    [Fact]
    public void A_not_present_EPT_entry_is_never_cached_its_violation_must_come_from_the_tables_now()
    {
        var m0 = Memory(eptPte0: 0);
        var m1 = m0.Write64(0x13000, 0x40000 | Leaf);
        var tlb = EptTlb.Start(Caps, m0, A).Write(m1);
        var gone = Walk(m0, A);
        Assert.IsType<NestedResult.EptExit>(gone);
        Assert.Contains("never cached", tlb.Violation(L2, Read, gone));
        Allowed(tlb, Walk(m1, A));

        // The other way round: the EPT entry goes away; the old translation may still be used, the violation is what the tables say now.
        var back = EptTlb.Start(Caps, m1, A).Write(m0);
        Allowed(back, Walk(m1, A));
        Allowed(back, gone);
    }

    [Fact]
    public void A_combined_mapping_may_be_built_from_L2s_tables_now_and_a_guest_physical_mapping_cached_before()
    {
        // The EPT moves L2 gpa 0x200000 (0x40000 -> 0x50000), then L2's PTE moves gva 0x401000 to L2 gpa 0x201000, then
        // INVVPID: the combined mapping must come from L2's PTE now (0x201000), whose EPT translation (entry 1) never changed,
        // but a read of L2 gpa 0x200000 through another gva may still use the old guest-physical mapping.
        var m0 = Memory();
        var m1 = m0.Write64(0x13000, 0x50000 | Leaf);
        var m2 = m1.Write64(0x4008, 0x201007);
        var tlb = EptTlb.Start(Caps, m0, A).Write(m1).Write(m2).Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContext, 1));
        Assert.Equal([0x41234UL], tlb.AllowedLinear(L2, Read).Select(L1Gpa).Distinct());
        var m3 = m2.Write64(0x4008, 0x200007);   // L2 points back at L2 gpa 0x200000, EPT A's remapped page
        var back = tlb.Write(m3).Apply(new EptTlbOp.Invvpid(InvvpidType.SingleContext, 1));
        Assert.Equal([0x40234UL, 0x50234UL], back.AllowedLinear(L2, Read).Select(L1Gpa).Distinct().Order());
        Assert.Equal([0x50234UL], back.Apply(new EptTlbOp.Invept(InveptType.SingleContext, A)).AllowedLinear(L2, Read).Select(L1Gpa).Distinct());
    }

    [Fact]
    public void An_undefined_INVEPT_or_INVVPID_type_is_a_caller_error()
    {
        var tlb = EptTlb.Start(Caps, Memory(), A);
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.Apply(new EptTlbOp.Invept((InveptType)3, A)));
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.Apply(new EptTlbOp.Invvpid((InvvpidType)4, 1)));
    }

    [Fact]
    public void VM_entry_with_VPID_0000H_is_refused()
    {
        Assert.Throws<ArgumentException>(() => EptTlb.Start(Caps, Memory(), A, vpidEnabled: true, vpid: 0));
        Assert.Throws<ArgumentException>(() => EptTlb.Start(Caps, Memory(), A).Apply(new EptTlbOp.VmEntry(true, 0, A)));
        Assert.Equal(0, EptTlb.Start(Caps, Memory(), A, vpidEnabled: false, vpid: 7).CurrentVpid);
    }
}
