using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Impl.Paging;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Known answers for unsync shadow EPT pages (impl/Nested/NestedEptMmu.Unsync.cs) on one hand-laid 4-level EPT tree:
/// an L1 store into a shadowed last-level table unsyncs it (the stale entry stays usable) where the strict MMU zaps;
/// upper-level tables are never unsynced; INVEPT under either policy, and a reflected violation (ee1fa209f5e5), bring
/// the entries back in line; a sync drops an entry whose rights AND to none (9fb3565743d5).
/// </summary>
public sealed class NestedUnsyncTests : IDisposable
{
    const ulong R = 1, X = 4, RWX = 7, WB = 6 << 3;
    const ulong QRead = 1, QWrite = 2, QX = 1 << 5;
    const ulong HostPfn = 0x1000;

    // As NestedEptMmuTests: PML4E @ 0x1008 -> PDPT 0x2000, PDPTE @ 0x2010 -> PD 0x3000, PDE @ 0x3018 -> PT 0x4000,
    // PTE @ 0x4020 -> frame 0x20000 (L1 gpa 0x20567 for Gpa4). A second EPTP on the same tables with EPT A/D: Eptp4AD.
    const ulong Eptp4 = 0x101E, Eptp4AD = 0x105E, Gpa4 = 0x80_8060_4567, Pte = 0x4020;

    readonly NativePagePool pool = new();
    INestedEptVm vm = null!;

    void Use(bool unsync = true, NestedRootPolicy policy = NestedRootPolicy.KeepAndResync)
    {
        vm?.Dispose();
        vm = NestedEptVm.Create(46, executeOnly: true, pool, policy, unsync);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x40, HostPfn));
    }

    void Store(ulong gpa, ulong value) => Assert.Equal(NestedOutcomeKind.Ok, vm.L1Store(gpa, value, 8).Kind);

    void Ept4(ulong upper = RWX, ulong pte = RWX | WB, ulong frame = 0x20000)
    {
        Store(0x1008, 0x2000 | upper);
        Store(0x2010, 0x3000 | upper);
        Store(0x3018, 0x4000 | upper);
        Store(Pte, frame | pte);
    }

    NestedOutcome Access(AccessType type) => vm.L2Access(Gpa4, type);

    static NestedOutcome Hit(ulong l1Gpa = 0x20567) => new(NestedOutcomeKind.Translated, Gpa4, l1Gpa, (HostPfn << 12) + l1Gpa, Faulted: false);

    static NestedOutcome Violation(ulong qualification) => new(NestedOutcomeKind.EptViolation, Gpa4, Qualification: qualification, Faulted: true);

    [Fact]
    public void A_store_into_a_shadowed_leaf_table_unsyncs_it_and_the_stale_entry_stays_in_use()
    {
        Use();
        Ept4();
        Assert.Equal(NestedOutcomeKind.Ok, vm.LoadEptp(Eptp4).Kind);
        Assert.Equal(NestedOutcomeKind.Translated, Access(AccessType.Read).Kind);
        Store(Pte, 0); // L1 makes the page not present, no INVEPT
        Assert.Equal(Hit(), Access(AccessType.Read));
        Assert.Equal(new NestedUnsyncCounters(1, 0, 0, 0, 0, 0), vm.UnsyncCounters);
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void The_strict_MMU_zaps_where_the_unsync_one_keeps()
    {
        Use(unsync: false);
        Ept4();
        vm.LoadEptp(Eptp4);
        Access(AccessType.Read);
        Store(Pte, 0);
        Assert.Equal(Violation(QRead), Access(AccessType.Read));
        Assert.Equal(default, vm.UnsyncCounters);
    }

    [Fact]
    public void A_store_into_an_upper_level_table_zaps_even_with_unsync()
    {
        Use();
        Ept4();
        vm.LoadEptp(Eptp4);
        Access(AccessType.Read);
        Store(0x3018, 0); // the PDE: its table is shadowed at level 2
        Assert.Equal(Violation(QRead), Access(AccessType.Read));
        Assert.Equal(0, vm.UnsyncCounters.PagesUnsynced);
        Assert.Empty(vm.InvariantProblems());
    }

    [Theory]
    [InlineData(NestedRootPolicy.KeepAndResync)]
    [InlineData(NestedRootPolicy.Upstream)]
    public void INVEPT_brings_an_unsync_page_back_in_line(NestedRootPolicy policy)
    {
        Use(policy: policy);
        Ept4();
        vm.LoadEptp(Eptp4);
        Access(AccessType.Read);
        Store(Pte, 0x21000 | RWX | WB); // retargeted
        Assert.Equal(Hit(), Access(AccessType.Read));
        Assert.Equal(NestedOutcomeKind.Ok, vm.Invept(InveptKind.SingleContext, Eptp4AD).Kind); // same EP4TA, other EPTP
        var after = Access(AccessType.Read);
        Assert.Equal((NestedOutcomeKind.Translated, 0x21567UL), (after.Kind, after.L1Gpa));
        var n = vm.UnsyncCounters;
        Assert.Equal(1, policy == NestedRootPolicy.KeepAndResync ? n.PagesSyncedAtInvept : n.PagesSyncedAtRootLoad);
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void A_reflected_violation_resyncs_its_gpa_so_a_narrowed_entry_is_not_used_after_it()
    {
        Use();
        Ept4(pte: R | WB);
        vm.LoadEptp(Eptp4);
        Assert.Equal(NestedOutcomeKind.Translated, Access(AccessType.Read).Kind); // the shadow entry grants R
        Store(Pte, 0x20000 | X | WB);                                           // L1 leaves execute only, no INVEPT
        Assert.Equal(Hit(), Access(AccessType.Read));                           // stale, allowed: nothing invalidated it
        Assert.Equal(Violation(QWrite | QX), Access(AccessType.Write));        // the entry lacks W: walked, refused by L1
        Assert.Equal(1, vm.UnsyncCounters.GpasSyncedAtViolation);
        // The violation invalidated the gpa's mappings (SDM Vol. 3C §29.4.3.1): L1's execute-only entry now, not the stale R.
        Assert.Equal(Violation(QRead | QX), Access(AccessType.Read));
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void A_violation_resyncs_the_gpa_in_a_cached_root_of_the_same_EP4TA()
    {
        Use();
        Ept4();
        vm.LoadEptp(Eptp4AD);
        Assert.Equal(NestedOutcomeKind.Translated, Access(AccessType.Read).Kind); // built under the A/D role
        vm.LoadEptp(Eptp4);                                                      // same tables, A/D off: another root
        Store(Pte, 0x20000 | X | WB);
        Assert.Equal(Violation(QRead | QX), Access(AccessType.Read));            // walked in Eptp4's root (nothing there yet)
        vm.LoadEptp(Eptp4AD);                                                    // back: the cached root's entry was synced
        Assert.Equal(Violation(QRead | QX), Access(AccessType.Read));
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void A_sync_drops_an_entry_whose_rights_AND_to_none()
    {
        Use();
        Ept4(upper: R);
        vm.LoadEptp(Eptp4);
        Assert.Equal(NestedOutcomeKind.Translated, Access(AccessType.Read).Kind);
        Store(Pte, 0x20000 | X | WB); // present on its own (execute-only), but R above AND X = nothing
        Assert.Equal(NestedOutcomeKind.Ok, vm.Invept(InveptKind.AllContext, 0).Kind);
        Assert.Equal(1, vm.UnsyncCounters.NoAccessEntriesDropped);
        Assert.Equal(0, vm.ShadowPages().Single(p => p.Level == 1).PresentEntries);
        Assert.Empty(vm.InvariantProblems());
        Assert.Equal(Violation(QRead), Access(AccessType.Read));
    }

    [Fact]
    public void Every_page_goes_back_to_the_pool()
    {
        Use();
        Ept4();
        vm.LoadEptp(Eptp4);
        Access(AccessType.Read);
        Store(Pte, 0);
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }

    public void Dispose()
    {
        vm?.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }
}
