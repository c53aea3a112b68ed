using System.Collections.Immutable;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Nested;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;

namespace MmuSpec.Harness.Running;

// The nested-EPT case's JSON (docs/counterexample-format.md): kind "nested-ept", a config and the setup and ops lists.
public static partial class CaseJson
{
    public const string NestedEptKind = "nested-ept";

    static readonly Dictionary<string, NestedRootPolicy> NestedPolicyNames = new()
    {
        ["keep-and-resync"] = NestedRootPolicy.KeepAndResync, ["upstream"] = NestedRootPolicy.Upstream,
    };

    static readonly Dictionary<string, InveptType> InveptNames = new() { ["single-context"] = InveptType.SingleContext, ["all-context"] = InveptType.AllContext };

    public static void WriteNestedEpt(Utf8JsonWriter w, NestedEptCase c)
    {
        w.WriteStartObject();
        w.WriteString("kind", NestedEptKind);
        w.WriteStartObject("config");
        w.WriteNumber("maxphyaddr", c.Config.MaxPhyAddr);
        w.WriteBoolean("execute_only", c.Config.ExecuteOnly);
        w.WriteString("root_policy", NestedPolicyNames.Single(p => p.Value == c.Config.RootPolicy).Key);
        w.WriteBoolean("unsync", c.Config.Unsync);
        // Written only when on, so the other properties' files stay as they were.
        if (c.Config.GvaTlb) w.WriteBoolean("gva_tlb", true);
        if (c.Config.L2GlobalPages) w.WriteBoolean("l2_global_pages", true);
        w.WriteEndObject();
        w.WriteStartArray("setup");
        foreach (var op in c.Setup) WriteOp(w, op);
        w.WriteEndArray();
        w.WriteStartArray("ops");
        foreach (var op in c.Ops) WriteOp(w, op);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static void WriteOp(Utf8JsonWriter w, NestedEptOp op)
    {
        w.WriteStartObject();
        switch (op)
        {
            case NestedEptOp.CreateSlot s:
                w.WriteString("op", "create_slot");
                w.WriteNumber("id", s.Id);
                w.WriteString("base_gfn", Hex.Format(s.BaseGfn));
                w.WriteString("pages", Hex.Format(s.Pages));
                w.WriteString("host_pfn_base", Hex.Format(s.HostPfnBase));
                break;
            case NestedEptOp.DeleteSlot d: w.WriteString("op", "delete_slot"); w.WriteNumber("id", d.Id); break;
            case NestedEptOp.L1Store s: w.WriteString("op", "l1_store"); WriteStore(w, s.Gpa, s.Value, s.Size); break;
            case NestedEptOp.LoadEptp l: w.WriteString("op", "load_eptp"); w.WriteString("eptp", Hex.Format(l.Eptp.Raw)); break;
            case NestedEptOp.Invept i:
                w.WriteString("op", "invept");
                w.WriteString("type", InveptNames.Single(p => p.Value == i.Type).Key);
                w.WriteString("eptp", Hex.Format(i.Eptp.Raw));
                break;
            case NestedEptOp.L2Access a: w.WriteString("op", "l2_access"); w.WriteString("gpa", Hex.Format(a.Gpa)); w.WriteString("type", TypeName(a.Type)); break;
            default: WriteNestedL2Op(w, op); break;
        }
        w.WriteString("text", op.ToString());
        w.WriteEndObject();
    }

    public static NestedEptCase ReadNestedEpt(JsonElement e, string path)
    {
        var o = StrictObject.Open(e, path, "a nested-EPT case", "kind", "config", "setup", "ops");
        var c = o.Object("config", "a nested VM configuration like {\"maxphyaddr\": 46, \"execute_only\": true, \"root_policy\": \"keep-and-resync\", \"unsync\": true}",
            "maxphyaddr", "execute_only", "root_policy", "unsync", "gva_tlb", "l2_global_pages");
        int maxPhyAddr = c.Int("maxphyaddr");
        bool executeOnly = c.Bool("execute_only");
        var policy = c.Choice("root_policy", NestedPolicyNames);
        // Files written before unsync shadow EPT pages ran the strict MMU.
        var config = new NestedEptConfig(maxPhyAddr, executeOnly, policy, c.Has("unsync") && c.Bool("unsync"),
            c.Has("gva_tlb") && c.Bool("gva_tlb"), c.Has("l2_global_pages") && c.Bool("l2_global_pages"));
        Construct(c.At("maxphyaddr"), () => config.Caps);
        var setup = o.Array("setup").Select(s => ReadNestedOp(s.Element, s.Path)).ToImmutableArray();
        var ops = o.Array("ops").Select(s => ReadNestedOp(s.Element, s.Path)).ToImmutableArray();
        var nested = new NestedEptCase(config, setup, ops);
        CaseRules.Check(nested, path);
        return nested;
    }

    static readonly Dictionary<string, string[]> NestedOps = new()
    {
        ["create_slot"] = ["id", "base_gfn", "pages", "host_pfn_base"],
        ["delete_slot"] = ["id"],
        ["l1_store"] = ["gpa", "value", "size"],
        ["load_eptp"] = ["eptp"],
        ["invept"] = ["type", "eptp"],
        ["l2_access"] = ["gpa", "type"],
        ["set_l2_paging"] = ["controls", "cr3", "pdptes"],
        ["l2_gva_access"] = ["access"],
        ["vm_exit"] = [],
        ["vm_entry"] = ["vpid", "eptp_list"],
        ["invvpid"] = ["type", "vpid", "gva"],
        ["vmfunc"] = ["index"],
    };

    static NestedEptOp ReadNestedOp(JsonElement e, string path)
    {
        var (kind, o) = OpenOp(e, path, NestedOps, "nested-EPT");
        return kind switch
        {
            "create_slot" => new NestedEptOp.CreateSlot(o.Int("id"), o.Hex("base_gfn"), o.Hex("pages"), o.Hex("host_pfn_base")),
            "delete_slot" => new NestedEptOp.DeleteSlot(o.Int("id")),
            "l1_store" => new NestedEptOp.L1Store(o.Hex("gpa"), o.Hex("value"), o.Int("size")),
            "load_eptp" => new NestedEptOp.LoadEptp(new EptPointer(o.Hex("eptp"))),
            "invept" => new NestedEptOp.Invept(o.Choice("type", InveptNames), new EptPointer(o.Hex("eptp"))),
            "l2_access" => new NestedEptOp.L2Access(o.Hex("gpa"), o.Choice("type", TypeNames)),
            _ => ReadNestedL2Op(kind, o),
        };
    }
}
