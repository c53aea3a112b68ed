using System.Collections.Immutable;
using System.Globalization;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Tdp;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Running;

/// <summary>One line of a trace: a step (or "boot"), its operation and each side's result.</summary>
/// <param name="Divergent">The step where spec and impl first differ.</param>
/// <param name="Impl">"same" when the impl's result is the spec's.</param>
public sealed record TraceRow(bool Divergent, string Step, string Op, string Spec, string Impl);

/// <summary>One item of state (a register, a slot, a page, an entry, a memory word) on both sides; "-" where a side has none.</summary>
public sealed record StateRow(string Item, string Spec, string Impl)
{
    public bool Differs => Spec != Impl;
}

/// <summary>
/// A case rerun step by step on spec and impl: the trace up to the first divergence, the diff report,
/// and a dump of both sides' state right after the divergent step (empty when they agree).
/// </summary>
public sealed record CaseTrace(
    object Case, Divergence? Divergence, string Report, ImmutableArray<TraceRow> Rows, string Tail,
    ImmutableArray<StateRow> State, int StateRowsHidden, string? StateNote)
{
    public bool Agreed => Divergence is null;
}

/// <summary>
/// Cases of any family, for the code that handles them without knowing their type: counterexample
/// files, <c>mmuspec replay</c> and its shrinker. Each call finds the case's family in
/// <see cref="Families"/> and runs it through the one lockstep runner (<see cref="Lockstep"/>).
/// </summary>
public static class CaseRuns
{
    /// <summary>The first divergence (null when spec and impl agree), the rendered report, and how a divergence outside the steps is named.</summary>
    public static (Divergence? Divergence, string Report, string WhenNoStep) Run(object c)
    {
        var family = Families.For(c);
        var report = family.Run(c);
        return (report.Divergence, report.Render(), family.WhenNoStep);
    }

    /// <summary>The steps a divergence's step counts in: the ops (walk, TDP), or setup and ops (shadow).</summary>
    public static int Steps(object c) => Families.For(c).StepCount(c);

    /// <summary>"13 ops, 9 setup writes" and the like: the size of a case in words.</summary>
    public static string Summary(object c) => Families.For(c).Summary(c);

    /// <summary>The case rendered with the divergent step (0-based, counted as the runner counts) marked.</summary>
    public static string Render(object c, int? highlightStep = null) => Families.For(c).Render(c, highlightStep);

    /// <summary>"all 3 steps agree", "the one step agrees".</summary>
    public static string StepsAgree(int n) => n == 1 ? "the one step agrees" : $"all {n.ToString(CultureInfo.InvariantCulture)} steps agree";

    /// <summary>"spec and impl agree on all 3 steps", "... on the one step".</summary>
    public static string AgreeOnAll(int n) =>
        $"spec and impl agree on {(n == 1 ? "the one step" : $"all {n.ToString(CultureInfo.InvariantCulture)} steps")}";

    /// <summary>"1 op", "3 ops", "1 entry", "2 entries".</summary>
    public static string Count(long n, string what) => n is >= int.MinValue and <= int.MaxValue ? Count((int)n, what)
        : $"{n.ToString(CultureInfo.InvariantCulture)} {(what.EndsWith('y') ? what[..^1] + "ies" : what + "s")}";

    /// <summary>"1 op", "3 ops", "1 entry", "2 entries".</summary>
    public static string Count(int n, string what) =>
        $"{n.ToString(CultureInfo.InvariantCulture)} {(n == 1 ? what : what.EndsWith('y') ? what[..^1] + "ies" : what + "s")}";

    /// <summary>
    /// The case run step by step on fresh engines, each step's results side by side, up to the step
    /// where the lockstep runner says they diverge (the rows are its records, boot included, the end
    /// check in the tail); then both sides' state after that step (at most <paramref name="maxStateRows"/>
    /// rows: every differing one first, then equal ones).
    /// </summary>
    public static CaseTrace Trace(object c, int maxStateRows = 48) => Trace(Families.For(c), c, maxStateRows);

    /// <summary>The trace of <paramref name="c"/> as <paramref name="family"/> runs it (a test may pass a family of its own).</summary>
    public static CaseTrace Trace(IDiffFamily family, object c, int maxStateRows = 48)
    {
        var report = family.Run(c, maxStateRows);
        var d = report.Divergence;
        var rows = report.Records.Where(r => r.Kind != StepKind.End)
            .Select(r => new TraceRow(r.Diverges, r.Kind == StepKind.Boot ? "boot" : Step(r.Index), r.Op, r.Spec,
                r.Allowance is { } why ? $"{r.Impl} (allowed: {why})" : Same(r.ResultsDiffer, r.Impl, r.Diverges ? d : null)))
            .ToImmutableArray();
        return new CaseTrace(c, d, report.Render(), rows, Tail(d, family.StepCount(c), family.WhenNoStep),
            report.State, report.StateRowsHidden, report.StateNote);
    }

    static string Step(int i) => (i + 1).ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// The impl column of a step: its result when it differs from the spec's, else what differs at
    /// the divergent step (<paramref name="divergence"/>, null for the others): only missed TLB
    /// flushes (TdpDiff's "TLB flush:" lines), or the state.
    /// </summary>
    public static string Same(string spec, string impl, Divergence? divergence) => Same(spec != impl, impl, divergence);

    static string Same(bool resultsDiffer, string impl, Divergence? divergence) =>
        resultsDiffer ? impl
        : divergence is null ? "same"
        : divergence.StateDifferences.Length > 0 && divergence.StateDifferences.All(l => l.StartsWith(TdpDiff.FlushLinePrefix, StringComparison.Ordinal))
            ? "same result, TLB flush missed"
            : "same result, state differs";

    static string Tail(Divergence? d, int steps, string whenNoStep) => d switch
    {
        null => StepsAgree(steps),
        { Step: < 0 } when whenNoStep == "at boot" => "stopped at the first divergence (at boot)",
        { Step: < 0 } => $"{StepsAgree(steps)}; then, {whenNoStep}: spec {d.SpecResult} / impl {d.ImplResult}",
        _ when d.Step >= steps => $"{StepsAgree(steps)}; then, {d.Op}: spec {d.SpecResult} / impl {d.ImplResult}",
        _ => $"stopped at the first divergence (step {d.Step + 1} of {steps})",
    };

    internal static (IReadOnlyList<StateRow>? Rows, string? Note) Capture(Func<IEnumerable<StateRow>> rows)
    {
        try { return (rows().ToList(), null); }
        catch (Exception e) { return (null, $"the state could not be read: {Lockstep.Threw(e)}"); }
    }

    internal static (ImmutableArray<StateRow>, int, string?) Limit((IReadOnlyList<StateRow>? Rows, string? Note) captured, int max)
    {
        if (captured.Rows is not { } rows) return ([], 0, captured.Note);
        var (kept, hidden) = LimitRows(rows, max);
        return (kept, hidden, null);
    }

    /// <summary>At most <paramref name="max"/> rows: every differing one first, then equal ones from the top; the rows keep their order.</summary>
    public static (ImmutableArray<StateRow> Rows, int Hidden) LimitRows(IReadOnlyList<StateRow> rows, int max)
    {
        if (rows.Count <= max) return ([.. rows], 0);
        var keep = new HashSet<int>(Enumerable.Range(0, rows.Count).Where(i => rows[i].Differs).Take(max));
        for (int i = 0; i < rows.Count && keep.Count < max; i++) keep.Add(i);
        return ([.. Enumerable.Range(0, rows.Count).Where(keep.Contains).Select(i => rows[i])], rows.Count - keep.Count);
    }

    // ---- both sides' state as rows, in the spec's vocabulary ----

    static string Or(object? value, string none = "-") => value?.ToString() ?? none;

    static IEnumerable<StateRow> Keyed<TKey, TValue>(string label, IReadOnlyDictionary<TKey, TValue> spec, IReadOnlyDictionary<TKey, TValue> impl,
        Func<TKey, string> item, Func<TValue, string> show) where TKey : notnull =>
        spec.Keys.Union(impl.Keys).Order().Select(k => new StateRow($"{label}{item(k)}",
            spec.TryGetValue(k, out var s) ? show(s) : "-", impl.TryGetValue(k, out var i) ? show(i) : "-"));

    static ImmutableSortedDictionary<int, T> Empty<T>() => ImmutableSortedDictionary<int, T>.Empty;

    /// <summary>A memslot without the "slot N: " its row already names.</summary>
    static string Slot(HostMemslot s)
    {
        string text = s.ToString();
        int colon = text.IndexOf(": ", StringComparison.Ordinal);
        return colon >= 0 ? text[(colon + 2)..] : text;
    }

    static string Bitmap(IEnumerable<ulong> gfns) => $"[{string.Join(", ", gfns.Select(Bits.Hex))}]";

    /// <summary>The vCPU's paging state and every non-zero word of guest memory (page tables, mostly).</summary>
    public static IEnumerable<StateRow> WalkState(MachineView spec, MachineView impl)
    {
        yield return new StateRow("controls", spec.Cpu.Controls.ToString(), impl.Cpu.Controls.ToString());
        yield return new StateRow("CR3", Bits.Hex(spec.Cpu.Cr3), Bits.Hex(impl.Cpu.Cr3));
        if (spec.Cpu.Controls.Mode == PagingMode.Pae || impl.Cpu.Controls.Mode == PagingMode.Pae)
            for (int k = 0; k < 4; k++)
                yield return new StateRow($"PDPTE{k}", Bits.Hex(spec.Cpu.Pdptes[k]), Bits.Hex(impl.Cpu.Pdptes[k]));
        foreach (var row in Keyed("memory ", spec.Memory, impl.Memory, gpa => $"[{Bits.Hex(gpa)}]", Bits.Hex)) yield return row;
    }

    /// <summary>Roots, guest paging, slots, dirty bitmaps, every table page and entry, then host memory.</summary>
    public static IEnumerable<StateRow> TdpStateRows(TdpState spec, TdpState impl)
    {
        yield return new StateRow("max page size", spec.MaxPageSize.Name(), impl.MaxPageSize.Name());
        yield return new StateRow("direct root", Or(spec.DirectRoot), Or(impl.DirectRoot));
        yield return new StateRow("mirror root", Or(spec.MirrorRoot), Or(impl.MirrorRoot));
        yield return new StateRow("guest paging", Or(spec.GuestCpu, "off"), Or(impl.GuestCpu, "off"));
        foreach (var row in Keyed("slot ", spec.Slots, impl.Slots, id => id.ToString(CultureInfo.InvariantCulture), Slot)) yield return row;
        foreach (var row in Keyed("dirty bitmap of slot ", spec.DirtyBitmaps, impl.DirtyBitmaps, id => id.ToString(CultureInfo.InvariantCulture), Bitmap)) yield return row;
        foreach (var key in spec.Pages.Keys.Union(impl.Pages.Keys).Order())
        {
            var sp = spec.Pages.GetValueOrDefault(key); var ip = impl.Pages.GetValueOrDefault(key);
            yield return new StateRow($"page {key}", sp is null ? "-" : Count(sp.Entries.Count, "entry"), ip is null ? "-" : Count(ip.Entries.Count, "entry"));
            foreach (var row in Keyed($"page {key} ", sp?.Entries ?? Empty<Spte>(), ip?.Entries ?? Empty<Spte>(), i => $"[{i}]", e => e.ToString())) yield return row;
        }
        foreach (var row in Keyed("host memory ", spec.HostMemory, impl.HostMemory, hpa => $"[{Bits.Hex(hpa)}]", Bits.Hex)) yield return row;
    }

    /// <summary>Cached roots, guest paging, slots, dirty bitmaps, every shadow page and entry, then host memory.</summary>
    public static IEnumerable<StateRow> ShadowStateRows(ShadowState spec, ShadowState impl)
    {
        yield return new StateRow("current root", Or(spec.Roots.Current, "none"), Or(impl.Roots.Current, "none"));
        for (int i = 0; i < Math.Max(spec.Roots.Previous.Count, impl.Roots.Previous.Count); i++)
            yield return new StateRow($"previous root {i}",
                i < spec.Roots.Previous.Count ? spec.Roots.Previous[i].ToString() : "-",
                i < impl.Roots.Previous.Count ? impl.Roots.Previous[i].ToString() : "-");
        yield return new StateRow("guest paging", Or(spec.GuestCpu, "off") + (spec.GuestPcide ? " PCIDE" : ""),
            Or(impl.GuestCpu, "off") + (impl.GuestPcide ? " PCIDE" : ""));
        foreach (var row in Keyed("slot ", spec.Slots, impl.Slots, id => id.ToString(CultureInfo.InvariantCulture), Slot)) yield return row;
        foreach (var row in Keyed("dirty bitmap of slot ", spec.DirtyBitmaps, impl.DirtyBitmaps, id => id.ToString(CultureInfo.InvariantCulture), Bitmap)) yield return row;
        foreach (var key in spec.Pages.Keys.Union(impl.Pages.Keys).Order())
        {
            var sp = spec.Pages.GetValueOrDefault(key); var ip = impl.Pages.GetValueOrDefault(key);
            static string Page(ShadowPage p) =>
                $"{(p.Unsync ? "unsync" : "sync")}{(p.WriteFlooding != 0 ? $", flooding {p.WriteFlooding}" : "")}, {Count(p.Entries.Count, "entry")}";
            yield return new StateRow($"page {key}", sp is null ? "-" : Page(sp), ip is null ? "-" : Page(ip));
            foreach (var row in Keyed($"page {key} ", sp?.Entries ?? Empty<ShadowEntry>(), ip?.Entries ?? Empty<ShadowEntry>(), i => $"[{i}]", e => e.ToString())) yield return row;
        }
        foreach (var row in Keyed("host memory ", spec.HostMemory, impl.HostMemory, hpa => $"[{Bits.Hex(hpa)}]", Bits.Hex)) yield return row;
    }
}
