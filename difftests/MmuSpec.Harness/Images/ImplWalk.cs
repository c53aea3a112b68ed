using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>
/// Runs an access on the impl (<see cref="GuestVcpu.Access"/>). The impl reports only the outcome;
/// the A/D bits it set are found by comparing guest memory before and after the walk.
/// </summary>
public static class ImplWalk
{
    /// <summary>Most host memory the impl may allocate for a scenario's memslots (the spec needs none).</summary>
    public const ulong MaxPoolBytes = 1UL << 30;

    /// <summary>The entries (of <paramref name="entryBytes"/> bytes) whose value the walk changed, found by comparing memory.</summary>
    public delegate System.Collections.Immutable.ImmutableArray<EntryUpdate> ChangedEntries(GuestPhysicalMemory memory, int entryBytes);

    /// <summary>Walks a scenario with listed memory on the impl over fresh native pages.</summary>
    public static WalkReport Run(Scenario s)
    {
        if (s.Image is not null) throw new InvalidOperationException("an image scenario needs the image mapped for the impl: use Run(scenario, memory, changed)");
        ulong bytes = s.Slots.Aggregate(0UL, (sum, slot) => sum + (slot.Pages << 12));
        if (bytes > MaxPoolBytes)
            throw new InputException($"memslots total {Hex.Size(bytes)}: the impl engine backs them with host memory and allows at most {Hex.Size(MaxPoolBytes)}; give smaller memslots");

        using var pool = new NativePagePool();
        using var memory = new GuestPhysicalMemory(pool);
        foreach (var slot in s.Slots) memory.AddSlot(slot.BaseGfn, slot.Pages);
        foreach (var w in s.Memory)
            _ = s.EntryBytes == 8 ? memory.TryWrite64(w.Gpa, w.Value) : memory.TryWrite32(w.Gpa, (uint)w.Value);
        var snapshot = Enumerable.Range(0, memory.Slots.Count).Select(i => memory.SlotBytes(i).ToArray()).ToArray();
        return Run(s, memory, (m, entryBytes) =>
        {
            var changes = ImmutableArray.CreateBuilder<EntryUpdate>();
            for (int i = 0; i < m.Slots.Count; i++)
                EntryDiff.Compare(snapshot[i], m.SlotBytes(i), m.Slots[i].BaseGfn << 12, entryBytes, changes);
            return changes.ToImmutable();
        });
    }

    /// <summary>Walks on the impl over <paramref name="memory"/>, which must hold the scenario's memory.</summary>
    public static WalkReport Run(Scenario s, GuestPhysicalMemory memory, ChangedEntries changed)
    {
        var access = s.Access ?? throw new InputException("no access to walk: give \"access\": {\"gva\": ...} in the scenario, or --gva");
        // The spec decides what is bad input (CR3, PDPTEs, a truncated image), so both engines reject the same scenarios.
        var specMemory = s.BuildMemory();
        var cpu = s.Boot(specMemory);
        SpecWalk.CheckImageLongEnough(s, PageWalk.Explain(cpu, specMemory, access));

        var vcpu = new GuestVcpu(memory, ImplWalkEngine.ToImpl(s.Controls), s.Cr3);
        var outcome = vcpu.Access(access.Gva, ImplWalkEngine.ToImpl(access.Type), ImplWalkEngine.ToImpl(access.Privilege));
        var result = ImplWalkEngine.FromImpl(outcome);

        return new WalkReport("impl", s, access, cpu, result, changed(memory, s.EntryBytes), null);
    }
}
