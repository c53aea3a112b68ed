using System.Text;
using MmuSpec.Harness.Images;

namespace MmuSpec.Cli;

/// <summary>An L2 walk as text: L2's levels, each with the EPT walk that read its entry, then the final access, L2's A/D writes and the rule that ended it.</summary>
public static class NestedWalkText
{
    public static string Render(NestedWalkReport r)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"access   L2 {r.Access}");
        sb.AppendLine($"L2 cpu   {r.L2Cpu}");
        sb.AppendLine($"ept      {r.Scenario.Ept}");
        sb.AppendLine($"memory   L1's: {WalkText.Memory(r.Scenario)}");
        sb.AppendLine();
        // NestedExplanation's own text: L2's steps with the EPT walk of each entry read nested under them.
        // The outcome and L2's A/D writes follow below, once.
        foreach (var line in r.Explanation.ToString().Split(Environment.NewLine).Skip(1))
            if (!line.StartsWith("  => ", StringComparison.Ordinal) && !line.StartsWith("  L2 A/D at", StringComparison.Ordinal)) sb.AppendLine(line);
        sb.AppendLine();
        sb.AppendLine($"result   {r.Result}");
        sb.AppendLine($"rule     {r.Explanation.Rule}");
        var ept = r.EptChanges;
        if (r.GuestChanges.IsEmpty && ept.IsEmpty) sb.AppendLine("A/D      no entry changed");
        foreach (var u in r.GuestChanges) sb.AppendLine($"L2 A/D   L1 gpa {Hex.Format(u.Gpa)}: {Hex.Format(u.Before)} -> {Hex.Format(u.After)}");
        foreach (var u in ept) sb.AppendLine($"EPT A/D  L1 gpa {Hex.Format(u.Gpa)}: {Hex.Format(u.Before)} -> {Hex.Format(u.After)}");
        return sb.ToString().TrimEnd();
    }
}
