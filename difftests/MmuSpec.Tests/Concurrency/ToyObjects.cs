using MmuSpec.Harness.Concurrency;
using MmuSpec.Impl.Concurrency;

namespace MmuSpec.Tests.Concurrency;

// Toy concurrent objects that prove the Coyote runner and the linearizability checker before the
// concurrent TDP MMU uses them. Each yields at its shared accesses through the same ISchedulePoint
// seam impl/ uses, so CoyoteSchedulePoint makes every interleaving between those points explorable.

/// <summary>An op on a counter or a register: one vocabulary for the toys.</summary>
public abstract record ToyOp
{
    public sealed record Increment : ToyOp { public override string ToString() => "inc"; }
    public sealed record Read : ToyOp { public override string ToString() => "read"; }
    public sealed record Write(int Value) : ToyOp { public override string ToString() => $"write({Value})"; }
    /// <summary>Compare-and-exchange: returns the value it saw, as Interlocked.CompareExchange does.</summary>
    public sealed record Cas(int Expected, int Desired) : ToyOp { public override string ToString() => $"cas({Expected},{Desired})"; }

    public static readonly ToyOp Inc = new Increment();
    public static readonly ToyOp Get = new Read();
}

/// <summary>The sequential spec of both toys: one integer; inc returns the new value, write returns 0.</summary>
public sealed record ToyState(int Value);

public sealed class ToySpec : ISequentialSpec<ToyState, ToyOp, int>
{
    public ToyState Initial => new(0);

    public (int Result, ToyState Next) Step(ToyState state, ToyOp op) => op switch
    {
        ToyOp.Increment => (state.Value + 1, new ToyState(state.Value + 1)),
        ToyOp.Read => (state.Value, state),
        ToyOp.Write w => (0, new ToyState(w.Value)),
        ToyOp.Cas c => (state.Value, state.Value == c.Expected ? new ToyState(c.Desired) : state),
        _ => throw new ArgumentException($"unknown op {op}"),
    };
}

/// <summary>A correct register: every op is one atomic access.</summary>
public sealed class CasRegister<TSchedule> where TSchedule : ISchedulePoint
{
    int value;

    public int Apply(ToyOp op)
    {
        switch (op)
        {
            case ToyOp.Read:
                TSchedule.Yield(SchedulePointKind.SpteRead);
                return Volatile.Read(ref value);
            case ToyOp.Write w:
                TSchedule.Yield(SchedulePointKind.SpteExchange);
                Volatile.Write(ref value, w.Value);
                return 0;
            case ToyOp.Cas c:
                TSchedule.Yield(SchedulePointKind.SpteExchange);
                return Interlocked.CompareExchange(ref value, c.Desired, c.Expected);
            default:
                throw new ArgumentException($"a register has no {op}");
        }
    }

    public ToyState Observe() => new(Volatile.Read(ref value));
}

/// <summary>A correct counter: read, then compare-and-exchange, retried when another thread won.</summary>
public sealed class CasCounter<TSchedule> where TSchedule : ISchedulePoint
{
    int value;

    public int Apply(ToyOp op)
    {
        switch (op)
        {
            case ToyOp.Read:
                TSchedule.Yield(SchedulePointKind.SpteRead);
                return Volatile.Read(ref value);
            case ToyOp.Increment:
                while (true)
                {
                    TSchedule.Yield(SchedulePointKind.SpteRead);
                    int seen = Volatile.Read(ref value);
                    TSchedule.Yield(SchedulePointKind.SpteExchange);
                    if (Interlocked.CompareExchange(ref value, seen + 1, seen) == seen) return seen + 1;
                }
            default:
                throw new ArgumentException($"a counter has no {op}");
        }
    }

    public ToyState Observe() => new(Volatile.Read(ref value));
}

/// <summary>A racy counter: read; another thread may run; write. Two increments can both return 1.</summary>
public sealed class RacyCounter<TSchedule> where TSchedule : ISchedulePoint
{
    int value;

    public int Apply(ToyOp op)
    {
        switch (op)
        {
            case ToyOp.Read:
                TSchedule.Yield(SchedulePointKind.SpteRead);
                return Volatile.Read(ref value);
            case ToyOp.Increment:
                TSchedule.Yield(SchedulePointKind.SpteRead);
                int seen = Volatile.Read(ref value);
                TSchedule.Yield(SchedulePointKind.SpteExchange);
                Volatile.Write(ref value, seen + 1);
                return seen + 1;
            default:
                throw new ArgumentException($"a counter has no {op}");
        }
    }

    public ToyState Observe() => new(Volatile.Read(ref value));
}

/// <summary>A counter behind a .NET lock: correct on real threads, but the lock is not a schedule point.</summary>
public sealed class MonitorCounter<TSchedule> where TSchedule : ISchedulePoint
{
    readonly object gate = new();
    int value;

    public int Apply(ToyOp op)
    {
        lock (gate)
        {
            TSchedule.Yield(SchedulePointKind.SpteRead);
            return op is ToyOp.Increment ? ++value : value;
        }
    }
}

public static class Toys
{
    public static readonly ToySpec Spec = new();

    public static ConcurrentSubject<CasRegister<CoyoteSchedulePoint>, ToyState, ToyOp, int> Register() =>
        new(() => new(), (r, _, op) => r.Apply(op), Spec, r => r.Observe());

    public static ConcurrentSubject<CasCounter<CoyoteSchedulePoint>, ToyState, ToyOp, int> Counter() =>
        new(() => new(), (c, _, op) => c.Apply(op), Spec, c => c.Observe());

    public static ConcurrentSubject<RacyCounter<TSchedule>, ToyState, ToyOp, int> Racy<TSchedule>() where TSchedule : ISchedulePoint =>
        new(() => new(), (c, _, op) => c.Apply(op), Spec, c => c.Observe());

    public static ConcurrentProgram<ToyOp> Program(params ToyOp[][] threads) => new(threads);

    public static ToyOp[] Repeat(ToyOp op, int n) => Enumerable.Repeat(op, n).ToArray();
}
