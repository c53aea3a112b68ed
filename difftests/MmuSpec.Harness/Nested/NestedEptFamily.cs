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
/// setup and ops run on the spec's nested VM (<see cref="NestedEptState"/>: L1's EPT walked over L1's memory as it
/// is now) and on the impl's MMU. The impl keeps no stale translation (every store into a shadowed EPT table drops
/// what was built from it), so oracle 1 asks for the spec's answer at every step: equal results, equal memslots
/// and equal L1 memory (the walk's A/D writes included), then the impl's structures against its own pages. When
/// the results differ, oracle 2 (<see cref="EptTlb"/>) says whether the architecture would have allowed the
/// impl's answer as a stale one since the last invalidation.
/// </summary>
public sealed class NestedEptFamily : DiffFamily<NestedEptCase, NestedEptOp, VmResult>
{
    public override string Name => DiffProperties.NestedEptFamily;
    public override IReadOnlyList<string> Situations => NestedEptL2Coverage.Family;

    public override IReadOnlyList<NestedEptOp> Steps(NestedEptCase c) => [.. c.AllOps];
    public override int StepCount(NestedEptCase c) => c.Length;
    public override LockstepSession<NestedEptOp, VmResult> Open(NestedEptCase c, NativePagePool pool) => new Session(c, pool);

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

    sealed class Session(NestedEptCase c, NativePagePool pool) : LockstepSession<NestedEptOp, VmResult>
    {
        NestedEptState spec = NestedEptState.Create(c.Config.Caps);
        // The architecture layer from the first VM entry on; the one before the current step judges a divergent result.
        EptTlb? tlb, tlbBefore;
        readonly ImplNestedEngine impl = new(c.Config, pool);

        public override VmResult SpecStep(NestedEptOp op)
        {
            var before = spec;
            tlbBefore = tlb;
            (spec, var result) = spec.Step(op);
            bool ok = result is not VmResult.Rejected;
            if (tlb is not null && (!ReferenceEquals(before.Host, spec.Host) || !ReferenceEquals(before.Slots, spec.Slots)))
                tlb = tlb.Write(spec.L1Memory);
            switch (op)
            {
                case NestedEptOp.LoadEptp l when ok:
                    tlb = tlb is null ? EptTlb.Start(spec.Caps, spec.L1Memory, l.Eptp) : tlb.Apply(new EptTlbOp.EptpSwitch(l.Eptp, ByVmfunc: false));
                    break;
                case NestedEptOp.Invept i when ok && tlb is not null:
                    tlb = tlb.Apply(new EptTlbOp.Invept(i.Type, i.Eptp));
                    break;
                case NestedEptOp.L2Access a when result is NestedEptResult.EptExit { Exit: EptResult.Violation } && tlb is not null:
                    tlb = tlb.Apply(new EptTlbOp.EptViolation(a.Gpa, null));
                    break;
                case NestedEptOp.L2GvaAccess when result is NestedEptResult.EptExit { Exit: EptResult.Violation v } && tlb is not null:
                    tlb = tlb.Apply(new EptTlbOp.EptViolation(v.Gpa, v.LinearAddress));
                    break;
            }
            return result;
        }

        public override VmResult ImplStep(NestedEptOp op) => impl.Step(op);

        public override ImmutableArray<string> StateDifferences()
        {
            var lines = ImmutableArray.CreateBuilder<string>();
            var slots = impl.Slots();
            if (!slots.Equals(spec.Slots)) lines.Add($"memslots: spec {spec.Slots}; impl {slots}");
            var host = impl.Host();
            foreach (var hpa in spec.Host.Keys.Union(host.Keys).Order())
            {
                ulong s = spec.Host.GetValueOrDefault(hpa), i = host.GetValueOrDefault(hpa);
                if (s != i) lines.Add($"L1 memory at hpa {Bits.Hex(hpa)}: spec {Bits.Hex(s)}, impl {Bits.Hex(i)}");
            }
            return lines.ToImmutable();
        }

        public override ImmutableArray<string> ResultDifference(NestedEptOp op, VmResult? specResult, VmResult? implResult)
        {
            var lines = ImmutableArray.CreateBuilder<string>();
            if (op is NestedEptOp.L2Access a && implResult is not null && tlbBefore is not null)
                lines.Add($"oracle 2 on the impl's result: {Judge(tlbBefore, a, implResult)}");
            if (op is NestedEptOp.L2GvaAccess g && implResult is not null && tlbBefore is not null && spec.L2Cpu is { } l2Cpu)
                lines.Add($"oracle 2 on the impl's result: {NestedEptL2Oracle.Judge(tlbBefore, l2Cpu, g.Access, implResult)}");
            try { lines.AddRange(StateDifferences()); }
            catch (Exception e) { lines.Add($"reading the impl's state {Lockstep.Threw(e)}"); }
            return lines.ToImmutable();
        }

        /// <summary>Whether <paramref name="result"/> is what the EPT gave for the access at a moment EptTlb still allows.</summary>
        string Judge(EptTlb layer, NestedEptOp.L2Access a, VmResult result)
        {
            var allowed = layer.AllowedGuestPhysical(new EptAccess(a.Gpa, a.Type)).Distinct().ToList();
            bool ok = result switch
            {
                NestedEptResult.Translated t => allowed.Any(r => r is EptResult.Translated x && x.L1Gpa == t.L1Gpa),
                NestedEptResult.MmioExit m => allowed.Any(r => r is EptResult.Translated x && x.L1Gpa == m.L1Gpa),
                NestedEptResult.EptExit e => allowed.Contains(e.Exit),
                _ => false,
            };
            return ok ? "allowed as a stale translation since the last invalidation (SDM Vol. 3C §29.4), though this MMU promises none"
                : $"not allowed: the EPT gave {string.Join("; ", allowed)} at the moments since the last invalidation";
        }

        public override IEnumerable<ImmutableArray<string>> Checks(NestedEptOp op, VmResult result)
        {
            yield return StateDifferences();
            ImmutableArray<string> problems;
            try { problems = impl.InvariantProblems(); }
            catch (Exception e) { problems = [$"reading the impl's structures {Lockstep.Threw(e)}"]; }
            yield return [.. problems.Select(p => $"impl invariant: {p}")];
        }

        public override IEnumerable<StateRow> StateRows()
        {
            yield return new StateRow("memslots", spec.Slots.ToString(), impl.Slots().ToString());
            yield return new StateRow("EPTP / cached roots", spec.Eptp?.ToString() ?? "none",
                string.Join(", ", impl.Vm.CachedRootEptps().Select(Bits.Hex)));
            var host = impl.Host();
            foreach (var hpa in spec.Host.Keys.Union(host.Keys).Order())
                yield return new StateRow($"hpa {Bits.Hex(hpa)}", Bits.Hex(spec.Host.GetValueOrDefault(hpa)), Bits.Hex(host.GetValueOrDefault(hpa)));
        }

        public override void Dispose() => impl.Dispose();
    }
}
