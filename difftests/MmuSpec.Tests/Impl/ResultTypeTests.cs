using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Shadow;
using MmuSpec.Impl.Tdp;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The impl's public result types as values: equality is field-wise (==, !=, Equals, GetHashCode
/// agree), and ToString shows the fields a reader of a failing trace or a debugger needs. The
/// differential harness reads fields, never these members, so nothing else checks them (mutation
/// testing found every one unchecked; docs/mutation-score.md). Each sample set holds pairs that differ
/// in exactly one field, so an equality that skips or inverts any one field comparison fails.
/// </summary>
public sealed class ResultTypeTests
{
    // ---- WalkOutcome, produced by real walks (its constructors are internal) ----

    const ulong Frame = 0x10_1000;

    /// <summary>
    /// 4-level paging, CR3 = 0x1000: PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000. PT[1..5] map 4 KiB
    /// pages, PD[1] a 2 MiB page at 0; PT[6] is not present. Controls: NXE and PKE on, PKRU 0.
    /// </summary>
    static GuestVcpu Vcpu(GuestPhysicalMemory memory)
    {
        memory.AddSlot(0, 0x400);
        const ulong Table = 0x7;   // P | W | U: table entries take no rights away
        const ulong Leaf = 0x7;
        Assert.True(memory.TryWrite64(0x1000, 0x2000 | Table));
        Assert.True(memory.TryWrite64(0x2000, 0x3000 | Table));
        Assert.True(memory.TryWrite64(0x3000, 0x4000 | Table));
        Assert.True(memory.TryWrite64(0x3000 + 8, 0x0 | Leaf | 0x80));                 // PD[1]: 2 MiB at 0
        Assert.True(memory.TryWrite64(0x4000 + 1 * 8, Frame | Leaf));                   // rw
        Assert.True(memory.TryWrite64(0x4000 + 2 * 8, Frame | 0x5));                    // read-only
        Assert.True(memory.TryWrite64(0x4000 + 3 * 8, Frame | Leaf | (5UL << 59)));     // protection key 5
        Assert.True(memory.TryWrite64(0x4000 + 4 * 8, Frame | Leaf | (1UL << 63)));     // XD
        Assert.True(memory.TryWrite64(0x4000 + 5 * 8, (Frame + 0x1000) | Leaf));        // another frame
        var controls = new PagingControls(PagingMode.Long4, Cr0Wp: true, Cr4Pse: false, Cr4Smep: false,
            Cr4Smap: false, Cr4Pke: true, EferNxe: true, EflagsAc: false, Pkru: 0, MaxPhyAddr: 46);
        return new GuestVcpu(memory, controls, 0x1000);
    }

    /// <summary>Outcomes pairwise different, with a pair differing in each single field.</summary>
    static WalkOutcome[] WalkSamples(GuestVcpu vcpu) =>
    [
        vcpu.Access(0x1000, AccessType.Read, Privilege.User),             // 0: the base translation
        vcpu.Access(0x2000, AccessType.Read, Privilege.User),             // Writable only
        vcpu.Access(0x3000, AccessType.Read, Privilege.User),             // ProtectionKey only
        vcpu.Access(0x4000, AccessType.Read, Privilege.User),             // NoExecute only
        vcpu.Access(0x5000, AccessType.Read, Privilege.User),             // Gpa only
        vcpu.Access(0x20_0000 + Frame, AccessType.Read, Privilege.User),  // PageShift only
        vcpu.Access(0x6000, AccessType.Read, Privilege.Supervisor),       // #PF, error code 0
        vcpu.Access(0x6000, AccessType.Write, Privilege.User),            // ErrorCode only
        vcpu.Access(0x8000_0000_0000, AccessType.Read, Privilege.User),   // #GP: Status only, against #PF(0)
    ];

    static bool SameFields(WalkOutcome a, WalkOutcome b) =>
        a.Status == b.Status && a.Gpa == b.Gpa && a.PageShift == b.PageShift && a.ErrorCode == b.ErrorCode &&
        a.User == b.User && a.Writable == b.Writable && a.NoExecute == b.NoExecute && a.ProtectionKey == b.ProtectionKey;

    [Fact]
    public void Walk_outcomes_are_equal_exactly_when_every_field_is()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        var vcpu = Vcpu(memory);
        WalkOutcome[] first = WalkSamples(vcpu), again = WalkSamples(vcpu);
        AssertValueSemantics(first, again, SameFields, (a, b) => a == b, (a, b) => a != b);
    }

    [Fact]
    public void Walk_outcomes_print_their_fields()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        WalkOutcome[] s = WalkSamples(Vcpu(memory));
        Assert.Equal("Translated(Gpa=0x101000, PageShift=12, User=True, Writable=True, NoExecute=False, Pkey=0)", s[0].ToString());
        Assert.Equal("Translated(Gpa=0x101000, PageShift=12, User=True, Writable=False, NoExecute=False, Pkey=0)", s[1].ToString());
        Assert.Equal("Translated(Gpa=0x101000, PageShift=12, User=True, Writable=True, NoExecute=False, Pkey=5)", s[2].ToString());
        Assert.Equal("Translated(Gpa=0x101000, PageShift=12, User=True, Writable=True, NoExecute=True, Pkey=0)", s[3].ToString());
        Assert.Equal("Translated(Gpa=0x101000, PageShift=21, User=True, Writable=True, NoExecute=False, Pkey=0)", s[5].ToString());
        Assert.Equal("PageFault(ErrorCode=0x0)", s[6].ToString());
        Assert.Equal("PageFault(ErrorCode=0x6)", s[7].ToString());
        Assert.Equal("GeneralProtection", s[8].ToString());
    }

    // ---- TDP outcomes ----

    static readonly TdpAccessOutcome Base = TdpAccessOutcome.Mapped(0x1000, 12, faulted: false);

    static TdpAccessOutcome[] AccessSamples() =>
    [
        Base,
        TdpAccessOutcome.Mapped(0x2000, 12, faulted: false),            // Hpa only
        TdpAccessOutcome.Mapped(0x1000, 21, faulted: false),            // PageShift only
        TdpAccessOutcome.Mapped(0x1000, 12, faulted: true),             // Faulted only
        new(TdpAccessStatus.MmioExit, 0x1000, 12, faulted: false),      // Status only
        TdpAccessOutcome.MmioExit,
        TdpAccessOutcome.Rejected,
    ];

    static bool SameFields(TdpAccessOutcome a, TdpAccessOutcome b) =>
        a.Status == b.Status && a.Hpa == b.Hpa && a.PageShift == b.PageShift && a.Faulted == b.Faulted;

    [Fact]
    public void Tdp_access_outcomes_are_equal_exactly_when_every_field_is() =>
        AssertValueSemantics(AccessSamples(), AccessSamples(), SameFields, (a, b) => a == b, (a, b) => a != b);

    // The status, page shift and faulted flag share one word (TdpAccessOutcome._bits): every value of each
    // reads back as stored, beside every value of the others, from the constructor and from Mapped.
    [Fact]
    public void Tdp_access_outcome_fields_read_back_whatever_the_others_hold()
    {
        int checkedOutcomes = 0;
        foreach (TdpAccessStatus status in Enum.GetValues<TdpAccessStatus>())
            for (int shift = 0; shift < 256; shift++)
                foreach (bool faulted in new[] { false, true })
                foreach (ulong hpa in new[] { 0UL, 0x1234_5000UL, ulong.MaxValue })
                {
                    var o = new TdpAccessOutcome(status, hpa, (byte)shift, faulted);
                    Assert.Equal((status, hpa, (byte)shift, faulted), (o.Status, o.Hpa, o.PageShift, o.Faulted));
                    if (status == TdpAccessStatus.Mapped) Assert.Equal(o, TdpAccessOutcome.Mapped(hpa, shift, faulted));
                    checkedOutcomes++;
                }
        Assert.Equal(Enum.GetValues<TdpAccessStatus>().Length * 256 * 2 * 3, checkedOutcomes);
    }

    [Fact]
    public void MMIO_exits_and_rejections_carry_no_translation()
    {
        foreach (TdpAccessOutcome o in new[] { TdpAccessOutcome.MmioExit, TdpAccessOutcome.Rejected })
            Assert.Equal((0UL, (byte)0, false), (o.Hpa, o.PageShift, o.Faulted));
        TdpGuestOutcome exit = TdpGuestOutcome.FromAccess(TdpAccessOutcome.MmioExit, 0xFEE0_0000);
        Assert.Equal((TdpGuestStatus.MmioExit, 0xFEE0_0000UL), (exit.Status, exit.Gpa));
        Assert.Equal((TdpAccessStatus.MmioExit, 0xFEE0_0000UL, (byte)0, false),
            (exit.Access.Status, exit.Access.Hpa, exit.Access.PageShift, exit.Access.Faulted));
    }

    [Fact]
    public void Tdp_access_outcomes_print_their_fields()
    {
        Assert.Equal("Mapped(hpa=0x1000, size=2^12, faulted=False)", Base.ToString());
        Assert.Equal("Mapped(hpa=0x1FFE00000, size=2^21, faulted=True)", TdpAccessOutcome.Mapped(0x1_FFE0_0000, 21, true).ToString());
        Assert.Equal("MmioExit", TdpAccessOutcome.MmioExit.ToString());
        Assert.Equal("Rejected", TdpAccessOutcome.Rejected.ToString());
    }

    static TdpGuestOutcome[] GuestSamples(WalkOutcome pf0, WalkOutcome pf6) =>
    [
        TdpGuestOutcome.Ok,
        TdpGuestOutcome.GuestFault(default),                            // Status only, against Ok
        TdpGuestOutcome.GuestFault(pf0),
        TdpGuestOutcome.GuestFault(pf6),                                // Fault only
        TdpGuestOutcome.FromAccess(Base, 0x5000),
        TdpGuestOutcome.FromAccess(TdpAccessOutcome.Mapped(0x2000, 12, false), 0x5000),  // Access only
        TdpGuestOutcome.FromAccess(Base, 0x6000),                       // Gpa only
        TdpGuestOutcome.FromAccess(TdpAccessOutcome.MmioExit, 0x3000),
        TdpGuestOutcome.Rejected,
    ];

    static bool SameFields(TdpGuestOutcome a, TdpGuestOutcome b) =>
        a.Status == b.Status && SameFields(a.Access, b.Access) && SameFields(a.Fault, b.Fault) && a.Gpa == b.Gpa;

    [Fact]
    public void Tdp_guest_outcomes_are_equal_exactly_when_every_field_is()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        WalkOutcome[] w = WalkSamples(Vcpu(memory));
        AssertValueSemantics(GuestSamples(w[6], w[7]), GuestSamples(w[6], w[7]), SameFields, (a, b) => a == b, (a, b) => a != b);
    }

    [Fact]
    public void Tdp_guest_outcomes_print_their_fields()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        WalkOutcome[] w = WalkSamples(Vcpu(memory));
        TdpGuestOutcome[] s = GuestSamples(w[6], w[7]);
        Assert.Equal("Ok", s[0].ToString());
        Assert.Equal("GuestFault(PageFault(ErrorCode=0x6))", s[3].ToString());
        Assert.Equal("Mapped(gpa=0x5000, Mapped(hpa=0x1000, size=2^12, faulted=False))", s[4].ToString());
        Assert.Equal("MmioExit(gpa=0x3000)", s[7].ToString());
        Assert.Equal("Rejected", s[8].ToString());
    }

    [Fact]
    public void Tdp_read_back_types_print_their_fields()
    {
        var table = new TdpPageKey(0x200, 2, Mirror: false);
        Assert.Equal("(gfn=0x200, L2)", table.ToString());
        Assert.Equal("(gfn=0x40000, L1, mirror)", new TdpPageKey(0x4_0000, 1, Mirror: true).ToString());
        Assert.Equal("[3] Leaf(gfn=0x203, L1, pfn=0x1203, rw)",
            new TdpEntryInfo(3, IsLeaf: true, default, 0x203, 1, 0x1203, Writable: true, Raw: 0).ToString());
        Assert.Equal("[511] Leaf(gfn=0x3FE00, L2, pfn=0x1E00, ro)",
            new TdpEntryInfo(511, IsLeaf: true, default, 0x3_FE00, 2, 0x1E00, Writable: false, Raw: 0).ToString());
        Assert.Equal("[1] Table(gfn=0x200, L2)",
            new TdpEntryInfo(1, IsLeaf: false, table, 0, 0, 0, Writable: false, Raw: 0).ToString());
        Assert.Equal("[0x1f0, 0x210)", new TdpFlushRange(0x1F0, 0x20).ToString());
    }

    [Fact]
    public void A_flush_log_prints_nothing_everything_or_its_ranges_in_order()
    {
        var pool = new NativePagePool();
        using var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: null, pool);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0x200, 0x200, 0x1200, 12, readOnly: false));
        Assert.Equal("no flush", vm.TakeFlushes().ToString());

        foreach (ulong gfn in new ulong[] { 0x201, 0x205 })
            Assert.Equal(TdpAccessStatus.Mapped, vm.Access(gfn << 12, AccessType.Write).Status);
        vm.TakeFlushes();
        Assert.Equal(TdpStatus.Ok, vm.ZapRange(0x200, 0x400));
        TdpFlushLog ranged = vm.TakeFlushes();
        Assert.False(ranged.FlushedAll);
        Assert.InRange(ranged.Count, 1, 2);                 // the two leaves, merged into one range or not
        Assert.Equal(string.Join(", ", Enumerable.Range(0, ranged.Count).Select(i => ranged[i].ToString())), ranged.ToString());
        Assert.StartsWith("[0x201, ", ranged.ToString());

        Assert.Equal(TdpAccessStatus.Mapped, vm.Access(0x201 << 12, AccessType.Write).Status);
        Assert.Equal(TdpStatus.Ok, vm.ZapAll());
        Assert.Equal("flush all", vm.TakeFlushes().ToString());
    }

    // ---- shadow outcomes and roles ----

    [Fact]
    public void Shadow_outcomes_and_keys_print_their_fields()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        WalkOutcome[] w = WalkSamples(Vcpu(memory));
        Assert.Equal("Translated(gpa=0x5000, hpa=0x9000, faulted)", ShadowOutcome.Translated(0x5000, 0x9000, faulted: true).ToString());
        Assert.Equal("Translated(gpa=0x5000, hpa=0x9000, hit)", ShadowOutcome.Translated(0x5000, 0x9000, faulted: false).ToString());
        Assert.Equal("MmioExit(gpa=0xFEE00000)", ShadowOutcome.MmioExit(0xFEE0_0000).ToString());
        Assert.Equal("GuestFault(PageFault(ErrorCode=0x6))", ShadowOutcome.GuestFault(w[7]).ToString());
        Assert.Equal("Ok", ShadowOutcome.Ok.ToString());
        Assert.Equal("Rejected", ShadowOutcome.Rejected.ToString());

        var direct = ShadowRole.Create(level: 1, has4ByteGpte: false, quadrant: 0, direct: true, access: 0);
        Assert.Equal("L1 direct acc=---", direct.ToString());
        Assert.Equal("(0x1234, L1 direct acc=---)", new ShadowPageKey(0x1234, direct).ToString());
        var every = ShadowRole.Create(level: 2, has4ByteGpte: true, quadrant: 3, direct: false,
            access: ShadowRole.AccUser | ShadowRole.AccWrite | ShadowRole.AccExec, invalid: true, eferNx: true,
            cr0Wp: true, smepAndNotWp: true, smapAndNotWp: true);
        Assert.Equal("L2 4B q3 acc=UWX nx wp smep!wp smap!wp invalid", every.ToString());
        Assert.Equal("L4 acc=U-X", ShadowRole.Create(4, false, 0, false, ShadowRole.AccUser | ShadowRole.AccExec).ToString());
        Assert.Equal("L3 acc=-W-", ShadowRole.Create(3, false, 0, false, ShadowRole.AccWrite).ToString());
    }

    /// <summary>
    /// ShadowRole's packing (its documented bit layout): each field lands in its own bits and reads back
    /// alone, the With* methods change only their field, and values outside a field's range are refused at
    /// both ends while the range's own ends are accepted.
    /// </summary>
    [Fact]
    public void Shadow_role_packs_each_field_in_its_bits_and_refuses_values_out_of_range()
    {
        ShadowRole plain = ShadowRole.Create(level: 1, has4ByteGpte: false, quadrant: 0, direct: false, access: 0);
        Assert.Equal(1u, plain.Word);
        (string Field, ShadowRole Role, int Bit, Func<ShadowRole, bool> Read)[] flags =
        [
            ("has4ByteGpte", ShadowRole.Create(1, true, 0, false, 0), 4, r => r.Has4ByteGpte),
            ("direct", ShadowRole.Create(1, false, 0, true, 0), 7, r => r.Direct),
            ("invalid", ShadowRole.Create(1, false, 0, false, 0, invalid: true), 11, r => r.Invalid),
            ("eferNx", ShadowRole.Create(1, false, 0, false, 0, eferNx: true), 12, r => r.EferNx),
            ("cr0Wp", ShadowRole.Create(1, false, 0, false, 0, cr0Wp: true), 13, r => r.Cr0Wp),
            ("smepAndNotWp", ShadowRole.Create(1, false, 0, false, 0, smepAndNotWp: true), 14, r => r.SmepAndNotWp),
            ("smapAndNotWp", ShadowRole.Create(1, false, 0, false, 0, smapAndNotWp: true), 15, r => r.SmapAndNotWp),
            ("adDisabled", ShadowRole.Create(1, false, 0, false, 0, adDisabled: true), 16, r => r.AdDisabled),
            ("guestMode", ShadowRole.Create(1, false, 0, false, 0, guestMode: true), 17, r => r.GuestMode),
            ("passthrough", ShadowRole.Create(1, false, 0, false, 0, passthrough: true), 18, r => r.Passthrough),
            ("smm", ShadowRole.Create(1, false, 0, false, 0, smm: true), 19, r => r.Smm),
        ];
        foreach (var (field, role, bit, _) in flags)
        {
            Assert.True((plain.Word | 1u << bit) == role.Word, $"{field} is bit {bit}: word 0x{role.Word:X}");
            foreach (var (other, _, _, read) in flags)
                Assert.True(read(role) == (other == field), $"{other} reads {read(role)} in a role with only {field} set");
        }
        for (int level = 1; level <= 5; level++)
            Assert.Equal(level, ShadowRole.Create(level, false, 0, false, 0).Level);
        for (int quadrant = 0; quadrant <= 3; quadrant++)
            Assert.Equal(quadrant, ShadowRole.Create(1, false, quadrant, false, 0).Quadrant);
        for (uint access = 0; access <= ShadowRole.AccAll; access++)
            Assert.Equal(access, ShadowRole.Create(1, false, 0, false, access).Access);
        Assert.Throws<ArgumentOutOfRangeException>(() => ShadowRole.Create(0, false, 0, false, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShadowRole.Create(6, false, 0, false, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShadowRole.Create(1, false, -1, false, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShadowRole.Create(1, false, 4, false, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShadowRole.Create(1, false, 0, false, ShadowRole.AccAll + 1));

        // The With* methods replace one field and keep the rest (every flag set, every field at its maximum).
        ShadowRole full = ShadowRole.Create(5, true, 3, true, ShadowRole.AccAll, true, true, true, true, true, true, true, true, true);
        Assert.Equal(full.Word & ~0xFu | 2, full.WithLevel(2).Word);
        Assert.Equal(full.Word & ~(3u << 5) | 1u << 5, full.WithQuadrant(1).Word);
        Assert.Equal(full.Word & ~(1u << 7), full.WithDirect(false).Word);
        Assert.Equal(full.Word, full.WithDirect(false).WithDirect(true).Word);
        Assert.Equal(full.Word & ~(7u << 8) | ShadowRole.AccWrite << 8, full.WithAccess(ShadowRole.AccWrite).Word);
    }

    /// <summary>
    /// <paramref name="samples"/>[i] and <paramref name="copies"/>[i] are built alike (equal); two samples
    /// are equal exactly when <paramref name="sameFields"/> says so; the four equality members and the
    /// hash agree with that.
    /// </summary>
    static void AssertValueSemantics<T>(T[] samples, T[] copies, Func<T, T, bool> sameFields,
        Func<T, T, bool> equal, Func<T, T, bool> unequal)
        where T : struct, IEquatable<T>
    {
        for (int i = 0; i < samples.Length; i++)
        {
            Assert.True(sameFields(samples[i], copies[i]), $"sample {i} was not rebuilt alike");
            for (int j = 0; j < samples.Length; j++)
            {
                T a = samples[i], b = copies[j];
                bool expected = sameFields(a, b);
                Assert.True(i == j || !expected, $"samples {i} and {j} should differ in some field");
                Assert.Equal(expected, a.Equals(b));
                Assert.Equal(expected, a.Equals((object)b));
                Assert.Equal(expected, equal(a, b));
                Assert.Equal(!expected, unequal(a, b));
                if (expected)
                    Assert.Equal(a.GetHashCode(), b.GetHashCode());
            }
            Assert.False(samples[i].Equals((object?)null));
            Assert.False(samples[i].Equals("not an outcome"));
        }
    }
}
