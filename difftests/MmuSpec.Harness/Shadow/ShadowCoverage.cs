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
        ClassifyRoots(op, r, before, after, hit);

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

    /// <summary>The cached-root rules: hits, misses and evictions, PAE rebuilds, flags set and cleared, roots freed.</summary>
    static void ClassifyRoots(ShadowOp op, ShadowResult r, ShadowState before, ShadowState after, Action<string> hit)
    {
        string name = op.GetType().Name;
        var (b, a) = (before.Roots, after.Roots);
        if (op is ShadowOp.GuestMovCr3 && r is ShadowResult.Ok && a.Current is { } now)
        {
            bool NoFlush() => ((ShadowOp.GuestMovCr3)op).Cr3 >> 63 != 0 && before.GuestPcide;
            if (b.Current is { } was && was.Pgd == now.Pgd && was.Role.Equals(now.Role)) hit("MOV CR3: current root kept");
            else if (b.Previous.FirstOrDefault(p => p.Pgd == now.Pgd && p.Role.Equals(now.Role)) is { } reused)
            {
                hit(reused.Root.Equals(now.Root) ? "MOV CR3: cached root switched in" : "MOV CR3: PAE root rebuilt (PDPTEs changed)");
                if (reused.Unsync) hit($"MOV CR3: unsync root re-synced on reuse{(NoFlush() ? " (NOFLUSH)" : "")}");
                else if (NoFlush()) hit("MOV CR3: cached root reused with NOFLUSH, no sync");
            }
            else
            {
                hit("MOV CR3: miss, root built");
                if (b.Current is not null && b.Previous.Count == ShadowRoots.MaxPrevious) hit("MOV CR3: miss evicted the least recently used root");
            }
        }
        if (a.Previous.Count(p => p.Unsync) > b.Previous.Count(p => p.Unsync)) hit($"root flagged unsync: by {name}");
        if (a.Previous.Count < b.Previous.Count && !(op is ShadowOp.GuestMovCr3 && a.Current is not null && b.Current is null))
            hit($"previous root freed: by {name}");
        if (op is ShadowOp.GuestAccess && r is ShadowResult.Translated { Faulted: false } t && after.GuestCpu is { } cpu
            && PageWalk.Explain(cpu, after.GuestMemoryView(), ((ShadowOp.GuestAccess)op).Access).Result is var fresh
            && !(fresh is WalkResult.Translated ft && ft.Gpa == t.Gpa))
            hit("access: stale hit (a translation the tables no longer give)");
        if (op is ShadowOp.Invpcid i && r is ShadowResult.Ok) hit($"INVPCID type {i.Type}");
    }
}
