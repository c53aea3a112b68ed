using System.Collections.Immutable;
using System.Text;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Walk;

/// <summary>
/// One generated test case for the guest page walk: guest memory (memslots plus the setup writes
/// that build the page tables), the controls and CR3 the vCPU boots with, then the operations the
/// guest performs. Immutable and self-contained: spec and impl both start from it.
/// </summary>
public sealed record WalkCase(
    ImmutableArray<Memslot> Slots,
    PagingControls Controls,
    ulong Cr3,
    ImmutableArray<Op.WriteGuest> Setup,
    ImmutableArray<Op> Ops)
{
    /// <summary>The spec machine this case boots into, or null if booting raises #GP.</summary>
    public GuestMachine? BootSpec()
    {
        var memory = GuestMemory.FromSlots(Slots);
        foreach (var w in Setup) memory = memory.Write(w.Gpa, w.Value, w.Size);
        return GuestMachine.Boot(Controls, Cr3, memory);
    }

    public WalkCase WithOps(IEnumerable<Op> ops) => this with { Ops = ops.ToImmutableArray() };
    public WalkCase WithSetup(IEnumerable<Op.WriteGuest> setup) => this with { Setup = setup.ToImmutableArray() };
    public WalkCase WithControls(PagingControls controls) => this with { Controls = controls };

    public bool Equals(WalkCase? other) =>
        other is not null && Controls.Equals(other.Controls) && Cr3 == other.Cr3
        && Slots.SequenceEqual(other.Slots) && Setup.SequenceEqual(other.Setup) && Ops.SequenceEqual(other.Ops);
    public override int GetHashCode() => HashCode.Combine(Controls, Cr3, Setup.Length, Ops.Length);

    public override string ToString() => Render(highlightStep: null);

    /// <summary>The case as a kernel engineer reads it; <paramref name="highlightStep"/> (0-based) is marked.</summary>
    public string Render(int? highlightStep)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"boot: {Controls}, CR3={Bits.Hex(Cr3)}");
        sb.AppendLine($"memory: {string.Join(", ", Slots)}");
        sb.AppendLine($"setup ({Running.CaseRuns.Count(Setup.Length, "write")}):");
        foreach (var w in Setup) sb.AppendLine($"    {w}");
        sb.AppendLine($"ops ({Ops.Length}):");
        for (int i = 0; i < Ops.Length; i++)
            sb.AppendLine($"  {(i == highlightStep ? ">>" : "  ")}{i + 1,3}. {Ops[i]}");
        return sb.ToString().TrimEnd();
    }
}
