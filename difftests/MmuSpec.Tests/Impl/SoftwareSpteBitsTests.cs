using MmuSpec.Harness.Tdp;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The software writability bits of a TDP leaf (docs/tdp-concurrency.md, "Software SPTE bits"): where each
/// format keeps them, the one leaf rule (<see cref="TdpLeaf{TFormat}"/>), what each kind of write-protection
/// clears, and the harness's read-back check of them.
/// </summary>
public sealed class SoftwareSpteBitsTests
{
    [Fact]
    public void The_bits_sit_where_kvm_puts_them_and_leave_the_decoded_leaf_alone()
    {
        Assert.Equal(1UL << 57, EptFormat.HostWritable);   // EPT_SPTE_HOST_WRITABLE
        Assert.Equal(1UL << 58, EptFormat.MmuWritable);    // EPT_SPTE_MMU_WRITABLE
        Assert.Equal(1UL << 55, Stage2Format.HostWritable); // software bits 58:55
        Assert.Equal(1UL << 56, Stage2Format.MmuWritable);
        Decodes<EptFormat>();
        Decodes<Stage2Format>();
    }

    static void Decodes<TFormat>() where TFormat : struct, IPteFormat
    {
        for (int level = 1; level <= 3; level++)
        {
            ulong pfn = 0x12345UL << (9 * (level - 1));
            ulong leaf = TdpLeaf<TFormat>.Make(pfn, level, hostWritable: true, writeTracked: false, writable: false);
            Assert.Equal(TFormat.MakeLeaf(pfn, level, false) | TFormat.HostWritable | TFormat.MmuWritable, leaf);
            Assert.True(TFormat.IsPresent(leaf) && TFormat.IsLeaf(leaf, level));
            Assert.Equal(pfn, TFormat.LeafPfn(leaf));
            Assert.False(TFormat.IsWritable(leaf));
            Assert.Equal(0UL, (TFormat.HostWritable | TFormat.MmuWritable) & TFormat.FrozenEntry);
        }
    }

    [Fact]
    public void The_rule_derives_mmu_writable_from_host_writable_and_write_tracking()
    {
        Rule<EptFormat>();
        Rule<Stage2Format>();
    }

    static void Rule<TFormat>() where TFormat : struct, IPteFormat
    {
        ulong writable = TdpLeaf<TFormat>.Make(7, 1, hostWritable: true, writeTracked: false, writable: true);
        Assert.True(TdpLeaf<TFormat>.IsHostWritable(writable) && TdpLeaf<TFormat>.IsMmuWritable(writable) && TFormat.IsWritable(writable));
        Assert.Equal(writable, TdpLeaf<TFormat>.MakeWritable(7, 1));

        ulong readOnlySlot = TdpLeaf<TFormat>.Make(7, 1, hostWritable: false, writeTracked: false, writable: false);
        Assert.False(TdpLeaf<TFormat>.IsHostWritable(readOnlySlot) || TdpLeaf<TFormat>.IsMmuWritable(readOnlySlot));

        ulong tracked = TdpLeaf<TFormat>.Make(7, 1, hostWritable: true, writeTracked: true, writable: false);
        Assert.True(TdpLeaf<TFormat>.IsHostWritable(tracked));
        Assert.False(TdpLeaf<TFormat>.IsMmuWritable(tracked));

        // Dirty logging keeps MMU-writable (the fast fault may restore W and log the gfn); write tracking does not.
        ulong logged = TdpLeaf<TFormat>.ProtectedForLog(writable);
        Assert.False(TFormat.IsWritable(logged));
        Assert.True(TdpLeaf<TFormat>.IsMmuWritable(logged));
        Assert.Equal(writable, TdpLeaf<TFormat>.FastFixed(logged));
        ulong protectedForTracking = TdpLeaf<TFormat>.ProtectedForTracking(logged);
        Assert.False(TdpLeaf<TFormat>.IsMmuWritable(protectedForTracking));
        Assert.Equal(0UL, TdpLeaf<TFormat>.FastFixed(protectedForTracking));
        Assert.Equal(0UL, TdpLeaf<TFormat>.FastFixed(readOnlySlot));
        Assert.Equal(0UL, TdpLeaf<TFormat>.FastFixed(writable)); // already writable: nothing to fix
        foreach (ulong leaf in new[] { writable, readOnlySlot, tracked, logged, protectedForTracking })
            Assert.True(TdpLeaf<TFormat>.KeepsInvariants(leaf));
        Assert.False(TdpLeaf<TFormat>.KeepsInvariants(TFormat.MakeLeaf(7, 1, writable: true)));
        Assert.False(TdpLeaf<TFormat>.KeepsInvariants(TFormat.MakeLeaf(7, 1, writable: false) | TFormat.MmuWritable));
    }

    [Fact]
    public void Single_threaded_leaves_get_the_bits_of_their_slot_and_dirty_logging_clears_only_w()
    {
        Leaves<EptFormat>();
        Leaves<Stage2Format>();
    }

    static void Leaves<TFormat>() where TFormat : struct, IPteFormat
    {
        using var pool = new NativePagePool();
        using var mmu = new TdpMmu<TFormat>(sharedBit: null, pool);
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, 0x200, 0x100000, 12, readOnly: false));
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(1, 0x200, 0x200, 0x200000, 21, readOnly: true));
        mmu.Access(0x1000, AccessType.Read);             // the small slot's fast path
        mmu.Access(0x201000, AccessType.Read);           // a 2 MiB read-only leaf
        Assert.Equal(TdpAccessStatus.Mapped, mmu.PreFault(0x10000, 0x4000).Status);
        ulong ro = Leaf(mmu, 0x200);
        Assert.False(TFormat.IsWritable(ro) || TdpLeaf<TFormat>.IsHostWritable(ro) || TdpLeaf<TFormat>.IsMmuWritable(ro));
        foreach (ulong gfn in new ulong[] { 1, 0x10, 0x13 })
        {
            ulong w = Leaf(mmu, gfn);
            Assert.True(TFormat.IsWritable(w) && TdpLeaf<TFormat>.IsHostWritable(w) && TdpLeaf<TFormat>.IsMmuWritable(w), $"gfn {gfn}");
        }

        Assert.Equal(SlotStatus.Ok, mmu.SetDirtyLogging(0, true));
        ulong logged = Leaf(mmu, 1);
        Assert.False(TFormat.IsWritable(logged));
        Assert.True(TdpLeaf<TFormat>.IsMmuWritable(logged) && TdpLeaf<TFormat>.IsHostWritable(logged));
        mmu.Access(0x2000, AccessType.Read); // a read fault of a logging slot: read-only, still MMU-writable
        ulong read = Leaf(mmu, 2);
        Assert.False(TFormat.IsWritable(read));
        Assert.True(TdpLeaf<TFormat>.IsMmuWritable(read));
        mmu.Access(0x2000, AccessType.Write);
        Assert.Equal(TdpLeaf<TFormat>.FastFixed(read), Leaf(mmu, 2));
        mmu.VisitPages((_, entries) =>
        {
            foreach (var e in entries)
                if (e.IsLeaf) Assert.True(TdpLeaf<TFormat>.KeepsInvariants(e.Raw), $"{e}");
        });
    }

    static ulong Leaf<TFormat>(TdpMmu<TFormat> mmu, ulong gfn) where TFormat : struct, IPteFormat
    {
        ulong found = 0;
        mmu.VisitPages((_, entries) =>
        {
            foreach (var e in entries)
                if (e.IsLeaf && gfn - e.LeafGfn < 1UL << (9 * (e.LeafLevel - 1))) found = e.Raw;
        });
        Assert.NotEqual(0UL, found);
        return found;
    }

    [Fact]
    public void The_harness_read_back_rejects_leaves_whose_writability_bits_break_the_rule()
    {
        ulong ok = TdpLeaf<EptFormat>.MakeWritable(5, 1);
        Assert.Null(ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, ok, 1));
        Assert.Null(ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, EptFormat.MakeLeaf(5, 1, false), 1)); // a read-only slot's leaf
        Assert.Equal("writable leaf without the MMU-writable bit",
            ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, EptFormat.MakeLeaf(5, 1, true), 1));
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, ok & ~EptFormat.MmuWritable & ~EptFormat.Write, 1));
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Stage2, Stage2Format.MakeLeaf(5, 2, true), 2));
        Assert.Null(ImplTdpEngine.LeafEntryProblem(TdpFormat.Stage2, TdpLeaf<Stage2Format>.MakeWritable(5 << 9, 2), 2));
    }
}
