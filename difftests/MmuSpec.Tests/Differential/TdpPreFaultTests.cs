using MmuSpec.Harness.Tdp;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The impl's populate (TdpMmu.Populate.cs) against the fault rule it stands for, at sizes the
/// differential properties do not draw (the spec faults once per leaf): a pre-fault must leave exactly
/// the tables, flushes and results of read accesses at each leaf's start, and allocate nothing once the
/// MMU has its table pages.
/// </summary>
public sealed class TdpPreFaultTests
{
    /// <summary>Table pages and their entries as text, in VisitPages order.</summary>
    static string Tables(ITdpVm vm)
    {
        var text = new List<string>();
        vm.VisitPages((key, entries) => text.Add($"{key}: {string.Join(" ", entries)}"));
        return string.Join("\n", text);
    }

    /// <summary>What a pre-fault stands for: read accesses from the start, each stepping to the end of its leaf.</summary>
    static TdpPreFaultOutcome ByFaults(ITdpVm vm, ulong gpa, ulong size)
    {
        ulong at = gpa, end = gpa + size;
        while (at < end && at >> vm.GpaBits == 0)
        {
            var o = vm.Access(at, AccessType.Read);
            if (o.Status != TdpAccessStatus.Mapped) break;
            ulong leaf = 1UL << o.PageShift;
            at = (at & ~(leaf - 1)) + leaf;
        }
        return at == gpa ? new(TdpAccessStatus.MmioExit, 0) : new(TdpAccessStatus.Mapped, Math.Min(at, end) - gpa);
    }

    public static TheoryData<string> Scenarios() => [.. Setups.Keys];

    // Each: a VM set up, then a pre-fault. Slot 0 is 1 GiB + 2 MiB + 3 pages at gfn 0x40000 - 0x201
    // (not 2 MiB aligned at either end), host frames equally aligned; slot 1 right after a gap.
    static readonly Dictionary<string, (int? SharedBit, Action<ITdpVm> Setup, ulong Gpa, ulong Size)> Setups = new()
    {
        ["1 GiB in 4 KiB leaves"] = (null, vm => vm.SetMaxPageSize(12), 0x4000_0000, 1UL << 30),
        ["the whole slot, every size, past its end"] = (null, _ => { }, (0x40000UL - 0x201) << 12, 0x4100_0000),
        ["2 MiB policy, shared gpa"] = (47, vm => vm.SetMaxPageSize(21), (1UL << 47) | 0x3FF0_0000, 0x80_0000),
        ["private gpa, 5 levels"] = (51, vm => vm.SetMaxPageSize(12), 0x3FFF_E000, 0x40_4000),
        ["over 4 KiB leaves now allowed to be huge"] = (null, vm =>
        {
            vm.SetMaxPageSize(12);
            for (ulong g = 0x4000_0000; g < 0x4080_0000; g += 0x3_1000) vm.Access(g, AccessType.Write);
            vm.SetMaxPageSize(30);
        }, 0x3FE0_0000, 0x100_0000),
        ["4 KiB holes and a hit, then a hit on a 1 GiB leaf"] = (null, vm =>
        {
            vm.Access(0x4020_0000, AccessType.Read);                  // a 1 GiB leaf over [1 GiB, 2 GiB)
            vm.SetMaxPageSize(12);
            vm.Access(0x3FF8_0000, AccessType.Read);                  // one 4 KiB leaf among the holes
        }, 0x3FF0_0000, 0x200_0000),
        ["a logging slot"] = (null, vm => vm.SetDirtyLogging(0, true), 0x4010_0000, 0x40_0000),
        ["4 KiB leaves left write-protected by dirty logging, among holes"] = (null, vm =>
        {
            vm.SetMaxPageSize(12);
            for (ulong g = 0x4000_0000; g < 0x4060_0000; g += 0x1_1000) vm.Access(g, AccessType.Write);
            vm.SetDirtyLogging(0, true);
            vm.SetDirtyLogging(0, false);                             // the leaves stay read-only: a read hit keeps them so
        }, 0x3FF0_0000, 0x80_0000),
        ["a slot of 4 KiB host pages under a 1 GiB policy, past its end"] = (null, vm =>
        {
            vm.CreateSlot(2, 0xC0000, 0x1234, 0x3_0000_0000, 12, readOnly: false);
            vm.Access(0xC040_0000, AccessType.Write);                 // one leaf table already there
        }, 0xC000_0000, 0x200_0000),
        ["a read-only slot"] = (null, _ => { }, 0x8030_0000, 0x40_0000),
        ["into the gap between the slots"] = (null, _ => { }, 0x8010_0000, 0x40_0000),
        ["starting in the gap"] = (null, _ => { }, 0x8020_3000, 0x4000),
    };

    static ITdpVm Vm(int? sharedBit, NativePagePool pool)
    {
        var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit, pool);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0x40000 - 0x201, 0x40000 + 0x201 + 3 + 0x200, 0x1_0000_0000 - 0x201, 30, readOnly: false));
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(1, 0x80300, 0x400, 0x2_0000_0300, 21, readOnly: true));
        return vm;
    }

    [Theory]
    [MemberData(nameof(Scenarios))]
    public void A_pre_fault_leaves_the_tables_flushes_and_result_of_read_faults_at_each_leaf(string scenario)
    {
        var (sharedBit, setup, gpa, size) = Setups[scenario];
        var pool = new NativePagePool();
        using (ITdpVm populated = Vm(sharedBit, pool), faulted = Vm(sharedBit, pool))
        {
            setup(populated);
            setup(faulted);
            Assert.Equal(Tables(faulted), Tables(populated));
            populated.TakeFlushes();
            faulted.TakeFlushes();

            var expected = ByFaults(faulted, gpa, size);
            Assert.Equal(expected, populated.PreFault(gpa, size));
            Assert.Equal(Tables(faulted), Tables(populated));
            Assert.Equal(ImplTdpEngine.Flushed(faulted.TakeFlushes())?.ToString(), ImplTdpEngine.Flushed(populated.TakeFlushes())?.ToString());
            Assert.Equal(faulted.TablePages, populated.TablePages);
            Assert.Equal(string.Join(",", faulted.DirtyOffsets(0)), string.Join(",", populated.DirtyOffsets(0)));
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void Pre_faulting_1GiB_in_4KiB_leaves_allocates_nothing_once_the_tables_exist()
    {
        var pool = new NativePagePool();
        using var vm = Vm(null, pool);
        vm.SetMaxPageSize(12);
        Assert.Equal(TdpAccessStatus.Mapped, vm.PreFault(0x4000_0000, 1UL << 30).Status);
        vm.ZapAll();    // the table pages go back to the MMU's free list
        long before = GC.GetAllocatedBytesForCurrentThread();
        var o = vm.PreFault(0x4000_0000, 1UL << 30);
        long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(new TdpPreFaultOutcome(TdpAccessStatus.Mapped, 1UL << 30), o);
        Assert.Equal(0, bytes);
        Assert.Equal(TdpAccessStatus.Mapped, vm.Access(0x7FFF_F123, AccessType.Read).Status);
        Assert.False(vm.Access(0x7FFF_F123, AccessType.Read).Faulted);
    }
}
