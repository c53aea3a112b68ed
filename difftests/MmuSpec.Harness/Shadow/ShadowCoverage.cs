using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>
/// Which rules of docs/shadow-model.md generated cases reach, seen from outside the spec: each
/// step's result and the difference between the spec's states before and after it. Used to tune
/// the generator's weights and to check that every rule stays reachable.
/// </summary>
public static class ShadowCoverage
{
    public static SortedDictionary<string, int> Measure(ShadowGenOptions options, int cases, int size = 50)
    {
        var counts = new SortedDictionary<string, int>();
        void Hit(string rule) => counts[rule] = counts.GetValueOrDefault(rule) + 1;
        for (int seed = 0; seed < cases; seed++)
        {
            var c = ShadowGen.Build(seed, size, options);
            var state = ShadowState.Create(c.Config);
            foreach (var op in c.AllOps)
            {
                var before = state;
                var stepped = state.Step(op);
                state = stepped.State;
                Classify(op, stepped.Result, before, state, Hit);
            }
        }
        return counts;
    }

    static void Classify(ShadowOp op, ShadowResult r, ShadowState before, ShadowState after, Action<string> hit)
    {
        string name = op.GetType().Name;
        hit($"op {name} -> {r.GetType().Name}");
        if (r is ShadowResult.GuestFault { Fault: var f }) hit($"{name} fault {(f is WalkResult.PageFault ? "#PF" : "#GP")}");
        if (r is ShadowResult.GuestFault { Fault: WalkResult.PageFault pf })
            hit($"#PF kind: {((pf.ErrorCode & PageFaultErrorCode.ReservedBit) != 0 ? "reserved bit" : (pf.ErrorCode & PageFaultErrorCode.Present) != 0 ? "rights" : "not present")}");
        if (r is ShadowResult.Translated t) hit(t.Faulted ? "access: fill" : "access: hit");
        if (r is ShadowResult.DirtyLog { Gfns.Length: > 0 }) hit("dirty log: non-empty");

        var gone = before.Pages.Keys.Where(k => !after.Pages.ContainsKey(k)).ToList();
        var added = after.Pages.Keys.Where(k => !before.Pages.ContainsKey(k)).ToList();
        foreach (var k in added)
        {
            if (k.Role.Direct) hit($"page created: direct L{k.Role.Level}{(k.Role.Quadrant != 0 ? $" q{k.Role.Quadrant}" : "")}");
            else hit($"page created: indirect L{k.Role.Level}{(k.Role.Has4ByteGpte ? " 4B" : "")}{(k.Role.Quadrant != 0 ? " q>0" : "")}");
            if (k.Role.Access != Acc.All && !k.Role.Direct) hit("page created: narrowed access role");
        }
        if (after.Pages.Keys.GroupBy(k => (k.Gfn, k.Role.Direct)).Any(g => !g.Key.Direct && g.Count() > 1)) hit("state: one guest table, several roles");
        if (after.Root is { } root && root.Pages.Any(p => p is null)) hit("root: PAE entry none");
        if (before.Root is not null && after.Root is null) hit($"{name}: root dropped");

        foreach (var k in gone)
        {
            var p = before.Pages[k];
            string why = op switch
            {
                ShadowOp.GuestStore s when s.Size == 8 && k.Role.Has4ByteGpte => "misaligned store",
                ShadowOp.GuestStore when p.WriteFlooding == 2 => "write flooding",
                ShadowOp.GuestStore => "store (unsync descendant or other)",
                ShadowOp.GuestAccess or ShadowOp.GuestSetPaging when p.Unsync => "unsync page used as upper-level table",
                _ => name,
            };
            hit($"page zapped: {why}");
        }
        foreach (var (k, p) in after.Pages)
        {
            if (!before.Pages.TryGetValue(k, out var old)) continue;
            if (!old.Unsync && p.Unsync) hit($"unsync: by {name}{(op is ShadowOp.GuestAccess ? " (write fill)" : "")}");
            if (old.Unsync && !p.Unsync) hit($"resync page: by {name}");
            if (p.WriteFlooding > old.WriteFlooding) hit($"write flooding count {p.WriteFlooding}");
            if (p.WriteFlooding < old.WriteFlooding) hit("write flooding reset by a walk");
            foreach (var (i, e) in old.Entries)
            {
                var ne = p.Entries.GetValueOrDefault(i);
                if (ne is null && old.Unsync && r is ShadowResult.GuestFault { Fault: WalkResult.PageFault }) hit("#PF invalidation: stale unsync entry synced away");
                if (e is ShadowEntry.Table { Child.Role.Direct: true } ot && ne is ShadowEntry.Table nt && !nt.Child.Equals(ot.Child))
                    hit("direct link replaced (other rights, e.g. the large page became dirty)");
                if (ne is null) hit($"entry removed: by {name}{(old.Unsync && op is ShadowOp.Invlpg or ShadowOp.FlushTlb ? " (sync)" : "")}");
                else if (!ne.Equals(e) && e is ShadowEntry.Leaf l && ne is ShadowEntry.Leaf nl)
                {
                    if (l.Writable && !nl.Writable) hit($"leaf write-protected: by {name}");
                    if (!l.Rights.Equals(nl.Rights)) hit($"leaf rights changed: by {name}");
                    if (l.Gfn != nl.Gfn) hit($"leaf retargeted: by {name}");
                }
            }
            foreach (var (i, e) in p.Entries)
                if (!old.Entries.ContainsKey(i) && e is ShadowEntry.Leaf { Writable: false }) hit("fill: read-only leaf (write-protected, clean, read-only slot or logging)");
        }
        if (op is ShadowOp.GuestAccess { Access.Type: AccessType.Write } && r is ShadowResult.Translated { Faulted: true } tr
            && !after.Leaves().Any(l => l.Leaf.Gfn == tr.Gpa >> 12 && l.Leaf.Writable))
            hit("fill: write left the leaf read-only (emulated)");
        if (op is ShadowOp.GuestSetPaging sp && before.GuestCpu is { } old2 && r is ShadowResult.Ok
            && (old2.Controls.Mode != sp.Controls.Mode || old2.Controls.Cr4Pse != sp.Controls.Cr4Pse))
            hit("set paging: mode or PSE changed (zap all)");
    }
}
