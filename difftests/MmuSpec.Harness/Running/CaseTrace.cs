using System.Collections.Immutable;
using System.Globalization;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.GuestWalk;
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
/// Runs any of the three case types (<see cref="WalkCase"/>, <see cref="TdpCase"/>, <see cref="ShadowCase"/>)
/// through its differential runner, for the code that handles cases without knowing their type:
/// counterexample files, <c>mmuspec replay</c> and its shrinker.
/// </summary>
public static class CaseRuns
{
    /// <summary>The first divergence (null when spec and impl agree), the rendered report, and how a divergence outside the steps is named.</summary>
    public static (Divergence? Divergence, string Report, string WhenNoStep) Run(object c) => c switch
    {
        WalkCase w => WalkDiff.Run(w) is var r ? (r.Divergence, r.Render(), "at boot") : default,
        TdpCase t => TdpDiff.Run(t) is var r ? (r.Divergence, r.Render(), "when the VM was destroyed") : default,
        ShadowCase s => ShadowDiff.Run(s) is var r ? (r.Divergence, r.Render(), "when the VM was destroyed") : default,
        _ => throw NotACase(c),
    };

    /// <summary>The steps a divergence's step counts in: the ops (walk, TDP), or setup and ops (shadow).</summary>
    public static int Steps(object c) => c switch
    {
        WalkCase w => w.Ops.Length,
        TdpCase t => t.Ops.Length,
        ShadowCase s => s.Length,
        _ => throw NotACase(c),
    };

    /// <summary>"13 ops, 9 setup writes" and the like: the size of a case in words.</summary>
    public static string Summary(object c) => c switch
    {
        WalkCase w => $"{Count(w.Ops.Length, "op")}, {Count(w.Setup.Length, "setup write")}",
        TdpCase t => $"{Count(t.Ops.Length, "op")}, VM {t.Config}",
        ShadowCase s => $"{Count(s.Setup.Length, "setup op")} and {Count(s.Ops.Length, "op")}, VM {s.Config}",
        _ => throw NotACase(c),
    };

    /// <summary>The case rendered with the divergent step (0-based, counted as the runner counts) marked.</summary>
    public static string Render(object c, int? highlightStep = null) => c switch
    {
        WalkCase w => w.Render(highlightStep),
        TdpCase t => t.Render(highlightStep),
        ShadowCase s => s.Render(highlightStep),
        _ => throw NotACase(c),
    };

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

    static ArgumentException NotACase(object c) => new($"{c.GetType().Name} is not a case type (WalkCase, TdpCase or ShadowCase)", nameof(c));

    /// <summary>
    /// Reruns the case step by step on fresh engines, each step's results side by side, up to the
    /// step where the differential runner says they diverge; then both sides' state after that step
    /// (at most <paramref name="maxStateRows"/> rows: every differing one first, then equal ones).
    /// </summary>
    public static CaseTrace Trace(object c, int maxStateRows = 48) => c switch
    {
        WalkCase w => TraceWalk(w, maxStateRows),
        TdpCase t => TraceTdp(t, maxStateRows),
        ShadowCase s => TraceShadow(s, maxStateRows),
        _ => throw NotACase(c),
    };

    static CaseTrace TraceWalk(WalkCase c, int maxStateRows)
    {
        var report = WalkDiff.Run(c);
        var d = report.Divergence;
        var rows = ImmutableArray.CreateBuilder<TraceRow>();
        var spec = c.BootSpec();
        ImplWalkEngine? impl = null;
        string implBoot;
        try { impl = ImplWalkEngine.Boot(c); implBoot = impl is null ? "#GP" : "ok"; }
        catch (Exception e) { implBoot = Threw(e); }
        using var implScope = impl;
        string specBoot = spec is null ? "#GP" : "ok";
        int stopAt = d?.Step ?? c.Ops.Length - 1;
        bool bootDiverges = d is { Step: < 0 };
        rows.Add(new TraceRow(bootDiverges, "boot", $"{c.Controls}, CR3={Hex.Format(c.Cr3)}", specBoot,
            Same(specBoot, implBoot, bootDiverges ? d : null)));
        (ImmutableArray<StateRow>, int, string?) state = ([], 0, null);
        if (spec is not null && impl is not null)
        {
            using var specEngine = new SpecEngine(spec);
            for (int i = 0; i <= stopAt && i < c.Ops.Length; i++)
            {
                var op = c.Ops[i];
                string sr = Describe(specEngine, op), ir = Describe(impl, op);
                bool diverges = d is not null && i == stopAt;
                rows.Add(new TraceRow(diverges, Step(i), op.ToString(), sr, Same(sr, ir, diverges ? d : null)));
            }
            if (d is not null && d.Step < c.Ops.Length)
                state = Limit(Capture(() => WalkState(specEngine.View(), impl.View())), maxStateRows);
        }
        else if (d is not null) state = ([], 0, "one side did not boot: there is no state to show");
        return new CaseTrace(c, d, report.Render(), rows.ToImmutable(), Tail(d, c.Ops.Length, "at boot"), state.Item1, state.Item2, state.Item3);
    }

    static CaseTrace TraceTdp(TdpCase c, int maxStateRows)
    {
        var report = TdpDiff.Run(c);
        var spec = TdpState.Create(c.Config);
        using var impl = new ImplTdpEngine(c.Config, new MmuSpec.Impl.Memory.NativePagePool());
        var rows = Steps(c.Ops, report.Divergence,
            op => { var s = spec.Step(op); spec = s.State; return TdpDiff.Describe(s.Result); },
            op => TdpDiff.Describe(impl.Step(op)));
        var state = report.Divergence is { Step: >= 0 }
            ? Limit(Capture(() => TdpStateRows(spec, impl.View())), maxStateRows) : ([], 0, null);
        return new CaseTrace(c, report.Divergence, report.Render(), rows, Tail(report.Divergence, c.Ops.Length, "when the VM was destroyed"),
            state.Item1, state.Item2, state.Item3);
    }

    static CaseTrace TraceShadow(ShadowCase c, int maxStateRows)
    {
        var report = ShadowDiff.Run(c);
        var spec = ShadowState.Create(c.Config);
        using var impl = new ImplShadowEngine(c.Config, new MmuSpec.Impl.Memory.NativePagePool());
        var rows = Steps([.. c.AllOps], report.Divergence,
            op => { var s = spec.Step(op); spec = s.State; return ShadowDiff.Describe(s.Result); },
            op => ShadowDiff.Describe(impl.Step(op)));
        var state = report.Divergence is { Step: >= 0 }
            ? Limit(Capture(() => ShadowStateRows(spec, impl.View())), maxStateRows) : ([], 0, null);
        return new CaseTrace(c, report.Divergence, report.Render(), rows, Tail(report.Divergence, c.Length, "when the VM was destroyed"),
            state.Item1, state.Item2, state.Item3);
    }

    /// <summary>An MMU case step by step, up to the divergent step (or to the end); a step that throws shows the exception.</summary>
    static ImmutableArray<TraceRow> Steps<TOp>(IReadOnlyList<TOp> ops, Divergence? d, Func<TOp, string> specStep, Func<TOp, string> implStep)
        where TOp : notnull
    {
        var rows = ImmutableArray.CreateBuilder<TraceRow>();
        int stopAt = d is { Step: >= 0 } ? d.Step : ops.Count - 1;
        for (int i = 0; i <= stopAt && i < ops.Count; i++)
        {
            string sr, ir;
            try { sr = specStep(ops[i]); } catch (Exception e) { sr = Threw(e); }
            try { ir = implStep(ops[i]); } catch (Exception e) { ir = Threw(e); }
            bool diverges = d is { Step: >= 0 } && i == stopAt;
            rows.Add(new TraceRow(diverges, Step(i), ops[i].ToString()!, sr, Same(sr, ir, diverges ? d : null)));
        }
        return rows.ToImmutable();
    }

    static string Step(int i) => (i + 1).ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// The impl column of a step: its result when it differs from the spec's, else what differs at
    /// the divergent step (<paramref name="divergence"/>, null for the others): only missed TLB
    /// flushes (TdpDiff's "TLB flush:" lines), or the state.
    /// </summary>
    public static string Same(string spec, string impl, Divergence? divergence) =>
        spec != impl ? impl
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

    static string Describe(IWalkEngine engine, Op op)
    {
        try { return WalkDiff.Describe(engine.Step(op)); }
        catch (Exception e) { return Threw(e); }
    }

    static string Threw(Exception e) => $"threw {e.GetType().Name}: {e.Message}";

    static (IReadOnlyList<StateRow>? Rows, string? Note) Capture(Func<IEnumerable<StateRow>> rows)
    {
        try { return (rows().ToList(), null); }
        catch (Exception e) { return (null, $"the state could not be read: {Threw(e)}"); }
    }

    static (ImmutableArray<StateRow>, int, string?) Limit((IReadOnlyList<StateRow>? Rows, string? Note) captured, int max)
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
