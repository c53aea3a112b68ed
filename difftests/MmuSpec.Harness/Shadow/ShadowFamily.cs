using MmuSpec.Spec.Memory;
using System.Collections.Immutable;
using System.Text.Json;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>
/// The shadow MMU as a family: a <see cref="ShadowCase"/>'s setup and ops run on the spec's shadow
/// MMU model and the impl's. After a step whose results agree, in this order: oracle 1 (equal
/// abstract state), the impl's derived structures against its own pages, and oracle 2 (the
/// architecture layer, <see cref="ShadowTlb"/>, allows the spec's result). When the results differ,
/// oracle 2 judges both, so the report says which side the architecture allows.
/// </summary>
public sealed class ShadowFamily : DiffFamily<ShadowCase, ShadowOp, VmResult>
{
    public override string Name => DiffProperties.ShadowFamily;
    public override IReadOnlyList<string> Situations => ShadowCoverage.All;

    public override IReadOnlyList<ShadowOp> Steps(ShadowCase c) => [.. c.AllOps];
    public override int StepCount(ShadowCase c) => c.Length;
    public override LockstepSession<ShadowOp, VmResult> Open(ShadowCase c, NativePagePool pool) => new Session(c, pool);
    public override VmResult Comparable(VmResult r) => ShadowDiff.Comparable(r);
    public override string Describe(VmResult r) => ShadowDiff.Describe(r);

    public override (string? Op, string Freed, string Leaked) EndOfCase(long pagesInUse) =>
        (null, "all native pages freed", $"{pagesInUse} pages still allocated after the VM was destroyed");

    public override void Classify(ShadowCase c, Action<string> hit) => ShadowCoverage.Classify(c, hit);
    public override string Summary(ShadowCase c) => $"{CaseRuns.Count(c.Setup.Length, "setup op")} and {CaseRuns.Count(c.Ops.Length, "op")}, VM {c.Config}";
    public override string Render(ShadowCase c, int? highlightStep) => c.Render(highlightStep);
    public override void WriteJson(Utf8JsonWriter w, ShadowCase c) => CaseJson.WriteShadow(w, c);
    public override ShadowCase ReadJson(JsonElement e, string path) => CaseJson.ReadShadow(e, path);
    public override void CheckRules(ShadowCase c, string path) => CaseRules.Check(c, path);
    public override IReadOnlyList<OpList<ShadowCase>> OpLists { get; } =
    [
        new("ops", c => c.Ops.Length, (c, i) => c.WithOps(c.Ops.RemoveAt(i))),
        new("setup", c => c.Setup.Length, (c, i) => c.WithSetup(c.Setup.RemoveAt(i))),
    ];

    sealed class Session : LockstepSession<ShadowOp, VmResult>
    {
        ShadowState spec;
        ShadowTlb tlb;
        readonly ImplShadowEngine impl;
        readonly int steps;
        int stepsRun;

        public Session(ShadowCase c, NativePagePool pool)
        {
            spec = ShadowState.Create(c.Config);
            tlb = ShadowTlb.Start(spec);
            impl = new ImplShadowEngine(c.Config, pool);
            steps = c.Length;
        }

        public override VmResult SpecStep(ShadowOp op)
        {
            stepsRun++;
            var s = spec.Step(op);
            spec = s.State;
            return s.Result;
        }

        public override VmResult ImplStep(ShadowOp op) => impl.Step(op);
        // Equal states need no view: the impl is read once and compared in place (ImplShadowEngine.Matches);
        // host memory where either side changed it, all of it after the last step.
        public override ImmutableArray<string> StateDifferences() =>
            ShadowDiff.SafeMatches(impl, spec, fullMemory: stepsRun >= steps) ? [] : ShadowDiff.Differences(spec, ShadowDiff.SafeView(impl));

        public override ImmutableArray<string> ResultDifference(ShadowOp op, VmResult? specResult, VmResult? implResult)
        {
            var view = ShadowDiff.SafeView(impl);
            var lines = ImmutableArray.CreateBuilder<string>();
            // Oracle 2 on both results says which side the architecture allows.
            if (specResult is not null) lines.Add($"oracle 2 on the spec's result: {ShadowDiff.Judge(tlb, op, specResult, spec)}");
            if (implResult is not null && specResult is not null) lines.Add($"oracle 2 on the impl's result: {ShadowDiff.Judge(tlb, op, implResult, view ?? spec)}");
            lines.AddRange(ShadowDiff.Differences(spec, view));
            return lines.ToImmutable();
        }

        public override IEnumerable<ImmutableArray<string>> Checks(ShadowOp op, VmResult result)
        {
            yield return StateDifferences();
            ImmutableArray<string> problems;
            try { problems = impl.InvariantProblems(); }
            catch (Exception e) { problems = [$"reading the impl's structures {Lockstep.Threw(e)}"]; }
            yield return [.. problems.Select(p => $"impl invariant: {p}")];
            string? violation;
            try { violation = tlb.Violation(op, result, spec); tlb = tlb.Record(op, result, spec); }
            catch (Exception e) { violation = $"the architecture layer {Lockstep.Threw(e)}"; }
            yield return violation is null ? [] : [$"oracle 2: {violation}"];
        }

        public override IEnumerable<StateRow> StateRows() => CaseRuns.ShadowStateRows(spec, impl.View());
        public override void Dispose() => impl.Dispose();
    }
}
