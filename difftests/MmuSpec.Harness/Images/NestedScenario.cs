using System.Collections.Immutable;
using System.Text;
using System.Text.Json;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>
/// L1's EPT for a scenario whose controls and CR3 are L2's (docs/nested-ept.md): the EPTP L1 runs L2 with and
/// what the processor offers. The scenario's memory is then L1's guest-physical memory, holding L2's tables
/// and L1's EPT alike. Checked when created: an EPTP VM entry would refuse is bad input, not a walk.
/// </summary>
public sealed record L1Ept
{
    public EptPointer Eptp { get; }
    public EptCapabilities Caps { get; }

    L1Ept(EptPointer eptp, EptCapabilities caps) { Eptp = eptp; Caps = caps; }

    /// <summary>An EPT for L2 <paramref name="controls"/>; <paramref name="what"/> names the input in errors ("ept.eptp", "--eptp").</summary>
    public static L1Ept Create(PagingControls controls, EptPointer eptp, EptCapabilities caps, string what)
    {
        if (eptp.Problem(caps) is { } problem)
            throw new InputException($"{what} {Hex.Format(eptp.Raw)}: VM entry would fail: {problem.Describe()}");
        int gpaBits = EptWalk.AddressBits(eptp.WalkLength);
        if (controls.MaxPhyAddr > gpaBits)
            throw new InputException($"{what} {Hex.Format(eptp.Raw)}: a {eptp.WalkLength}-level EPT translates {gpaBits}-bit guest-physical addresses, narrower than L2's MAXPHYADDR {controls.MaxPhyAddr}");
        return new L1Ept(eptp, caps);
    }

    /// <summary>Every EPT capability the model knows offered (MBEC off), with the scenario's MAXPHYADDR.</summary>
    public static EptCapabilities DefaultCaps(PagingControls controls) => EptCapabilities.Default.WithMaxPhyAddr(controls.MaxPhyAddr);

    /// <summary>An L2 scenario read as if it were L1's address space would walk L2's tables at the wrong addresses: refused.</summary>
    public static void RefuseL1Walk(Scenario s)
    {
        if (s.Ept is not null)
            throw new InputException("ept: this is L2's address space under L1's EPT; only `walk` with the spec engine translates it (not --batch, --engine impl or mappings)");
    }

    public override string ToString() => $"{Eptp}; {Caps}";
}

public sealed partial class Scenario
{
    /// <summary>L1's EPT when the scenario is an L2 address space (its memory is L1's), else null.</summary>
    public L1Ept? Ept { get; }

    /// <summary>The same address space, as L2's under L1's EPT.</summary>
    public Scenario WithEpt(L1Ept ept) => new(Controls, Cr3, Slots, Memory, Access, Image, QemuPdptes, ept);

    /// <summary>
    /// L2's vCPU after MOV CR3 under EPT. PAE: the four PDPTEs are read through L1's EPT (SDM Vol. 3C §29.3.3.3 counts
    /// them as guest paging-structure accesses with no linear address); an EPT exit or a #GP there is bad input, as for
    /// <see cref="Boot"/>. Model: the EPT A/D bits of that load are not written back.
    /// </summary>
    public CpuState BootL2(GuestMemory l1Memory)
    {
        var ept = Ept ?? throw new InvalidOperationException("not an L2 scenario");
        var asL1 = new Scenario(Controls, Cr3, Slots, Memory, Access, Image, QemuPdptes);
        if (Mode != PagingMode.Pae) return asL1.Boot(l1Memory);
        ulong pdpt = Cr3 & Bits.Range(31, 5);
        var load = EptWalk.Explain(ept.Caps, ept.Eptp, l1Memory, new EptAccess(pdpt, AccessType.Read, PagingStructure: true));
        if (load.Result is not EptResult.Translated t)
            throw new InputException($"cr3 {Hex.Format(Cr3)}: loading the PDPTEs at L2 gpa {Hex.Format(pdpt)} would be a VM exit to L1: {load.Result}");
        var l2View = GuestMemory.FromSlots([new Memslot(pdpt >> Memslot.PageShift, 1)]);
        for (ulong i = 0; i < 4; i++)
        {
            ulong pdpte = l1Memory.Read64(t.L1Gpa + 8 * i)
                ?? throw new InputException($"cr3 {Hex.Format(Cr3)}: the PDPT is at L1 gpa {Hex.Format(t.L1Gpa)}, outside L1's memory, so loading CR3 would #GP");
            l2View = l2View.Write64(pdpt + 8 * i, pdpte);
        }
        return asL1.Boot(l2View);
    }
}

public static partial class ScenarioJson
{
    static readonly string[] EptFields = ["eptp", "execute_only", "mbec", "five_level", "accessed_dirty", "pages_2m", "pages_1g"];

    /// <summary>The optional "ept" object: {"eptp": "0x...", capability flags}; each capability defaults to <see cref="EptCapabilities.Default"/>'s.</summary>
    static Scenario WithEpt(JsonElement root, PagingControls controls, Scenario s)
    {
        if (!root.TryGetProperty("ept", out var e)) return s;
        if (e.ValueKind != JsonValueKind.Object)
            throw new InputException($"ept: expected an object like {{\"eptp\": \"0x501e\"}}, got {Running.StrictObject.Kind(e)}");
        CheckFields(e, EptFields, "ept.");
        ulong eptp = OptionalNumber(e, "eptp", "ept.eptp") ?? throw new InputException("ept.eptp is missing");
        var d = EptCapabilities.Default;
        var caps = L1Ept.DefaultCaps(controls) with
        {
            ExecuteOnly = EptFlag(e, "execute_only", d.ExecuteOnly),
            ModeBasedExecuteControl = EptFlag(e, "mbec", d.ModeBasedExecuteControl),
            FiveLevel = EptFlag(e, "five_level", d.FiveLevel),
            AccessedDirty = EptFlag(e, "accessed_dirty", d.AccessedDirty),
            Pages2M = EptFlag(e, "pages_2m", d.Pages2M),
            Pages1G = EptFlag(e, "pages_1g", d.Pages1G),
        };
        return s.WithEpt(L1Ept.Create(controls, new EptPointer(eptp), caps, "ept.eptp"));
    }

    static bool EptFlag(JsonElement e, string name, bool otherwise) =>
        !e.TryGetProperty(name, out var v) ? otherwise : v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InputException($"ept.{name}: expected true or false, got {Running.StrictObject.Kind(v)}"),
        };
}

/// <summary>An L2 access walked by the spec through both dimensions, with L2's vCPU and the walk's explanation.</summary>
public sealed record NestedWalkReport(Scenario Scenario, Access Access, CpuState L2Cpu, NestedExplanation Explanation)
{
    public NestedResult Result => Explanation.Result;

    public string Outcome => Result switch
    {
        NestedResult.Translated => "ok",
        NestedResult.GuestFault { Result: WalkResult.PageFault } => "page_fault",
        NestedResult.GuestFault => "gp",
        NestedResult.EptExit { Exit: EptResult.Violation } => "ept_violation",
        _ => "ept_misconfiguration",
    };

    /// <summary>L2's entries whose A/D bits the walk set (at their L1 gpas), one per entry, in the order first written.</summary>
    public ImmutableArray<EntryUpdate> GuestChanges => Coalesce(Explanation.GuestUpdates);

    /// <summary>EPT entries whose A/D bits the walk set, one per entry, in the order first written.</summary>
    public ImmutableArray<EntryUpdate> EptChanges => Coalesce(Explanation.EptWalks.SelectMany(w => w.Walk.Updates));

    /// <summary>The spec writes A and D as two updates: one change per entry, first value to last.</summary>
    static ImmutableArray<EntryUpdate> Coalesce(IEnumerable<EntryUpdate> updates)
    {
        var merged = new Dictionary<ulong, EntryUpdate>();
        var order = new List<ulong>();
        foreach (var u in updates)
        {
            if (merged.TryGetValue(u.Gpa, out var first)) merged[u.Gpa] = first with { After = u.After };
            else { merged[u.Gpa] = u; order.Add(u.Gpa); }
        }
        return order.Select(g => merged[g]).Where(u => u.Before != u.After).ToImmutableArray();
    }
}

/// <summary>Runs an L2 access on the spec's 2D walk (<see cref="NestedWalk.Explain"/>).</summary>
public static class NestedSpecWalk
{
    public static NestedWalkReport Run(Scenario s)
    {
        var ept = s.Ept ?? throw new InputException("no EPT: an L2 walk needs an \"ept\" object in the scenario, or --eptp");
        var access = s.Access ?? throw new InputException("no access to walk: give \"access\": {\"gva\": ...} in the scenario, or --gva");
        var memory = s.BuildMemory();
        var cpu = s.BootL2(memory);
        return new NestedWalkReport(s, access, cpu, NestedWalk.Explain(ept.Caps, ept.Eptp, cpu, memory, access));
    }
}

/// <summary>An L2 walk as JSON (docs/json-format.md, "L2 walk result").</summary>
public static class NestedWalkJson
{
    public static string ToJson(NestedWalkReport r, bool indented = false)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WalkJson.WriterOptions(indented)))
            Write(w, r);
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    static void Write(Utf8JsonWriter w, NestedWalkReport r)
    {
        var e = r.Explanation;
        w.WriteStartObject();
        w.WriteString("outcome", r.Outcome);
        switch (r.Result)
        {
            case NestedResult.Translated t:
                w.WriteString("l2_gpa", Hex.Format(t.L2Gpa));
                w.WriteString("l1_gpa", Hex.Format(t.L1Gpa));
                if (t.GuestSize is { } size) w.WriteString("page_size", size.Name()); else w.WriteNull("page_size");
                if (t.GuestRights is { } rights) WalkJson.WriteRights(w, rights);
                w.WriteString("ept_page_size", t.Ept.Size.Name());
                w.WriteString("ept_rights", t.Ept.Rights.ToString());
                break;
            case NestedResult.GuestFault { Result: WalkResult.PageFault f }:
                w.WriteString("error_code", Hex.Format((uint)f.ErrorCode));
                w.WriteStartArray("error_bits");
                foreach (var bit in WalkJson.ErrorBits(f.ErrorCode)) w.WriteStringValue(bit);
                w.WriteEndArray();
                break;
            case NestedResult.GuestFault { Result: WalkResult.GeneralProtection g }:
                w.WriteString("gp_reason", Snake(g.Reason.ToString()));
                break;
            case NestedResult.EptExit { Exit: EptResult.Violation v }:
                w.WriteString("gpa", Hex.Format(v.Gpa));
                if (v.LinearAddress is { } la) w.WriteString("gla", Hex.Format(la)); else w.WriteNull("gla");
                w.WriteString("exit_qualification", Hex.Format(v.Qualification.Raw));
                w.WriteString("exit_qualification_meaning", v.Qualification.Describe());
                break;
            case NestedResult.EptExit { Exit: EptResult.Misconfiguration m }:
                w.WriteString("gpa", Hex.Format(m.Gpa));
                w.WriteString("misconfiguration", Snake(m.Kind.ToString()));
                w.WriteNumber("level", m.Level);
                break;
        }
        w.WriteString("rule", e.Rule);
        w.WriteString("engine", "spec");
        w.WriteStartObject("access");
        w.WriteString("gva", Hex.Format(r.Access.Gva));
        w.WriteString("type", r.Access.Type.ToString().ToLowerInvariant());
        w.WriteString("privilege", WalkJson.PrivilegeName(r.Access.Privilege));
        w.WriteEndObject();
        w.WriteString("eptp", Hex.Format(e.Eptp.Raw));
        Changes(w, "changed_l2_entries", r.GuestChanges);
        Changes(w, "changed_ept_entries", r.EptChanges);

        int entryBytes = r.Scenario.EntryBytes;
        w.WriteStartArray("l2_steps");
        foreach (var s in e.GuestWalk?.Steps ?? [])
        {
            w.WriteStartObject();
            w.WriteNumber("level", s.Level);
            w.WriteString("entry", s.EntryName);
            if (s.EntryGpa is { } g) w.WriteString("l2_gpa", Hex.Format(g)); else w.WriteNull("l2_gpa");
            w.WriteString("raw", Hex.Format(s.Entry.Raw));
            w.WriteStartArray("flags");
            foreach (var flag in s.Entry.Flags(entryBytes).Split(' ', StringSplitOptions.RemoveEmptyEntries)) w.WriteStringValue(flag);
            w.WriteEndArray();
            w.WriteString("rights", s.RightsSoFar.ToString());
            w.WriteString("note", s.Note);
            w.WriteEndObject();
        }
        w.WriteEndArray();

        w.WriteStartArray("ept_walks");
        foreach (var walk in e.EptWalks)
        {
            var x = walk.Walk;
            w.WriteStartObject();
            w.WriteString("purpose", walk.Purpose switch
            {
                NestedEptPurpose.GuestEntryRead => "l2_entry_read",
                NestedEptPurpose.FinalAccess => "final_access",
                _ => "l2_ad_update",
            });
            w.WriteString("l2_gpa", Hex.Format(x.Access.Gpa));
            w.WriteString("outcome", x.Result switch
            {
                EptResult.Translated => "ok",
                EptResult.Violation => "ept_violation",
                _ => "ept_misconfiguration",
            });
            if (x.Result is EptResult.Translated t) w.WriteString("l1_gpa", Hex.Format(t.L1Gpa));
            w.WriteString("rule", x.Rule);
            w.WriteStartArray("steps");
            foreach (var s in x.Steps)
            {
                w.WriteStartObject();
                w.WriteNumber("level", s.Level);
                w.WriteString("entry", s.EntryName);
                w.WriteString("l1_gpa", Hex.Format(s.EntryAddress));
                w.WriteString("raw", Hex.Format(s.Entry.Raw));
                w.WriteStartArray("flags");
                foreach (var flag in s.Entry.Flags().Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(f => f != "-")) w.WriteStringValue(flag);
                w.WriteEndArray();
                w.WriteString("rights", s.RightsSoFar.ToString());
                w.WriteString("note", s.Note);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static void Changes(Utf8JsonWriter w, string name, ImmutableArray<EntryUpdate> updates)
    {
        w.WriteStartArray(name);
        foreach (var u in updates)
        {
            w.WriteStartObject();
            w.WriteString("l1_gpa", Hex.Format(u.Gpa));
            w.WriteString("before", Hex.Format(u.Before));
            w.WriteString("after", Hex.Format(u.After));
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    static string Snake(string name)
    {
        var sb = new StringBuilder();
        foreach (char ch in name)
        {
            if (char.IsUpper(ch) && sb.Length > 0) sb.Append('_');
            sb.Append(char.ToLowerInvariant(ch));
        }
        return sb.ToString();
    }
}
