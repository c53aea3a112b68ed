using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Shadow;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The shadow fault path's shortcuts (impl/Shadow/ShadowMmu.Guest.cs, Access), each on the guest that would
/// catch it going wrong: the A/D pass skips only entries the walk read with the bit set (a table that maps
/// itself is read twice with A clear), D is set and the page mapped writable in the same fault, and the fill
/// follows the descent's path except where a large guest page's direct child must be rebuilt.
/// </summary>
public sealed class ShadowFaultPathTests
{
    const ulong HostPfnBase = 0x1000;
    const ulong P = 1, Rw = 2, Us = 4, A = 0x20, D = 0x40, Ps = 0x80, Table = P | Rw | Us;

    static PagingControls Long4 => new(PagingMode.Long4, Cr0Wp: true, Cr4Pse: false, Cr4Smep: false, Cr4Smap: false,
        Cr4Pke: false, EferNxe: true, EflagsAc: false, Pkru: 0, MaxPhyAddr: 46);

    /// <summary>One writable slot over gfns 0..0x3FF (host frames from 0x1000), the entries stored, 4-level paging at CR3 0x1000.</summary>
    static IShadowVm Vm(NativePagePool pool, params (ulong Gpa, ulong Value)[] entries)
    {
        var vm = ShadowVm.Create(46, allowUnsync: true, pool);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x400, HostPfnBase, readOnly: false));
        foreach (var (gpa, value) in entries)
            Assert.Equal(ShadowStatus.Ok, vm.GuestStore(gpa, value, 8).Status);
        Assert.Equal(ShadowStatus.Ok, vm.GuestSetPaging(Long4, 0x1000).Status);
        return vm;
    }

    static ulong Guest(IShadowVm vm, ulong gpa)
    {
        ulong found = 0, hpa = (HostPfnBase << 12) + gpa;
        vm.VisitHostMemory((h, value) => found = h == hpa ? value : found);
        return found;
    }

    static ShadowOutcome Translated(ulong gpa, bool faulted) => ShadowOutcome.Translated(gpa, (HostPfnBase << 12) + gpa, faulted);

    [Fact]
    public void A_self_mapping_table_read_twice_with_A_clear_gets_A_once_and_every_entry_read_gets_it()
    {
        var pool = new NativePagePool();
        // PML4[1] maps the PML4 itself: gva 0x80_4000_0000 reads PML4[1] as the PML4 entry and again as the
        // PDPT entry (A clear both times), then PML4[0] as the PDE, then PDPT[0] as the PTE (gfn 3).
        using (IShadowVm vm = Vm(pool, (0x1008, 0x1000 | Table), (0x1000, 0x2000 | Table), (0x2000, 0x3000 | Table)))
        {
            Assert.Equal(Translated(0x3000, faulted: true), vm.GuestAccess(0x80_4000_0000, AccessType.Read, Privilege.User));
            Assert.Equal(0x1000 | Table | A, Guest(vm, 0x1008));
            Assert.Equal(0x2000 | Table | A, Guest(vm, 0x1000));
            Assert.Equal(0x3000 | Table | A, Guest(vm, 0x2000)); // a read: the leaf gets A, not D
            Assert.Equal(Translated(0x3000, faulted: false), vm.GuestAccess(0x80_4000_0000, AccessType.Read, Privilege.User));
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void A_write_through_a_clean_leaf_sets_D_and_maps_the_page_writable_in_the_same_fault()
    {
        var pool = new NativePagePool();
        using (IShadowVm vm = Vm(pool, (0x1000, 0x2000 | Table), (0x2000, 0x3000 | Table), (0x3000, 0x4000 | Table), (0x4028, 0x5000 | Table)))
        {
            // A read maps the clean page read-only (its leaf has no D), so the first write faults again ...
            Assert.Equal(Translated(0x5000, faulted: true), vm.GuestAccess(0x5000, AccessType.Read, Privilege.User));
            Assert.Equal(0x5000 | Table | A, Guest(vm, 0x4028));
            Assert.Equal(Translated(0x5000, faulted: true), vm.GuestAccess(0x5000, AccessType.Write, Privilege.User));
            Assert.Equal(0x5000 | Table | A | D, Guest(vm, 0x4028));
            // ... and the D it set makes the new leaf writable: the next write is a hit.
            Assert.Equal(Translated(0x5000, faulted: false), vm.GuestAccess(0x5000, AccessType.Write, Privilege.User));
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void A_write_to_a_clean_large_page_rebuilds_the_direct_child_the_descent_passed()
    {
        var pool = new NativePagePool();
        // PD[1] maps the 2 MiB page at gpa 0x20_0000, clean (no D).
        using (IShadowVm vm = Vm(pool, (0x1000, 0x2000 | Table), (0x2000, 0x3000 | Table), (0x3008, 0x20_0000 | Table | Ps)))
        {
            const ulong gva = 0x20_3000;
            Assert.Equal(Translated(0x20_3000, faulted: true), vm.GuestAccess(gva, AccessType.Read, Privilege.User));
            Assert.False(Writable(LinkedChild(vm)));
            // The write's descent reaches the direct page built without write access; the fill must replace it.
            Assert.Equal(Translated(0x20_3000, faulted: true), vm.GuestAccess(gva, AccessType.Write, Privilege.User));
            Assert.Equal(0x20_0000 | Table | Ps | A | D, Guest(vm, 0x3008));
            ShadowPageKey child = LinkedChild(vm);
            Assert.True(child.Role.Direct);
            Assert.True(Writable(child));
            Assert.Equal(Translated(0x20_3000, faulted: false), vm.GuestAccess(gva, AccessType.Write, Privilege.User));
        }
        Assert.Equal(0, pool.PagesInUse);

        static bool Writable(ShadowPageKey key) => (key.Role.Access & ShadowRole.AccWrite) != 0;
    }

    /// <summary>The page entry 1 of the level-2 shadow page (the guest PD, gfn 3) links.</summary>
    static ShadowPageKey LinkedChild(IShadowVm vm)
    {
        ShadowPageKey? child = null;
        vm.VisitPages((page, entries) =>
        {
            if (page.Key.Gfn == 3 && page.Key.Role.Level == 2)
                child = entries.Single(e => e.Index == 1).Child;
        });
        return child ?? throw new Xunit.Sdk.XunitException("no level-2 shadow page for the guest PD");
    }
}
