using MmuSpec.Harness.Nested;
using MmuSpec.Spec.Ept;

namespace MmuSpec.Harness.Running;

public static partial class CaseRules
{
    /// <summary>A nested-EPT case: memslots of at least one page within the 64-bit space and the slot size limit; L1 stores of 4 or 8 bytes, aligned, with a value that fits.</summary>
    public static void Check(NestedEptCase c, string path)
    {
        foreach (var (list, name) in new[] { (c.Setup, "setup"), (c.Ops, "ops") })
            for (int i = 0; i < list.Length; i++)
            {
                string at = At(path, $"{name}[{I(i)}]");
                switch (list[i])
                {
                    case NestedEptOp.CreateSlot s:
                        Slot(at, s.BaseGfn, s.Pages);
                        SlotSize(at, s.Pages);
                        break;
                    case NestedEptOp.L1Store s:
                        Write(at, s.Gpa, s.Value, s.Size);
                        break;
                }
            }
    }
}
