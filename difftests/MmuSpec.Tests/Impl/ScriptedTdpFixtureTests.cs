using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using Xunit;
using Xunit.Sdk;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// <see cref="ScriptedTdpFixture"/> itself: the VM each class asks for, and a Dispose that fails on a page that did not
/// come back to the pool (the leak check every race class relies on) and leaves no callback armed for the next test.
/// </summary>
public sealed class ScriptedTdpFixtureTests
{
    sealed class Vm : ScriptedTdpFixture
    {
        public Vm(byte? maxPageSize, int vcpus, bool leakPage = false)
        {
            CreateVm(maxPageSize, vcpus);
            if (leakPage) unsafe { _pool.AllocatePages(1); }
        }

        public TdpAccessOutcome Read(ulong gfn) => NotRetried(_a.Access(gfn << 12, AccessType.Read));

        public bool HasB => _b is not null;

        public static TdpAccessOutcome Expected(ulong gfn, int shift) => Mapped(gfn, shift, faulted: true);
    }

    [Theory]
    [InlineData((byte)12, 1)]
    [InlineData(null, 2)]
    public void The_vm_has_the_vcpus_and_the_policy_its_class_asked_for(byte? maxPageSize, int vcpus)
    {
        using var vm = new Vm(maxPageSize, vcpus);
        Assert.Equal(vcpus == 2, vm.HasB);
        // The slot is on 2 MiB host pages: the MMU's own policy maps 2 MiB, a 4 KiB policy 4 KiB.
        Assert.Equal(Vm.Expected(0x205, maxPageSize ?? 21), vm.Read(0x205));
    }

    [Fact]
    public void Dispose_fails_on_a_page_that_did_not_come_back_and_disarms_the_schedule()
    {
        var vm = new Vm(12, 2, leakPage: true);
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => { });
        Assert.False(ScriptedSchedule.Fired);
        var e = Assert.ThrowsAny<XunitException>(vm.Dispose);
        Assert.Contains("Expected: 0", e.Message);
        Assert.True(ScriptedSchedule.Fired);
    }
}
