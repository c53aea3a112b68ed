using System.Collections.Immutable;
using System.Text.Json;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

/// <summary>
/// The nested EPT MMU as a family (docs/nested-ept.md, "The differential property"): a <see cref="NestedEptCase"/>'s
/// setup and ops run on the spec's nested VM (<see cref="NestedEptMachine"/>: L1's EPT walked over L1's memory as it
/// is now, beside <see cref="EptTlb"/>) and on the impl's MMU. Oracle 1 after every step: equal results, equal
/// memslots and equal L1 memory (the walk's A/D writes included), then the impl's structures against its own pages.
/// Oracle 2: an L2 access may instead get what a guest-physical mapping cached since the last invalidation gives,
/// with no A/D write (<see cref="NestedEptMachine.ServedFromCache"/>); the strict impl never does, the unsync one may.
/// </summary>
public sealed class NestedEptFamily : DiffFamily<NestedEptCase, NestedEptOp, VmResult>
{
    public override string Name => DiffProperties.NestedEptFamily;
    public override IReadOnlyList<string> Situations => NestedEptL2Coverage.Family;

    public override IReadOnlyList<NestedEptOp> Steps(NestedEptCase c) => [.. c.AllOps];
    public override int StepCount(NestedEptCase c) => c.Length;
    public override LockstepSession<NestedEptOp, VmResult> Open(NestedEptCase c, NativePagePool pool) => new Session(c, pool, observer);

    /// <summary>A rejection's reason is each side's own words.</summary>
    public override VmResult Comparable(VmResult r) => r is VmResult.Rejected ? new VmResult.Rejected("") : r;
    public override string Describe(VmResult r) => r.ToString()!;

    public override (string? Op, string Freed, string Leaked) EndOfCase(long pagesInUse) =>
        (null, "all native pages freed", $"{pagesInUse} pages still allocated after the VM was destroyed");

    public override void Classify(NestedEptCase c, Action<string> hit) => NestedEptCoverage.Classify(c, hit);
    public override string Summary(NestedEptCase c) => $"{CaseRuns.Count(c.Setup.Length, "setup op")} and {CaseRuns.Count(c.Ops.Length, "op")}, {c.Config}";
    public override string Render(NestedEptCase c, int? highlightStep) => c.Render(highlightStep);
    public override void WriteJson(Utf8JsonWriter w, NestedEptCase c) => CaseJson.WriteNestedEpt(w, c);
    public override NestedEptCase ReadJson(JsonElement e, string path) => CaseJson.ReadNestedEpt(e, path);
    public override void CheckRules(NestedEptCase c, string path) => CaseRules.Check(c, path);
    public override IReadOnlyList<OpList<NestedEptCase>> OpLists { get; } =
    [
        new("ops", c => c.Ops.Length, (c, i) => c.WithOps(c.Ops.RemoveAt(i))),
        new("setup", c => c.Setup.Length, (c, i) => c.WithSetup(c.Setup.RemoveAt(i))),
    ];

    /// <summary>Hears the impl's unsync events and oracle 2's allowances while a case runs (coverage); null in campaigns.</summary>
    readonly Action<string>? observer;

    public NestedEptFamily() { }

    /// <summary>A family whose sessions tell <paramref name="observer"/> the situations only a run shows (NestedEptCoverage).</summary>
    internal NestedEptFamily(Action<string> observer) => this.observer = observer;

    sealed class Session(NestedEptCase c, NativePagePool pool, Action<string>? observer) : LockstepSession<NestedEptOp, VmResult>
    {
        // The spec's VM with its architecture layer; the one before the current step judges a result the walk now did not give.
        NestedEptMachine spec = NestedEptMachine.Create(c.Config.Caps, c.Config.L2GlobalPages), before = NestedEptMachine.Create(c.Config.Caps, c.Config.L2GlobalPages);
        readonly ImplNestedEngine impl = new(c.Config, pool);

        public override VmResult SpecStep(NestedEptOp op)
        {
            before = spec;
            (spec, var result) = spec.Step(op);
            return result;
        }

        /// <summary>Oracle 2: the impl answered from a mapping the processor may still have cached; the spec goes on without the walk's A/D writes.</summary>
        public override string? Allowance(NestedEptOp op, VmResult specResult, VmResult implResult)
        {
            if (op is NestedEptOp.L2GvaAccess g && c.Config.GvaTlb)   // the gva TLB's stale combined mappings (NestedEptVpidGen.cs)
            {
                if (before.ServedFromCombined(g, implResult, out string used) is not { } combined) return null;
                spec = combined;
                observer?.Invoke(NestedEptVpidCoverage.StaleCombinedUsed);
                return used;
            }
            if (op is not NestedEptOp.L2Access a || before.ServedFromCache(a, implResult, out string why) is not { } cached) return null;
            spec = cached;
            observer?.Invoke(NestedEptCoverage.StaleUsed);
            return why;
        }

        public override VmResult ImplStep(NestedEptOp op) => impl.Step(op);

        public override ImmutableArray<string> StateDifferences()
        {
            var lines = ImmutableArray.CreateBuilder<string>();
            var state = spec.State;
            var slots = impl.Slots();
            if (!slots.Equals(state.Slots)) lines.Add($"memslots: spec {state.Slots}; impl {slots}");
            var host = impl.Host();
            foreach (var hpa in state.Host.Keys.Union(host.Keys).Order())
            {
                ulong s = state.Host.GetValueOrDefault(hpa), i = host.GetValueOrDefault(hpa);
                if (s != i) lines.Add($"L1 memory at hpa {Bits.Hex(hpa)}: spec {Bits.Hex(s)}, impl {Bits.Hex(i)}");
            }
            return lines.ToImmutable();
        }

        public override ImmutableArray<string> ResultDifference(NestedEptOp op, VmResult? specResult, VmResult? implResult)
        {
            var lines = ImmutableArray.CreateBuilder<string>();
            if (op is NestedEptOp.L2Access a && implResult is not null)
            {
                before.ServedFromCache(a, implResult, out string why);
                lines.Add($"oracle 2 on the impl's result: not allowed: {why}");
            }
            if (op is NestedEptOp.L2GvaAccess g && implResult is not null && before.Tlb is { } tlbBefore && before.State.L2Cpu is { } l2Cpu)
                lines.Add(c.Config.GvaTlb && before.ServedFromCombined(g, implResult, out string why) is null
                    ? $"oracle 2 on the impl's result: not allowed: {why}"
                    : $"oracle 2 on the impl's result: {NestedEptL2Oracle.Judge(tlbBefore, l2Cpu, g.Access, implResult)}");
            try { lines.AddRange(StateDifferences()); }
            catch (Exception e) { lines.Add($"reading the impl's state {Lockstep.Threw(e)}"); }
            return lines.ToImmutable();
        }

        public override IEnumerable<ImmutableArray<string>> Checks(NestedEptOp op, VmResult result)
        {
            var differences = StateDifferences();
            // The same answer from a cached mapping (an impl hit) writes no EPT A/D bit: the spec's other allowed state.
            NestedEptMachine? cached = differences.Length == 0 ? null : op switch
            {
                NestedEptOp.L2Access a => before.ServedFromCache(a, result, out _),
                NestedEptOp.L2GvaAccess g when c.Config.GvaTlb => before.ServedFromCombined(g, result, out _),
                _ => null,
            };
            if (cached is not null)
            {
                var walked = spec;
                spec = cached;
                if (StateDifferences().Length == 0)
                {
                    observer?.Invoke(NestedEptCoverage.CachedWithoutAccessedDirty);
                    differences = [];
                }
                else spec = walked;
            }
            yield return differences;
            ImmutableArray<string> problems;
            try { problems = impl.InvariantProblems(); }
            catch (Exception e) { problems = [$"reading the impl's structures {Lockstep.Threw(e)}"]; }
            yield return [.. problems.Select(p => $"impl invariant: {p}")];
        }

        public override IEnumerable<StateRow> StateRows()
        {
            var state = spec.State;
            yield return new StateRow("memslots", state.Slots.ToString(), impl.Slots().ToString());
            yield return new StateRow("EPTP / cached roots", state.Eptp?.ToString() ?? "none",
                string.Join(", ", impl.Vm.CachedRootEptps().Select(Bits.Hex)));
            var host = impl.Host();
            foreach (var hpa in state.Host.Keys.Union(host.Keys).Order())
                yield return new StateRow($"hpa {Bits.Hex(hpa)}", Bits.Hex(state.Host.GetValueOrDefault(hpa)), Bits.Hex(host.GetValueOrDefault(hpa)));
        }

        public override void Dispose()
        {
            if (observer is not null) NestedEptCoverage.Heard(impl.Vm.UnsyncCounters, observer);
            if (observer is not null) NestedEptCoverage.Heard(impl.Vm.RecycleCounters, observer);
            if (observer is not null && impl.Vm.GvaTlbCounters.Hits > 0) observer(NestedEptVpidCoverage.GvaTlbHit);
            impl.Dispose();
        }
    }
}
