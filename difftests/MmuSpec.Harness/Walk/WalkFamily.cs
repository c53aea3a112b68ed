using System.Collections.Immutable;
using System.Text.Json;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Walk;

/// <summary>
/// The guest page walk as a family: a <see cref="WalkCase"/> boots a vCPU on both sides (booting
/// may raise #GP), then runs its ops; after every step the results and the machine state (the
/// vCPU's paging state and every word of guest memory) must be equal (oracle 1).
/// </summary>
public sealed class WalkFamily : DiffFamily<WalkCase, Op, OpResult>
{
    public override string Name => DiffProperties.WalkFamily;
    public override string WhenNoStep => "at boot";
    public override IReadOnlyList<string> Situations => WalkCoverage.All;

    public override IReadOnlyList<Op> Steps(WalkCase c) => c.Ops;
    public override LockstepSession<Op, OpResult> Open(WalkCase c, NativePagePool pool) => new Session(c, pool);

    /// <summary>A #GP from MOV CR3 or a control change compares without its reason: the impl, like hardware, reports none.</summary>
    public override OpResult Comparable(OpResult r) => r is OpResult.GeneralProtection ? NoReason : r;
    static readonly OpResult NoReason = new OpResult.GeneralProtection(default);

    public override string Describe(OpResult r) => r is OpResult.GeneralProtection ? "#GP" : r.ToString()!;

    public override (string? Op, string Freed, string Leaked) EndOfCase(long pagesInUse) =>
        ("destroying the guest memory", "all pages freed", $"{pagesInUse} pages still allocated");

    public override void Classify(WalkCase c, Action<string> hit) => WalkCoverage.Classify(c, hit);
    public override string Summary(WalkCase c) => $"{CaseRuns.Count(c.Ops.Length, "op")}, {CaseRuns.Count(c.Setup.Length, "setup write")}";
    public override string Render(WalkCase c, int? highlightStep) => c.Render(highlightStep);
    public override void WriteJson(Utf8JsonWriter w, WalkCase c) => CaseJson.WriteWalk(w, c);
    public override WalkCase ReadJson(JsonElement e, string path) => CaseJson.ReadWalk(e, path);
    public override void CheckRules(WalkCase c, string path) => CaseRules.Check(c, path);
    public override IReadOnlyList<OpList<WalkCase>> OpLists { get; } =
    [
        new("ops", c => c.Ops.Length, (c, i) => c.WithOps(c.Ops.RemoveAt(i))),
        new("setup", c => c.Setup.Length, (c, i) => c.WithSetup(c.Setup.RemoveAt(i))),
    ];

    sealed class Session(WalkCase c, NativePagePool pool) : LockstepSession<Op, OpResult>
    {
        SpecEngine? spec;
        ImplWalkEngine? impl;
        WalkMemoryComparison? comparison;
        int stepsRun;

        public override BootOutcome Boot()
        {
            var machine = c.BootSpec();
            if (machine is not null) spec = new SpecEngine(machine);
            string implBoot;
            try { impl = ImplWalkEngine.Boot(c, pool); implBoot = impl is null ? "#GP" : "ok"; }
            catch (Exception e) { implBoot = Lockstep.Threw(e); }
            return new BootOutcome($"{c.Controls}, CR3={Hex.Format(c.Cr3)}", machine is null ? "#GP" : "ok", implBoot, spec is not null && impl is not null);
        }

        SpecEngine Spec => spec ?? throw new InvalidOperationException("the spec did not boot");
        ImplWalkEngine Impl => impl ?? throw new InvalidOperationException("the impl did not boot");

        public override OpResult SpecStep(Op op) { stepsRun++; return Spec.Step(op); }
        public override OpResult ImplStep(Op op) => Impl.Step(op);
        // The pages either side changed since memory last agreed; all of memory at boot and after the last step.
        public override ImmutableArray<string> StateDifferences() =>
            (comparison ??= new WalkMemoryComparison(Impl)).Differences(Spec.Machine, full: stepsRun >= c.Ops.Length);
        public override IEnumerable<StateRow> StateRows() => CaseRuns.WalkState(Spec.View(), Impl.View());
        public override string? NoState => spec is null || impl is null ? "one side did not boot: there is no state to show" : null;
        public override void Dispose()
        {
            comparison?.Dispose();
            impl?.Dispose();
        }
    }
}
