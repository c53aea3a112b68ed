using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The walk engine's API at its edges: input the differential generators never make (undefined enum
/// values, a fetch as an implicit supervisor access, controls out of range) is refused with the
/// argument named and nothing written; the 32-bit bounds of linear addresses and CR3 in 32-bit and
/// PAE paging are exact (2^32 - 1 is a value of the mode, 2^32 is not); PDPTE register indexes are
/// 0..3. Mutation testing found these bounds and guards unchecked (docs/mutation-score.md).
/// </summary>
public sealed class GuestVcpuContractTests
{
    static PagingControls Controls(PagingMode mode, int maxPhyAddr = 46) =>
        new(mode, Cr0Wp: true, Cr4Pse: true, Cr4Smep: false, Cr4Smap: false, Cr4Pke: false, EferNxe: true,
            EflagsAc: false, Pkru: 0, MaxPhyAddr: maxPhyAddr);

    /// <summary>4-level paging over 16 KiB of memory, CR3 0x1000, every table entry P|W|U, gva 0 mapped read/write.</summary>
    static GuestVcpu Long4(GuestPhysicalMemory memory)
    {
        memory.AddSlot(0, 8);
        Assert.True(memory.TryWrite64(0x1000, 0x2007));
        Assert.True(memory.TryWrite64(0x2000, 0x3007));
        Assert.True(memory.TryWrite64(0x3000, 0x4007));
        Assert.True(memory.TryWrite64(0x4000, 0x5007));
        return new GuestVcpu(memory, Controls(PagingMode.Long4), 0x1000);
    }

    [Theory]
    [InlineData((byte)3, (byte)0, "type")]          // no fourth access type
    [InlineData((byte)255, (byte)1, "type")]
    [InlineData((byte)0, (byte)3, "priv")]          // no fourth privilege
    [InlineData((byte)1, (byte)200, "priv")]
    public void An_undefined_access_type_or_privilege_is_refused_and_nothing_is_written(byte type, byte priv, string param)
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        var vcpu = Long4(memory);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => vcpu.Access(0, (AccessType)type, (Privilege)priv));
        Assert.Equal(param, e.ParamName);
        WalkTrace trace = default;
        e = Assert.Throws<ArgumentOutOfRangeException>(() => vcpu.Translate(0, (AccessType)type, (Privilege)priv, ref trace));
        Assert.Equal(param, e.ParamName);
        Assert.True(memory.TryRead64(0x1000, out ulong pml4e));
        Assert.Equal(0x2007UL, pml4e);                                  // no accessed bit set
    }

    [Fact]
    public void A_fetch_is_never_an_implicit_supervisor_access_but_every_other_pair_walks()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        var vcpu = Long4(memory);
        var e = Assert.Throws<ArgumentException>(() => vcpu.Access(0, AccessType.Fetch, Privilege.ImplicitSupervisor));
        Assert.Equal("priv", e.ParamName);
        Assert.IsNotType<ArgumentOutOfRangeException>(e);
        foreach (AccessType type in Enum.GetValues<AccessType>())
            foreach (Privilege priv in Enum.GetValues<Privilege>())
                if (!(type == AccessType.Fetch && priv == Privilege.ImplicitSupervisor))
                    Assert.Equal(WalkStatus.Translated, vcpu.Access(0x10, type, priv).Status);
    }

    [Theory]
    [InlineData(PagingMode.Bits32)]
    [InlineData(PagingMode.Pae)]
    public void In_32_bit_and_PAE_paging_linear_addresses_and_CR3_end_at_2_to_the_32(PagingMode mode)
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        memory.AddSlot(0, 0x10);    // PAE: the PDPT at 0xFE0 (4 not-present PDPTEs); 32-bit: the directory at 0
        ulong cr3 = mode == PagingMode.Pae ? 0xFE0UL : 0UL;
        var vcpu = new GuestVcpu(memory, Controls(mode), cr3);

        // The last address of the mode walks (nothing is mapped: a #PF for a not-present entry).
        WalkOutcome last = vcpu.Access(0xFFFF_FFFF, AccessType.Read, Privilege.Supervisor);
        Assert.Equal(WalkStatus.PageFault, last.Status);
        Assert.Equal(0u, last.ErrorCode);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => vcpu.Access(0x1_0000_0000, AccessType.Read, Privilege.Supervisor));
        Assert.Equal("gva", e.ParamName);

        // CR3: the widest value of the mode is a value (32-bit: accepted; PAE: its PDPT is unbacked, #GP);
        // one more is not a register value at all.
        Assert.Equal(mode == PagingMode.Bits32, vcpu.LoadCr3(0xFFFF_FFFF));
        Assert.Throws<ArgumentOutOfRangeException>(() => vcpu.LoadCr3(0x1_0000_0000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new GuestVcpu(memory, Controls(mode), 0x1_0000_0000));
        Assert.Equal(mode == PagingMode.Bits32 ? 0xFFFF_FFFFUL : cr3, vcpu.Cr3);
    }

    [Fact]
    public void PDPTE_registers_are_numbered_0_to_3()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        memory.AddSlot(0, 0x10);
        Assert.True(memory.TryWrite64(0xFE0 + 3 * 8, 0x5001));       // PDPTE 3 present
        var vcpu = new GuestVcpu(memory, Controls(PagingMode.Pae), 0xFE0);
        Assert.Equal(0x5001UL, vcpu.Pdpte(3));
        Assert.Equal(0UL, vcpu.Pdpte(0));
        foreach (int i in new[] { -1, 4, int.MaxValue })
            Assert.Equal("i", Assert.Throws<ArgumentOutOfRangeException>(() => vcpu.Pdpte(i)).ParamName);
    }

    [Theory]
    [InlineData((byte)4, 46, "Mode")]
    [InlineData((byte)PagingMode.Long4, 35, "MaxPhyAddr")]
    [InlineData((byte)PagingMode.Long4, 53, "MaxPhyAddr")]
    public void Controls_out_of_range_are_refused_and_the_vcpu_keeps_its_own(byte mode, int maxPhyAddr, string param)
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        var vcpu = Long4(memory);
        var bad = Controls((PagingMode)mode, maxPhyAddr);
        Assert.Equal(param, Assert.Throws<ArgumentOutOfRangeException>(() => vcpu.SetControls(bad)).ParamName);
        Assert.Equal(param, Assert.Throws<ArgumentOutOfRangeException>(() => new GuestVcpu(memory, bad, 0x1000)).ParamName);
        Assert.Equal(Controls(PagingMode.Long4), vcpu.Controls);
        foreach (int edge in new[] { 36, 52 })
            Assert.True(vcpu.SetControls(Controls(PagingMode.Long4, edge)));
    }
}
