using MmuSpec.Spec.Memory;
using System.Collections.Immutable;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;
using MmuSpec.Tests.Cli;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// A registered family wrapped with a broken impl: at one step its result is replaced, or a check
/// reports a state difference, or it leaves a native page allocated. Everything else is the real family.
/// </summary>
sealed class BrokenFamily<TCase, TOp, TResult>(DiffFamily<TCase, TOp, TResult> real, int atStep,
    Func<TResult, TResult>? wrongResult = null, string? stateLine = null, bool leakPage = false)
    : DiffFamily<TCase, TOp, TResult>
    where TCase : notnull where TOp : notnull where TResult : class
{
    readonly int atStep = atStep;
    readonly Func<TResult, TResult>? wrongResult = wrongResult;
    readonly string? stateLine = stateLine;

    public override string Name => real.Name;
    public override string WhenNoStep => real.WhenNoStep;
    public override IReadOnlyList<string> Situations => real.Situations;
    public override IReadOnlyList<TOp> Steps(TCase c) => real.Steps(c);
    public override int StepCount(TCase c) => real.StepCount(c);
    public override TResult Comparable(TResult r) => real.Comparable(r);
    public override string Describe(TResult r) => real.Describe(r);
    public override (string? Op, string Freed, string Leaked) EndOfCase(long pagesInUse) => real.EndOfCase(pagesInUse);
    public override void Classify(TCase c, Action<string> hit) => real.Classify(c, hit);
    public override string Summary(TCase c) => real.Summary(c);
    public override string Render(TCase c, int? highlightStep) => real.Render(c, highlightStep);
    public override void WriteJson(Utf8JsonWriter w, TCase c) => real.WriteJson(w, c);
    public override TCase ReadJson(JsonElement e, string path) => real.ReadJson(e, path);
    public override void CheckRules(TCase c, string path) => real.CheckRules(c, path);
    public override IReadOnlyList<OpList<TCase>> OpLists => real.OpLists;

    public override LockstepSession<TOp, TResult> Open(TCase c, NativePagePool pool)
    {
        if (leakPage) unsafe { pool.AllocatePages(1); }
        return new Session(this, real.Open(c, pool));
    }

    sealed class Session(BrokenFamily<TCase, TOp, TResult> f, LockstepSession<TOp, TResult> inner) : LockstepSession<TOp, TResult>
    {
        int step = -1;
        public override BootOutcome? Boot() => inner.Boot();
        public override TResult SpecStep(TOp op) { step++; return inner.SpecStep(op); }
        public override TResult ImplStep(TOp op) =>
            step == f.atStep && f.wrongResult is { } wrong ? wrong(inner.ImplStep(op)) : inner.ImplStep(op);
        public override ImmutableArray<string> StateDifferences() =>
            step == f.atStep && f.stateLine is { } line ? [line] : inner.StateDifferences();
        public override ImmutableArray<string> ResultDifference(TOp op, TResult? spec, TResult? impl) => inner.ResultDifference(op, spec, impl);
        public override IEnumerable<ImmutableArray<string>> Checks(TOp op, TResult spec) =>
            step == f.atStep && f.stateLine is { } line ? [[line]] : inner.Checks(op, spec);
        public override IEnumerable<StateRow> StateRows() => inner.StateRows();
        public override string? NoState => inner.NoState;
        public override void Dispose() => inner.Dispose();
    }
}

/// <summary>
/// The one lockstep runner: the comparator's verdict, the failure report, the counterexample's
/// recorded divergence and replay's trace are all read from the same records; the results compare
/// structurally; the families are registered once and found by case type and by JSON kind.
/// </summary>
public sealed class LockstepTests
{
    static T Drawn<T>(string property, int minSteps) where T : notnull =>
        CaseSamples.Draw(DiffProperties.Find(property), 30).Cast<T>().First(c => Families.Of<T>().StepCount(c) >= minSteps);

    /// <summary>The trace's rows are the runner's records, and its divergent row is the report's first divergence.</summary>
    static void AssertTraceIsTheRecords(IDiffFamily family, object c, int step, bool boot)
    {
        var report = family.Run(c);
        var trace = CaseRuns.Trace(family, c);
        var d = Assert.IsType<Divergence>(report.Divergence);
        Assert.Equal(step, d.Step);
        Assert.Equal(report.Render(), trace.Report);
        Assert.False(report.Agreed);
        Assert.False(trace.Agreed);

        // One row per record (the end record is never reached after a divergence), the last one divergent.
        var records = report.Records;
        Assert.Equal(step + 1 + (boot ? 1 : 0), records.Length);
        Assert.Equal(records.Length, trace.Rows.Length);
        for (int i = 0; i < records.Length; i++)
        {
            Assert.Equal(records[i].Op, trace.Rows[i].Op);
            Assert.Equal(records[i].Spec, trace.Rows[i].Spec);
            Assert.Equal(records[i].Diverges, trace.Rows[i].Divergent);
        }
        Assert.Equal(new[] { trace.Rows.Length - 1 }, trace.Rows.Select((r, i) => (r, i)).Where(x => x.r.Divergent).Select(x => x.i));
        var divergent = trace.Rows[^1];
        Assert.Equal((step + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), divergent.Step);
        Assert.Equal(d.Op, divergent.Op);
        Assert.Equal(d.SpecResult, divergent.Spec);
        Assert.Contains($"first divergence: step {step + 1}: {d.Op}", trace.Report, StringComparison.Ordinal);
        Assert.Equal($"stopped at the first divergence (step {step + 1} of {family.StepCount(c)})", trace.Tail);

        // The counterexample file records the same divergence.
        var recorded = RecordedDivergence.From(d, family.WhenNoStep, family.StepCount(c));
        Assert.Equal((step + 1, d.Op, divergent.Spec), (recorded.Step, recorded.Op, recorded.Spec));
    }

    [Fact]
    public void A_wrong_walk_result_is_the_traces_divergent_row_and_the_reports_first_divergence()
    {
        var c = Drawn<WalkCase>("walk-long4", minSteps: 4);
        Assert.True(Families.Walk.Run(c).Agreed);
        var wrong = new OpResult.Walked(new WalkResult.PageFault((PageFaultErrorCode)0x7FFF));
        var family = new BrokenFamily<WalkCase, Op, OpResult>(Families.Walk, atStep: 2, wrongResult: _ => wrong);
        AssertTraceIsTheRecords(family, c, step: 2, boot: true);
        var trace = CaseRuns.Trace(family, c);
        Assert.Equal(Families.Walk.Describe(wrong), trace.Rows[^1].Impl);
        Assert.Equal(Families.Walk.Describe(wrong), family.Run(c).Divergence!.ImplResult);
        Assert.Equal("boot", trace.Rows[0].Step);
    }

    [Fact]
    public void A_wrong_TDP_result_is_the_traces_divergent_row_and_the_reports_first_divergence()
    {
        var c = Drawn<TdpCase>("tdp-ept", minSteps: 5);
        Assert.True(Families.Tdp.Run(c).Agreed);
        var family = new BrokenFamily<TdpCase, TdpOp, VmResult>(Families.Tdp, atStep: 3, wrongResult: _ => new TdpResult.MmioExit(0xDEAD_B000));
        AssertTraceIsTheRecords(family, c, step: 3, boot: false);
        Assert.Equal("MMIO exit at gpa 0xdeadb000", CaseRuns.Trace(family, c).Rows[^1].Impl, ignoreCase: true);
    }

    [Fact]
    public void A_state_difference_after_agreeing_results_is_reported_and_traced_as_such()
    {
        var c = Drawn<ShadowCase>("shadow-long4", minSteps: 4);
        Assert.True(Families.Shadow.Run(c).Agreed);
        var family = new BrokenFamily<ShadowCase, ShadowOp, VmResult>(Families.Shadow, atStep: 3, stateLine: "page 0x1: spec sync / impl unsync");
        AssertTraceIsTheRecords(family, c, step: 3, boot: false);
        var trace = CaseRuns.Trace(family, c);
        Assert.Equal("same result, state differs", trace.Rows[^1].Impl);
        Assert.Equal(new[] { "page 0x1: spec sync / impl unsync" }, trace.Divergence!.StateDifferences.ToArray());
        Assert.Contains("    page 0x1: spec sync / impl unsync", trace.Report, StringComparison.Ordinal);
        Assert.NotEmpty(trace.State);      // both sides' state after the step, from the same session
    }

    [Fact]
    public void A_page_left_in_the_pool_is_the_end_record_numbered_as_each_family_numbers_it()
    {
        var walkCase = Drawn<WalkCase>("walk-pae", minSteps: 2);
        var walk = new BrokenFamily<WalkCase, Op, OpResult>(Families.Walk, atStep: -2, leakPage: true);
        var w = walk.Run(walkCase);
        Assert.Equal(StepKind.End, w.Records[^1].Kind);
        Assert.Equal(new Divergence(walkCase.Ops.Length, "destroying the guest memory", "all pages freed", "1 pages still allocated", []),
            w.Divergence! with { StateDifferences = [] });
        Assert.Equal($"all {walkCase.Ops.Length} steps agree; then, destroying the guest memory: spec all pages freed / impl 1 pages still allocated",
            CaseRuns.Trace(walk, walkCase).Tail);

        var tdpCase = Drawn<TdpCase>("tdp-stage2", minSteps: 2);
        var tdp = new BrokenFamily<TdpCase, TdpOp, VmResult>(Families.Tdp, atStep: -2, leakPage: true);
        var t = CaseRuns.Trace(tdp, tdpCase);
        Assert.Equal((-1, (string?)null), (t.Divergence!.Step, t.Divergence.Op));
        Assert.Equal(tdpCase.Ops.Length, t.Rows.Length);
        Assert.DoesNotContain(t.Rows, r => r.Divergent);
        Assert.Equal($"all {tdpCase.Ops.Length} steps agree; then, when the VM was destroyed: spec all table pages freed / impl 1 pages still allocated after the VM was destroyed", t.Tail);
        Assert.Contains("first divergence: when the VM was destroyed", t.Report, StringComparison.Ordinal);
    }

    [Fact]
    public void The_result_comparison_ignores_a_rejections_reason_and_a_guest_GPs_reason_and_nothing_else()
    {
        var gp = new WalkResult.GeneralProtection(GpReason.NonCanonical);
        var otherGp = new WalkResult.GeneralProtection(GpReason.Cr3ReservedBits);
        var pf = new WalkResult.PageFault((PageFaultErrorCode)0x5);

        // Walk: a #GP from MOV CR3 or a control change compares without its reason; a walk's own #GP keeps it.
        var walk = Families.Walk;
        Assert.True(walk.SameResult(new OpResult.GeneralProtection(GpReason.Cr3ReservedBits), new OpResult.GeneralProtection(GpReason.NonCanonical)));
        Assert.False(walk.SameResult(new OpResult.Walked(gp), new OpResult.Walked(otherGp)));
        Assert.False(walk.SameResult(new OpResult.Walked(pf), new OpResult.Walked(new WalkResult.PageFault((PageFaultErrorCode)0x7))));
        Assert.False(walk.SameResult(OpResult.Completed.Instance, new OpResult.GeneralProtection(GpReason.NonCanonical)));
        Assert.True(walk.SameResult(new OpResult.Walked(pf), new OpResult.Walked(new WalkResult.PageFault((PageFaultErrorCode)0x5))));

        var tdp = Families.Tdp;
        Assert.True(tdp.SameResult(new VmResult.Rejected("no such slot"), new VmResult.Rejected("EINVAL")));
        Assert.True(tdp.SameResult(new TdpResult.GuestFault(gp), new TdpResult.GuestFault(otherGp)));
        Assert.False(tdp.SameResult(new TdpResult.GuestFault(gp), new TdpResult.GuestFault(pf)));
        Assert.False(tdp.SameResult(new TdpResult.GuestFault(pf), new TdpResult.GuestFault(new WalkResult.PageFault((PageFaultErrorCode)0x4))));
        Assert.False(tdp.SameResult(new VmResult.Rejected("x"), new TdpResult.MmioExit(0)));
        Assert.False(tdp.SameResult(new TdpResult.Mapped(0x1000, PageSize.Size4K, true), new TdpResult.Mapped(0x1000, PageSize.Size4K, false)));
        Assert.False(tdp.SameResult(new TdpResult.Mapped(0x1000, PageSize.Size4K, true), new TdpResult.Mapped(0x2000, PageSize.Size4K, true)));
        Assert.True(tdp.SameResult(new TdpResult.DirtyLog([1, 2]), new TdpResult.DirtyLog([1, 2])));
        Assert.False(tdp.SameResult(new TdpResult.DirtyLog([1, 2]), new TdpResult.DirtyLog([1, 3])));

        var shadow = Families.Shadow;
        Assert.True(shadow.SameResult(new VmResult.Rejected("a"), new VmResult.Rejected("b")));
        Assert.True(shadow.SameResult(new ShadowResult.GuestFault(gp), new ShadowResult.GuestFault(otherGp)));
        Assert.False(shadow.SameResult(new ShadowResult.GuestFault(gp), new ShadowResult.GuestFault(pf)));
        Assert.False(shadow.SameResult(new ShadowResult.Translated(0x1000, 0x5000, false), new ShadowResult.Translated(0x1000, 0x6000, false)));
        Assert.False(shadow.SameResult(new ShadowResult.MmioExit(0x1000), new ShadowResult.MmioExit(0x2000)));
        Assert.False(shadow.SameResult(new ShadowResult.DirtyLog([1]), new ShadowResult.DirtyLog([])));

        // The comparison and the printed text agree: equal results print alike.
        Assert.Equal(tdp.Describe(new VmResult.Rejected("a")), tdp.Describe(new VmResult.Rejected("b")));
        Assert.Equal(shadow.Describe(new ShadowResult.GuestFault(gp)), shadow.Describe(new ShadowResult.GuestFault(otherGp)));
    }

    [Fact]
    public void A_side_that_throws_agrees_with_nothing()
    {
        var c = Drawn<TdpCase>("tdp-ept", minSteps: 3);
        var family = new BrokenFamily<TdpCase, TdpOp, VmResult>(Families.Tdp, atStep: 1, wrongResult: _ => throw new InvalidOperationException("boom"));
        var d = family.Run(c).Divergence!;
        Assert.Equal(1, d.Step);
        Assert.Equal("threw InvalidOperationException: boom", d.ImplResult);
    }

    [Fact]
    public void Each_family_is_registered_once_and_found_by_case_type_and_by_JSON_kind()
    {
        Assert.Equal(new[] { "walk", "tdp", "shadow", "tdp-concurrent", "nested-ept" }, Families.All.Select(f => f.Name));
        Assert.Same(Families.Walk, Families.ForCaseType(typeof(WalkCase)));
        Assert.Same(Families.Tdp, Families.For(CaseSamples.EveryTdpOp()));
        Assert.Same(Families.Shadow, Families.Of<ShadowCase>());
        foreach (var f in Families.All)
        {
            Assert.Same(f, Families.Named(f.Name));
            Assert.Same(f, Families.ForCaseType(f.CaseType));
            Assert.Equal(f.Name, CaseJson.KindOf(f.CaseType));
            Assert.Equal(f.Situations, DiffProperties.FamilySituations(f.Name));
        }
        object[] cases = [CaseSamples.EveryWalkOp(), CaseSamples.EveryTdpOp(), CaseSamples.EveryShadowOp()];
        foreach (var c in cases)
        {
            using var doc = JsonDocument.Parse(CaseJson.ToJson(c));
            Assert.Same(Families.Named(doc.RootElement.GetProperty("kind").GetString()!), Families.For(c));
            Assert.Equal(c, CaseJson.Parse(CaseJson.ToJson(c)));
        }
        Assert.Null(Families.Named("nested-npt"));
        Assert.Throws<ArgumentException>(() => Families.For("not a case"));
        var e = Assert.Throws<InputException>(() => CaseJson.Parse("{\"kind\": \"nested-npt\"}"));
        Assert.Equal("kind: unknown case kind 'nested-npt' (expected walk, tdp, shadow, tdp-concurrent, nested-ept)", e.Message);

        // Registering a family twice, under its name or its case type, is refused.
        Assert.Throws<InvalidOperationException>(() => Families.Checked([Families.Walk, Families.Tdp, Families.Walk]));
        var renamed = new BrokenFamily<TdpCase, TdpOp, VmResult>(Families.Tdp, atStep: -2);
        Assert.Throws<InvalidOperationException>(() => Families.Checked([Families.Tdp, renamed]));
    }

    [Fact]
    public void Every_registered_property_runs_a_registered_family()
    {
        foreach (var p in DiffProperties.All)
        {
            var f = Families.Named(p.Family);
            Assert.NotNull(f);
            Assert.Equal(f.CaseType, p.CaseType);
        }
    }
}
