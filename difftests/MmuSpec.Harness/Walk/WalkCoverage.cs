using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Walk;

/// <summary>
/// The situations of the guest page walk (docs/coverage.md), judged from outside both sides: each
/// operation, the spec's result, and the spec's explanation of the walk over the state before it
/// (the entries it read, the rights it folded, the A/D updates it made). The #PF parts are shared
/// with the TDP and shadow classifiers, whose guests run the same walk.
/// </summary>
public static class WalkCoverage
{
    public static readonly string[] Modes = ["guest mode: 32-bit", "guest mode: PAE", "guest mode: 4-level", "guest mode: 5-level"];

    /// <summary>"#PF error code: X" for each bit the model produces.</summary>
    public static readonly string[] ErrorCodeBits =
        ["#PF error code: P", "#PF error code: W", "#PF error code: U", "#PF error code: RSVD", "#PF error code: I", "#PF error code: PK"];

    /// <summary>SMEP, SMAP, CR0.WP and EFER.NXE as they stood at a rights check: all sixteen combinations.</summary>
    public static readonly string[] ControlCombinations =
        [.. Enumerable.Range(0, 16).Select(i => $"controls at a rights check: smep={i >> 3 & 1} smap={i >> 2 & 1} wp={i >> 1 & 1} nxe={i & 1}")];

    const string NotPresent = "fault kind: not present", Rights = "fault kind: rights", Reserved = "fault kind: reserved bit",
        ProtectionKey = "fault kind: protection key", NonCanonical = "fault kind: #GP non-canonical";

    static readonly string[] Kinds = [NotPresent, Rights, Reserved, ProtectionKey, NonCanonical];

    static readonly string[] NotPresentAt =
    [
        "not present at: PTE", "not present at: PDE", "not present at: PDPTE register (PAE)", "not present at: PDPTE",
        "not present at: PML4E", "not present at: PML5E", "not present at: table outside guest memory",
    ];

    static readonly string[] ReservedKinds =
    [
        "reserved bit: above MAXPHYADDR", "reserved bit: XD without EFER.NXE", "reserved bit: PS in a PML4E or PML5E",
        "reserved bit: large page, bits below its frame", "reserved bit: 32-bit 4M PDE, bits 21:(M-19)",
    ];

    const string UserToSupervisor = "rights: U/S, user access to a supervisor page denied",
        UserWriteReadOnly = "rights: R/W, user write to a read-only page denied",
        WpDenies = "rights: CR0.WP=1, supervisor write to a read-only page denied",
        WpIgnores = "rights: CR0.WP=0, supervisor write to a read-only page allowed",
        XdDenies = "rights: XD, fetch from an execute-disabled page denied",
        SmepDenies = "rights: SMEP, supervisor fetch from a user page denied",
        SmapDenies = "rights: SMAP, supervisor data access to a user page denied",
        SmapAc = "rights: SMAP, EFLAGS.AC lets an explicit supervisor access through",
        SmapImplicit = "rights: SMAP, implicit supervisor access denied despite EFLAGS.AC",
        PkAd = "rights: PKRU access-disable denies a data access",
        PkWd = "rights: PKRU write-disable denies a write",
        PkAndPage = "rights: PKRU and the page rights both deny";

    static readonly string[] RightsRules = [UserToSupervisor, UserWriteReadOnly, WpDenies, WpIgnores, XdDenies, SmepDenies, SmapDenies, SmapAc, SmapImplicit, PkAd, PkWd, PkAndPage];

    static readonly string[] AdUpdates = ["A/D update: A set", "A/D update: D set", "A/D update: none needed (already set)"];

    const string Cr3Ok = "CR3 load: ok", Cr3Reserved = "CR3 load: #GP, reserved CR3 bit", PdpteReserved = "CR3 load: #GP, PAE PDPTE reserved bit",
        PdptOutside = "CR3 load: #GP, PAE PDPT outside memory", BootGp = "CR3 load: #GP at boot";
    const string ModeSwitch = "control change: mode switch", PdptesReloaded = "control change: PAE PDPTEs reloaded",
        PdptesKept = "control change: PAE PDPTEs kept (stale registers allowed)", FlagsOnly = "control change: flags only";
    const string Store = "guest write: page-table entry or data";

    /// <summary>Every situation of the walk family, in report order.</summary>
    public static readonly IReadOnlyList<string> All =
    [
        .. Modes, "page size: 4K", "page size: 2M", "page size: 4M", "page size: 1G",
        .. Kinds, .. ErrorCodeBits, .. NotPresentAt, .. ReservedKinds, .. RightsRules, .. ControlCombinations, .. AdUpdates,
        Cr3Ok, Cr3Reserved, PdpteReserved, PdptOutside, BootGp, ModeSwitch, PdptesReloaded, PdptesKept, FlagsOnly, Store,
    ];

    /// <summary>What a walk property in <paramref name="mode"/> (null: any mode) should reach; a mode's own structures only (mode switches are rare detours).</summary>
    public static IReadOnlyList<string> Expected(PagingMode? mode)
    {
        if (mode is null) return All;
        bool longMode = mode.Value.IsLongMode();
        var e = new List<string> { ModeName(mode.Value), "page size: 4K" };
        e.Add(mode switch { PagingMode.Bits32 => "page size: 4M", _ => "page size: 2M" });
        if (longMode) e.Add("page size: 1G");
        e.AddRange(Kinds.Where(k => longMode || k is not (ProtectionKey or NonCanonical)));
        e.AddRange(ErrorCodeBits.Where(b => longMode || b != "#PF error code: PK"));
        e.AddRange(mode switch
        {
            PagingMode.Bits32 => ["not present at: PTE", "not present at: PDE"],
            PagingMode.Pae => ["not present at: PTE", "not present at: PDE", "not present at: PDPTE register (PAE)"],
            PagingMode.Long4 => ["not present at: PTE", "not present at: PDE", "not present at: PDPTE", "not present at: PML4E"],
            _ => ["not present at: PTE", "not present at: PDE", "not present at: PDPTE", "not present at: PML4E", "not present at: PML5E"],
        });
        e.Add("not present at: table outside guest memory");
        e.AddRange(mode == PagingMode.Bits32 ? ["reserved bit: 32-bit 4M PDE, bits 21:(M-19)"]
            : ReservedKinds.Where(k => !k.Contains("32-bit", StringComparison.Ordinal) && (longMode || !k.Contains("PS in", StringComparison.Ordinal))));
        e.AddRange(RightsRules.Where(r => (longMode || !r.Contains("PKRU", StringComparison.Ordinal)) && (mode != PagingMode.Bits32 || r != XdDenies)));
        e.AddRange(ControlCombinations);
        e.AddRange(AdUpdates);
        e.Add(Cr3Ok);
        if (longMode) e.Add(Cr3Reserved);
        if (mode == PagingMode.Pae) e.AddRange([PdpteReserved, PdptOutside, BootGp, PdptesReloaded, PdptesKept]);
        e.AddRange([ModeSwitch, FlagsOnly, Store]);
        return e;
    }

    public static string ModeName(PagingMode mode) => Modes[(int)mode];

    /// <summary>Boots the case on the spec and names the situations of each step.</summary>
    public static void Classify(WalkCase c, Action<string> hit)
    {
        GuestMachine? machine;
        try { machine = c.BootSpec(); }
        catch (ArgumentException) { return; }   // invalid input: the differential run reports it
        if (machine is null) { hit(BootGp); return; }
        foreach (var op in c.Ops)
        {
            Stepped stepped;
            try { stepped = machine.Step(op); }
            catch (ArgumentException) { return; }
            Classify(op, stepped.Result, machine, hit);
            machine = stepped.Machine;
        }
    }

    static void Classify(Op op, OpResult result, GuestMachine before, Action<string> hit)
    {
        switch (op, result)
        {
            case (Op.GuestAccess a, _):
                Access(before.Cpu, before.Memory, a.Access, PageWalk.Explain(before.Cpu, before.Memory, a.Access), hit);
                break;
            case (Op.WriteGuest, _):
                hit(Store);
                break;
            case (Op.LoadCr3, var r):
                hit(Cr3Load(r));
                break;
            case (Op.SetControls s, var r):
                var was = before.Cpu.Controls;
                if (r is OpResult.GeneralProtection) { hit(Cr3Load(r)); break; }
                if (was.Mode != s.Controls.Mode) hit(ModeSwitch);
                else if (s.Controls.Mode == PagingMode.Pae) hit(GuestMachine.ReloadsPdptes(was, s.Controls) ? PdptesReloaded : PdptesKept);
                else hit(FlagsOnly);
                // Every successful control change reloads CR3 with MOV CR3's checks, except a PAE one that keeps the PDPTE registers.
                if (s.Controls.Mode != PagingMode.Pae || GuestMachine.ReloadsPdptes(was, s.Controls)) hit(Cr3Ok);
                break;
        }
    }

    static string Cr3Load(OpResult r) => r switch
    {
        OpResult.GeneralProtection { Reason: GpReason.PdpteReservedBits } => PdpteReserved,
        OpResult.GeneralProtection { Reason: GpReason.PdptNotInMemory } => PdptOutside,
        OpResult.GeneralProtection => Cr3Reserved,
        _ => Cr3Ok,
    };

    /// <summary>The situations of one guest access: mode, page size or fault, rights, A/D updates (also used for TDP and shadow guests' walks).</summary>
    public static void Access(CpuState cpu, GuestMemory memory, Access access, WalkExplanation walk, Action<string> hit)
    {
        var c = cpu.Controls;
        hit(ModeName(c.Mode));
        switch (walk.Result)
        {
            case WalkResult.Translated t:
                hit($"page size: {t.Size.Name()}");
                RightsCheck(c, access, t.Rights, pkDenied: false, hit);
                bool a = false, d = false;
                foreach (var u in walk.Updates)
                {
                    a |= ((u.Before ^ u.After) & PagingEntry.Accessed) != 0;
                    d |= ((u.Before ^ u.After) & PagingEntry.Dirty) != 0;
                }
                if (a) hit("A/D update: A set");
                if (d) hit("A/D update: D set");
                if (!a && !d) hit("A/D update: none needed (already set)");
                break;
            case WalkResult.GeneralProtection:
                hit(NonCanonical);
                break;
            case WalkResult.PageFault pf:
                Fault(c, access, pf.ErrorCode, walk, memory, hit);
                break;
        }
    }

    static void Fault(PagingControls c, Access access, PageFaultErrorCode code, WalkExplanation walk, GuestMemory memory, Action<string> hit)
    {
        ErrorCode(code, hit);
        var last = walk.Steps.Length > 0 ? walk.Steps[^1] : null;
        if ((code & PageFaultErrorCode.Present) == 0)
        {
            hit(NotPresent);
            if (last is null) return;
            if (last.EntryGpa is null) hit("not present at: PDPTE register (PAE)");
            else if (memory.Read(last.EntryGpa.Value, c.Mode.EntryBytes()) is null) hit("not present at: table outside guest memory");
            else hit($"not present at: {last.EntryName}");
            return;
        }
        if ((code & PageFaultErrorCode.ReservedBit) != 0)
        {
            hit(Reserved);
            if (last is not null) ReservedKind(c, last, hit);
            return;
        }
        bool pk = (code & PageFaultErrorCode.ProtectionKey) != 0;
        if (pk) hit(ProtectionKey);
        if (last is not null && RightsCheck(c, access, last.RightsSoFar, pk, hit)) hit(Rights);
    }

    /// <summary>"#PF error code: X" for each bit set.</summary>
    public static void ErrorCode(PageFaultErrorCode code, Action<string> hit)
    {
        if ((code & PageFaultErrorCode.Present) != 0) hit("#PF error code: P");
        if ((code & PageFaultErrorCode.Write) != 0) hit("#PF error code: W");
        if ((code & PageFaultErrorCode.User) != 0) hit("#PF error code: U");
        if ((code & PageFaultErrorCode.ReservedBit) != 0) hit("#PF error code: RSVD");
        if ((code & PageFaultErrorCode.InstructionFetch) != 0) hit("#PF error code: I");
        if ((code & PageFaultErrorCode.ProtectionKey) != 0) hit("#PF error code: PK");
    }

    /// <summary>Which reserved bits the faulting entry set (the spec's reserved mask for the entry, split by the SDM's reasons).</summary>
    static void ReservedKind(PagingControls c, WalkStep step, Action<string> hit)
    {
        ulong raw = step.Entry.Raw;
        bool mapsPage = PagingLevels.MapsPage(c, step.Level, step.Entry);
        ulong reserved = raw & ReservedBits.Mask(c, step.Level, mapsPage);
        int m = c.MaxPhyAddr;
        if (c.Mode == PagingMode.Bits32)
        {
            if (reserved != 0) hit("reserved bit: 32-bit 4M PDE, bits 21:(M-19)");
            return;
        }
        if (Bits.Test(reserved, PagingEntry.XdBit)) hit("reserved bit: XD without EFER.NXE");
        if ((reserved & Bits.Range(c.Mode == PagingMode.Pae ? 62 : 51, m)) != 0) hit("reserved bit: above MAXPHYADDR");
        if (step.Level >= 4 && Bits.Test(reserved, PagingEntry.PageSizeBit)) hit("reserved bit: PS in a PML4E or PML5E");
        if (mapsPage && step.Level > 1 && (reserved & Bits.Range(step.Level == 3 ? 29 : 20, 13)) != 0) hit("reserved bit: large page, bits below its frame");
    }

    /// <summary>
    /// The rights decisions for an access over a complete translation with <paramref name="rights"/>
    /// (SDM §4.6), named by the rule that decided; returns whether the page rights (not the key) deny.
    /// </summary>
    static bool RightsCheck(PagingControls c, Access access, TranslationRights rights, bool pkDenied, Action<string> hit)
    {
        hit(ControlCombinations[(c.Cr4Smep ? 8 : 0) | (c.Cr4Smap ? 4 : 0) | (c.Cr0Wp ? 2 : 0) | (c.EferNxe ? 1 : 0)]);
        bool user = access.IsUserMode, userPage = rights.User;
        bool deny = false;
        void Deny(string rule) { deny = true; hit(rule); }
        bool smapBlocks = c.Cr4Smap && userPage && !user;
        switch (access.Type)
        {
            case AccessType.Fetch:
                if (rights.NoExecute) Deny(XdDenies);
                else if (user && !userPage) Deny(UserToSupervisor);
                else if (!user && userPage && c.Cr4Smep) Deny(SmepDenies);
                break;
            case var type when user:
                if (!userPage) Deny(UserToSupervisor);
                else if (type == AccessType.Write && !rights.Writable) Deny(UserWriteReadOnly);
                break;
            case var type:
                if (smapBlocks)
                {
                    if (!c.EflagsAc || access.Privilege == Privilege.ImplicitSupervisor)
                    {
                        Deny(SmapDenies);
                        if (c.EflagsAc) hit(SmapImplicit);
                        break;
                    }
                    hit(SmapAc);
                }
                if (type == AccessType.Write && !rights.Writable)
                {
                    if (c.Cr0Wp) Deny(WpDenies);
                    else hit(WpIgnores);
                }
                break;
        }
        if (pkDenied)
        {
            hit(Bits.Test(c.Pkru, 2 * rights.ProtectionKey) ? PkAd : PkWd);
            if (deny) hit(PkAndPage);
        }
        return deny;
    }
}
