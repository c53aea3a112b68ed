using System.Text;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// The sequential specification a concurrent history is judged against: an immutable state and a
/// step. <typeparamref name="TState"/> must have value equality (the spec's states are immutable
/// records): the checker memoises (linearized ops, state) pairs by Equals/GetHashCode, and a state
/// with reference equality would make the memo useless and the final-state check always fail.
/// </summary>
public interface ISequentialSpec<TState, TOp, TResult> where TState : notnull
{
    TState Initial { get; }

    /// <summary>The spec's answer to <paramref name="op"/> in <paramref name="state"/>, and the state after it.</summary>
    (TResult Result, TState Next) Step(TState state, TOp op);

    /// <summary>
    /// Every answer the op may give, with the state after each. Most ops have one (<see cref="Step"/>);
    /// an op that may also give up without effect (a compare-and-exchange that lost and says Retry)
    /// lists that too, with the state unchanged.
    /// </summary>
    IEnumerable<(TResult Result, TState Next)> Outcomes(TState state, TOp op) => [Step(state, op)];

    /// <summary>
    /// <see cref="Outcomes(TState, TOp)"/> for one op of the history being judged: a spec whose answers depend on
    /// when ops ran (an op whose effect reaches other threads only by its return) reads the op's invocation and
    /// response positions here.
    /// </summary>
    IEnumerable<(TResult Result, TState Next)> Outcomes(TState state, HistoryOp<TOp, TResult> op) => Outcomes(state, op.Op);

    /// <summary>
    /// Whether the observed result is what the spec answered: equality by default; a spec whose
    /// results carry detail the impl may word differently, or that accepts more than one answer
    /// for the same effect, says so here.
    /// </summary>
    bool Agrees(TOp op, TResult observed, TResult specified) => EqualityComparer<TResult>.Default.Equals(observed, specified);

    /// <summary>
    /// Whether a state an order ends in is the observed final state: equality by default; a spec whose state
    /// carries bookkeeping the observed side cannot have (what a TLB may still hold) compares the rest here.
    /// </summary>
    bool EndsIn(TState state, TState observedFinal) => EqualityComparer<TState>.Default.Equals(state, observedFinal);
}

/// <summary>One op placed in the sequential order that explains a history, with the spec's answer.</summary>
/// <remarks><paramref name="Step"/>: an intermediate step of an op that runs in steps (Linearizability.Steps.cs), where it has got to.</remarks>
public sealed record LinearizedOp<TOp, TResult>(HistoryOp<TOp, TResult> Op, TResult SpecResult, bool Dropped = false, string? Step = null);

/// <summary>The verdict on one history.</summary>
public sealed record LinearizabilityResult<TOp, TResult>(
    bool IsLinearizable,
    IReadOnlyList<LinearizedOp<TOp, TResult>> Order,
    string Explanation,
    long StatesVisited)
{
    public override string ToString() => Explanation;
}

/// <summary>
/// Decides whether a history is linearizable: whether some sequential order of its ops, consistent
/// with real time (an op that responded before another was invoked comes first), makes the spec give
/// every observed result. Wing and Gong's search (1993) over which op to linearize next, with Lowe's
/// memoisation (2017) of the (linearized set, spec state) pairs already explored: two paths that
/// reach the same ops done and the same state have the same future. A pending op (never responded)
/// may be linearized with any answer, or left out; every responded op must be placed.
/// At most 64 ops per history (the linearized set is one machine word); histories are small
/// (a few threads of a few ops) and shrunk before they are read.
/// </summary>
public static partial class Linearizability
{
    public static LinearizabilityResult<TOp, TResult> Check<TState, TOp, TResult>(History<TOp, TResult> history, ISequentialSpec<TState, TOp, TResult> spec)
        where TState : notnull
        => Check(history, spec, false, default);

    /// <summary>As <see cref="Check{TState, TOp, TResult}(History{TOp, TResult}, ISequentialSpec{TState, TOp, TResult})"/>, and the order must end in <paramref name="observedFinal"/>.</summary>
    public static LinearizabilityResult<TOp, TResult> Check<TState, TOp, TResult>(History<TOp, TResult> history, ISequentialSpec<TState, TOp, TResult> spec, TState observedFinal)
        where TState : notnull
        => Check(history, spec, true, observedFinal);

    static LinearizabilityResult<TOp, TResult> Check<TState, TOp, TResult>(
        History<TOp, TResult> history, ISequentialSpec<TState, TOp, TResult> spec, bool hasFinal, TState? observedFinal)
        where TState : notnull
    {
        if (spec is ISteppedSpec<TState, TOp, TResult> stepped && history.Ops.Any(o => stepped.MayRunInSteps(o.Op)))
            return CheckSteps(history, stepped, hasFinal, observedFinal);
        var ops = history.Ops;
        if (ops.Count > 64) throw new ArgumentException($"a history of {ops.Count} ops: the checker takes at most 64 (shrink it first)");
        int n = ops.Count;
        ulong mustPlace = 0;
        for (int i = 0; i < n; i++) if (!ops[i].IsPending) mustPlace |= 1UL << i;
        // before[i]: the responded ops that precede op i in real time, all of which must be placed first.
        var before = new ulong[n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                if (ops[j].Precedes(ops[i])) before[i] |= 1UL << j;

        var seen = new HashSet<(ulong, TState)>();
        var path = new List<LinearizedOp<TOp, TResult>>();
        List<LinearizedOp<TOp, TResult>> longest = [];
        TState longestState = spec.Initial;
        bool finalMismatch = false;
        TState? mismatchState = default;

        bool Search(ulong done, TState state)
        {
            if ((done & mustPlace) == mustPlace)
            {
                if (!hasFinal || spec.EndsIn(state, observedFinal!)) return true;
                if (!finalMismatch) { finalMismatch = true; mismatchState = state; }
            }
            if (!seen.Add((done, state))) return false;
            if (path.Count > longest.Count) { longest = path.ToList(); longestState = state; }
            for (int i = 0; i < n; i++)
            {
                if ((done & (1UL << i)) != 0 || (before[i] & ~done) != 0) continue;
                var op = ops[i];
                foreach (var (result, next) in spec.Outcomes(state, op))
                {
                    if (!op.IsPending && !spec.Agrees(op.Op, op.Result!, result)) continue;
                    path.Add(new LinearizedOp<TOp, TResult>(op, result));
                    if (Search(done | (1UL << i), next)) return true;
                    path.RemoveAt(path.Count - 1);
                }
            }
            return false;
        }

        if (Search(0, spec.Initial))
        {
            var placed = path.Select(p => p.Op.Id).ToHashSet();
            var order = path.Concat(ops.Where(o => !placed.Contains(o.Id)).Select(o => new LinearizedOp<TOp, TResult>(o, default!, Dropped: true))).ToList();
            return new(true, order, RenderOrder(order), seen.Count);
        }
        return new(false, longest, Explain(history, spec, longest, longestState, before, finalMismatch, mismatchState, observedFinal), seen.Count);
    }

    static string RenderOrder<TOp, TResult>(IReadOnlyList<LinearizedOp<TOp, TResult>> order)
    {
        var sb = new StringBuilder("linearizable, in this order:\n");
        int k = 1;
        foreach (var l in order)
            sb.AppendLine(l.Dropped ? $"  -  {l.Op} left out (pending, no effect)" : l.Step is { } step ? $"  {k++,2}. #{l.Op.Id} step: {step}" : $"  {k++,2}. {l.Op} (spec: {l.SpecResult})");
        return sb.ToString();
    }

    /// <summary>
    /// Why no order works: the timeline, the longest prefix some order explains, and for each op that
    /// real time allowed next, what the spec would have answered instead.
    /// </summary>
    static string Explain<TState, TOp, TResult>(History<TOp, TResult> history, ISequentialSpec<TState, TOp, TResult> spec,
        List<LinearizedOp<TOp, TResult>> prefix, TState state, ulong[] before, bool finalMismatch, TState? mismatchState, TState? observedFinal)
        where TState : notnull
    {
        var sb = new StringBuilder("not linearizable: no order consistent with real time explains every result\n");
        ulong done = 0;
        foreach (var p in prefix) done |= 1UL << p.Op.Id;
        var candidates = history.Ops.Where(o => (done & (1UL << o.Id)) == 0 && (before[o.Id] & ~done) == 0).ToList();
        var blocked = candidates.Where(o => !o.IsPending).Select(o => o.Id).ToHashSet();
        sb.Append(history.RenderTimeline(blocked, "<< cannot come next"));
        sb.AppendLine($"longest explained prefix ({prefix.Count} of {history.Ops.Count(o => !o.IsPending)} responded ops):");
        int k = 1;
        foreach (var p in prefix) sb.AppendLine(p.Step is { } step ? $"  {k++,2}. #{p.Op.Id} step: {step}" : $"  {k++,2}. {p.Op} (spec: {p.SpecResult})");
        sb.AppendLine($"  spec state then: {state}");
        if (finalMismatch)
            sb.AppendLine($"every result is explained, but no order ends in the observed final state {observedFinal} (one ends in {mismatchState})");
        foreach (var op in candidates.Where(o => !o.IsPending))
        {
            var answers = string.Join(" or ", spec.Outcomes(state, op).Select(o => $"{o.Result}"));
            sb.AppendLine($"  next could be {op}, but the spec answers {answers}");
        }
        return sb.ToString();
    }
}
