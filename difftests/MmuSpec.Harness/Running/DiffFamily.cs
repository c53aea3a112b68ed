using System.Collections.Immutable;
using System.Text.Json;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Harness.Running;

/// <summary>
/// A family of differential properties (walk, TDP, shadow) seen without its case type: what the
/// code that holds a case as <c>object</c> (counterexample files, replay, the shrinker, coverage)
/// needs. <see cref="DiffFamily{TCase, TOp, TResult}"/> implements it; <see cref="Families"/> finds it.
/// </summary>
public interface IDiffFamily
{
    /// <summary>"walk", "tdp", "shadow": the property family and the case's JSON "kind".</summary>
    string Name { get; }
    Type CaseType { get; }
    /// <summary>How a report names a divergence outside the steps ("at boot", "when the VM was destroyed").</summary>
    string WhenNoStep { get; }
    /// <summary>Every situation the family's classifier can name, grouped, in report order.</summary>
    IReadOnlyList<string> Situations { get; }

    /// <summary>The steps of case <paramref name="c"/> that a divergence's step counts in.</summary>
    int StepCount(object c);
    /// <summary>"13 ops, 9 setup writes" and the like: the size of a case in words.</summary>
    string Summary(object c);
    /// <summary>The case rendered with the divergent step (0-based, counted as the runner counts) marked.</summary>
    string Render(object c, int? highlightStep = null);
    /// <summary>The case run in lockstep to its first divergence (<see cref="Lockstep"/>); with <paramref name="maxStateRows"/>
    /// above 0 both sides' state after the divergent step is kept too.</summary>
    LockstepReport Run(object c, int maxStateRows = 0);
    void Classify(object c, Action<string> hit);
    void WriteJson(Utf8JsonWriter w, object c);
    object ReadJson(JsonElement e, string path);
    /// <summary>Throws an <see cref="Images.InputException"/> naming <paramref name="path"/> when the case is outside what the generators draw.</summary>
    void CheckRules(object c, string path);
    /// <summary>Greedy shrinking with <paramref name="shrinker"/>, then single deletions from the family's op lists (<see cref="CaseShrinker"/>).</summary>
    ShrinkResult Shrink(object c, Func<object, bool> fails, Func<object, IEnumerable<object>> shrinker, int maxRuns, Action<int>? progress);
    /// <summary>The case as a counterexample file keeps it: itself, or with what makes its rerun exact (a concurrent case's failing schedule).</summary>
    object Recorded(object c) => c;
}

/// <summary>
/// The case-level half of a family, typed by its case: what the harness does with a case without
/// running it (summary, rendering, JSON codec, rules, shrink lists, coverage) and the lockstep run.
/// </summary>
public abstract class DiffFamily<TCase> : IDiffFamily where TCase : notnull
{
    public abstract string Name { get; }
    public Type CaseType => typeof(TCase);
    public virtual string WhenNoStep => "when the VM was destroyed";
    public abstract IReadOnlyList<string> Situations { get; }

    public abstract int StepCount(TCase c);
    public abstract LockstepReport Run(TCase c, int maxStateRows = 0);
    public abstract void Classify(TCase c, Action<string> hit);
    public abstract string Summary(TCase c);
    public abstract string Render(TCase c, int? highlightStep);
    public abstract void WriteJson(Utf8JsonWriter w, TCase c);
    public abstract TCase ReadJson(JsonElement e, string path);
    public abstract void CheckRules(TCase c, string path);
    /// <summary>The operation lists that the shrinker's deletion pass shortens, in the order it tries them.</summary>
    public abstract IReadOnlyList<OpList<TCase>> OpLists { get; }
    /// <summary>The case as a counterexample file keeps it (<see cref="IDiffFamily.Recorded"/>).</summary>
    public virtual object Recorded(TCase c) => c;

    // ---- the untyped view ----

    protected static TCase Cast(object c) => c is TCase t ? t
        : throw new ArgumentException($"{c.GetType().Name} is not a {typeof(TCase).Name}", nameof(c));

    public int StepCount(object c) => StepCount(Cast(c));
    public string Summary(object c) => Summary(Cast(c));
    public string Render(object c, int? highlightStep = null) => Render(Cast(c), highlightStep);
    public LockstepReport Run(object c, int maxStateRows = 0) => Run(Cast(c), maxStateRows);
    public void Classify(object c, Action<string> hit) => Classify(Cast(c), hit);
    public void WriteJson(Utf8JsonWriter w, object c) => WriteJson(w, Cast(c));
    object IDiffFamily.ReadJson(JsonElement e, string path) => ReadJson(e, path);
    public void CheckRules(object c, string path) => CheckRules(Cast(c), path);
    object IDiffFamily.Recorded(object c) => Recorded(Cast(c));
    public ShrinkResult Shrink(object c, Func<object, bool> fails, Func<object, IEnumerable<object>> shrinker, int maxRuns, Action<int>? progress) =>
        CaseShrinker.Shrink(Cast(c), x => fails(x), x => shrinker(x).Select(Cast), OpLists, maxRuns, progress);

    public override string ToString() => Name;
}

/// <summary>
/// Everything a differential family supplies, typed: its steps, a lockstep session on a case (spec
/// and impl side by side), the structural comparison of results, the end-of-case check, and (from
/// <see cref="DiffFamily{TCase}"/>) the case's summary, rendering, JSON codec, rules, shrink lists and
/// coverage classifier. One instance per family is registered in <see cref="Families"/>;
/// docs/adding-a-family.md shows how.
/// </summary>
public abstract class DiffFamily<TCase, TOp, TResult> : DiffFamily<TCase>
    where TCase : notnull where TOp : notnull where TResult : class
{
    /// <summary>The operations in the order both sides run them (shadow: setup, then ops).</summary>
    public abstract IReadOnlyList<TOp> Steps(TCase c);
    public override int StepCount(TCase c) => Steps(c).Count;

    /// <summary>Spec state and impl engine for <paramref name="c"/>, the impl's native pages from <paramref name="pool"/>.</summary>
    public abstract LockstepSession<TOp, TResult> Open(TCase c, NativePagePool pool);

    /// <summary>A result with what the comparison ignores blanked out (a rejection's reason, a #GP's reason).</summary>
    public abstract TResult Comparable(TResult r);

    /// <summary>The structural comparison: equal once <see cref="Comparable"/> has blanked what is not compared.</summary>
    public bool SameResult(TResult spec, TResult impl) => Comparable(spec).Equals(Comparable(impl));

    /// <summary>A result as the trace and report print it.</summary>
    public abstract string Describe(TResult r);

    /// <summary>The end-of-case check's words: its op text when the family counts it as a step after the last (null: it is
    /// <see cref="DiffFamily{TCase}.WhenNoStep"/>), the spec's side, and the impl's side with <paramref name="pagesInUse"/> pages not freed.</summary>
    public abstract (string? Op, string Freed, string Leaked) EndOfCase(long pagesInUse);

    public override LockstepReport Run(TCase c, int maxStateRows = 0) => Lockstep.Run(this, c, maxStateRows);
}

/// <summary>What booting both sides gave: each side's word ("ok", "#GP", "threw ...") and whether both run the ops.</summary>
public sealed record BootOutcome(string Op, string Spec, string Impl, bool Booted);

/// <summary>
/// One case open on both sides: the spec's state threaded through the steps and the impl's engine.
/// The lockstep runner calls <see cref="Boot"/> once, then per step <see cref="SpecStep"/> and
/// <see cref="ImplStep"/> and, depending on whether the results agree, <see cref="ResultDifference"/>
/// or <see cref="Checks"/>; at a divergence <see cref="StateRows"/>. Exceptions are the runner's to catch.
/// </summary>
public abstract class LockstepSession<TOp, TResult> : IDisposable where TResult : class
{
    /// <summary>Boot both sides; null for a family without a boot (the VM starts empty).</summary>
    public virtual BootOutcome? Boot() => null;
    public abstract TResult SpecStep(TOp op);
    public abstract TResult ImplStep(TOp op);

    /// <summary>Human-readable differences between the two sides' state, empty when equal.</summary>
    public abstract ImmutableArray<string> StateDifferences();

    /// <summary>The lines explaining a step whose results differ (<paramref name="spec"/> or <paramref name="impl"/> null: that side threw).</summary>
    public virtual ImmutableArray<string> ResultDifference(TOp op, TResult? spec, TResult? impl) => StateDifferences();

    /// <summary>
    /// For a spec that allows more than one result (oracle 2: a stale translation the architecture still allows): why
    /// <paramref name="impl"/>, unlike <paramref name="spec"/>, is allowed too, the session then going on from the spec
    /// state that goes with it; null (the default) when it is not.
    /// </summary>
    public virtual string? Allowance(TOp op, TResult spec, TResult impl) => null;

    /// <summary>
    /// The checks after a step whose results agree, in the family's order, evaluated lazily: the runner
    /// stops at the first that yields lines. The default is the state comparison (oracle 1).
    /// </summary>
    public virtual IEnumerable<ImmutableArray<string>> Checks(TOp op, TResult spec)
    {
        yield return StateDifferences();
    }

    /// <summary>Both sides' state as rows, in the spec's vocabulary.</summary>
    public abstract IEnumerable<StateRow> StateRows();

    /// <summary>Why there is no state to show (a side did not boot), or null.</summary>
    public virtual string? NoState => null;

    public abstract void Dispose();
}
