using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The impl's accessed/dirty bits as stored (docs/tdp-model.md, "Aging"): the positions per format, what
/// an access and aging do to them, and the frozen values they share a bit with. The differential property
/// tdp-aging compares the decoded state; these pin the raw bits it cannot see.
/// </summary>
public sealed class TdpAgingImplTests
{
    const ulong Base = 0x200, Gfn = 0x203, Gpa = Gfn << 12;

    static ITdpVm Vm(TdpFormatKind format, TdpAccessedDirty ad, NativePagePool pool)
    {
        var vm = TdpVm.Create(format, sharedBit: null, pool, ad);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, Base, 64, 0x1000, 12, readOnly: false));
        return vm;
    }

    static ulong Raw(ITdpVm vm, ulong gfn)
    {
        ulong raw = 0;
        vm.VisitPages((_, entries) =>
        {
            foreach (var e in entries)
                if (e.IsLeaf && e.LeafGfn == gfn) raw = e.Raw;
        });
        return raw;
    }

    [Fact]
    public void EPT_with_AD_sets_bit_8_on_an_access_and_bit_9_on_a_write_and_age_clears_only_bit_8_without_a_flush()
    {
        using var vm = Vm(TdpFormatKind.Ept, TdpAccessedDirty.Enabled, new NativePagePool());
        vm.Access(Gpa, AccessType.Read);
        Assert.Equal(EptFormat.Accessed, Raw(vm, Gfn) & 0x300);
        vm.Access(Gpa, AccessType.Write);
        Assert.Equal(EptFormat.Accessed | EptFormat.Dirty, Raw(vm, Gfn) & 0x300);
        vm.TakeFlushes();
        Assert.Equal(TdpStatus.Ok, vm.Age(Base, Base + 64, out bool young));
        Assert.True(young);
        Assert.Equal(EptFormat.Dirty, Raw(vm, Gfn) & 0x300);
        var flushes = vm.TakeFlushes();
        Assert.False(flushes.FlushedAll);
        Assert.Equal(0, flushes.Count);
        Assert.Equal(TdpStatus.Ok, vm.TestAge(Base, Base + 64, out young));
        Assert.False(young);
    }

    [Fact]
    public void Every_access_sets_A_even_in_a_slot_the_fast_paths_would_serve()
    {
        // A writable 4 KiB slot without logging is what the cached fast paths serve; with accessed state kept
        // they must not, or the second leaf would be installed without A.
        using var vm = Vm(TdpFormatKind.Ept, TdpAccessedDirty.Enabled, new NativePagePool());
        vm.SetMaxPageSize(12);
        for (ulong g = Base; g < Base + 4; g++)
            Assert.True(vm.Access(g << 12, AccessType.Write).Status == TdpAccessStatus.Mapped);
        for (ulong g = Base; g < Base + 4; g++)
            Assert.Equal(EptFormat.Accessed | EptFormat.Dirty, Raw(vm, g) & 0x300);
    }

    [Fact]
    public void EPT_without_AD_never_sets_bits_8_or_9_and_age_zaps_and_flushes_the_leaf()
    {
        using var vm = Vm(TdpFormatKind.Ept, TdpAccessedDirty.Disabled, new NativePagePool());
        vm.Access(Gpa, AccessType.Write);
        Assert.Equal(0UL, Raw(vm, Gfn) & 0x300);
        vm.TakeFlushes();
        Assert.Equal(TdpStatus.Ok, vm.Age(Gfn, Gfn + 1, out bool young));
        Assert.True(young);
        Assert.Equal(0UL, Raw(vm, Gfn));
        var flushes = vm.TakeFlushes();
        Assert.Equal(1, flushes.Count);
        Assert.Equal(Gfn, flushes[0].StartGfn);
    }

    [Fact]
    public void Stage2_without_hardware_AF_clears_AF_and_the_next_access_is_an_access_flag_fault()
    {
        using var vm = Vm(TdpFormatKind.Stage2, TdpAccessedDirty.Disabled, new NativePagePool());
        vm.Access(Gpa, AccessType.Read);
        Assert.Equal(Stage2Format.AccessFlag, Raw(vm, Gfn) & Stage2Format.AccessFlag);
        Assert.Equal(TdpStatus.Ok, vm.Age(Gfn, Gfn + 1, out bool young));
        Assert.True(young);
        Assert.Equal(0UL, Raw(vm, Gfn) & Stage2Format.AccessFlag);
        Assert.True(vm.Access(Gpa, AccessType.Read).Faulted);
        Assert.False(vm.Access(Gpa, AccessType.Read).Faulted);
    }

    [Fact]
    public void An_untracked_MMU_rejects_aging_and_builds_its_leaves_as_before()
    {
        using var vm = Vm(TdpFormatKind.Ept, TdpAccessedDirty.Untracked, new NativePagePool());
        vm.Access(Gpa, AccessType.Write);
        Assert.Equal(0UL, Raw(vm, Gfn) & 0x300);
        Assert.Equal(TdpStatus.Rejected, vm.Age(Base, Base + 1, out _));
        Assert.Equal(TdpStatus.Rejected, vm.TestAge(Base, Base + 1, out _));
        Assert.Contains("accessed", vm.LastRejection);
    }

    [Fact]
    public void The_accessed_bits_may_share_a_bit_with_the_frozen_values_because_those_are_never_present()
    {
        // Aging looks at present leaves only, so a frozen entry is never taken for a young leaf.
        Assert.NotEqual(0UL, EptFormat.FrozenEntry & EptFormat.AccessedBit);
        Assert.False(EptFormat.IsPresent(EptFormat.FrozenEntry));
        Assert.Equal(Stage2Format.FrozenEntry, Stage2Format.AccessedBit);
        Assert.False(Stage2Format.IsPresent(Stage2Format.FrozenEntry));
        Assert.Equal(1UL << 8, EptFormat.AccessedBit);
        Assert.Equal(1UL << 9, EptFormat.DirtyBit);
        Assert.Equal(0UL, Stage2Format.DirtyBit);
    }
}
