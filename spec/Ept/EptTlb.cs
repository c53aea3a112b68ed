using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

/// <summary>
/// An operation of L1 (or an event of L2) that may invalidate what the processor cached for L2 (SDM Vol. 3C §29.4.3,
/// "Invalidating Cached Translation Information"). A sealed hierarchy; <see cref="EptTlb.Apply"/> says what each removes.
/// </summary>
public abstract record EptTlbOp
{
    private EptTlbOp() { }

    /// <summary>INVEPT of <paramref name="Type"/>; <paramref name="Eptp"/> is the descriptor's (single-context only).</summary>
    public sealed record Invept(InveptType Type, EptPointer Eptp = default) : EptTlbOp;
    /// <summary>INVVPID of <paramref name="Type"/>; the descriptor's <paramref name="Vpid"/> (not for all-contexts) and <paramref name="Gva"/> (individual-address only).</summary>
    public sealed record Invvpid(InvvpidType Type, ushort Vpid = 0, ulong Gva = 0) : EptTlbOp;
    /// <summary>VM entry to L2 with this VMCS's "enable VPID", VPID and EPTP: they become the current context.</summary>
    public sealed record VmEntry(bool VpidEnabled, ushort Vpid, EptPointer Eptp) : EptTlbOp;
    /// <summary>VM exit from L2 to L1 (the context stays the VMCS's for the next entry).</summary>
    public sealed record VmExit : EptTlbOp;
    /// <summary>The EPTP changes while L2's context stays: VMFUNC leaf 0 (EPTP switching) in L2, or L1 writing the VMCS field.</summary>
    public sealed record EptpSwitch(EptPointer Eptp, bool ByVmfunc) : EptTlbOp;
    /// <summary>An EPT violation at <paramref name="Gpa"/>, for linear address <paramref name="Gla"/> when exit-qualification bit 7 is set.</summary>
    public sealed record EptViolation(ulong Gpa, ulong? Gla) : EptTlbOp;
}

/// <summary>The INVEPT types (the instruction's register operand).</summary>
public enum InveptType
{
    SingleContext = 1,
    AllContext = 2,
}

/// <summary>The INVVPID types (the instruction's register operand).</summary>
public enum InvvpidType
{
    IndividualAddress = 0,
    SingleContext = 1,
    AllContexts = 2,
    SingleContextRetainingGlobals = 3,
}

/// <summary>Which cached mappings an invalidation removes (SDM Vol. 3C §29.4.1): guest-physical (EPT only) and combined (L2's tables and EPT).</summary>
[Flags]
public enum EptMappingKinds
{
    GuestPhysical = 1,
    Combined = 2,
}

/// <summary>
/// One invalidation, as the layer keeps it: from memory <paramref name="At"/> on, the mappings of <paramref name="Kinds"/>
/// that match every tag given (null: any) are gone. <paramref name="KeepsGlobals"/>: global combined mappings stay.
/// </summary>
public sealed record EptInvalidation(int At, EptMappingKinds Kinds, ulong? Ep4ta, ushort? Vpid, ulong? GvaPage, ulong? GpaPage, bool KeepsGlobals, string Why)
{
    public bool CoversGuestPhysical(ulong ep4ta, ulong gpaPage) =>
        Kinds.HasFlag(EptMappingKinds.GuestPhysical) && (Ep4ta ?? ep4ta) == ep4ta && (GpaPage ?? gpaPage) == gpaPage;

    public bool CoversCombined(ushort vpid, ulong ep4ta, ulong gvaPage, bool global) =>
        Kinds.HasFlag(EptMappingKinds.Combined) && (Vpid ?? vpid) == vpid && (Ep4ta ?? ep4ta) == ep4ta
        && (GvaPage ?? gvaPage) == gvaPage && !(KeepsGlobals && global);
}

/// <summary>
/// The architecture layer for nested translations (docs/nested-ept.md, "What the processor may cache"): what L2 may
/// still observe after L1 changed its memory (L2's tables or the EPT). The processor may cache (SDM Vol. 3C §29.4.1,
/// §29.4.2) guest-physical mappings, tagged by the EP4TA (EPTP bits 51:12), for accesses by guest-physical address, and
/// combined mappings, tagged by VPID (0 when "enable VPID" is 0, §29.1) and EP4TA, for accesses by linear address;
/// none from a not-present or misconfigured entry. A mapping may reflect the tables at any moment since the last
/// invalidation that covers it, and the processor may build a combined mapping from L2's tables as they are and
/// guest-physical mappings it cached earlier. The layer keeps L1's memory after every change and the invalidations,
/// and judges a result by walking the tables as they were at each moment still allowed.
/// Not modelled: PCIDs of L2 (one per VPID), linear mappings of L1 itself, L2's INVLPG/MOV CR3 (the guest layer's).
/// </summary>
/// <param name="Memories">L1's memory after every change, oldest first.</param>
/// <param name="GlobalPages">L2's CR4.PGE: a combined mapping from a leaf with G (bit 8) is global.</param>
public sealed record EptTlb(
    EptCapabilities Caps,
    ImmutableList<GuestMemory> Memories,
    ImmutableList<EptInvalidation> Invalidations,
    EptPointer Eptp,
    bool VpidEnabled,
    ushort VpidField,
    bool GlobalPages = false)
{
    /// <summary>Nothing cached yet: L2 is entered with <paramref name="eptp"/> over <paramref name="l1Memory"/>.</summary>
    public static EptTlb Start(EptCapabilities caps, GuestMemory l1Memory, EptPointer eptp, bool vpidEnabled = true, ushort vpid = 1, bool globalPages = false)
    {
        CheckEntry(vpidEnabled, vpid);
        return new(caps, [l1Memory], [], eptp, vpidEnabled, vpid, globalPages);
    }

    /// <summary>The current VPID (§29.1): the VMCS's with "enable VPID", else 0000H.</summary>
    public ushort CurrentVpid => VpidEnabled ? VpidField : (ushort)0;

    /// <summary>The EP4TA of an EPTP (§29.4.1): bits 51:12, the address of the EPT PML4 (PML5).</summary>
    public static ulong Ep4ta(EptPointer eptp) => eptp.RootAddress;

    int Now => Memories.Count - 1;

    /// <summary>L1 wrote its memory (L2's tables or the EPT): no cached mapping goes away by itself.</summary>
    public EptTlb Write(GuestMemory l1MemoryAfter) =>
        ReferenceEquals(l1MemoryAfter, Memories[^1]) ? this : this with { Memories = Memories.Add(l1MemoryAfter) };

    static void CheckEntry(bool vpidEnabled, ushort vpid)
    {
        // §27.2.1.1: with "enable VPID" the VPID must not be 0000H, or VM entry fails.
        if (vpidEnabled && vpid == 0) throw new ArgumentException("VM entry with \"enable VPID\" and VPID 0000H fails its VM-execution-control checks", nameof(vpid));
    }

    /// <summary>
    /// The layer after <paramref name="op"/> (SDM Vol. 3C §29.4.3.1 for what each operation invalidates, §29.4.3.2 for
    /// what need not be). An INVVPID whose descriptor names VPID 0000H (types 0, 1, 3) fails (VMfailValid) and
    /// invalidates nothing.
    /// </summary>
    public EptTlb Apply(EptTlbOp op)
    {
        EptTlb With(EptMappingKinds kinds, string why, ulong? ep4ta = null, ushort? vpid = null, ulong? gvaPage = null, ulong? gpaPage = null, bool keepsGlobals = false) =>
            this with { Invalidations = Invalidations.Add(new EptInvalidation(Now, kinds, ep4ta, vpid, gvaPage, gpaPage, keepsGlobals, why)) };
        const EptMappingKinds Both = EptMappingKinds.GuestPhysical | EptMappingKinds.Combined;
        switch (op)
        {
            // INVEPT: guest-physical and combined mappings of the EP4TA (all VPIDs and PCIDs), or of every EP4TA.
            case EptTlbOp.Invept { Type: InveptType.SingleContext } s:
                return With(Both, $"INVEPT single-context {s.Eptp}", ep4ta: Ep4ta(s.Eptp));
            case EptTlbOp.Invept { Type: InveptType.AllContext }:
                return With(Both, "INVEPT all-context");
            // INVVPID: linear and combined mappings (combined for every EP4TA); guest-physical mappings stay.
            case EptTlbOp.Invvpid { Vpid: 0, Type: not InvvpidType.AllContexts }:
                return this;
            case EptTlbOp.Invvpid { Type: InvvpidType.IndividualAddress } i:
                return With(EptMappingKinds.Combined, $"INVVPID individual-address {Bits.Hex(i.Gva)} in VPID {i.Vpid}", vpid: i.Vpid, gvaPage: i.Gva >> 12);
            case EptTlbOp.Invvpid { Type: InvvpidType.SingleContext } s:
                return With(EptMappingKinds.Combined, $"INVVPID single-context VPID {s.Vpid}", vpid: s.Vpid);
            case EptTlbOp.Invvpid { Type: InvvpidType.AllContexts }:
                return With(EptMappingKinds.Combined, "INVVPID all-contexts");
            case EptTlbOp.Invvpid { Type: InvvpidType.SingleContextRetainingGlobals } g:
                return With(EptMappingKinds.Combined, $"INVVPID single-context retaining globals VPID {g.Vpid}", vpid: g.Vpid, keepsGlobals: true);
            // VM entries and exits invalidate only without VPID: then the mappings of VPID 0000H (combined ones for every EP4TA).
            // With VPID they need not invalidate anything (§29.4.3.2), which is what VPIDs are for.
            case EptTlbOp.VmEntry e:
            {
                CheckEntry(e.VpidEnabled, e.Vpid);
                var next = this with { VpidEnabled = e.VpidEnabled, VpidField = e.Vpid, Eptp = e.Eptp };
                return e.VpidEnabled ? next : next.With0("VM entry without VPID");
            }
            case EptTlbOp.VmExit:
                return VpidEnabled ? this : With0("VM exit without VPID");
            // A new EPTP invalidates nothing: the old EP4TA's mappings wait for a switch back, and mappings cached for the
            // new EP4TA before (not invalidated since) are usable again (§29.4.3.2; VMFUNC EPTP switching, §26.5.6.3).
            case EptTlbOp.EptpSwitch s:
                return this with { Eptp = s.Eptp };
            // An EPT violation invalidates the guest-physical mappings used to translate its gpa (current EP4TA) and, for a
            // linear access, the combined mappings for its linear address (current VPID and EP4TA).
            case EptTlbOp.EptViolation v:
            {
                ulong ep4ta = Ep4ta(Eptp);
                var gp = new EptInvalidation(Now, EptMappingKinds.GuestPhysical, ep4ta, null, null, v.Gpa >> 12, false, $"EPT violation at gpa {Bits.Hex(v.Gpa)}");
                var added = Invalidations.Add(gp);
                if (v.Gla is { } gla)
                    added = added.Add(new EptInvalidation(Now, EptMappingKinds.Combined, ep4ta, CurrentVpid, gla >> 12, null, false, $"EPT violation for gva {Bits.Hex(gla)}"));
                return this with { Invalidations = added };
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(op), op, "an INVEPT or INVVPID type the processor does not define");
        }
    }

    EptTlb With0(string why) =>
        this with { Invalidations = Invalidations.Add(new EptInvalidation(Now, EptMappingKinds.Combined, null, 0, null, null, false, why)) };

    /// <summary>The index of the first memory a guest-physical mapping of <paramref name="gpa"/> (current EP4TA) may reflect.</summary>
    public int GuestPhysicalFrom(ulong gpa) => GuestPhysicalFrom(Ep4ta(Eptp), gpa >> 12);

    int GuestPhysicalFrom(ulong ep4ta, ulong gpaPage) =>
        Invalidations.Where(i => i.CoversGuestPhysical(ep4ta, gpaPage)).Select(i => i.At).DefaultIfEmpty(0).Max();

    /// <summary>The index of the first memory a combined mapping of <paramref name="gva"/> (current VPID and EP4TA) may reflect.</summary>
    public int CombinedFrom(ulong gva, bool global) => Invalidations
        .Where(i => i.CoversCombined(CurrentVpid, Ep4ta(Eptp), gva >> 12, global)).Select(i => i.At).DefaultIfEmpty(0).Max();

    /// <summary>
    /// What an access by guest-physical address (L2 with paging off, or an access the processor makes by gpa) may
    /// get: the EPT walk over every memory since the last invalidation of the gpa's guest-physical mappings, oldest first.
    /// </summary>
    public IEnumerable<EptResult> AllowedGuestPhysical(EptAccess access) =>
        Memories.Skip(GuestPhysicalFrom(access.Gpa)).Select(m => EptWalk.Translate(Caps, Eptp, m, access).Result);

    /// <summary>
    /// What an L2 access by linear address may get: for every moment b a combined mapping may come from, L2's walk over
    /// the memory at b, each guest-physical address in it translated through the EPT as it was at b or at any earlier
    /// moment a whose guest-physical mappings are still allowed (a combined mapping built at b from cached ones).
    /// </summary>
    public IEnumerable<NestedResult> AllowedLinear(CpuState l2Cpu, Access access)
    {
        ulong ep4ta = Ep4ta(Eptp);
        for (int b = 0; b <= Now; b++)
            for (int a = 0; a <= b; a++)
            {
                var (result, global, gpas) = Walk(l2Cpu, Memories[a], Memories[b], access);
                if (b < CombinedFrom(access.Gva, global)) continue;
                // An older EPT is usable only through guest-physical mappings of every gpa translated, none invalidated since.
                if (a < b && gpas.Any(g => a < GuestPhysicalFrom(ep4ta, g >> 12))) continue;
                yield return result;
            }
    }

    /// <summary>
    /// Why the architecture does not allow L2's access <paramref name="access"/> to end in <paramref name="result"/>, or null
    /// if it does. Faults from a not-present or misconfigured entry, and #GP, are never cached (§29.4.2): they come from the
    /// tables as they are now. A translation, or a fault on rights, may come from any allowed moment.
    /// </summary>
    public string? Violation(CpuState l2Cpu, Access access, NestedResult result)
    {
        if (!MayBeStale(result))
        {
            var now = NestedWalk.Translate(Caps, Eptp, l2Cpu, Memories[^1], access).Result;
            return Same(now, result) ? null
                : $"{result}: a fault from a not-present or misconfigured entry is never cached, so it must be what the tables give now: {now}";
        }
        if (AllowedLinear(l2Cpu, access).Any(r => Same(r, result))) return null;
        return $"{result} is not what L2's tables and L1's EPT gave for gva {Bits.Hex(access.Gva)} at any moment still allowed "
            + $"(combined mappings since memory {CombinedFrom(access.Gva, false)} of {Memories.Count}): "
            + string.Join("; ", AllowedLinear(l2Cpu, access).Distinct());
    }

    static bool MayBeStale(NestedResult r) => r switch
    {
        NestedResult.Translated => true,
        NestedResult.GuestFault { Result: WalkResult.PageFault pf } =>
            pf.ErrorCode.HasFlag(PageFaultErrorCode.Present) && !pf.ErrorCode.HasFlag(PageFaultErrorCode.ReservedBit),
        NestedResult.EptExit { Exit: EptResult.Violation v } => v.Qualification.Readable || v.Qualification.Writable || v.Qualification.Executable || v.Qualification.UserExecutable,
        _ => false,
    };

    /// <summary>Two outcomes are the same observation: the same L2 and L1 gpas, the same fault, or the same VM exit.</summary>
    static bool Same(NestedResult x, NestedResult y) => (x, y) switch
    {
        (NestedResult.Translated a, NestedResult.Translated b) => a.L2Gpa == b.L2Gpa && a.L1Gpa == b.L1Gpa,
        (NestedResult.GuestFault a, NestedResult.GuestFault b) => a.Result.Equals(b.Result),
        (NestedResult.EptExit a, NestedResult.EptExit b) => a.Exit.Equals(b.Exit),
        _ => false,
    };

    /// <summary>
    /// The 2D walk with the EPT read from <paramref name="ept"/> and L2's entries from <paramref name="tables"/> (no A/D
    /// written); whether its L2 leaf is global; the gpas it translated through the EPT.
    /// </summary>
    (NestedResult Result, bool Global, List<ulong> Gpas) Walk(CpuState l2Cpu, GuestMemory ept, GuestMemory tables, Access access)
    {
        if (ReferenceEquals(ept, tables))
        {
            var e = NestedWalk.Explain(Caps, Eptp, l2Cpu, tables, access);
            return (e.Result, IsGlobal(e.GuestWalk), e.EptWalks.Select(w => w.Walk.Access.Gpa).ToList());
        }
        EptAccess EntryRead(ulong gpa) => new(gpa, AccessType.Read, false, true, access.Gva);
        var view = GuestMemory.FromSlots([new Memslot(0, 1UL << (l2Cpu.Controls.MaxPhyAddr - Memslot.PageShift))],
            new SplitView(gpa => EptWalk.Translate(Caps, Eptp, ept, EntryRead(gpa)).Result is EptResult.Translated t ? tables.Read64(t.L1Gpa) ?? 0 : 0,
                1UL << l2Cpu.Controls.MaxPhyAddr));
        var guest = PageWalk.Explain(l2Cpu, view, access);
        var gpas = new List<ulong>();
        foreach (var step in guest.Steps)
        {
            if (step.EntryGpa is not { } g) continue;
            gpas.Add(g);
            if (EptWalk.Translate(Caps, Eptp, ept, EntryRead(g)).Result is var r and not EptResult.Translated)
                return (new NestedResult.EptExit(r), false, gpas);
        }
        if (guest.Result is not WalkResult.Translated w) return (new NestedResult.GuestFault(guest.Result), false, gpas);
        gpas.Add(w.Gpa);
        var final = EptWalk.Translate(Caps, Eptp, ept, new EptAccess(w.Gpa, access.Type, w.Rights.User, false, access.Gva)).Result;
        return final is EptResult.Translated f
            ? (new NestedResult.Translated(w.Gpa, w.Size, w.Rights, f), IsGlobal(guest), gpas)
            : (new NestedResult.EptExit(final), false, gpas);
    }

    bool IsGlobal(WalkExplanation? walk) =>
        GlobalPages && walk is { Result: WalkResult.Translated, Steps: [.., var leaf] } && Bits.Test(leaf.Entry.Raw, 8);

    sealed class SplitView(Func<ulong, ulong> read, ulong length) : IPhysicalMemoryImage
    {
        public ulong Length => length;
        public ulong ReadQword(ulong gpa) => read(gpa);
    }

    public override string ToString() =>
        $"{Memories.Count} L1 memories, {Invalidations.Count} invalidations; current {Eptp}, VPID {(VpidEnabled ? VpidField.ToString(System.Globalization.CultureInfo.InvariantCulture) : "off (0000H)")}";
}
