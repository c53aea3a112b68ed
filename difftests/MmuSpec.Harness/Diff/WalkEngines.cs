using System.Collections.Immutable;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Diff;

/// <summary>
/// The state both sides are compared on after every step, in the spec's vocabulary: the vCPU's
/// paging state and every non-zero 8-byte word of guest memory (so every byte is compared).
/// </summary>
public sealed record MachineView(CpuState Cpu, ImmutableSortedDictionary<ulong, ulong> Memory)
{
    /// <summary>Human-readable differences, empty when the views are equal.</summary>
    public static ImmutableArray<string> Differences(MachineView spec, MachineView impl, int max = 12) =>
        Differences(spec.Cpu, spec.Memory, impl.Cpu, impl.Memory, max);

    /// <summary>The same with the impl's memory as its non-zero words ascending by gpa (no map built for one comparison).</summary>
    public static ImmutableArray<string> Differences(CpuState s, ImmutableSortedDictionary<ulong, ulong> specMemory,
        CpuState i, IEnumerable<KeyValuePair<ulong, ulong>> implMemory, int max = 12)
    {
        var diffs = ImmutableArray.CreateBuilder<string>();
        if (!s.Controls.Equals(i.Controls)) diffs.Add($"controls: spec {s.Controls} / impl {i.Controls}");
        if (s.Cr3 != i.Cr3) diffs.Add($"CR3: spec {Bits.Hex(s.Cr3)} / impl {Bits.Hex(i.Cr3)}");
        if (s.Controls.Mode == PagingMode.Pae)
            for (int k = 0; k < 4; k++)
                if (s.Pdptes[k] != i.Pdptes[k]) diffs.Add($"PDPTE{k}: spec {Bits.Hex(s.Pdptes[k])} / impl {Bits.Hex(i.Pdptes[k])}");
        // The same map on both sides: no word differs.
        if (ReferenceEquals(specMemory, implMemory)) return diffs.ToImmutable();
        foreach (var (gpa, sv, iv) in SortedMerge.Outer(specMemory, implMemory, specMemory.KeyComparer))
        {
            if (sv == iv) continue;
            if (diffs.Count >= max) { diffs.Add("..."); break; }
            diffs.Add($"memory [{Bits.Hex(gpa)}]: spec {Bits.Hex(sv)} / impl {Bits.Hex(iv)} (xor {Bits.Hex(sv ^ iv)})");
        }
        return diffs.ToImmutable();
    }
}

/// <summary>One side of a differential run: it takes operations and shows its state.</summary>
public interface IWalkEngine : IDisposable
{
    string Name { get; }
    OpResult Step(Op op);
    MachineView View();
}

/// <summary>The spec as an engine: a pure machine threaded through the steps.</summary>
public sealed class SpecEngine(GuestMachine machine) : IWalkEngine
{
    public string Name => "spec";
    public GuestMachine Machine { get; private set; } = machine;

    public OpResult Step(Op op)
    {
        var stepped = Machine.Step(op);
        Machine = stepped.Machine;
        return stepped.Result;
    }

    public MachineView View() => new(Machine.Cpu, Machine.Memory.Written);
    public void Dispose() { }
}
