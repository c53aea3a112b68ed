using System.Collections.Immutable;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>
/// One access walked by one engine: the outcome in the spec's vocabulary, the entries whose A/D
/// bits changed, and (spec only) the step-by-step explanation. The impl keeps no trace, so its
/// report has no <see cref="Explanation"/>; its changed entries come from comparing memory.
/// </summary>
public sealed record WalkReport(
    string Engine,
    Scenario Scenario,
    Access Access,
    CpuState Cpu,
    WalkResult Result,
    ImmutableArray<EntryUpdate> Changes,
    WalkExplanation? Explanation)
{
    public string Outcome => Result switch
    {
        WalkResult.Translated => "ok",
        WalkResult.PageFault => "page_fault",
        _ => "gp",
    };
}

/// <summary>Runs an access on the spec (<see cref="PageWalk.Explain"/>).</summary>
public static class SpecWalk
{
    public static WalkReport Run(Scenario s)
    {
        var access = s.Access ?? throw new InputException("no access to walk: give \"access\": {\"gva\": ...} in the scenario, or --gva");
        var memory = s.BuildMemory();
        var cpu = s.Boot(memory);
        var e = PageWalk.Explain(cpu, memory, access);
        CheckImageLongEnough(s, e);
        return new WalkReport("spec", s, access, cpu, e.Result, Coalesce(e.Updates, e.Steps), e);
    }

    /// <summary>
    /// One change per entry, in walk order (the order the walk first read the entries, as in
    /// <paramref name="steps"/>): the spec records A and D of a leaf as two writes, and writes all A
    /// bits before the leaf's D, so a table that maps itself would otherwise come out of order.
    /// Both engines report this.
    /// </summary>
    public static ImmutableArray<EntryUpdate> Coalesce(ImmutableArray<EntryUpdate> updates, ImmutableArray<WalkStep> steps)
    {
        var merged = new Dictionary<ulong, EntryUpdate>();
        foreach (var u in updates)
            merged[u.Gpa] = merged.TryGetValue(u.Gpa, out var first) ? first with { After = u.After } : u;
        var walkOrder = steps.Select(s => s.EntryGpa).OfType<ulong>().Distinct();
        return walkOrder.Where(merged.ContainsKey).Select(g => merged[g]).Where(u => u.Before != u.After).ToImmutableArray();
    }

    /// <summary>
    /// A walk over an image that ran off its end is a truncated dump, not a guest event: the
    /// spec's answer (KVM treats the table as not present) would mislead, so it is bad input.
    /// </summary>
    public static void CheckImageLongEnough(Scenario s, WalkExplanation e)
    {
        if (s.Image is not { } image || e.Steps.IsEmpty) return;
        var last = e.Steps[^1];
        if (last.EntryGpa is { } gpa && !e.MemoryAfter.IsBacked(gpa, s.EntryBytes))
            throw new InputException(Scenario.TooShort(image, last.EntryName, gpa));
    }
}

/// <summary>Finds the entries whose value changed between two copies of a memslot.</summary>
public static class EntryDiff
{
    const int Page = 4096;

    /// <summary>
    /// Adds an <see cref="EntryUpdate"/> for every <paramref name="entryBytes"/>-wide word that differs
    /// between <paramref name="before"/> and <paramref name="after"/> (same length), which start at
    /// <paramref name="baseGpa"/>. Compares page by page, so a large unchanged image costs a memcmp.
    /// </summary>
    public static void Compare(ReadOnlySpan<byte> before, ReadOnlySpan<byte> after, ulong baseGpa, int entryBytes, ImmutableArray<EntryUpdate>.Builder into)
    {
        if (before.Length != after.Length) throw new ArgumentException("before and after differ in length", nameof(after));
        for (int page = 0; page < before.Length; page += Page)
        {
            int len = Math.Min(Page, before.Length - page);
            var b = before.Slice(page, len);
            var a = after.Slice(page, len);
            if (b.SequenceEqual(a)) continue;
            for (int off = 0; off + entryBytes <= len; off += entryBytes)
            {
                ulong bv = entryBytes == 8 ? BitConverter.ToUInt64(b[off..]) : BitConverter.ToUInt32(b[off..]);
                ulong av = entryBytes == 8 ? BitConverter.ToUInt64(a[off..]) : BitConverter.ToUInt32(a[off..]);
                if (bv != av) into.Add(new EntryUpdate(baseGpa + (ulong)(page + off), bv, av));
            }
        }
    }
}
