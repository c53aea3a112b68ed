namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// Shrinks a failing concurrent program: fewer threads, then fewer ops, keeping each removal while
/// the program still fails, to a fixpoint. <c>fails</c> is usually "a schedule exploration with the
/// same seed and bounds finds a failure"; it is deterministic, so the result is too.
/// </summary>
public static class ProgramShrinker
{
    public static ConcurrentProgram<TOp> Shrink<TOp>(ConcurrentProgram<TOp> program, Func<ConcurrentProgram<TOp>, bool> fails)
    {
        var current = program.Threads.Select(t => t.ToList()).ToList();
        bool changed = true;
        while (changed)
        {
            changed = false;
            // A whole thread first: one removal takes many ops away.
            for (int t = current.Count - 1; t >= 0; t--)
            {
                var candidate = current.Where((_, i) => i != t).ToList();
                if (candidate.Count > 0 && fails(Wrap(candidate))) { current = candidate; changed = true; }
            }
            for (int t = current.Count - 1; t >= 0; t--)
                for (int k = current[t].Count - 1; k >= 0; k--)
                {
                    var candidate = current.Select((ops, i) => i == t ? ops.Where((_, j) => j != k).ToList() : ops).Where(ops => ops.Count > 0).ToList();
                    if (candidate.Count > 0 && fails(Wrap(candidate))) { current = candidate; changed = true; break; }
                }
        }
        return Wrap(current);
    }

    /// <summary>
    /// The programs one step smaller than <paramref name="program"/>, in the order <see cref="Shrink"/> tries
    /// them: each thread left out (last first), then each single op (last thread, last op first).
    /// FsCheck's shrinking takes the first that still fails and starts again, as <see cref="Shrink"/> does.
    /// </summary>
    public static IEnumerable<ConcurrentProgram<TOp>> Candidates<TOp>(ConcurrentProgram<TOp> program)
    {
        var current = program.Threads.Select(t => t.ToList()).ToList();
        for (int t = current.Count - 1; t >= 0; t--)
        {
            var candidate = current.Where((_, i) => i != t).ToList();
            if (candidate.Count > 0) yield return Wrap(candidate);
        }
        for (int t = current.Count - 1; t >= 0; t--)
            for (int k = current[t].Count - 1; k >= 0; k--)
            {
                var candidate = current.Select((ops, i) => i == t ? ops.Where((_, j) => j != k).ToList() : ops).Where(ops => ops.Count > 0).ToList();
                if (candidate.Count > 0) yield return Wrap(candidate);
            }
    }

    static ConcurrentProgram<TOp> Wrap<TOp>(List<List<TOp>> threads) => new(threads.Select(t => (IReadOnlyList<TOp>)t.ToList()).ToList());
}
