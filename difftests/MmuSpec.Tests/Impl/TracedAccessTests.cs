using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The impl's API for callers that report a walk (the CLI's batch engine): the traced
/// <see cref="GuestVcpu.Access(ulong, AccessType, Privilege, ref AccessTrace)"/> writes exactly what the
/// untraced one writes and names the entries it read with their values before the walk, and
/// <see cref="GuestVcpu.TryBoot"/> says why MOV CR3 would #GP.
/// </summary>
public sealed class TracedAccessTests
{
    static PagingControls Controls(PagingMode mode) =>
        new(mode, Cr0Wp: true, Cr4Pse: true, Cr4Smep: false, Cr4Smap: false, Cr4Pke: false, EferNxe: true,
            EflagsAc: false, Pkru: 0, MaxPhyAddr: 46);

    /// <summary>4-level tables at descending addresses (0x5000, 0x4000, 0x3000, 0x2000), gva 0 mapped to 0x9000.</summary>
    static void Tables(GuestPhysicalMemory memory)
    {
        memory.AddSlot(0, 16);
        memory.TryWrite64(0x5000, 0x4007);
        memory.TryWrite64(0x4000, 0x3027);    // already accessed
        memory.TryWrite64(0x3000, 0x2007);
        memory.TryWrite64(0x2000, 0x9007);
    }

    [Fact]
    public void A_traced_access_writes_what_an_untraced_one_writes_and_lists_the_entries_in_walk_order_with_their_values_before()
    {
        using var plain = new GuestPhysicalMemory(new NativePagePool());
        using var traced = new GuestPhysicalMemory(new NativePagePool());
        Tables(plain);
        Tables(traced);
        var expected = new GuestVcpu(plain, Controls(PagingMode.Long4), 0x5000).Access(0x123, AccessType.Write, Privilege.User);
        AccessTrace trace = default;
        var outcome = new GuestVcpu(traced, Controls(PagingMode.Long4), 0x5000).Access(0x123, AccessType.Write, Privilege.User, ref trace);

        Assert.Equal(expected, outcome);
        Assert.Equal(WalkStatus.Translated, outcome.Status);
        Assert.True(plain.SlotBytes(0).SequenceEqual(traced.SlotBytes(0)));
        Assert.True(traced.TryRead64(0x2000, out ulong leaf));
        Assert.Equal(0x9067UL, leaf);                       // A and D set by the walk itself

        Assert.Equal(4, trace.Count);
        Assert.Equal(4, trace.Used);
        Assert.Equal(8, trace.EntryBytes);
        Assert.Equal(new ulong[] { 0x5000, 0x4000, 0x3000, 0x2000 }, Enumerable.Range(0, 4).Select(i => trace[i]));
        Assert.Equal(new ulong[] { 0x4007, 0x3027, 0x2007, 0x9007 }, Enumerable.Range(0, 4).Select(trace.Value));
        Assert.Null(trace.UnbackedGpa);
        Assert.Throws<ArgumentOutOfRangeException>(() => trace.Value(4));
    }

    [Fact]
    public void A_walk_into_a_table_outside_every_memslot_names_the_entry_it_could_not_read()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        memory.AddSlot(0, 16);
        memory.TryWrite64(0x5000, 0x4007);
        memory.TryWrite64(0x4000, 0x100007);   // the page directory at 1 MiB is outside the slot
        var vcpu = new GuestVcpu(memory, Controls(PagingMode.Long4), 0x5000);
        AccessTrace trace = default;
        var outcome = vcpu.Access(5UL << 21, AccessType.Read, Privilege.Supervisor, ref trace);

        Assert.Equal(WalkStatus.PageFault, outcome.Status);
        Assert.Equal(2, trace.Count);
        Assert.Equal(0, trace.Used);
        Assert.Equal(0x100000UL + 5 * 8, trace.UnbackedGpa);
        Assert.True(memory.TryRead64(0x5000, out ulong pml4e));
        Assert.Equal(0x4007UL, pml4e);                       // a fault writes nothing

        // The next walk starts afresh: PML4E 1 is not present, nothing unbacked.
        Assert.Equal(WalkStatus.PageFault, vcpu.Access(1UL << 39, AccessType.Read, Privilege.Supervisor, ref trace).Status);
        Assert.Equal(1, trace.Count);
        Assert.Null(trace.UnbackedGpa);
    }

    [Theory]
    [InlineData(0x3003UL, 1, 0x2UL)]        // R/W is reserved in a PDPTE
    [InlineData(0x3021UL, 1, 0x20UL)]       // so is A (bits 8:5): QEMU's TCG sets it
    [InlineData(0x0000_4000_0000_3001UL, 1, 0x0000_4000_0000_0000UL)]   // above MAXPHYADDR 46
    public void TryBoot_names_the_PDPTE_that_cannot_be_loaded_and_its_reserved_bits(ulong pdpte, int index, ulong reserved)
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        memory.AddSlot(0, 16);
        memory.TryWrite64(0x2020, 0x3001);
        memory.TryWrite64(0x2020 + 8 * (ulong)index, pdpte);
        Assert.Null(GuestVcpu.TryBoot(memory, Controls(PagingMode.Pae), 0x2020, out var error));
        Assert.Equal(new Cr3LoadError(Cr3Fault.PdpteReservedBits, index, 0x2020 + 8 * (ulong)index, pdpte, reserved), error);

        // Not present: its other bits are not checked.
        memory.TryWrite64(0x2020 + 8 * (ulong)index, pdpte & ~1UL);
        var vcpu = GuestVcpu.TryBoot(memory, Controls(PagingMode.Pae), 0x2020, out error);
        Assert.NotNull(vcpu);
        Assert.Equal(default, error);
        Assert.Equal(0x3001UL, vcpu.Pdpte(0));
    }

    [Fact]
    public void TryBoot_refuses_a_PDPT_outside_memory_and_a_CR3_with_reserved_bits()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        memory.AddSlot(0, 16);
        Assert.Null(GuestVcpu.TryBoot(memory, Controls(PagingMode.Pae), 0x20000, out var error));
        Assert.Equal(new Cr3LoadError(Cr3Fault.PdptUnbacked, 0, 0x20000, 0, 0), error);

        Assert.Null(GuestVcpu.TryBoot(memory, Controls(PagingMode.Long4), 1UL << 50 | 0x1000, out error));
        Assert.Equal(new Cr3LoadError(Cr3Fault.ReservedBits, -1, 0, 0, 1UL << 50), error);

        Assert.Throws<ArgumentOutOfRangeException>(() => GuestVcpu.TryBoot(memory, Controls(PagingMode.Pae), 1UL << 32, out _));
    }
}
