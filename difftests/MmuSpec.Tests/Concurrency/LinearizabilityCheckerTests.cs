using MmuSpec.Harness.Concurrency;
using Xunit;
using E = MmuSpec.Harness.Concurrency.HistoryEvent<MmuSpec.Tests.Concurrency.ToyOp, int>;

namespace MmuSpec.Tests.Concurrency;

/// <summary>The Wing-Gong checker on hand-written histories of the toy register/counter spec.</summary>
public class LinearizabilityCheckerTests
{
    static E I(int thread, ToyOp op) => E.Invoke(thread, op);
    static E R(int thread, int result) => E.Respond(thread, result);
    static History<ToyOp, int> H(params E[] events) => History<ToyOp, int>.FromEvents(events);
    static LinearizabilityResult<ToyOp, int> Check(History<ToyOp, int> h) => Linearizability.Check(h, Toys.Spec);

    [Fact]
    public void A_sequential_history_is_explained_in_its_own_order()
    {
        var h = H(I(0, ToyOp.Inc), R(0, 1), I(1, ToyOp.Inc), R(1, 2), I(0, ToyOp.Get), R(0, 2));
        var v = Check(h);
        Assert.True(v.IsLinearizable, v.Explanation);
        Assert.Equal([0, 1, 2], v.Order.Select(o => o.Op.Id));
        Assert.Equal([1, 2, 2], v.Order.Select(o => o.SpecResult));
    }

    [Fact]
    public void Overlapping_ops_may_be_ordered_against_their_invocation_order()
    {
        // T1's read is invoked first but sees T0's write: the write must be linearized before it.
        var h = H(I(1, ToyOp.Get), I(0, new ToyOp.Write(7)), R(0, 0), R(1, 7));
        var v = Check(h);
        Assert.True(v.IsLinearizable, v.Explanation);
        Assert.Equal([1, 0], v.Order.Select(o => o.Op.Id));
    }

    [Fact]
    public void Two_overlapping_increments_that_both_return_one_are_rejected_with_a_readable_explanation()
    {
        var h = H(I(0, ToyOp.Inc), I(1, ToyOp.Inc), R(0, 1), R(1, 1));
        var v = Check(h);
        Assert.False(v.IsLinearizable);
        Assert.Single(v.Order);
        Assert.Contains("not linearizable", v.Explanation);
        Assert.Contains("longest explained prefix (1 of 2 responded ops)", v.Explanation);
        Assert.Contains("T0", v.Explanation);
        Assert.Contains("T1", v.Explanation);
        Assert.Contains("<< cannot come next", v.Explanation);
        Assert.Contains("but the spec answers 2", v.Explanation);
    }

    [Fact]
    public void Real_time_order_is_respected()
    {
        // The write responded before the read was invoked: the read cannot see the old value...
        var after = H(I(0, new ToyOp.Write(5)), R(0, 0), I(1, ToyOp.Get), R(1, 0));
        Assert.False(Check(after).IsLinearizable);
        // ...while the same results with the two ops overlapping are explained (read first).
        var overlapping = H(I(0, new ToyOp.Write(5)), I(1, ToyOp.Get), R(0, 0), R(1, 0));
        var v = Check(overlapping);
        Assert.True(v.IsLinearizable, v.Explanation);
        Assert.Equal([1, 0], v.Order.Select(o => o.Op.Id));
    }

    [Fact]
    public void A_pending_op_may_take_effect_or_not()
    {
        // T0's write never responded. A later read may see it (linearized) or not (dropped).
        var seen = Check(H(I(0, new ToyOp.Write(3)), I(1, ToyOp.Get), R(1, 3)));
        Assert.True(seen.IsLinearizable, seen.Explanation);
        Assert.False(seen.Order.Single(o => o.Op.Id == 0).Dropped);

        var unseen = Check(H(I(0, new ToyOp.Write(3)), I(1, ToyOp.Get), R(1, 0)));
        Assert.True(unseen.IsLinearizable, unseen.Explanation);
        Assert.True(unseen.Order.Single(o => o.Op.Id == 0).Dropped);
        Assert.Contains("left out (pending", unseen.Explanation);

        // No effect of the pending write explains a value it never wrote.
        Assert.False(Check(H(I(0, new ToyOp.Write(3)), I(1, ToyOp.Get), R(1, 4))).IsLinearizable);
    }

    [Fact]
    public void The_order_must_end_in_the_observed_final_state()
    {
        var h = H(I(0, ToyOp.Inc), I(1, ToyOp.Inc), R(0, 1), R(1, 2));
        Assert.True(Linearizability.Check(h, Toys.Spec, new ToyState(2)).IsLinearizable);
        var v = Linearizability.Check(h, Toys.Spec, new ToyState(1));
        Assert.False(v.IsLinearizable);
        Assert.Contains("observed final state ToyState { Value = 1 }", v.Explanation);
        // A pending increment may or may not have landed: both final values are explained.
        var pending = H(I(0, ToyOp.Inc), I(1, ToyOp.Inc), R(1, 1));
        Assert.True(Linearizability.Check(pending, Toys.Spec, new ToyState(1)).IsLinearizable);
        Assert.True(Linearizability.Check(pending, Toys.Spec, new ToyState(2)).IsLinearizable);
        Assert.False(Linearizability.Check(pending, Toys.Spec, new ToyState(3)).IsLinearizable);
    }

    /// <summary>A register whose compare-and-exchange may also give up without effect (answer -1, Retry), as a concurrent op may.</summary>
    sealed class RetryingSpec : ISequentialSpec<ToyState, ToyOp, int>
    {
        public const int Retry = -1;
        public ToyState Initial => new(0);
        public (int Result, ToyState Next) Step(ToyState state, ToyOp op) => Toys.Spec.Step(state, op);
        public IEnumerable<(int Result, ToyState Next)> Outcomes(ToyState state, ToyOp op) =>
            op is ToyOp.Cas ? [Step(state, op), (Retry, state)] : [Step(state, op)];
    }

    [Fact]
    public void An_op_with_two_allowed_answers_is_explained_by_either()
    {
        var spec = new RetryingSpec();
        // The cas retried: it had no effect, so the read after it sees 0.
        var retried = History<ToyOp, int>.FromEvents([I(0, new ToyOp.Cas(0, 9)), R(0, RetryingSpec.Retry), I(1, ToyOp.Get), R(1, 0)]);
        Assert.True(Linearizability.Check(retried, spec).IsLinearizable);
        // The cas succeeded: the read sees 9.
        var swapped = History<ToyOp, int>.FromEvents([I(0, new ToyOp.Cas(0, 9)), R(0, 0), I(1, ToyOp.Get), R(1, 9)]);
        Assert.True(Linearizability.Check(swapped, spec).IsLinearizable);
        // A retry that nonetheless took effect is neither answer.
        var both = History<ToyOp, int>.FromEvents([I(0, new ToyOp.Cas(0, 9)), R(0, RetryingSpec.Retry), I(1, ToyOp.Get), R(1, 9)]);
        var v = Linearizability.Check(both, spec);
        Assert.False(v.IsLinearizable);
        Assert.Contains("but the spec answers 0", v.Explanation);
        // The plain spec (one answer) rejects the retry outright.
        Assert.False(Linearizability.Check(retried, Toys.Spec).IsLinearizable);
    }

    [Fact]
    public void An_agrees_override_accepts_results_the_spec_words_differently()
    {
        var h = H(I(0, ToyOp.Inc), R(0, 101));
        Assert.False(Check(h).IsLinearizable);
        Assert.True(Linearizability.Check(h, new OffsetSpec()).IsLinearizable);
    }

    /// <summary>An impl that reports its counter plus 100: equal modulo 100 agrees.</summary>
    sealed class OffsetSpec : ISequentialSpec<ToyState, ToyOp, int>
    {
        public ToyState Initial => new(0);
        public (int Result, ToyState Next) Step(ToyState state, ToyOp op) => Toys.Spec.Step(state, op);
        public bool Agrees(ToyOp op, int observed, int specified) => observed % 100 == specified;
    }

    [Fact]
    public void Memoisation_keeps_a_three_by_five_history_small()
    {
        // Three threads of five increments, every op overlapping every other thread's (round-robin events),
        // and one impossible result at the end: the search must exhaust every order. Without memoisation the
        // orders number 15!/(5!^3) = 756756; with it at most 6^3 = 216 (linearized set, state) pairs exist.
        var events = new List<E>();
        int next = 1;
        for (int k = 0; k < 5; k++)
        {
            for (int t = 0; t < 3; t++) events.Add(I(t, ToyOp.Inc));
            for (int t = 0; t < 3; t++) events.Add(R(t, k == 4 && t == 2 ? 99 : next++));
        }
        var v = Check(H(events.ToArray()));
        Assert.False(v.IsLinearizable);
        Assert.InRange(v.StatesVisited, 1, 216);
        Assert.Equal(14, v.Order.Count);
        Assert.Contains("#14 T2 inc -> 99", v.Explanation);
    }

    [Fact]
    public void The_timeline_shows_one_column_per_thread()
    {
        var h = H(I(0, ToyOp.Inc), I(1, ToyOp.Get), R(1, 0), R(0, 1));
        var lines = h.RenderTimeline().Split('\n');
        Assert.Contains("T0", lines[0]);
        Assert.Contains("T1", lines[0]);
        Assert.Contains(lines, l => l.Contains("#1 read") && l.Contains('|'));
        Assert.Contains(lines, l => l.Contains("#0 -> 1"));
    }

    [Fact]
    public void A_thread_that_runs_two_ops_at_once_is_not_a_history()
    {
        var ops = new List<HistoryOp<ToyOp, int>> { new(0, 0, ToyOp.Inc, 0, 3, 1), new(1, 0, ToyOp.Inc, 1, 2, 2) };
        Assert.Throws<ArgumentException>(() => new History<ToyOp, int>(ops));
        Assert.Throws<ArgumentException>(() => H(I(0, ToyOp.Inc), I(0, ToyOp.Inc)));
        Assert.Throws<ArgumentException>(() => H(R(0, 1)));
    }
}
