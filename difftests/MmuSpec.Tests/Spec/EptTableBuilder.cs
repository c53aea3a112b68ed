using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// EPT entry bits and fixed, hand-laid EPT trees in L1's memory for the EPT known-answer tests. The bit
/// positions are spelled out from the SDM (Vol. 3C §29.3.2, the EPT entry format tables; the EPTP in §25.6.11;
/// the table "Exit Qualification for EPT Violations") rather than taken from the spec, and every address
/// below is computed by hand in the comments.
/// </summary>
internal static class EptTableBuilder
{
    public const ulong R = 1UL << 0, W = 1UL << 1, X = 1UL << 2, RWX = R | W | X;
    public const ulong IPAT = 1UL << 6;      // leaf: ignore PAT
    public const ulong PS = 1UL << 7;        // PDPTE/PDE: maps a page
    public const ulong A = 1UL << 8, D = 1UL << 9;
    public const ulong XU = 1UL << 10;       // user-mode execute (mode-based execute control)
    /// <summary>Memory type <paramref name="t"/> in bits 5:3 of a leaf.</summary>
    public static ulong MT(int t) => (ulong)t << 3;
    public static readonly ulong WB = MT(6);

    // Exit-qualification bits (the SDM table): access, the ANDed permissions, GLA valid, final access.
    public const ulong QRead = 1 << 0, QWrite = 1 << 1, QFetch = 1 << 2, QR = 1 << 3, QW = 1 << 4, QX = 1 << 5, QXU = 1 << 6,
        QGla = 1 << 7, QFinal = 1 << 8;

    public static readonly EptCapabilities Caps = new();   // execute-only, 5-level, A/D, 2M and 1G pages, MAXPHYADDR 46, MBEC off

    /// <summary>64 KiB of L1 RAM at gpa 0 (16 frames); every EPT table below lives in it.</summary>
    public static GuestMemory Ram(ulong frames = 16) => GuestMemory.FromSlots([new Memslot(0, frames)]);

    // ------------------------------------------------------------------------------------------
    // 4-level EPT (EPTP 0x1000 | WB 6 | (4-1)<<3 = 0x101e). Gpa4 = 0x0000_0080_8060_4567 has
    //   PML4 index (47:39) = 1, PDPT index (38:30) = 2, PD index (29:21) = 3, PT index (20:12) = 4.
    //   PML4E @ 0x1000 + 1*8 = 0x1008 -> PDPT 0x2000
    //   PDPTE @ 0x2000 + 2*8 = 0x2010 -> PD   0x3000
    //   PDE   @ 0x3000 + 3*8 = 0x3018 -> PT   0x4000
    //   PTE   @ 0x4000 + 4*8 = 0x4020 -> 4 KiB frame 0x12_3000, so L1 gpa 0x12_3567.
    // ------------------------------------------------------------------------------------------
    public const ulong Gpa4 = 0x0000_0080_8060_4567;
    public static readonly EptPointer Eptp4 = new(0x101E);
    public static readonly EptPointer Eptp4AD = new(0x105E);   // bit 6

    public static GuestMemory Ept4(ulong pml4e = RWX, ulong pdpte = RWX, ulong pde = RWX, ulong pte = RWX | 0x30) => Ram()
        .Write64(0x1008, 0x2000 | pml4e)
        .Write64(0x2010, 0x3000 | pdpte)
        .Write64(0x3018, 0x4000 | pde)
        .Write64(0x4020, 0x12_3000 | pte);

    // ------------------------------------------------------------------------------------------
    // 5-level EPT (EPTP 0x1000 | WB | (5-1)<<3 = 0x1026). Gpa5 = 0x0002_0080_8060_4567 has
    //   PML5 index (56:48) = 2, then the indices of Gpa4.
    //   PML5E @ 0x1010 -> PML4 0x2000; PML4E @ 0x2008 -> PDPT 0x3000; PDPTE @ 0x3010 -> PD 0x4000;
    //   PDE @ 0x4018 -> PT 0x5000; PTE @ 0x5020 -> frame 0x12_3000, so L1 gpa 0x12_3567.
    // ------------------------------------------------------------------------------------------
    public const ulong Gpa5 = 0x0002_0080_8060_4567;
    public static readonly EptPointer Eptp5 = new(0x1026);

    public static GuestMemory Ept5(ulong pml5e = RWX, ulong pml4e = RWX, ulong pdpte = RWX, ulong pde = RWX, ulong pte = RWX | 0x30) => Ram()
        .Write64(0x1010, 0x2000 | pml5e)
        .Write64(0x2008, 0x3000 | pml4e)
        .Write64(0x3010, 0x4000 | pdpte)
        .Write64(0x4018, 0x5000 | pde)
        .Write64(0x5020, 0x12_3000 | pte);

    public static EptExplanation Walk(GuestMemory memory, EptAccess access, EptCapabilities? caps = null, EptPointer? eptp = null) =>
        EptWalk.Explain(caps ?? Caps, eptp ?? Eptp4, memory, access);

    public static EptResult.Translated AssertTranslated(EptResult result, ulong l1Gpa, PageSize size)
    {
        if (result is not EptResult.Translated t)
        {
            Assert.Fail($"expected a translation to 0x{l1Gpa:x}, got {result}");
            throw new InvalidOperationException();
        }
        Assert.Equal($"0x{l1Gpa:x}", $"0x{t.L1Gpa:x}");
        Assert.Equal(size, t.Size);
        return t;
    }

    /// <summary>An EPT violation whose exit qualification is exactly <paramref name="qualification"/>.</summary>
    public static EptResult.Violation AssertViolation(EptResult result, ulong qualification)
    {
        if (result is not EptResult.Violation v)
        {
            Assert.Fail($"expected an EPT violation with qualification 0x{qualification:x}, got {result}");
            throw new InvalidOperationException();
        }
        Assert.Equal($"0x{qualification:x}", $"0x{v.Qualification.Raw:x}");
        return v;
    }

    public static void AssertMisconfiguration(EptResult result, EptMisconfigurationKind kind, int level)
    {
        if (result is not EptResult.Misconfiguration m)
        {
            Assert.Fail($"expected an EPT misconfiguration ({kind} at level {level}), got {result}");
            return;
        }
        Assert.Equal((kind, level), (m.Kind, m.Level));
    }

    public static string Q(GuestMemory memory, ulong gpa) => $"0x{memory.Read64(gpa)!.Value:x}";
}
