using System.Collections.Immutable;
using System.Text;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Running;

/// <summary>
/// The three case types (<see cref="WalkCase"/>, <see cref="TdpCase"/>, <see cref="ShadowCase"/>) as
/// JSON, written and read by hand so the spec's types carry no serialization attributes
/// (docs/counterexample-format.md). Addresses and values are "0x..." hex strings, small counts
/// (ids, sizes, MAXPHYADDR) plain integers. Every operation is an object with its kind in "op", its
/// fields, and its text as the traces print it in "text" (for people; the reader only checks that it
/// is a string). Reading is strict: an unknown or missing field, a wrong type, an unknown op kind or a
/// value the spec's constructors refuse is an <see cref="InputException"/> naming the JSON path, and so is
/// a case outside what the generators draw (<see cref="CaseRules"/>).
/// </summary>
public static class CaseJson
{
    public const string WalkKind = "walk", TdpKind = "tdp", ShadowKind = "shadow";

    /// <summary>The "kind" of a case type: walk, tdp or shadow.</summary>
    public static string KindOf(Type caseType) => Families.ForCaseType(caseType).Name;

    public static string KindOf(object c) => KindOf(c.GetType());

    /// <summary>A case as an indented JSON document.</summary>
    public static string ToJson(object c)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WalkJson.WriterOptions(indented: true))) Write(w, c);
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>A document that is one case (as <see cref="ToJson"/> writes it).</summary>
    public static object Parse(string json)
    {
        using var doc = ScenarioJson.ParseDocument(json);
        return Read(doc.RootElement, "");
    }

    // ---- writing ----

    public static void Write(Utf8JsonWriter w, object c) => Families.For(c).WriteJson(w, c);

    public static void WriteWalk(Utf8JsonWriter w, WalkCase c)
    {
        w.WriteStartObject();
        w.WriteString("kind", WalkKind);
        w.WriteStartArray("slots");
        foreach (var s in c.Slots)
        {
            w.WriteStartObject();
            w.WriteString("base_gfn", Hex.Format(s.BaseGfn));
            w.WriteString("pages", Hex.Format(s.Pages));
            w.WriteEndObject();
        }
        w.WriteEndArray();
        WriteControls(w, "controls", c.Controls);
        w.WriteString("cr3", Hex.Format(c.Cr3));
        w.WriteStartArray("setup");
        foreach (var op in c.Setup) WriteOp(w, op);
        w.WriteEndArray();
        w.WriteStartArray("ops");
        foreach (var op in c.Ops) WriteOp(w, op);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    public static void WriteTdp(Utf8JsonWriter w, TdpCase c)
    {
        w.WriteStartObject();
        w.WriteString("kind", TdpKind);
        w.WriteStartObject("config");
        w.WriteString("format", FormatNames.Single(f => f.Value == c.Config.Format).Key);
        if (c.Config.SharedBit is { } bit) w.WriteNumber("shared_bit", bit); else w.WriteNull("shared_bit");
        // Only with aging (docs/tdp-model.md, "Aging"): files of the other properties stay as they were.
        if (c.Config.AccessedDirty != AccessedDirty.Untracked) w.WriteString("accessed_dirty", AccessedDirtyNames.Single(a => a.Value == c.Config.AccessedDirty).Key);
        w.WriteEndObject();
        w.WriteStartArray("ops");
        foreach (var op in c.Ops) WriteOp(w, op);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    public static void WriteShadow(Utf8JsonWriter w, ShadowCase c)
    {
        w.WriteStartObject();
        w.WriteString("kind", ShadowKind);
        w.WriteStartObject("config");
        w.WriteNumber("maxphyaddr", c.Config.MaxPhyAddr);
        w.WriteBoolean("allow_unsync", c.Config.AllowUnsync);
        w.WriteString("root_policy", PolicyNames.Single(p => p.Value == c.Config.RootPolicy).Key);
        w.WriteBoolean("prefetch", c.Config.Prefetch);
        w.WriteEndObject();
        w.WriteStartArray("setup");
        foreach (var op in c.Setup) WriteOp(w, op);
        w.WriteEndArray();
        w.WriteStartArray("ops");
        foreach (var op in c.Ops) WriteOp(w, op);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static void WriteOp(Utf8JsonWriter w, Op op)
    {
        w.WriteStartObject();
        switch (op)
        {
            case Op.GuestAccess a: w.WriteString("op", "access"); WriteAccess(w, a.Access); break;
            case Op.WriteGuest g: w.WriteString("op", "write_guest"); WriteStore(w, g.Gpa, g.Value, g.Size); break;
            case Op.LoadCr3 l: w.WriteString("op", "load_cr3"); w.WriteString("cr3", Hex.Format(l.Cr3)); break;
            case Op.SetControls s: w.WriteString("op", "set_controls"); WriteControls(w, "controls", s.Controls); break;
            default: throw new ArgumentException($"no JSON form for the walk op {op.GetType().Name}", nameof(op));
        }
        w.WriteString("text", op.ToString());
        w.WriteEndObject();
    }

    internal static void WriteOp(Utf8JsonWriter w, TdpOp op)
    {
        w.WriteStartObject();
        switch (op)
        {
            case TdpOp.CreateSlot s:
                w.WriteString("op", "create_slot");
                w.WriteNumber("id", s.Id);
                w.WriteString("base_gfn", Hex.Format(s.BaseGfn));
                w.WriteString("pages", Hex.Format(s.Pages));
                w.WriteString("host_pfn_base", Hex.Format(s.HostPfnBase));
                w.WriteString("host_page_size", PageSizeName(s.HostPageSize));
                w.WriteBoolean("read_only", s.ReadOnly);
                break;
            case TdpOp.DeleteSlot d: w.WriteString("op", "delete_slot"); w.WriteNumber("id", d.Id); break;
            case TdpOp.MoveSlot m: w.WriteString("op", "move_slot"); w.WriteNumber("id", m.Id); w.WriteString("new_base_gfn", Hex.Format(m.NewBaseGfn)); break;
            case TdpOp.SetDirtyLogging d: w.WriteString("op", "set_dirty_logging"); w.WriteNumber("id", d.Id); w.WriteBoolean("on", d.On); break;
            case TdpOp.GetDirtyLog g: w.WriteString("op", "get_dirty_log"); w.WriteNumber("id", g.Id); break;
            case TdpOp.AccessGpa a: w.WriteString("op", "access_gpa"); w.WriteString("gpa", Hex.Format(a.Gpa)); w.WriteString("type", TypeName(a.Type)); break;
            case TdpOp.ZapRange z: w.WriteString("op", "zap_range"); w.WriteString("start_gfn", Hex.Format(z.StartGfn)); w.WriteString("end_gfn", Hex.Format(z.EndGfn)); break;
            case TdpOp.PreFault f: w.WriteString("op", "pre_fault"); w.WriteString("gpa", Hex.Format(f.Gpa)); w.WriteString("size", Hex.Format(f.Size)); break;
            case TdpOp.ZapAll: w.WriteString("op", "zap_all"); break;
            case TdpOp.Age a: w.WriteString("op", "age"); w.WriteString("start_gfn", Hex.Format(a.StartGfn)); w.WriteString("end_gfn", Hex.Format(a.EndGfn)); break;
            case TdpOp.TestAge t: w.WriteString("op", "test_age"); w.WriteString("start_gfn", Hex.Format(t.StartGfn)); w.WriteString("end_gfn", Hex.Format(t.EndGfn)); break;
            case TdpOp.SetMaxPageSize m: w.WriteString("op", "set_max_page_size"); w.WriteString("size", PageSizeName(m.Size)); break;
            case TdpOp.GuestStore g: w.WriteString("op", "guest_store"); WriteStore(w, g.Gpa, g.Value, g.Size); break;
            case TdpOp.GuestSetPaging p:
                w.WriteString("op", "guest_set_paging");
                if (p.Controls is { } controls) WriteControls(w, "controls", controls); else w.WriteNull("controls");
                w.WriteString("cr3", Hex.Format(p.Cr3));
                break;
            case TdpOp.GuestAccess a: w.WriteString("op", "guest_access"); WriteAccess(w, a.Access); break;
            case TdpOp.HostInvalidateStart i: w.WriteString("op", "host_invalidate_start"); w.WriteString("start_gfn", Hex.Format(i.StartGfn)); w.WriteString("end_gfn", Hex.Format(i.EndGfn)); break;
            case TdpOp.HostInvalidateEnd i: w.WriteString("op", "host_invalidate_end"); w.WriteString("start_gfn", Hex.Format(i.StartGfn)); w.WriteString("end_gfn", Hex.Format(i.EndGfn)); break;
            default: throw new ArgumentException($"no JSON form for the TDP op {op.GetType().Name}", nameof(op));
        }
        w.WriteString("text", op.ToString());
        w.WriteEndObject();
    }

    static void WriteOp(Utf8JsonWriter w, ShadowOp op)
    {
        w.WriteStartObject();
        switch (op)
        {
            case ShadowOp.CreateSlot s:
                w.WriteString("op", "create_slot");
                w.WriteNumber("id", s.Id);
                w.WriteString("base_gfn", Hex.Format(s.BaseGfn));
                w.WriteString("pages", Hex.Format(s.Pages));
                w.WriteString("host_pfn_base", Hex.Format(s.HostPfnBase));
                w.WriteBoolean("read_only", s.ReadOnly);
                break;
            case ShadowOp.DeleteSlot d: w.WriteString("op", "delete_slot"); w.WriteNumber("id", d.Id); break;
            case ShadowOp.MoveSlot m: w.WriteString("op", "move_slot"); w.WriteNumber("id", m.Id); w.WriteString("new_base_gfn", Hex.Format(m.NewBaseGfn)); break;
            case ShadowOp.SetDirtyLogging d: w.WriteString("op", "set_dirty_logging"); w.WriteNumber("id", d.Id); w.WriteBoolean("on", d.On); break;
            case ShadowOp.GetDirtyLog g: w.WriteString("op", "get_dirty_log"); w.WriteNumber("id", g.Id); break;
            case ShadowOp.GuestStore g: w.WriteString("op", "guest_store"); WriteStore(w, g.Gpa, g.Value, g.Size); break;
            case ShadowOp.GuestSetPaging p:
                w.WriteString("op", "guest_set_paging");
                WriteControls(w, "controls", p.Controls);
                w.WriteString("cr3", Hex.Format(p.Cr3));
                w.WriteBoolean("pcide", p.Pcide);
                break;
            case ShadowOp.GuestMovCr3 m: w.WriteString("op", "guest_mov_cr3"); w.WriteString("cr3", Hex.Format(m.Cr3)); break;
            case ShadowOp.Invpcid i:
                w.WriteString("op", "invpcid");
                w.WriteString("type", Hex.Format(i.Type));
                w.WriteString("pcid", Hex.Format(i.Pcid));
                w.WriteString("gva", Hex.Format(i.Gva));
                break;
            case ShadowOp.GuestAccess a: w.WriteString("op", "guest_access"); WriteAccess(w, a.Access); break;
            case ShadowOp.Invlpg i: w.WriteString("op", "invlpg"); w.WriteString("gva", Hex.Format(i.Gva)); break;
            case ShadowOp.FlushTlb: w.WriteString("op", "flush_tlb"); break;
            case ShadowOp.ZapRange z: w.WriteString("op", "zap_range"); w.WriteString("start_gfn", Hex.Format(z.StartGfn)); w.WriteString("end_gfn", Hex.Format(z.EndGfn)); break;
            case ShadowOp.ZapAll: w.WriteString("op", "zap_all"); break;
            default: throw new ArgumentException($"no JSON form for the shadow op {op.GetType().Name}", nameof(op));
        }
        w.WriteString("text", op.ToString());
        w.WriteEndObject();
    }

    static void WriteStore(Utf8JsonWriter w, ulong gpa, ulong value, int size)
    {
        w.WriteString("gpa", Hex.Format(gpa));
        w.WriteString("value", Hex.Format(value));
        w.WriteNumber("size", size);
    }

    static void WriteAccess(Utf8JsonWriter w, Access a)
    {
        w.WriteStartObject("access");
        w.WriteString("gva", Hex.Format(a.Gva));
        w.WriteString("type", TypeName(a.Type));
        w.WriteString("privilege", PrivilegeNames.Single(p => p.Value == a.Privilege).Key);
        w.WriteEndObject();
    }

    static void WriteControls(Utf8JsonWriter w, string name, PagingControls c)
    {
        w.WriteStartObject(name);
        w.WriteString("mode", c.Mode.Name());
        w.WriteBoolean("wp", c.Cr0Wp);
        w.WriteBoolean("pse", c.Cr4Pse);
        w.WriteBoolean("smep", c.Cr4Smep);
        w.WriteBoolean("smap", c.Cr4Smap);
        w.WriteBoolean("pke", c.Cr4Pke);
        w.WriteBoolean("nxe", c.EferNxe);
        w.WriteBoolean("ac", c.EflagsAc);
        w.WriteString("pkru", Hex.Format(c.Pkru));
        w.WriteNumber("maxphyaddr", c.MaxPhyAddr);
        w.WriteEndObject();
    }

    static string TypeName(AccessType t) => TypeNames.Single(p => p.Value == t).Key;
    static string PageSizeName(PageSize s) => PageSizeNames.FirstOrDefault(p => p.Value == s).Key ?? throw new ArgumentException($"no name for page size {s}");

    // ---- names of enum values, both ways ----

    static readonly Dictionary<string, PagingMode> ModeNames = Enum.GetValues<PagingMode>().ToDictionary(m => m.Name());
    static readonly Dictionary<string, AccessType> TypeNames = new() { ["read"] = AccessType.Read, ["write"] = AccessType.Write, ["fetch"] = AccessType.Fetch };
    static readonly Dictionary<string, Privilege> PrivilegeNames = new()
    {
        ["supervisor"] = Privilege.Supervisor, ["user"] = Privilege.User, ["implicit-supervisor"] = Privilege.ImplicitSupervisor,
    };
    static readonly Dictionary<string, PageSize> PageSizeNames = Enum.GetValues<PageSize>().ToDictionary(s => s.Name());
    internal static readonly Dictionary<string, TdpFormat> FormatNames = new() { ["ept"] = TdpFormat.Ept, ["stage2"] = TdpFormat.Stage2 };
    /// <summary>The JSON names of <see cref="AccessedDirty"/> (for the concurrent case's config too).</summary>
    internal static IReadOnlyDictionary<string, AccessedDirty> AccessedDirtyChoices => AccessedDirtyNames;

    internal static string AccessedDirtyName(AccessedDirty ad) => AccessedDirtyNames.Single(a => a.Value == ad).Key;

    static readonly Dictionary<string, AccessedDirty> AccessedDirtyNames = new()
    {
        ["untracked"] = AccessedDirty.Untracked, ["enabled"] = AccessedDirty.Enabled, ["disabled"] = AccessedDirty.Disabled,
    };
    static readonly Dictionary<string, ShadowRootPolicy> PolicyNames = new()
    {
        ["keep-and-resync"] = ShadowRootPolicy.KeepAndResync, ["upstream"] = ShadowRootPolicy.Upstream,
    };

    // ---- reading ----

    /// <summary>A case of any kind (its "kind" field decides), at <paramref name="path"/> in its document.</summary>
    public static object Read(JsonElement e, string path)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new InputException($"{(path.Length == 0 ? "the document" : path)}: expected a case object, got {StrictObject.Kind(e)}");
        string at = path.Length == 0 ? "kind" : $"{path}.kind";
        if (!e.TryGetProperty("kind", out var kind)) throw new InputException($"{at} is missing (walk, tdp or shadow)");
        return kind.ValueKind != JsonValueKind.String
            ? throw new InputException($"{at}: expected a string, got {StrictObject.Kind(kind)}")
            : Families.Named(kind.GetString()!) is { } family ? family.ReadJson(e, path)
            : throw new InputException($"{at}: unknown case kind '{kind.GetString()}' (expected {string.Join(", ", Families.All.Select(f => f.Name))})");
    }

    public static WalkCase ReadWalk(JsonElement e, string path)
    {
        var o = StrictObject.Open(e, path, "a walk case", "kind", "slots", "controls", "cr3", "setup", "ops");
        var slots = o.Array("slots").Select(s =>
        {
            var so = StrictObject.Open(s.Element, s.Path, "a memslot like {\"base_gfn\": \"0x0\", \"pages\": \"0x40\"}", "base_gfn", "pages");
            return new Memslot(so.Hex("base_gfn"), so.Hex("pages"));
        }).ToImmutableArray();
        var controls = ReadControls(o.Field("controls"), o.At("controls"));
        ulong cr3 = o.Hex("cr3");
        var setup = o.Array("setup").Select(s => ReadWalkOp(s.Element, s.Path) is Op.WriteGuest w ? w
            : throw new InputException($"{s.Path}.op: the setup of a walk case holds only write_guest operations")).ToImmutableArray();
        var ops = o.Array("ops").Select(s => ReadWalkOp(s.Element, s.Path)).ToImmutableArray();
        var c = new WalkCase(slots, controls, cr3, setup, ops);
        CaseRules.Check(c, path);
        return c;
    }

    public static TdpCase ReadTdp(JsonElement e, string path)
    {
        var o = StrictObject.Open(e, path, "a TDP case", "kind", "config", "ops");
        var c = o.Object("config", "a VM configuration like {\"format\": \"ept\", \"shared_bit\": null}", "format", "shared_bit", "accessed_dirty");
        var format = c.Choice("format", FormatNames);
        int? bit = c.NullableInt("shared_bit");
        var ad = c.Has("accessed_dirty") ? c.Choice("accessed_dirty", AccessedDirtyNames) : AccessedDirty.Untracked; // absent: no aging
        var config = Construct(c.At("shared_bit"), () => new VmConfig(format, bit, ad));
        var ops = o.Array("ops").Select(s => ReadTdpOp(s.Element, s.Path)).ToImmutableArray();
        var tdp = new TdpCase(config, ops);
        CaseRules.Check(tdp, path);
        return tdp;
    }

    public static ShadowCase ReadShadow(JsonElement e, string path)
    {
        var o = StrictObject.Open(e, path, "a shadow case", "kind", "config", "setup", "ops");
        var c = o.Object("config", "a VM configuration like {\"maxphyaddr\": 46, \"allow_unsync\": true, \"root_policy\": \"keep-and-resync\", \"prefetch\": false}",
            "maxphyaddr", "allow_unsync", "root_policy", "prefetch");
        int maxPhyAddr = c.Int("maxphyaddr");
        bool allowUnsync = c.Bool("allow_unsync");
        var policy = c.Choice("root_policy", PolicyNames);
        bool prefetch = c.Has("prefetch") && c.Bool("prefetch"); // absent in files written before the switch existed
        var config = Construct(c.At("maxphyaddr"), () => new ShadowConfig(maxPhyAddr, allowUnsync, policy, prefetch));
        var setup = o.Array("setup").Select(s => ReadShadowOp(s.Element, s.Path)).ToImmutableArray();
        var ops = o.Array("ops").Select(s => ReadShadowOp(s.Element, s.Path)).ToImmutableArray();
        var shadow = new ShadowCase(config, setup, ops);
        CaseRules.Check(shadow, path);
        return shadow;
    }

    static readonly Dictionary<string, string[]> WalkOps = new()
    {
        ["access"] = ["access"],
        ["write_guest"] = ["gpa", "value", "size"],
        ["load_cr3"] = ["cr3"],
        ["set_controls"] = ["controls"],
    };

    static Op ReadWalkOp(JsonElement e, string path)
    {
        var (kind, o) = OpenOp(e, path, WalkOps, "walk");
        return kind switch
        {
            "access" => new Op.GuestAccess(ReadAccess(o.Field("access"), o.At("access"))),
            "write_guest" => new Op.WriteGuest(o.Hex("gpa"), o.Hex("value"), o.Int("size")),
            "load_cr3" => new Op.LoadCr3(o.Hex("cr3")),
            "set_controls" => new Op.SetControls(ReadControls(o.Field("controls"), o.At("controls"))),
            _ => throw new InvalidOperationException(kind),
        };
    }

    static readonly Dictionary<string, string[]> TdpOps = new()
    {
        ["create_slot"] = ["id", "base_gfn", "pages", "host_pfn_base", "host_page_size", "read_only"],
        ["delete_slot"] = ["id"],
        ["move_slot"] = ["id", "new_base_gfn"],
        ["set_dirty_logging"] = ["id", "on"],
        ["get_dirty_log"] = ["id"],
        ["access_gpa"] = ["gpa", "type"],
        ["zap_range"] = ["start_gfn", "end_gfn"],
        ["pre_fault"] = ["gpa", "size"],
        ["zap_all"] = [],
        ["age"] = ["start_gfn", "end_gfn"],
        ["test_age"] = ["start_gfn", "end_gfn"],
        ["set_max_page_size"] = ["size"],
        ["guest_store"] = ["gpa", "value", "size"],
        ["guest_set_paging"] = ["controls", "cr3"],
        ["guest_access"] = ["access"],
        ["host_invalidate_start"] = ["start_gfn", "end_gfn"],
        ["host_invalidate_end"] = ["start_gfn", "end_gfn"],
    };

    internal static TdpOp ReadTdpOp(JsonElement e, string path)
    {
        var (kind, o) = OpenOp(e, path, TdpOps, "TDP");
        return kind switch
        {
            "create_slot" => new TdpOp.CreateSlot(o.Int("id"), o.Hex("base_gfn"), o.Hex("pages"), o.Hex("host_pfn_base"),
                o.Choice("host_page_size", PageSizeNames), o.Bool("read_only")),
            "delete_slot" => new TdpOp.DeleteSlot(o.Int("id")),
            "move_slot" => new TdpOp.MoveSlot(o.Int("id"), o.Hex("new_base_gfn")),
            "set_dirty_logging" => new TdpOp.SetDirtyLogging(o.Int("id"), o.Bool("on")),
            "get_dirty_log" => new TdpOp.GetDirtyLog(o.Int("id")),
            "access_gpa" => new TdpOp.AccessGpa(o.Hex("gpa"), o.Choice("type", TypeNames)),
            "zap_range" => new TdpOp.ZapRange(o.Hex("start_gfn"), o.Hex("end_gfn")),
            "pre_fault" => new TdpOp.PreFault(o.Hex("gpa"), o.Hex("size")),
            "zap_all" => new TdpOp.ZapAll(),
            "age" => new TdpOp.Age(o.Hex("start_gfn"), o.Hex("end_gfn")),
            "test_age" => new TdpOp.TestAge(o.Hex("start_gfn"), o.Hex("end_gfn")),
            "set_max_page_size" => new TdpOp.SetMaxPageSize(o.Choice("size", PageSizeNames)),
            "guest_store" => new TdpOp.GuestStore(o.Hex("gpa"), o.Hex("value"), o.Int("size")),
            "guest_set_paging" => new TdpOp.GuestSetPaging(
                o.IsNull("controls") ? null : ReadControls(o.Field("controls"), o.At("controls")), o.Hex("cr3")),
            "guest_access" => new TdpOp.GuestAccess(ReadAccess(o.Field("access"), o.At("access"))),
            "host_invalidate_start" => new TdpOp.HostInvalidateStart(o.Hex("start_gfn"), o.Hex("end_gfn")),
            "host_invalidate_end" => new TdpOp.HostInvalidateEnd(o.Hex("start_gfn"), o.Hex("end_gfn")),
            _ => throw new InvalidOperationException(kind),
        };
    }

    static readonly Dictionary<string, string[]> ShadowOps = new()
    {
        ["create_slot"] = ["id", "base_gfn", "pages", "host_pfn_base", "read_only"],
        ["delete_slot"] = ["id"],
        ["move_slot"] = ["id", "new_base_gfn"],
        ["set_dirty_logging"] = ["id", "on"],
        ["get_dirty_log"] = ["id"],
        ["guest_store"] = ["gpa", "value", "size"],
        ["guest_set_paging"] = ["controls", "cr3", "pcide"],
        ["guest_mov_cr3"] = ["cr3"],
        ["invpcid"] = ["type", "pcid", "gva"],
        ["guest_access"] = ["access"],
        ["invlpg"] = ["gva"],
        ["flush_tlb"] = [],
        ["zap_range"] = ["start_gfn", "end_gfn"],
        ["zap_all"] = [],
    };

    static ShadowOp ReadShadowOp(JsonElement e, string path)
    {
        var (kind, o) = OpenOp(e, path, ShadowOps, "shadow");
        return kind switch
        {
            "create_slot" => new ShadowOp.CreateSlot(o.Int("id"), o.Hex("base_gfn"), o.Hex("pages"), o.Hex("host_pfn_base"), o.Bool("read_only")),
            "delete_slot" => new ShadowOp.DeleteSlot(o.Int("id")),
            "move_slot" => new ShadowOp.MoveSlot(o.Int("id"), o.Hex("new_base_gfn")),
            "set_dirty_logging" => new ShadowOp.SetDirtyLogging(o.Int("id"), o.Bool("on")),
            "get_dirty_log" => new ShadowOp.GetDirtyLog(o.Int("id")),
            "guest_store" => new ShadowOp.GuestStore(o.Hex("gpa"), o.Hex("value"), o.Int("size")),
            "guest_set_paging" => new ShadowOp.GuestSetPaging(ReadControls(o.Field("controls"), o.At("controls")), o.Hex("cr3"), o.Bool("pcide")),
            "guest_mov_cr3" => new ShadowOp.GuestMovCr3(o.Hex("cr3")),
            "invpcid" => new ShadowOp.Invpcid(o.Hex("type"), o.Hex("pcid"), o.Hex("gva")),
            "guest_access" => new ShadowOp.GuestAccess(ReadAccess(o.Field("access"), o.At("access"))),
            "invlpg" => new ShadowOp.Invlpg(o.Hex("gva")),
            "flush_tlb" => new ShadowOp.FlushTlb(),
            "zap_range" => new ShadowOp.ZapRange(o.Hex("start_gfn"), o.Hex("end_gfn")),
            "zap_all" => new ShadowOp.ZapAll(),
            _ => throw new InvalidOperationException(kind),
        };
    }

    /// <summary>An operation object: its "op" picks the fields it may have; "text" is optional and only type-checked.</summary>
    static (string Kind, StrictObject Op) OpenOp(JsonElement e, string path, Dictionary<string, string[]> kinds, string family)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new InputException($"{path}: expected an operation object like {{\"op\": \"{kinds.Keys.First()}\", ...}}, got {StrictObject.Kind(e)}");
        if (!e.TryGetProperty("op", out var k)) throw new InputException($"{path}.op is missing");
        if (k.ValueKind != JsonValueKind.String) throw new InputException($"{path}.op: expected a string, got {StrictObject.Kind(k)}");
        string kind = k.GetString()!;
        if (!kinds.TryGetValue(kind, out var fields))
            throw new InputException($"{path}.op: unknown {family} op kind '{kind}' (known: {string.Join(", ", kinds.Keys)})");
        var o = StrictObject.Open(e, path, "an operation object", ["op", .. fields, "text"]);
        if (o.Has("text")) o.String("text");
        return (kind, o);
    }

    static readonly string[] ControlFields = ["mode", "wp", "pse", "smep", "smap", "pke", "nxe", "ac", "pkru", "maxphyaddr"];

    static PagingControls ReadControls(JsonElement e, string path)
    {
        var o = StrictObject.Open(e, path, "paging controls like {\"mode\": \"long4\", \"wp\": true, ...}", ControlFields);
        var mode = o.Choice("mode", ModeNames);
        bool wp = o.Bool("wp"), pse = o.Bool("pse"), smep = o.Bool("smep"), smap = o.Bool("smap"),
             pke = o.Bool("pke"), nxe = o.Bool("nxe"), ac = o.Bool("ac");
        ulong pkru = o.Hex("pkru");
        if (pkru > uint.MaxValue) throw new InputException($"{o.At("pkru")}: {Hex.Format(pkru)} does not fit PKRU's 32 bits");
        int maxPhyAddr = o.Int("maxphyaddr");
        return Construct(o.At("maxphyaddr"), () => new PagingControls(mode, wp, pse, smep, smap, pke, nxe, ac, (uint)pkru, maxPhyAddr));
    }

    static Access ReadAccess(JsonElement e, string path)
    {
        var o = StrictObject.Open(e, path, "an access like {\"gva\": \"0x1000\", \"type\": \"read\", \"privilege\": \"supervisor\"}", "gva", "type", "privilege");
        ulong gva = o.Hex("gva");
        var type = o.Choice("type", TypeNames);
        var privilege = o.Choice("privilege", PrivilegeNames);
        if (type == AccessType.Fetch && privilege == Privilege.ImplicitSupervisor)
            throw new InputException($"{path}: an instruction fetch is never an implicit supervisor-mode access");
        return new Access(gva, type, privilege);
    }

    /// <summary>A spec value whose constructor checks its arguments: a refusal is bad input at <paramref name="path"/>.</summary>
    static T Construct<T>(string path, Func<T> make)
    {
        try { return make(); }
        catch (ArgumentException e)
        {
            string message = e.Message;
            int cut = message.IndexOf(" (Parameter", StringComparison.Ordinal);
            throw new InputException($"{path}: {(cut >= 0 ? message[..cut] : message).ReplaceLineEndings(" ")}");
        }
    }
}
