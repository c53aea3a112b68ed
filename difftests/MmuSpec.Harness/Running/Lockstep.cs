using System.Collections.Immutable;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Harness.Running;

/// <summary>
/// A case run in lockstep up to its first divergence: the records (boot, each op, end), the first
/// divergent one as a <see cref="Divergence"/>, and, when asked for, both sides' state right after it.
/// The property's verdict, the failure report, the counterexample file and replay's trace all read this.
/// </summary>
public sealed record LockstepReport(
    IDiffFamily Family, object Case, ImmutableArray<StepRecord> Records, Divergence? Divergence,
    ImmutableArray<StateRow> State, int StateRowsHidden, string? StateNote)
{
    public bool Agreed => Divergence is null;

    /// <summary>The operations both sides ran (a divergent one included).</summary>
    public int StepsRun => Records.Count(r => r.Kind == StepKind.Op);

    /// <summary>The shrunk-counterexample text: the case with the divergent step marked, both results, the state difference.</summary>
    public string Render() => Divergence is { } d
        ? d.Render(step => Family.Render(Case, step), Family.WhenNoStep)
        : CaseRuns.AgreeOnAll(StepsRun);
}

/// <summary>
/// The one lockstep runner: every family's case goes through <see cref="Records"/>, so what the
/// comparator judges is what replay prints. Per step it runs the spec, then the impl (a throw on
/// either side is that side's result, "threw ..."), compares the results structurally and then runs
/// the family's checks; it stops after the first record that diverges. When every step agreed the
/// impl is destroyed and its native pages must all be back in the pool (the end record).
/// </summary>
public static class Lockstep
{
    /// <summary>The records of <paramref name="c"/> one by one; <paramref name="atDivergence"/> sees the open session at the divergent record.</summary>
    public static IEnumerable<StepRecord> Records<TCase, TOp, TResult>(DiffFamily<TCase, TOp, TResult> family, TCase c,
        Action<LockstepSession<TOp, TResult>, StepRecord>? atDivergence = null)
        where TCase : notnull where TOp : notnull where TResult : class
    {
        var pool = new NativePagePool();
        var steps = family.Steps(c);
        using (var session = family.Open(c, pool))
        {
            bool run = true;
            if (session.Boot() is { } boot)
            {
                bool differ = boot.Spec != boot.Impl;
                var record = new StepRecord(StepKind.Boot, -1, boot.Op, boot.Spec, boot.Impl, differ,
                    differ || !boot.Booted ? [] : Guard(session.StateDifferences));
                if (record.Diverges) atDivergence?.Invoke(session, record);
                yield return record;
                if (record.Diverges) yield break;
                run = boot.Booted;
            }
            for (int i = 0; run && i < steps.Count; i++)
            {
                var record = Step(family, session, i, steps[i]);
                if (record.Diverges) atDivergence?.Invoke(session, record);
                yield return record;
                if (record.Diverges) yield break;
            }
        }
        // Native memory: every page the impl allocated for this case must be back in the pool.
        var (op, freed, leaked) = family.EndOfCase(pool.PagesInUse);
        bool leak = pool.PagesInUse != 0;
        // A family that words the end check as an op counts it as the step after the last; else it is outside the steps.
        yield return new StepRecord(StepKind.End, op is null ? -1 : steps.Count, op ?? family.WhenNoStep, freed, leak ? leaked : freed, leak, []);
    }

    static StepRecord Step<TCase, TOp, TResult>(DiffFamily<TCase, TOp, TResult> family, LockstepSession<TOp, TResult> session, int index, TOp op)
        where TCase : notnull where TOp : notnull where TResult : class
    {
        TResult? spec = null, impl = null;
        string sr, ir;
        try { spec = session.SpecStep(op); sr = family.Describe(spec); }
        catch (Exception e) { spec = null; sr = Threw(e); }
        try { impl = session.ImplStep(op); ir = family.Describe(impl); }
        catch (Exception e) { impl = null; ir = Threw(e); }
        // A side that threw agrees with nothing: the spec throws only on a case outside the rules.
        bool differ = spec is null || impl is null || !family.SameResult(spec, impl);
        string? allowed = null;
        if (differ && spec is not null && impl is not null)
        {
            try { allowed = session.Allowance(op, spec, impl); }
            catch (Exception e) { return new StepRecord(StepKind.Op, index, op, sr, ir, true, [$"judging the impl's result {Threw(e)}"]); }
            differ = allowed is null;
        }
        var lines = differ ? Guard(() => session.ResultDifference(op, spec, impl)) : FirstFailing(session.Checks(op, spec!));
        return new StepRecord(StepKind.Op, index, op, sr, ir, differ, lines, allowed);
    }

    static ImmutableArray<string> FirstFailing(IEnumerable<ImmutableArray<string>> checks)
    {
        try
        {
            foreach (var lines in checks)
                if (lines.Length > 0) return lines;
            return [];
        }
        catch (Exception e) { return [$"checking the step {Threw(e)}"]; }
    }

    static ImmutableArray<string> Guard(Func<ImmutableArray<string>> lines)
    {
        try { return lines(); }
        catch (Exception e) { return [$"checking the step {Threw(e)}"]; }
    }

    public static string Threw(Exception e) => $"threw {e.GetType().Name}: {e.Message}";

    /// <summary>
    /// Runs <paramref name="c"/> to its first divergence. With <paramref name="maxStateRows"/> above 0 the
    /// report keeps both sides' state after a divergent boot or op (at most that many rows: every
    /// differing one first).
    /// </summary>
    public static LockstepReport Run<TCase, TOp, TResult>(DiffFamily<TCase, TOp, TResult> family, TCase c, int maxStateRows = 0)
        where TCase : notnull where TOp : notnull where TResult : class
    {
        (ImmutableArray<StateRow> Rows, int Hidden, string? Note) state = ([], 0, null);
        var records = Records(family, c, maxStateRows <= 0 ? null : (session, record) =>
            state = session.NoState is { } none ? ([], 0, none) : CaseRuns.Limit(CaseRuns.Capture(session.StateRows), maxStateRows))
            .ToImmutableArray();
        var divergent = records.FirstOrDefault(r => r.Diverges);
        return new LockstepReport(family, c, records, divergent is null ? null : ToDivergence(divergent), state.Rows, state.Hidden, state.Note);
    }

    /// <summary>The divergence a record stands for, numbered as reports number it.</summary>
    public static Divergence ToDivergence(StepRecord r) => r.Kind switch
    {
        StepKind.Boot => new Divergence(-1, null, r.Spec, r.Impl, r.Differences),
        StepKind.End when r.Index < 0 => new Divergence(-1, null, r.Spec, r.Impl, r.Differences),
        _ => new Divergence(r.Index, r.Op, r.Spec, r.Impl, r.Differences),
    };
}
