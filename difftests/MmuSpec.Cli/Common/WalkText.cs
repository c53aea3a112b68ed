using System.Text;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli;

/// <summary>A walk as a kernel engineer reads it: one line per level, then the outcome, the rule and the A/D writes.</summary>
public static class WalkText
{
    public static string Render(WalkReport r)
    {
        var s = r.Scenario;
        var sb = new StringBuilder();
        sb.AppendLine($"access   {r.Access}");
        sb.AppendLine($"cpu      {r.Cpu}");
        sb.AppendLine($"memory   {Memory(s)}");
        if (r.Explanation is { } e)
        {
            int physDigits = Hex.DigitsFor(s.Controls.MaxPhyAddr);
            int rawDigits = s.EntryBytes * 2;
            var table = new TextTable("entry", "index", "gpa", "raw", "flags", "rights", "decision").AlignRight(1);
            foreach (var step in e.Steps)
            {
                table.Add(
                    step.EntryName,
                    PagingLevels.Index(s.Mode, step.Level, r.Access.Gva).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    step.EntryGpa is { } g ? Hex.Padded(g, physDigits) : "register",
                    Hex.Padded(step.Entry.Raw, rawDigits),
                    // PAE's PDPTE registers have P and an address, no rights bits (SDM Table 4-8).
                    step.EntryGpa is null ? (step.Entry.Present ? "P" : "-") : step.Entry.Present ? step.Entry.Flags(s.EntryBytes) : "-",
                    step.EntryGpa is null || !step.Entry.Present ? "" : step.RightsSoFar.ToString(),
                    Decision(step.Note));
            }
            sb.AppendLine();
            sb.AppendLine(table.Render("  "));
            sb.AppendLine();
            sb.AppendLine($"result   {r.Result}");
            sb.AppendLine($"rule     {e.Rule}");
        }
        else
        {
            sb.AppendLine($"engine   {r.Engine} (keeps no trace: outcome and A/D changes only; use --engine spec for the steps)");
            sb.AppendLine($"result   {r.Result}");
        }
        if (r.Changes.IsEmpty) sb.AppendLine("A/D      no entry changed");
        for (int i = 0; i < r.Changes.Length; i++)
        {
            var u = r.Changes[i];
            string what = (u.Before ^ u.After) switch
            {
                PagingEntry.Accessed => "set A",
                PagingEntry.Dirty => "set D",
                PagingEntry.Accessed | PagingEntry.Dirty => "set A D",
                var x => $"xor {Hex.Format(x)}",
            };
            sb.AppendLine($"{(i == 0 ? "A/D" : ""),-8} {Hex.Format(u.Gpa)}: {Hex.Format(u.Before)} -> {Hex.Format(u.After)}  ({what})");
        }
        return sb.ToString().TrimEnd();
    }

    /// <summary>The spec's note without the flags and rights the table already shows.</summary>
    static string Decision(string note)
    {
        string d = note;
        if (d.StartsWith('[') && d.IndexOf("] ", StringComparison.Ordinal) is var close and > 0) d = d[(close + 2)..];
        int rights = d.IndexOf(", rights", StringComparison.Ordinal);
        return rights > 0 ? d[..rights] : d;
    }

    public static string Memory(Scenario s) => s.Image is MappedImage m
        ? m.Describe()
        : s.Image is { } img ? $"image of {img.Length} bytes"
        : $"{string.Join(", ", s.Slots)}; {s.Memory.Length} word{(s.Memory.Length == 1 ? "" : "s")} given";
}
