using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Ept;

namespace MmuSpec.Harness.Running;

// VPIDs in a nested-EPT case (docs/counterexample-format.md): vm_exit, vm_entry (vpid null: "enable VPID" off; eptp_list
// null: no EPTP switching), invvpid and vmfunc.
public static partial class CaseJson
{
    static readonly Dictionary<string, InvvpidType> InvvpidNames = new()
    {
        ["individual-address"] = InvvpidType.IndividualAddress, ["single-context"] = InvvpidType.SingleContext,
        ["all-contexts"] = InvvpidType.AllContexts, ["single-context-retaining-globals"] = InvvpidType.SingleContextRetainingGlobals,
    };

    static void WriteNestedVpidOp(Utf8JsonWriter w, NestedEptOp op)
    {
        switch (op)
        {
            case NestedEptOp.VmExit: w.WriteString("op", "vm_exit"); break;
            case NestedEptOp.VmEntry e:
                w.WriteString("op", "vm_entry");
                if (e.VpidEnabled) w.WriteNumber("vpid", e.Vpid); else w.WriteNull("vpid");
                if (e.EptpList is { } list) w.WriteString("eptp_list", Hex.Format(list)); else w.WriteNull("eptp_list");
                break;
            case NestedEptOp.Invvpid i:
                w.WriteString("op", "invvpid");
                w.WriteString("type", InvvpidNames.Single(p => p.Value == i.Type).Key);
                w.WriteNumber("vpid", i.Vpid);
                w.WriteString("gva", Hex.Format(i.Gva));
                break;
            case NestedEptOp.Vmfunc f: w.WriteString("op", "vmfunc"); w.WriteNumber("index", f.Index); break;
            default: throw new ArgumentException($"no JSON form for the nested op {op.GetType().Name}", nameof(op));
        }
    }

    static NestedEptOp ReadNestedVpidOp(string kind, StrictObject o) => kind switch
    {
        "vm_exit" => new NestedEptOp.VmExit(),
        "vm_entry" => new NestedEptOp.VmEntry(!o.IsNull("vpid"), o.IsNull("vpid") ? (ushort)0 : Vpid(o), o.IsNull("eptp_list") ? null : o.Hex("eptp_list")),
        "invvpid" => new NestedEptOp.Invvpid(o.Choice("type", InvvpidNames), Vpid(o), o.Hex("gva")),
        "vmfunc" => new NestedEptOp.Vmfunc(o.Long("index") is >= 0 and <= uint.MaxValue and var i ? (uint)i
            : throw new InputException($"{o.At("index")}: expected an ECX value 0..{uint.MaxValue}")),
        _ => throw new InvalidOperationException(kind),
    };

    static ushort Vpid(StrictObject o) => o.Int("vpid") is >= 0 and <= ushort.MaxValue and var v ? (ushort)v
        : throw new InputException($"{o.At("vpid")}: expected a VPID 0..65535");
}
