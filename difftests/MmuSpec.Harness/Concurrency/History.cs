using System.Text;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// One operation of a concurrent history: which logical thread ran it, what it asked, what it got back,
/// and where its invocation and response fall in the history's single order of events. A pending
/// operation (invoked, never responded: its thread was stopped or the run ended) has no response.
/// </summary>
public sealed record HistoryOp<TOp, TResult>(int Id, int Thread, TOp Op, int InvokedAt, int? RespondedAt, TResult? Result)
{
    public bool IsPending => RespondedAt is null;

    /// <summary>Real-time order: this op responded before <paramref name="other"/> was invoked, so it must come first.</summary>
    public bool Precedes(HistoryOp<TOp, TResult> other) => RespondedAt is int r && r < other.InvokedAt;

    public override string ToString() => IsPending ? $"#{Id} T{Thread} {Op} -> (pending)" : $"#{Id} T{Thread} {Op} -> {Result}";
}

/// <summary>
/// A history of invocations and responses: the operations with their event positions (0, 1, 2, ...
/// in the order the events happened, one counter shared by every thread).
/// </summary>
public sealed class History<TOp, TResult>
{
    public IReadOnlyList<HistoryOp<TOp, TResult>> Ops { get; }

    public History(IReadOnlyList<HistoryOp<TOp, TResult>> ops)
    {
        for (int i = 0; i < ops.Count; i++)
        {
            var op = ops[i];
            if (op.Id != i) throw new ArgumentException($"op {i} has id {op.Id}: ids are positions in the list");
            if (op.RespondedAt is int r && r <= op.InvokedAt) throw new ArgumentException($"op #{i} responds at {r}, not after its invocation at {op.InvokedAt}");
        }
        var positions = ops.Select(o => o.InvokedAt).Concat(ops.Where(o => !o.IsPending).Select(o => o.RespondedAt!.Value)).ToList();
        if (positions.Distinct().Count() != positions.Count) throw new ArgumentException("two events share one position");
        // A thread runs one op at a time: each of its ops is invoked after the previous one responded.
        foreach (var thread in ops.GroupBy(o => o.Thread))
        {
            HistoryOp<TOp, TResult>? last = null;
            foreach (var op in thread.OrderBy(o => o.InvokedAt))
            {
                if (last is not null && !last.Precedes(op)) throw new ArgumentException($"thread {op.Thread} invoked #{op.Id} while #{last.Id} was still running");
                last = op;
            }
        }
        Ops = ops;
    }

    /// <summary>
    /// Builds a history from events written as a script, for hand-written tests: each entry is
    /// (thread, op) for an invocation or (thread, result) for the response of that thread's open op.
    /// </summary>
    public static History<TOp, TResult> FromEvents(IEnumerable<HistoryEvent<TOp, TResult>> events)
    {
        var ops = new List<HistoryOp<TOp, TResult>>();
        var open = new Dictionary<int, int>();
        int at = 0;
        foreach (var e in events)
        {
            if (e.IsInvoke)
            {
                if (open.ContainsKey(e.Thread)) throw new ArgumentException($"thread {e.Thread} invokes while an op is open");
                open[e.Thread] = ops.Count;
                ops.Add(new HistoryOp<TOp, TResult>(ops.Count, e.Thread, e.Op!, at, null, default));
            }
            else
            {
                if (!open.Remove(e.Thread, out int id)) throw new ArgumentException($"thread {e.Thread} responds with no open op");
                ops[id] = ops[id] with { RespondedAt = at, Result = e.Result };
            }
            at++;
        }
        return new History<TOp, TResult>(ops);
    }

    /// <summary>The history as a timeline: one row per event, one column per thread.</summary>
    public string RenderTimeline(IReadOnlySet<int>? highlight = null, string mark = "<<")
    {
        var threads = Ops.Select(o => o.Thread).Distinct().Order().ToList();
        var events = Ops.Select(o => (At: o.InvokedAt, Op: o, Invoke: true))
            .Concat(Ops.Where(o => !o.IsPending).Select(o => (At: o.RespondedAt!.Value, Op: o, Invoke: false)))
            .OrderBy(e => e.At).ToList();
        const int width = 30;
        var sb = new StringBuilder();
        sb.Append("  event ").AppendJoin("", threads.Select(t => $"T{t}".PadRight(width))).AppendLine();
        foreach (var (at, op, invoke) in events)
        {
            sb.Append($"  {at,5} ");
            foreach (var t in threads)
            {
                string cell = t != op.Thread ? (Running(t, at) ? "|" : "") :
                    invoke ? $"#{op.Id} {op.Op}" : $"#{op.Id} -> {op.Result}";
                sb.Append(Clip(cell, width - 1).PadRight(width));
            }
            if (highlight is not null && highlight.Contains(op.Id) && invoke) sb.Append(mark);
            sb.AppendLine();
        }
        foreach (var op in Ops.Where(o => o.IsPending)) sb.AppendLine($"  (#{op.Id} on T{op.Thread} never responded)");
        return sb.ToString();
    }

    bool Running(int thread, int at) => Ops.Any(o => o.Thread == thread && o.InvokedAt < at && (o.RespondedAt is not int r || r > at));

    static string Clip(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "~";
}

/// <summary>One event of a written history: an invocation (Op set) or a response (Result set) on a thread.</summary>
public sealed record HistoryEvent<TOp, TResult>(int Thread, bool IsInvoke, TOp? Op, TResult? Result)
{
    public static HistoryEvent<TOp, TResult> Invoke(int thread, TOp op) => new(thread, true, op, default);
    public static HistoryEvent<TOp, TResult> Respond(int thread, TResult result) => new(thread, false, default, result);
}

/// <summary>
/// Records a history while threads run. Safe from real threads (a lock orders the events); under
/// Coyote's scheduler only one controlled thread runs at a time, so the order is the schedule's.
/// </summary>
public sealed class HistoryRecorder<TOp, TResult>
{
    readonly object gate = new();
    readonly List<HistoryOp<TOp, TResult>> ops = new();
    int at;

    /// <summary>Records an invocation; returns the op's id for <see cref="Respond"/>.</summary>
    public int Invoke(int thread, TOp op)
    {
        lock (gate)
        {
            ops.Add(new HistoryOp<TOp, TResult>(ops.Count, thread, op, at++, null, default));
            return ops.Count - 1;
        }
    }

    public void Respond(int id, TResult result)
    {
        lock (gate) ops[id] = ops[id] with { RespondedAt = at++, Result = result };
    }

    public History<TOp, TResult> ToHistory()
    {
        lock (gate) return new History<TOp, TResult>(ops.ToList());
    }
}
