using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Running;

// L2's own paging in a nested-EPT case (docs/counterexample-format.md): set_l2_paging (controls null: paging off; the four
// guest PDPTE fields, PAE only) and l2_gva_access.
public static partial class CaseJson
{
    static void WriteNestedL2Op(Utf8JsonWriter w, NestedEptOp op)
    {
        switch (op)
        {
            case NestedEptOp.SetL2Paging p:
                w.WriteString("op", "set_l2_paging");
                if (p.Cpu is { } cpu) WriteControls(w, "controls", cpu.Controls); else w.WriteNull("controls");
                w.WriteString("cr3", Hex.Format(p.Cpu?.Cr3 ?? 0));
                w.WriteStartArray("pdptes");
                foreach (var pdpte in p.Cpu?.Pdptes ?? [0, 0, 0, 0]) w.WriteStringValue(Hex.Format(pdpte));
                w.WriteEndArray();
                break;
            case NestedEptOp.L2GvaAccess a: w.WriteString("op", "l2_gva_access"); WriteAccess(w, a.Access); break;
            default: WriteNestedVpidOp(w, op); break;
        }
    }

    static NestedEptOp ReadNestedL2Op(string kind, StrictObject o) => kind switch
    {
        "set_l2_paging" => new NestedEptOp.SetL2Paging(o.IsNull("controls") ? null
            : Construct(o.At("cr3"), () => new CpuState(ReadControls(o.Field("controls"), o.At("controls")), o.Hex("cr3"), ReadPdptes(o)))),
        "l2_gva_access" => new NestedEptOp.L2GvaAccess(ReadAccess(o.Field("access"), o.At("access"))),
        _ => ReadNestedVpidOp(kind, o),
    };

    static ulong[] ReadPdptes(StrictObject o)
    {
        var values = o.Array("pdptes").Select(p => StrictObject.HexValue(p.Element, p.Path)).ToArray();
        return values.Length == 4 ? values : throw new InputException($"{o.At("pdptes")}: expected four PDPTE fields, got {values.Length}");
    }
}
