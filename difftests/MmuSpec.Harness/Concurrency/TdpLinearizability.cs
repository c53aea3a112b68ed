using System.Text;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Tdp;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.TdpConcurrent;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using ImplTdp = MmuSpec.Impl.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>What a concurrent TDP op answered: the spec's vocabulary, or Retry (KVM's RET_PF_RETRY, a fault that lost a race).</summary>
public sealed record TdpLinResult(VmResult? Result)
{
    public static readonly TdpLinResult Retry = new((VmResult?)null);

    public bool IsRetry => Result is null;

    public override string ToString() => Result is null ? "Retry" : TdpDiff.Describe(Result);
}

/// <summary>
/// The spec's TDP state as the linearizability checker sees it: equal when the guest-visible mapping is
/// equal (every leaf: root, gfn, size, host frame, writable), with the policy, the slots and their dirty
/// bitmaps. Table pages are left out: an empty table a zap or a huge leaf left behind changes no answer,
/// and the concurrent MMU's tables are read back only as far as their leaves. <see cref="Spec"/> is
/// null for a state read back from the impl (it is only compared, never stepped).
/// </summary>
public sealed class TdpLinState : IEquatable<TdpLinState>
{
    public TdpLinState(TdpState spec) : this(spec, VcpuTlbs.Empty) { }

    public TdpLinState(TdpState spec, VcpuTlbs tlbs) : this(spec, Describe(spec)) => Tlbs = tlbs;

    TdpLinState(TdpState? spec, string mapping) { Spec = spec; Mapping = mapping; Tlbs = VcpuTlbs.Empty; }

    public TdpState? Spec { get; }

    /// <summary>
    /// The translations the tables lost that a vCPU's TLB may still use (spec/Tdp/VcpuTlbs.cs). Part of the state the
    /// checker memoises, but not of the final state compared with the impl's (whose TLBs are not read back).
    /// </summary>
    public VcpuTlbs Tlbs { get; }

    /// <summary>The abstract state, one canonical line per slot and per leaf.</summary>
    public string Mapping { get; }

    public bool Equals(TdpLinState? other) =>
        other is not null && Mapping == other.Mapping && (Spec is null || other.Spec is null || Tlbs.Equals(other.Tlbs));

    /// <summary>The guest-visible state alone, what a final state read back (or written by a test) is compared on.</summary>
    public bool SameMapping(TdpLinState other) => Mapping == other.Mapping;

    public override bool Equals(object? obj) => Equals(obj as TdpLinState);

    public override int GetHashCode() => Mapping.GetHashCode(StringComparison.Ordinal);

    public override string ToString() =>
        Mapping.Replace('\n', ';').TrimEnd(';') + (Tlbs.Stale.IsEmpty ? "" : $"; the TLBs may still hold: {Tlbs}");

    static string Describe(TdpState s)
    {
        var leaves = from l in s.Leaves()
                     select Leaf(l.Page.Role.Mirror, l.Leaf.Gfn, l.Leaf.Level, l.Leaf.HostPfn, l.Leaf.Writable, l.Leaf.Accessed, l.Leaf.Dirty);
        var slots = s.Slots.Values.Select(x => Slot(x.Id, x.DirtyLogging, s.DirtyBitmaps.GetValueOrDefault(x.Id) ?? []));
        return Render(s.MaxPageSize, slots, leaves) + Notifier(s.Notifier) + Tracked(s.WriteTracked);
    }

    /// <summary>A final state no order ends in: the MMU holds table pages its trees do not link (<paramref name="why"/>).</summary>
    public static TdpLinState Leaked(string why) => new(null, $"table pages leaked: {why}\n");

    /// <summary>The concurrent MMU's abstract state, read from its tables (call it with no vCPU running).</summary>
    public static TdpLinState Observe<TFormat, TSched>(ConcurrentTdpMmu<TFormat, TSched> mmu)
        where TFormat : struct, IPteFormat where TSched : struct, ISchedulePoint
    {
        var leaves = new List<string>();
        mmu.VisitPages((key, entries) =>
        {
            foreach (var e in entries)
                if (e.IsLeaf) leaves.Add(Leaf(key.Mirror, e.LeafGfn, e.LeafLevel, e.HostPfn, e.Writable, e.Accessed, e.Dirty));
        });
        var slots = mmu.Slots.Select(x => Slot(x.Id, x.DirtyLogging, mmu.DirtyOffsets(x.Id)));
        return new TdpLinState(null, Render(PageSizes.FromShift(mmu.MaxPageShift), slots, leaves) + Notifier(ImplTdpEngine.NotifierState(mmu))
            + Tracked(mmu.TrackedGfns));
    }

    /// <summary>The write-tracked gfns, when there are any (other states' lines are as before).</summary>
    static string Tracked(IEnumerable<ulong> gfns) =>
        gfns.Any() ? $"write-tracked [{string.Join(",", gfns.Order().Select(Bits.Hex))}]\n" : "";

    /// <summary>The MMU-notifier side (open invalidations, retry range, sequence, moved pages), when there is any.</summary>
    static string Notifier(HostNotifierState n) => n.Equals(HostNotifierState.Initial) ? "" : $"notifier {n}\n";

    // Accessed and dirty are false unless the VM tracks them (aging): other VMs' lines are as before.
    static string Leaf(bool mirror, ulong gfn, int level, ulong pfn, bool writable, bool accessed, bool dirty) =>
        $"{(mirror ? "mirror" : "direct")} gfn {Bits.Hex(gfn)} L{level} -> pfn {Bits.Hex(pfn)} {(writable ? "W" : "RO")}{(accessed ? " A" : "")}{(dirty ? " D" : "")}";

    static string Slot(int id, bool logging, IEnumerable<ulong> dirty) =>
        $"slot {id}{(logging ? $" dirty [{string.Join(",", dirty.Order().Select(Bits.Hex))}]" : "")}";

    static string Render(PageSize max, IEnumerable<string> slots, IEnumerable<string> leaves)
    {
        var sb = new StringBuilder($"max {max.Name()}\n");
        foreach (var line in slots.Order(StringComparer.Ordinal)) sb.Append(line).Append('\n');
        foreach (var line in leaves.Order(StringComparer.Ordinal)) sb.Append(line).Append('\n');
        return sb.ToString();
    }
}

/// <summary>
/// The sequential spec of the concurrent TDP MMU: <see cref="TdpState.Step"/>, and for an access also
/// Retry with the state unchanged (a lost compare-and-exchange, a frozen entry, or a host invalidation
/// that started or ended since the fault looked its page up leaves nothing of its own; docs/tdp-concurrency.md),
/// or with the read-only huge leaf it zapped before it lost (<see cref="TdpState.WriteFaultZapsHugeLeaf"/>).
/// The spec's own Retry (an invalidation of the gfn in progress) is the same answer. Rejection reasons are
/// not compared (each side words its own).
/// </summary>
public sealed partial class TdpLinSpec(TdpState initial) : ISequentialSpec<TdpLinState, TdpOp, TdpLinResult>
{
    public TdpLinState Initial { get; } = new(initial);

    /// <summary>An order ends in the observed state when the mappings agree: what the TLBs may still hold is not observed.</summary>
    public bool EndsIn(TdpLinState state, TdpLinState observedFinal) => state.SameMapping(observedFinal);

    public (TdpLinResult Result, TdpLinState Next) Step(TdpLinState state, TdpOp op) => Step(state, op, VcpuTlbs.Pending);

    (TdpLinResult Result, TdpLinState Next) Step(TdpLinState state, TdpOp op, long returnedAt)
    {
        var before = state.Spec ?? throw new ArgumentException("a state read back from the impl cannot be stepped", nameof(state));
        var stepped = before.Step(op);
        // The spec's own Retry (an invalidation of the gfn in progress) is the concurrent Retry.
        var result = stepped.Result is TdpResult.Retry ? TdpLinResult.Retry : new TdpLinResult(TdpDiff.Comparable(stepped.Result));
        return (result, Unmapped(new TdpLinState(stepped.State, state.Tlbs.Step(before, stepped.State, returnedAt)), op, returnedAt));
    }

    public IEnumerable<(TdpLinResult Result, TdpLinState Next)> Outcomes(TdpLinState state, TdpOp op) =>
        op is not TdpOp.AccessGpa a ? [Step(state, op)]
        // A write that removed a huge leaf (logging slot, or over a tracked gfn) and then lost its race retries with the leaf gone.
        : a.Type == AccessType.Write && state.Spec?.WriteFaultZapsHugeLeaf(a.Gpa) is { } zapped
            ? [Step(state, op), (TdpLinResult.Retry, state), (TdpLinResult.Retry, new TdpLinState(zapped))]
        : [Step(state, op), (TdpLinResult.Retry, state)];

    /// <summary>
    /// As above, with the op's flushes stamped with its return, and for an access also a hit on every stale
    /// translation its vCPU's TLB may still hold when it began (<see cref="VcpuTlbs.MayUse"/>), the state unchanged.
    /// </summary>
    public IEnumerable<(TdpLinResult Result, TdpLinState Next)> Outcomes(TdpLinState state, HistoryOp<TdpOp, TdpLinResult> op)
    {
        var stepped = Step(state, op.Op, op.RespondedAt ?? VcpuTlbs.Pending);
        yield return stepped;
        if (op.Op is not TdpOp.AccessGpa a) yield break;
        yield return (TdpLinResult.Retry, state);
        if (a.Type == AccessType.Write && state.Spec!.WriteFaultZapsHugeLeaf(a.Gpa) is { } dropped)
            yield return (TdpLinResult.Retry, new TdpLinState(dropped, state.Tlbs.Step(state.Spec!, dropped, op.RespondedAt ?? VcpuTlbs.Pending)));
        foreach (var hit in state.Tlbs.MayUse(state.Spec!.Config, a.Gpa, a.Type, op.InvokedAt))
            if (!Equals(stepped.Result.Result, hit)) yield return (new TdpLinResult(hit), state);
    }
}

/// <summary>
/// One VM of the concurrent TDP MMU for a linearizability run: a page pool, the MMU, the setup ops
/// applied, and one vCPU per logical thread. Logical thread t's accesses fault on vCPU t; zaps and
/// policy changes take the write side from whichever thread runs them.
/// </summary>
public sealed class ConcurrentTdpVm<TFormat, TSched> : IDisposable
    where TFormat : struct, IPteFormat where TSched : struct, ISchedulePoint
{
    readonly NativePagePool pool = new();
    readonly List<ConcurrentTdpVcpu<TFormat, TSched>> vcpus = new();

    public ConcurrentTdpVm(int? sharedBit, IEnumerable<TdpOp> setup, int vcpuCount,
        ImplTdp.TdpAccessedDirty accessedDirty = ImplTdp.TdpAccessedDirty.Untracked, bool setupOnEveryVcpu = false)
    {
        // Range walks offer to yield every other entry, so an exploration sees them drop the lock (ConcurrentTdpMmu.Yield.cs).
        Mmu = new ConcurrentTdpMmu<TFormat, TSched>(sharedBit, pool, accessedDirty) { RangeWalkYieldEvery = 2 };
        for (int i = 0; i < vcpuCount; i++) vcpus.Add(Mmu.CreateVcpu());
        // Setup accesses (tables faulted in before the threads start) run on vCPU 0, and then, when asked, on every
        // other vCPU too (hits that fill its TLB: a thread then holds a translation from its start).
        foreach (var op in setup)
        {
            if (Apply(-1, op) is not { Result: VmResult.Ok or TdpResult.Mapped }) throw new ArgumentException($"setup op {op} was not accepted", nameof(setup));
            if (setupOnEveryVcpu && op is TdpOp.AccessGpa)
                for (int v = 1; v < vcpuCount; v++)
                    if (Apply(v, op) is not { Result: TdpResult.Mapped }) throw new ArgumentException($"setup op {op} was not accepted on vCPU {v}", nameof(setup));
        }
    }

    public ConcurrentTdpMmu<TFormat, TSched> Mmu { get; }

    /// <summary>Logical thread <paramref name="thread"/>'s vCPU (setup ops use vCPU 0).</summary>
    public ConcurrentTdpVcpu<TFormat, TSched> Vcpu(int thread) => vcpus[Math.Max(thread, 0)];

    /// <summary>Pages still held from the pool (table pages, vCPU caches, deferred frees, host memory).</summary>
    public long PagesInUse => pool.PagesInUse;

    public TdpLinResult Apply(int thread, TdpOp op) => op switch
    {
        TdpOp.AccessGpa a => Access(vcpus[Math.Max(thread, 0)].Access(a.Gpa, PagingVocabulary.ToImpl(a.Type)), a.Gpa),
        TdpOp.ZapRange z => Status(Mmu.ZapRange(z.StartGfn, z.EndGfn)),
        TdpOp.ZapAll => Status(Mmu.ZapAll()),
        // The host's aging runs on the thread's own vCPU for its epoch (ConcurrentTdpMmu.Aging.cs).
        TdpOp.Age a => Young(Mmu.Age(vcpus[thread], a.StartGfn, a.EndGfn, out bool young), young),
        TdpOp.TestAge t => Young(Mmu.TestAge(vcpus[thread], t.StartGfn, t.EndGfn, out bool young), young),
        TdpOp.SetMaxPageSize p => Status(Mmu.SetMaxPageSize((byte)p.Size.Shift())),
        TdpOp.SetDirtyLogging d => Status(Mmu.SetDirtyLogging(d.Id, d.On)),
        TdpOp.GetDirtyLog g => DirtyLog(g.Id),
        TdpOp.CreateSlot c => Status(Mmu.CreateSlot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, (byte)c.HostPageSize.Shift(), c.ReadOnly)),
        TdpOp.HostInvalidateStart i => Status(Mmu.HostInvalidateStart(i.StartGfn, i.EndGfn)),
        TdpOp.HostInvalidateEnd i => Status(Mmu.HostInvalidateEnd(i.StartGfn, i.EndGfn)),
        TdpOp.TrackWrites t => Status(Mmu.TrackWrites(t.Gfn)),
        TdpOp.UntrackWrites u => Status(Mmu.UntrackWrites(u.Gfn)),
        _ => throw new ArgumentException($"{op} is not run concurrently", nameof(op)),
    };

    static TdpLinResult Access(TdpVcpuOutcome o, ulong gpa) => o.IsRetry ? TdpLinResult.Retry : new(o.Access.Status switch
    {
        ImplTdp.TdpAccessStatus.Mapped => new TdpResult.Mapped(o.Access.Hpa, PageSizes.FromShift(o.Access.PageShift), o.Access.Faulted),
        ImplTdp.TdpAccessStatus.MmioExit => new TdpResult.MmioExit(gpa),
        _ => TdpDiff.Comparable(new VmResult.Rejected("")),
    });

    static TdpLinResult Young(ImplTdp.TdpStatus s, bool young) =>
        new(s == ImplTdp.TdpStatus.Ok ? new TdpResult.Young(young) : TdpDiff.Comparable(new VmResult.Rejected("")));

    TdpLinResult DirtyLog(int id)
    {
        var gfns = new List<ulong>();
        return Mmu.GetDirtyLog(id, gfns) == SlotStatus.Ok
            ? new(new VmResult.DirtyLog([.. gfns]))
            : new(TdpDiff.Comparable(new VmResult.Rejected("")));
    }

    static TdpLinResult Status(ImplTdp.TdpStatus s) => new(s == ImplTdp.TdpStatus.Ok ? VmResult.Ok.Instance : TdpDiff.Comparable(new VmResult.Rejected("")));

    static TdpLinResult Status(SlotStatus s) => new(s == SlotStatus.Ok ? VmResult.Ok.Instance : TdpDiff.Comparable(new VmResult.Rejected("")));

    public void Dispose()
    {
        foreach (var v in vcpus) v.Dispose();
        Mmu.Dispose();
        pool.Dispose();
    }
}

/// <summary>The concurrent TDP MMU as a <see cref="ConcurrentSubject{TObject, TState, TOp, TResult}"/> against <see cref="TdpLinSpec"/>.</summary>
public static class ConcurrentTdpSubject
{
    /// <summary>
    /// A fresh VM per run, with <paramref name="setup"/> applied to both sides first, <paramref name="vcpus"/>
    /// vCPUs, and the final state read back from the tables. <paramref name="observed"/>, when given, sees each
    /// VM after its run (before it is disposed), e.g. to count the paths a run took. <paramref name="setupOnEveryVcpu"/>:
    /// the setup's accesses run on every vCPU (<see cref="ConcurrentTdpCase.SetupOnEveryVcpu"/>).
    /// </summary>
    public static ConcurrentSubject<ConcurrentTdpVm<TFormat, TSched>, TdpLinState, TdpOp, TdpLinResult> Create<TFormat, TSched>(
        VmConfig config, IReadOnlyList<TdpOp> setup, int vcpus, Action<ConcurrentTdpVm<TFormat, TSched>>? observed = null, bool setupOnEveryVcpu = false)
        where TFormat : struct, IPteFormat where TSched : struct, ISchedulePoint
    {
        var initial = TdpState.Create(config);
        foreach (var op in setup)
        {
            var stepped = initial.Step(op);
            if (stepped.Result is not (VmResult.Ok or TdpResult.Mapped)) throw new ArgumentException($"setup op {op}: the spec answers {stepped.Result}", nameof(setup));
            initial = stepped.State;
        }
        return new(
            () => new ConcurrentTdpVm<TFormat, TSched>(config.SharedBit, setup, vcpus, (ImplTdp.TdpAccessedDirty)config.AccessedDirty, setupOnEveryVcpu),
            (vm, thread, op) => vm.Apply(thread, op),
            new TdpLinSpec(initial),
            vm => { observed?.Invoke(vm); return TdpLinState.Observe(vm.Mmu); });
    }
}
