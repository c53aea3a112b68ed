using MmuSpec.Spec.Memory;
using System.Collections.Immutable;
using System.Text.Json;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>
/// The TDP MMU as a family: a <see cref="TdpCase"/>'s ops run on the spec's MMU model and the impl's
/// TDP MMU. After a step whose results agree, in this order: oracle 2 (the mapping served agrees with
/// the memslots before the step), oracle 1 (equal abstract state), the impl's read-back problems, the
/// table-page count, and the TLB flushes the step owes (<see cref="TdpTlb.MustFlush"/>).
/// </summary>
public sealed class TdpFamily : DiffFamily<TdpCase, TdpOp, VmResult>
{
    public override string Name => DiffProperties.TdpFamily;
    public override IReadOnlyList<string> Situations => TdpCoverage.All;

    public override IReadOnlyList<TdpOp> Steps(TdpCase c) => c.Ops;
    public override LockstepSession<TdpOp, VmResult> Open(TdpCase c, NativePagePool pool) => new Session(c, pool);
    public override VmResult Comparable(VmResult r) => TdpDiff.Comparable(r);
    public override string Describe(VmResult r) => TdpDiff.Describe(r);

    public override (string? Op, string Freed, string Leaked) EndOfCase(long pagesInUse) =>
        (null, "all table pages freed", $"{pagesInUse} pages still allocated after the VM was destroyed");

    public override void Classify(TdpCase c, Action<string> hit) => TdpCoverage.Classify(c, hit);
    public override string Summary(TdpCase c) => $"{CaseRuns.Count(c.Ops.Length, "op")}, VM {c.Config}";
    public override string Render(TdpCase c, int? highlightStep) => c.Render(highlightStep);
    public override void WriteJson(Utf8JsonWriter w, TdpCase c) => CaseJson.WriteTdp(w, c);
    public override TdpCase ReadJson(JsonElement e, string path) => CaseJson.ReadTdp(e, path);
    public override void CheckRules(TdpCase c, string path) => CaseRules.Check(c, path);
    public override IReadOnlyList<OpList<TdpCase>> OpLists { get; } =
    [
        new("ops", c => c.Ops.Length, (c, i) => c.WithOps(c.Ops.RemoveAt(i))),
    ];

    sealed class Session(TdpCase c, NativePagePool pool) : LockstepSession<TdpOp, VmResult>
    {
        TdpState spec = TdpState.Create(c.Config), before = TdpState.Create(c.Config);
        readonly ImplTdpEngine impl = new(c.Config, pool);
        GfnRanges? flushed;
        int stepsRun;

        public override VmResult SpecStep(TdpOp op)
        {
            stepsRun++;
            before = spec;
            var s = spec.Step(op);
            spec = s.State;
            return s.Result;
        }

        public override VmResult ImplStep(TdpOp op)
        {
            try { return impl.Step(op); }
            finally
            {
                try { flushed = impl.TakeFlushes(); } catch { flushed = GfnRanges.Empty; }
            }
        }

        // Equal states need no view: the impl is read once and compared in place (ImplTdpEngine.Matches);
        // host memory where either side changed it, all of it after the last step.
        public override ImmutableArray<string> StateDifferences() =>
            TdpDiff.SafeMatches(impl, spec, fullMemory: stepsRun >= c.Ops.Length) ? [] : TdpDiff.Differences(spec, TdpDiff.SafeView(impl));

        public override IEnumerable<ImmutableArray<string>> Checks(TdpOp op, VmResult result)
        {
            yield return TdpDiff.ArchitectureViolation(before, op, result) is { } violation ? [$"oracle 2: {violation}"] : [];
            yield return StateDifferences();
            // What the read-back shows wrong that the abstract state has no place for (table-entry
            // rights, leaf format bits, the host-memory visit's contract: ImplTdpEngine.ViewProblems).
            yield return [.. impl.ViewProblems.Take(6)];
            // The view shows only the tables reachable from the roots; the allocator's count shows
            // the ones not yet freed. A table unlinked but never freed (a leak for the VM's life:
            // the pool gets its slab back only when the VM is destroyed) differs here.
            yield return impl.Vm.TablePages != spec.Pages.Count
                ? [$"table pages in use: spec {spec.Pages.Count} (every table of the model) | impl {impl.Vm.TablePages} allocated and not freed"]
                : [];
            yield return TdpDiff.MissedFlushes(TdpTlb.MustFlush(before, spec), flushed);
        }

        public override IEnumerable<StateRow> StateRows() => CaseRuns.TdpStateRows(spec, impl.View());
        public override void Dispose() => impl.Dispose();
    }
}
