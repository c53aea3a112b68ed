using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>
/// Whether a VM's leaves carry accessed/dirty state (docs/tdp-model.md, "Aging"). The existing TDP properties
/// leave it untracked: leaves then carry none and Age/TestAge are rejected.
/// </summary>
public enum AccessedDirty
{
    /// <summary>Not modelled: no leaf is accessed or dirty, aging is rejected.</summary>
    Untracked,

    /// <summary>
    /// The hardware keeps the state: EPTP bit 6 set (SDM Vol. 3C 29.3.5, "Accessed and Dirty Flags for
    /// EPT": A is bit 8, D bit 9 of a leaf), or on Arm64 VTCR_EL2.HA (FEAT_HAFDBS: the CPU sets AF, bit 10).
    /// </summary>
    Enabled,

    /// <summary>
    /// No hardware A/D: EPTP bit 6 clear (KVM's access tracking stands in for A), or stage-2 without
    /// VTCR_EL2.HA (AF is still in the descriptor, and an access through AF = 0 takes an access-flag fault).
    /// </summary>
    Disabled,
}

/// <summary>
/// Aging (docs/tdp-model.md, "Aging"): the accessed and dirty state of leaves, set by the hardware as the
/// guest accesses memory through them, cleared or reported by the host's kvm_age_gfn / kvm_test_age_gfn
/// (KVM: kvm_tdp_mmu_age_gfn_range, kvm_tdp_mmu_test_age_gfn; arm64: kvm_pgtable_stage2_test_clear_young).
/// </summary>
public sealed partial record TdpState
{
    /// <summary>
    /// An access through the MMU: the fault handler (<see cref="Translate"/>), then the hardware's part.
    /// Whatever leaf serves the access is accessed afterwards and, with EPT A/D enabled, a write leaves it
    /// dirty (SDM 29.3.5: the CPU sets A on every EPT entry it uses and D on the leaf of a write). A fault
    /// installs a young leaf (KVM's make_spte sets A unless it prefetches), so a miss ends the same way.
    /// Without hardware A/D an access through an old leaf is itself a fault that makes it young: KVM's
    /// fast_page_fault restoring an access-tracked SPTE (EPT), or arm64's access-flag fault (handle_access_fault).
    /// </summary>
    TdpStepped Access(ulong gpa, AccessType type)
    {
        var done = Translate(gpa, type);
        if (Config.AccessedDirty == AccessedDirty.Untracked || done.Result is not TdpResult.Mapped m) return done;
        var (page, index, leaf) = done.State.FindLeaf(Mirror(gpa), Gfn(gpa))!.Value;
        bool dirty = leaf.Dirty || (type == AccessType.Write && TracksDirty);
        var result = !leaf.Accessed && Config.AccessedDirty == AccessedDirty.Disabled ? m with { Faulted = true } : m;
        var young = leaf with { Accessed = true, Dirty = dirty };
        return new TdpStepped(young == leaf ? done.State : done.State.SetEntry(page, index, young), result);
    }

    /// <summary>
    /// A pre-fault's read: the fault handler without an access behind it. A leaf already there stays as it
    /// is; a leaf it installs is old on EPT with A/D enabled (KVM's make_spte does not set A for a prefetch,
    /// kvm_tdp_map_page faults with prefetch set) and young otherwise: arm64 maps every leaf with AF set
    /// (kvm_pgtable_stage2_map), and without EPT A/D the model keeps every leaf young (below).
    /// </summary>
    TdpStepped Prefetch(ulong gpa)
    {
        var done = Translate(gpa, AccessType.Read);
        if (Config.AccessedDirty == AccessedDirty.Untracked || done.Result is not TdpResult.Mapped { Faulted: true }
            || Config.Format == TdpFormat.Ept && Config.AccessedDirty == AccessedDirty.Enabled)
            return done;
        var (page, index, leaf) = done.State.FindLeaf(Mirror(gpa), Gfn(gpa))!.Value;
        return done with { State = done.State.SetEntry(page, index, leaf with { Accessed = true }) };
    }

    /// <summary>D exists only in EPT with A/D enabled (KVM arm64 keeps no hardware dirty state in stage-2: DBM unused).</summary>
    bool TracksDirty => Config.Format == TdpFormat.Ept && Config.AccessedDirty == AccessedDirty.Enabled;

    /// <summary>
    /// Without EPT A/D, aging zaps: the model's stand-in for KVM's access tracking, which clears R/W/X of the
    /// SPTE (saving R and X) so that the next access faults. Here too the next access faults, through the
    /// fault handler, which may pick another level. So every present EPT leaf is young in that mode.
    /// </summary>
    bool AgingZaps => Config.Format == TdpFormat.Ept && Config.AccessedDirty == AccessedDirty.Disabled;

    ulong Gfn(ulong gpa) => (gpa >> 12) & ~Config.DirectBits;
    bool Mirror(ulong gpa) => Config.SharedBit is not null && ((gpa >> 12) & Config.DirectBits) == 0;

    /// <summary>
    /// kvm_age_gfn: whether any leaf overlapping [start, end), in either root, was young; each such leaf
    /// becomes old (A or AF cleared, D kept), or is zapped without EPT A/D. Clearing A owes no flush: the
    /// translation is unchanged, and a TLB that keeps it only makes the page look idle a little longer, as
    /// the next access it serves may not set A again (KVM does not flush on aging; x86 selects
    /// KVM_ELIDE_TLB_FLUSH_IF_YOUNG). A zapped leaf is unmapped like any other, so it must be flushed.
    /// </summary>
    TdpStepped Age(ulong start, ulong end)
    {
        if (AgingProblem(start, end) is { } problem) return Reject(problem);
        var young = Leaves().Where(l => l.Leaf.Accessed && l.Leaf.Overlaps(start, end)).ToList();
        var state = this;
        foreach (var (page, index, leaf) in young)
            state = state.ApplyWalkRule(RangeWalkKind.Age, page, index, leaf, out _);
        return new TdpStepped(state, new TdpResult.Young(young.Count > 0));
    }

    /// <summary>kvm_test_age_gfn: whether any leaf overlapping [start, end), in either root, is young. Changes nothing.</summary>
    TdpStepped TestAge(ulong start, ulong end) =>
        AgingProblem(start, end) is { } problem
            ? Reject(problem)
            : new TdpStepped(this, new TdpResult.Young(Leaves().Any(l => l.Leaf.Accessed && l.Leaf.Overlaps(start, end))));

    string? AgingProblem(ulong start, ulong end) =>
        Config.AccessedDirty == AccessedDirty.Untracked ? "this VM does not track accessed state"
        : start < end && end <= Config.GfnLimit ? null
        : $"age range [{Bits.Hex(start)}, {Bits.Hex(end)}) is empty or beyond the guest-physical space";
}
