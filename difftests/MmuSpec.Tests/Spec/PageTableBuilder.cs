using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Entry bits and fixed, hand-laid page-table trees for the known-answer tests. The bit positions
/// are spelled out from the SDM (Vol. 3 Tables 4-4 to 4-20) rather than taken from the spec, and
/// every table address and entry address below is computed by hand in the comments, so a test
/// states its expectation without trusting the code it checks.
/// </summary>
internal static class PageTableBuilder
{
    // Entry flags common to every mode (Tables 4-4 .. 4-20).
    public const ulong P = 1UL << 0;    // present
    public const ulong W = 1UL << 1;    // R/W
    public const ulong U = 1UL << 2;    // U/S
    public const ulong A = 1UL << 5;    // accessed
    public const ulong D = 1UL << 6;    // dirty (leaf only)
    public const ulong PS = 1UL << 7;   // page size
    public const ulong XD = 1UL << 63;  // execute-disable (64-bit entries, EFER.NXE=1)
    public const ulong PWU = P | W | U;

    /// <summary>Protection key <paramref name="k"/> in bits 62:59 of an IA-32e leaf (Table 4-19 .. 4-20).</summary>
    public static ulong Key(int k) => (ulong)k << 59;

    /// <summary>64 KiB of guest RAM at gpa 0 (one memslot of 16 frames); every table below lives in it.</summary>
    public static GuestMemory Ram() => GuestMemory.FromSlots([new Memslot(0, 16)]);

    // ------------------------------------------------------------------------------------------
    // 4-level paging (§4.5, Figure 4-8). Long4Gva = 0x0000_0080_8060_4567 has
    //   PML4 index (47:39) = 1, PDPT index (38:30) = 2, PD index (29:21) = 3, PT index (20:12) = 4,
    //   offset (11:0) = 0x567.
    // CR3 = 0x1000:  PML4E @ 0x1000 + 1*8 = 0x1008 -> PDPT 0x2000
    //                PDPTE @ 0x2000 + 2*8 = 0x2010 -> PD   0x3000
    //                PDE   @ 0x3000 + 3*8 = 0x3018 -> PT   0x4000
    //                PTE   @ 0x4000 + 4*8 = 0x4020 -> 4 KiB frame 0x12_3000, so gpa 0x12_3567.
    // ------------------------------------------------------------------------------------------
    public const ulong Long4Gva = 0x0000_0080_8060_4567;

    public static GuestMemory Long4Tree(ulong pml4e = PWU, ulong pdpte = PWU, ulong pde = PWU, ulong pte = PWU) => Ram()
        .Write64(0x1008, 0x2000 | pml4e)
        .Write64(0x2010, 0x3000 | pdpte)
        .Write64(0x3018, 0x4000 | pde)
        .Write64(0x4020, 0x12_3000 | pte);

    // ------------------------------------------------------------------------------------------
    // 5-level paging (§4.5, Figure 4-8 plus the PML5). Long5Gva = 0x0002_0080_8060_4567 has
    //   PML5 index (56:48) = 2 and then the same indices as Long4Gva.
    // CR3 = 0x1000:  PML5E @ 0x1010 -> PML4 0x2000; PML4E @ 0x2008 -> PDPT 0x3000;
    //                PDPTE @ 0x3010 -> PD 0x4000;   PDE @ 0x4018 -> PT 0x5000;
    //                PTE   @ 0x5020 -> frame 0x12_3000, so gpa 0x12_3567.
    // ------------------------------------------------------------------------------------------
    public const ulong Long5Gva = 0x0002_0080_8060_4567;

    public static GuestMemory Long5Tree(ulong pml5e = PWU, ulong pml4e = PWU, ulong pdpte = PWU, ulong pde = PWU, ulong pte = PWU) => Ram()
        .Write64(0x1010, 0x2000 | pml5e)
        .Write64(0x2008, 0x3000 | pml4e)
        .Write64(0x3010, 0x4000 | pdpte)
        .Write64(0x4018, 0x5000 | pde)
        .Write64(0x5020, 0x12_3000 | pte);

    // ------------------------------------------------------------------------------------------
    // PAE paging (§4.4, Figure 4-5). PaeGva = 0x8060_4567 has
    //   PDPTE index (31:30) = 2, PD index (29:21) = 3, PT index (20:12) = 4, offset 0x567.
    // CR3 = 0x1000 (the 32-byte PDPT): PDPTE2 @ 0x1010 -> PD 0x2000 (a PDPTE holds only P and the address);
    //                PDE @ 0x2000 + 3*8 = 0x2018 -> PT 0x3000;
    //                PTE @ 0x3000 + 4*8 = 0x3020 -> frame 0x12_3000, so gpa 0x12_3567.
    // ------------------------------------------------------------------------------------------
    public const ulong PaeGva = 0x8060_4567;

    public static GuestMemory PaeTree(ulong pdpte = P, ulong pde = PWU, ulong pte = PWU) => Ram()
        .Write64(0x1010, 0x2000 | pdpte)
        .Write64(0x2018, 0x3000 | pde)
        .Write64(0x3020, 0x12_3000 | pte);

    // ------------------------------------------------------------------------------------------
    // 32-bit paging (§4.3, Figure 4-2). Bits32Gva = 0x00C0_5ABC has
    //   PD index (31:22) = 3, PT index (21:12) = 5, offset (11:0) = 0xABC.
    // CR3 = 0x1000:  PDE @ 0x1000 + 3*4 = 0x100C -> PT 0x2000;
    //                PTE @ 0x2000 + 5*4 = 0x2014 -> frame 0x34_5000, so gpa 0x34_5ABC.
    // ------------------------------------------------------------------------------------------
    public const ulong Bits32Gva = 0x00C0_5ABC;

    public static GuestMemory Bits32Tree(uint pde = (uint)PWU, uint pte = (uint)PWU) => Ram()
        .Write32(0x100C, 0x2000 | pde)
        .Write32(0x2014, 0x0034_5000 | pte);

    // ------------------------------------------------------------------------------------------
    // Running and asserting.
    // ------------------------------------------------------------------------------------------

    /// <summary>MOV CR3 then a machine; fails the test if the load raises #GP.</summary>
    public static GuestMachine Boot(PagingControls controls, GuestMemory memory, ulong cr3 = 0x1000)
    {
        var machine = GuestMachine.Boot(controls, cr3, memory);
        Assert.NotNull(machine);
        return machine;
    }

    /// <summary>Boots with <paramref name="cr3"/> and translates one access.</summary>
    public static Translation Walk(PagingControls controls, GuestMemory memory, Access access, ulong cr3 = 0x1000) =>
        PageWalk.Translate(Boot(controls, memory, cr3).Cpu, memory, access);

    public static void AssertTranslated(WalkResult result, ulong gpa, PageSize size)
    {
        if (result is not WalkResult.Translated t)
        {
            Assert.Fail($"expected a translation to 0x{gpa:x}, got {result}");
            return;
        }
        Assert.Equal($"0x{gpa:x}", $"0x{t.Gpa:x}");
        Assert.Equal(size, t.Size);
    }

    /// <summary>A #PF whose error code is exactly <paramref name="errorCode"/> (P=1, W=2, U=4, RSVD=8, I/D=0x10, PK=0x20; Figure 4-12).</summary>
    public static void AssertPageFault(WalkResult result, uint errorCode)
    {
        if (result is not WalkResult.PageFault f)
        {
            Assert.Fail($"expected #PF with error code 0x{errorCode:x}, got {result}");
            return;
        }
        Assert.Equal($"0x{errorCode:x}", $"0x{(uint)f.ErrorCode:x}");
    }

    public static void AssertGeneralProtection(WalkResult result, GpReason reason)
    {
        if (result is not WalkResult.GeneralProtection g)
        {
            Assert.Fail($"expected #GP ({reason}), got {result}");
            return;
        }
        Assert.Equal(reason, g.Reason);
    }

    /// <summary>The 8-byte word at <paramref name="gpa"/> as hex, for comparing entries after a walk.</summary>
    public static string Q(GuestMemory memory, ulong gpa) => $"0x{memory.Read64(gpa)!.Value:x}";

    /// <summary>The 4-byte word at <paramref name="gpa"/> as hex.</summary>
    public static string L(GuestMemory memory, ulong gpa) => $"0x{memory.Read32(gpa)!.Value:x}";
}
