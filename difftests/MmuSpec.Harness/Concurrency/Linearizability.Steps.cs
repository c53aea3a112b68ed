using System.Text;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// A sequential spec some of whose ops run as a sequence of atomic steps rather than one (a range walk that
/// other ops may run between: docs/tdp-concurrency.md, "Range operations"). Each step is an atomic change of
/// the state; between two steps the op has a progress value, which must have value equality (it is part of
/// the checker's memo key). An op that <see cref="MayRunInSteps"/> says no to is stepped by
/// <see cref="ISequentialSpec{TState, TOp, TResult}.Outcomes"/>, as before.
/// </summary>
public interface ISteppedSpec<TState, TOp, TResult> : ISequentialSpec<TState, TOp, TResult> where TState : notnull
{
    /// <summary>Whether <paramref name="op"/> may take more than one step (in some state).</summary>
    bool MayRunInSteps(TOp op);

    /// <summary>
    /// The next step of <paramref name="op"/> in <paramref name="state"/>, from <paramref name="progress"/>
    /// (null: not started), every way it may go: the state after it, and either the progress made (the op goes
    /// on) or, with progress null, the op's result (it is done).
    /// </summary>
    IEnumerable<OpStep<TState, TResult>> NextStep(TState state, HistoryOp<TOp, TResult> op, object? progress);

    /// <summary>The spec for one history: it may use what the history's ops touch to take fewer, larger steps.</summary>
    ISteppedSpec<TState, TOp, TResult> For(History<TOp, TResult> history) => this;
}

/// <summary>One step of an op: the state after it and the progress made, or (progress null) the op's result.</summary>
public readonly record struct OpStep<TState, TResult>(TState Next, object? Progress, TResult? Result);

public static partial class Linearizability
{
    /// <summary>
    /// The search for a history with ops that run in steps: each step of an op is linearized at its own point
    /// inside the op's real-time interval, its steps in order; a responded op must have taken every step (its
    /// last gives its result), a pending op may have taken any number, none included. The search state is the
    /// completed ops, each started op's progress and the spec state, memoised as in the one-step search; a
    /// spec whose walks always progress (a range walk's cursor only moves on) keeps it finite. With no op
    /// that may run in steps this search is never used, so the one-step verdicts stay as they were.
    /// </summary>
    static LinearizabilityResult<TOp, TResult> CheckSteps<TState, TOp, TResult>(
        History<TOp, TResult> history, ISteppedSpec<TState, TOp, TResult> spec, bool hasFinal, TState? observedFinal)
        where TState : notnull
    {
        var ops = history.Ops;
        if (ops.Count > 64) throw new ArgumentException($"a history of {ops.Count} ops: the checker takes at most 64 (shrink it first)");
        spec = spec.For(history);
        int n = ops.Count;
        ulong mustPlace = 0;
        for (int i = 0; i < n; i++) if (!ops[i].IsPending) mustPlace |= 1UL << i;
        var before = new ulong[n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                if (ops[j].Precedes(ops[i])) before[i] |= 1UL << j;

        var seen = new HashSet<(ulong, Progress, TState)>();
        var path = new List<LinearizedOp<TOp, TResult>>();
        List<LinearizedOp<TOp, TResult>> longest = [];
        TState longestState = spec.Initial;
        bool finalMismatch = false;
        TState? mismatchState = default;

        bool Search(ulong done, Progress progress, TState state)
        {
            if ((done & mustPlace) == mustPlace)
            {
                if (!hasFinal || spec.EndsIn(state, observedFinal!)) return true;
                if (!finalMismatch) { finalMismatch = true; mismatchState = state; }
            }
            if (!seen.Add((done, progress, state))) return false;
            if (path.Count > longest.Count) { longest = path.ToList(); longestState = state; }
            for (int i = 0; i < n; i++)
            {
                if ((done & (1UL << i)) != 0 || (before[i] & ~done) != 0) continue;
                var op = ops[i];
                var steps = spec.MayRunInSteps(op.Op)
                    ? spec.NextStep(state, op, progress[i])
                    : spec.Outcomes(state, op).Select(o => new OpStep<TState, TResult>(o.Next, null, o.Result));
                foreach (var step in steps)
                {
                    if (step.Progress is null)
                    {
                        if (!op.IsPending && !spec.Agrees(op.Op, op.Result!, step.Result!)) continue;
                        path.Add(new LinearizedOp<TOp, TResult>(op, step.Result!));
                        if (Search(done | (1UL << i), progress.With(i, null), step.Next)) return true;
                    }
                    else
                    {
                        path.Add(new LinearizedOp<TOp, TResult>(op, default!, Step: step.Progress.ToString()));
                        if (Search(done, progress.With(i, step.Progress), step.Next)) return true;
                    }
                    path.RemoveAt(path.Count - 1);
                }
            }
            return false;
        }

        if (Search(0, new Progress(new object?[n]), spec.Initial))
        {
            var completed = path.Where(p => p.Step is null).Select(p => p.Op.Id).ToHashSet();
            var started = path.Select(p => p.Op.Id).ToHashSet();
            var order = path.Concat(ops.Where(o => !started.Contains(o.Id)).Select(o => new LinearizedOp<TOp, TResult>(o, default!, Dropped: true))).ToList();
            var text = new StringBuilder(RenderOrder(order));
            foreach (var o in ops.Where(o => started.Contains(o.Id) && !completed.Contains(o.Id)))
                text.AppendLine($"  -  {o} stopped part way (pending)");
            return new(true, order, text.ToString(), seen.Count);
        }
        return new(false, longest, ExplainSteps(history, longest, longestState, finalMismatch, mismatchState, observedFinal), seen.Count);
    }

    static string ExplainSteps<TState, TOp, TResult>(History<TOp, TResult> history, List<LinearizedOp<TOp, TResult>> prefix, TState state,
        bool finalMismatch, TState? mismatchState, TState? observedFinal)
    {
        var sb = new StringBuilder("not linearizable: no order of steps consistent with real time explains every result\n");
        var completed = prefix.Where(p => p.Step is null).Select(p => p.Op.Id).ToHashSet();
        var blocked = history.Ops.Where(o => !o.IsPending && !completed.Contains(o.Id)).Select(o => o.Id).ToHashSet();
        sb.Append(history.RenderTimeline(blocked, "<< never completed"));
        sb.AppendLine($"longest explained prefix ({completed.Count} of {history.Ops.Count(o => !o.IsPending)} responded ops completed):");
        int k = 1;
        foreach (var p in prefix) sb.AppendLine(p.Step is { } step ? $"  {k++,2}. #{p.Op.Id} step: {step}" : $"  {k++,2}. {p.Op} (spec: {p.SpecResult})");
        sb.AppendLine($"  spec state then: {state}");
        if (finalMismatch)
            sb.AppendLine($"every result is explained, but no order ends in the observed final state {observedFinal} (one ends in {mismatchState})");
        return sb.ToString();
    }

    /// <summary>Each op's progress (null: not started or done), compared by value: part of the memo key.</summary>
    sealed class Progress(object?[] values) : IEquatable<Progress>
    {
        readonly object?[] values = values;

        public object? this[int i] => values[i];

        public Progress With(int i, object? value)
        {
            if (Equals(values[i], value)) return this;
            var copy = (object?[])values.Clone();
            copy[i] = value;
            return new Progress(copy);
        }

        public bool Equals(Progress? other) => other is not null && values.AsSpan().SequenceEqual(other.values.AsSpan(), EqualityComparer<object?>.Default);
        public override bool Equals(object? obj) => Equals(obj as Progress);

        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (var v in values) h.Add(v);
            return h.ToHashCode();
        }
    }
}
