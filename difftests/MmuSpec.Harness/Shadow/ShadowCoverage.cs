using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>
/// Which rules of docs/shadow-model.md generated cases reach, seen from outside the spec: each
/// step's result and the difference between the spec's states before and after it. Used to tune
/// the generator's weights and to check that every rule stays reachable (<see cref="Measure"/>,
/// in the rules' own words), and by `mmuspec check --coverage` as the shadow family's situations
/// (<see cref="Classify(ShadowCase, Action{string})"/>: the same rules renamed into groups, plus
/// the guest mode, the #PF error code bits and the roles of the pages created; docs/coverage.md).
/// </summary>
public static class ShadowCoverage
{
    // ---- situations (docs/coverage.md) ----

    static readonly string[] Roles32 =
    [
        "role: indirect L2 4B q0", "role: indirect L2 4B q1", "role: indirect L2 4B q2", "role: indirect L2 4B q3",
        "role: indirect L1 4B q0", "role: indirect L1 4B q1", "role: direct L1 4B q0", "role: direct L1 4B q1",
    ];
    static readonly string[] RolesPae = ["role: indirect L2", "role: indirect L1", "role: direct L1"];
    static readonly string[] RolesLong4 = ["role: indirect L4", "role: indirect L3", "role: indirect L2", "role: indirect L1", "role: direct L2", "role: direct L1"];
    static readonly string[] RolesLong5 = ["role: indirect L5", .. RolesLong4];

    static readonly string[] RoleBits =
    [
        "role bits: cr0_wp", "role bits: efer_nx", "role bits: smep_andnot_wp", "role bits: smap_andnot_wp", "role bits: none of cr0_wp, efer_nx, smep/smap_andnot_wp",
        "role bits: access narrowed (not UWX)", "role bits: one guest table shadowed under several roles",
    ];

    static readonly string[] Faults =
    [
        "fault kind: not present", "fault kind: rights", "fault kind: reserved bit", "fault kind: #GP non-canonical",
        "#PF error code: P", "#PF error code: W", "#PF error code: U", "#PF error code: RSVD", "#PF error code: I",
    ];

    static readonly string[] Accesses =
    [
        "access: hit", "access: fill", "access: MMIO exit", "fill: read-only leaf (write-protected, clean, read-only slot or logging)",
        "fill: write left the leaf read-only (emulated)",
    ];

    static readonly string[] Unsync = ["unsync: by GuestStore", "unsync: by GuestAccess (write fill)"];

    static readonly string[] Resync =
    [
        "re-sync: page by FlushTlb", "re-sync: page by GuestAccess", "re-sync: page by GuestSetPaging",
        "re-sync: entry by Invlpg", "re-sync: entry by a #PF",
        "zap: unsync page used as upper-level table",
    ];

    static readonly string[] ResyncRoots = ["re-sync: page by GuestMovCr3", "re-sync: page by Invpcid", "re-sync: entry by Invpcid"];

    static readonly string[] Writes =
    [
        "write flooding: count 1", "write flooding: count 2", "zap: write flooding", "write flooding: reset by a walk",
        "entry removed: by GuestStore", "zap: store (unsync descendant or other)",
    ];

    const string Misaligned = "zap: misaligned store";

    static readonly string[] Others =
    [
        "large pages: direct link replaced (other rights)", "root: PAE root with a not-present PDPTE",
        "leaf write-protected: by SetDirtyLogging", "leaf write-protected: by GetDirtyLog", "leaf write-protected: by GuestAccess",
        "dirty log: non-empty", "entry removed: by ZapRange", "set paging: mode or PSE changed (zap all)", "CR3 load: #GP (GuestSetPaging)",
        "zap: DeleteSlot", "zap: MoveSlot", "zap: ZapAll", "zap: GuestSetPaging",
        "root dropped: by GuestStore", "root dropped: by DeleteSlot", "root dropped: by MoveSlot", "root dropped: by ZapAll",
    ];

    /// <summary>KVM's pte_prefetch after a fill (docs/shadow-model.md, "Prefetch"): what it did to each neighbour.</summary>
    static readonly string[] Prefetch =
    [
        "prefetch: neighbour mapped (indirect page)", "prefetch: neighbour mapped (direct page)", "prefetch: present neighbour left alone",
        "prefetch: ended at a neighbour not present", "prefetch: ended at a neighbour not accessed", "prefetch: ended at a frame in no slot",
    ];

    /// <summary>Prefetch endings the generator reaches only now and then (reported, not required).</summary>
    static readonly string[] PrefetchRare =
    [
        "prefetch: ended at a neighbour with a reserved bit", "prefetch: ended at a read-only slot",
        "prefetch: ended at a writable entry into a logging slot", "prefetch: ended at a direct run leaving its slot",
    ];

    static string PrefetchEnding(PrefetchVerdict v) => "prefetch: ended at " + v switch
    {
        PrefetchVerdict.NotPresent => "a neighbour not present",
        PrefetchVerdict.NotAccessed => "a neighbour not accessed",
        PrefetchVerdict.ReservedBit => "a neighbour with a reserved bit",
        PrefetchVerdict.NoSlot => "a frame in no slot",
        PrefetchVerdict.ReadOnlySlot => "a read-only slot",
        PrefetchVerdict.WritableIntoLoggingSlot => "a writable entry into a logging slot",
        PrefetchVerdict.RunLeavesSlot => "a direct run leaving its slot",
        _ => "a neighbour that qualifies (a prefetch bug)",
    };

    static readonly string[] OpNames = typeof(ShadowOp).GetNestedTypes().Where(t => t.IsSubclassOf(typeof(ShadowOp))).Select(t => t.Name).Order(StringComparer.Ordinal).ToArray();

    /// <summary>
    /// Names the rules can produce for any operation (the rules name the operation that did it);
    /// counted and shown when reached, but no property is expected to reach them all.
    /// </summary>
    static readonly string[] Extras =
    [
        .. new[] { "entry removed: by", "leaf write-protected: by", "leaf rights changed: by", "leaf retargeted: by", "re-sync: page by", "unsync: by", "root dropped: by" }
            .SelectMany(prefix => OpNames.Select(op => $"{prefix} {op}")),
        .. OpNames.Select(op => $"zap: {op}"),
        .. new[] { Keep, Upstream }.SelectMany(policy => OpNames.SelectMany(op => new[]
            { $"cached root ({policy}): previous root freed by {op}", $"cached root ({policy}): root flagged unsync by {op}" })),
    ];

    static string[] Roots(string policy) =>
    [
        $"cached root ({policy}): current root kept", $"cached root ({policy}): cached root switched in",
        $"cached root ({policy}): miss, root built", $"cached root ({policy}): miss evicted the least recently used root",
        $"cached root ({policy}): PAE root rebuilt (PDPTEs changed)",
        .. policy == Keep
            ? new[]
            {
                $"cached root ({policy}): flagged root re-synced on reuse", $"cached root ({policy}): root flagged unsync by Invpcid",
                $"cached root ({policy}): root flagged unsync by GuestMovCr3", $"cached root ({policy}): root flagged unsync by FlushTlb",
            }
            : [$"cached root ({policy}): previous root freed by Invpcid", $"cached root ({policy}): previous root freed by GuestMovCr3",
               $"cached root ({policy}): previous root freed by FlushTlb"],
        $"cached root ({policy}): previous root freed by GuestSetPaging", $"cached root ({policy}): previous root freed by GuestStore",
    ];

    const string Keep = "keep-and-resync", Upstream = "upstream";

    static readonly string[] NoFlush =
    [
        "NOFLUSH: cached root reused without sync", "NOFLUSH: flagged root re-synced", "NOFLUSH: miss, root built",
        "access: stale hit (a translation the tables no longer give)",
    ];

    static readonly string[] Invpcids = ["INVPCID: type 0", "INVPCID: type 1", "INVPCID: type 2", "INVPCID: type 3", "INVPCID: #GP", "MOV CR3: #GP"];

    /// <summary>Every situation of the shadow family, in report order.</summary>
    public static readonly IReadOnlyList<string> All = Grouped(
    [
        .. WalkCoverage.Modes, .. Roles32, .. RolesPae, .. RolesLong5.Where(r => !RolesPae.Contains(r)), .. RoleBits, .. Faults, .. Accesses,
        .. Unsync, .. Resync, .. ResyncRoots, .. Writes, Misaligned, .. Others,
        .. Roots(Keep), .. Roots(Upstream), .. NoFlush, .. Invpcids, .. Prefetch, .. PrefetchRare,
        .. Extras,
    ]);

    /// <summary>The names without repeats, each group's names together (groups in order of first appearance).</summary>
    static string[] Grouped(IEnumerable<string> names) =>
        [.. names.Distinct().GroupBy(Running.Situation.GroupOf).SelectMany(g => g)];

    /// <summary>What a shadow property generated with <paramref name="options"/> should reach.</summary>
    public static IReadOnlyList<string> Expected(ShadowGenOptions options)
    {
        var modes = options.Mode is { } m && !options.Mixed ? [m] : new[] { PagingMode.Bits32, PagingMode.Pae, PagingMode.Long4, PagingMode.Long5 };
        var e = new List<string>();
        foreach (var mode in modes) e.Add(WalkCoverage.ModeName(mode));
        foreach (var mode in modes)
            e.AddRange(mode switch { PagingMode.Bits32 => Roles32, PagingMode.Pae => RolesPae, PagingMode.Long4 => RolesLong4, _ => RolesLong5 });
        e.AddRange(RoleBits);
        e.AddRange(Faults.Where(f => f != "fault kind: #GP non-canonical" || modes.Any(x => x.IsLongMode())));
        e.AddRange(Accesses);
        if (options.AllowUnsync) e.AddRange([.. Unsync, .. Resync]);
        if (options.AllowUnsync && options.Roots) e.AddRange(ResyncRoots);
        e.AddRange(Writes.Where(w => options.AllowUnsync || !w.Contains("unsync", StringComparison.Ordinal)));
        if (modes.Contains(PagingMode.Bits32)) e.Add(Misaligned);
        e.AddRange(Others.Where(o => modes.Contains(PagingMode.Pae) || !o.Contains("PAE", StringComparison.Ordinal)));
        if (options.Roots)
        {
            e.AddRange(Roots(options.RootPolicy == ShadowRootPolicy.Upstream ? Upstream : Keep));
            e.AddRange(NoFlush.Where(n => options.RootPolicy == ShadowRootPolicy.KeepAndResync || !n.Contains("flagged", StringComparison.Ordinal)));
            e.AddRange(Invpcids);
        }
        e.AddRange(Prefetch);
        return e.Distinct().ToList();
    }

    /// <summary>Runs the case on the spec and names the situations of each step.</summary>
    public static void Classify(ShadowCase c, Action<string> hit)
    {
        var state = ShadowState.Create(c.Config);
        string policy = c.Config.RootPolicy == ShadowRootPolicy.Upstream ? Upstream : Keep;
        foreach (var op in c.AllOps)
        {
            var before = state;
            ShadowStepped stepped;
            try { stepped = state.Step(op); }
            catch (ArgumentException) { return; }   // the differential run reports what the spec refused
            state = stepped.State;
            var r = stepped.Result;
            Classify(op, r, before, state, rule => { if (SituationOf(rule, policy) is { } s) hit(s); });
            Situations(op, r, before, state, hit);
        }
    }

    /// <summary>
    /// A rule of <see cref="Measure"/> as a situation (null: not reported, e.g. the per-operation
    /// result pairs). Names outside this mapping pass through unchanged, so a new rule shows up in
    /// the report as a name the list does not know.
    /// </summary>
    static string? SituationOf(string rule, string policy)
    {
        const string Mov = "MOV CR3: ";
        return rule switch
        {
            "page created: narrowed access role" => "role bits: access narrowed (not UWX)",
            _ when rule.StartsWith("op ", StringComparison.Ordinal) || rule.StartsWith("page created: ", StringComparison.Ordinal) => null,
            "GuestAccess fault #GP" => "fault kind: #GP non-canonical",
            "GuestSetPaging fault #GP" => "CR3 load: #GP (GuestSetPaging)",
            "GuestMovCr3 fault #GP" => "MOV CR3: #GP",
            "Invpcid fault #GP" => "INVPCID: #GP",
            _ when rule.EndsWith(" fault #PF", StringComparison.Ordinal) || rule.EndsWith(" fault #GP", StringComparison.Ordinal) => null,
            _ when rule.StartsWith("#PF kind: ", StringComparison.Ordinal) => "fault kind: " + rule["#PF kind: ".Length..],
            "state: one guest table, several roles" => "role bits: one guest table shadowed under several roles",
            "root: PAE entry none" => "root: PAE root with a not-present PDPTE",
            _ when rule.EndsWith(": root dropped", StringComparison.Ordinal) => $"root dropped: by {rule[..rule.IndexOf(':')]}",
            _ when rule.StartsWith("page zapped: ", StringComparison.Ordinal) => "zap: " + rule["page zapped: ".Length..],
            _ when rule.StartsWith("resync page: by ", StringComparison.Ordinal) => "re-sync: page by " + rule["resync page: by ".Length..],
            _ when rule.StartsWith("write flooding count ", StringComparison.Ordinal) => "write flooding: count " + rule["write flooding count ".Length..],
            "write flooding reset by a walk" => "write flooding: reset by a walk",
            "#PF invalidation: stale unsync entry synced away" => "re-sync: entry by a #PF",
            "direct link replaced (other rights, e.g. the large page became dirty)" => "large pages: direct link replaced (other rights)",
            // Entries synced by an invalidation: named by Situations (the page stays unsync).
            "entry removed: by Invlpg (sync)" or "entry removed: by FlushTlb (sync)" => null,
            "MOV CR3: current root kept" or "MOV CR3: cached root switched in" or "MOV CR3: miss, root built"
                or "MOV CR3: miss evicted the least recently used root" or "MOV CR3: PAE root rebuilt (PDPTEs changed)"
                => $"cached root ({policy}): {rule[Mov.Length..]}",
            "MOV CR3: unsync root re-synced on reuse" => $"cached root ({policy}): flagged root re-synced on reuse",
            "MOV CR3: unsync root re-synced on reuse (NOFLUSH)" => "NOFLUSH: flagged root re-synced",
            "MOV CR3: cached root reused with NOFLUSH, no sync" => "NOFLUSH: cached root reused without sync",
            _ when rule.StartsWith("root flagged unsync: by ", StringComparison.Ordinal) => $"cached root ({policy}): root flagged unsync by {rule["root flagged unsync: by ".Length..]}",
            _ when rule.StartsWith("previous root freed: by ", StringComparison.Ordinal) => $"cached root ({policy}): previous root freed by {rule["previous root freed: by ".Length..]}",
            _ when rule.StartsWith("INVPCID type ", StringComparison.Ordinal) => "INVPCID: type " + rule["INVPCID type ".Length..],
            _ => rule,
        };
    }

    /// <summary>The situations the rules do not name: guest mode and error code at an access, the roles of the pages created, MMIO exits, NOFLUSH misses.</summary>
    static void Situations(ShadowOp op, VmResult r, ShadowState before, ShadowState after, Action<string> hit)
    {
        if (op is ShadowOp.GuestAccess && before.GuestCpu is { } cpu) hit(WalkCoverage.ModeName(cpu.Controls.Mode));
        if (r is ShadowResult.GuestFault { Fault: WalkResult.PageFault pf }) WalkCoverage.ErrorCode(pf.ErrorCode, hit);
        if (op is ShadowOp.GuestAccess && r is ShadowResult.MmioExit) hit("access: MMIO exit");
        if (op is ShadowOp.GuestMovCr3 mov && mov.Cr3 >> 63 != 0 && before.GuestPcide && r is VmResult.Ok
            && after.Roots.Current is { } now && !before.Roots.All.Any(x => x.Pgd == now.Pgd && x.Role.Equals(now.Role)))
            hit("NOFLUSH: miss, root built");
        if (ReferenceEquals(before.Pages, after.Pages)) return;
        if (op is ShadowOp.GuestAccess { Access.Gva: var gva } && r is ShadowResult.Translated { Faulted: true } && after.Config.Prefetch)
            PrefetchSituations(gva, before, after, hit);
        // An invalidation syncs entries of unsync pages, which stay unsync (docs/shadow-model.md, "Invalidate gva in root R").
        if (op is ShadowOp.Invlpg or ShadowOp.Invpcid && r is VmResult.Ok
            && after.Pages.Any(p => p.Value.Unsync && before.Pages.TryGetValue(p.Key, out var old) && old.Unsync && !ReferenceEquals(old, p.Value) && !old.Entries.SequenceEqual(p.Value.Entries)))
            hit($"re-sync: entry by {op.GetType().Name}");
        foreach (var k in after.Pages.Keys)
        {
            if (before.Pages.ContainsKey(k)) continue;
            var role = k.Role;
            hit($"role: {(role.Direct ? "direct" : "indirect")} L{role.Level}{(role.Has4ByteGpte ? $" 4B q{role.Quadrant}" : "")}");
            if (role.Cr0Wp) hit("role bits: cr0_wp");
            if (role.EferNx) hit("role bits: efer_nx");
            if (role.SmepAndNotWp) hit("role bits: smep_andnot_wp");
            if (role.SmapAndNotWp) hit("role bits: smap_andnot_wp");
            if (!role.Cr0Wp && !role.EferNx && !role.SmepAndNotWp && !role.SmapAndNotWp) hit("role bits: none of cr0_wp, efer_nx, smep/smap_andnot_wp");
        }
    }

    /// <summary>
    /// What the fill's prefetch did to each neighbour of the faulting entry: mapped it, left a present one
    /// alone, or ended at the first free one it left unmapped (the spec's own verdict says why).
    /// </summary>
    static void PrefetchSituations(ulong gva, ShadowState before, ShadowState after, Action<string> hit)
    {
        if (after.LevelOnePageFor(gva) is not { } key) return;
        var was = before.Pages.GetValueOrDefault(key)?.Entries;
        var now = after.Pages[key].Entries;
        int fault = (int)((gva >> 12) & 511), first = fault & ~(ShadowState.PrefetchGroup - 1), end = first + ShadowState.PrefetchGroup;
        bool Free(int i) => i != fault && !now.ContainsKey(i);
        for (int i = first; i < end; i++)
        {
            if (i == fault) continue;
            if (now.TryGetValue(i, out var e))
            {
                hit(was is not null && was.TryGetValue(i, out var old) && old.Equals(e)
                    ? "prefetch: present neighbour left alone"
                    : $"prefetch: neighbour mapped ({(key.Role.Direct ? "direct" : "indirect")} page)");
                continue;
            }
            int runEnd = i;
            while (runEnd < end && Free(runEnd)) runEnd++;
            hit(PrefetchEnding(key.Role.Direct ? after.PrefetchDirectRun(key, i, runEnd) : after.PrefetchGuestEntry(key, i).Verdict));
            return;
        }
    }

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

    static void Classify(ShadowOp op, VmResult r, ShadowState before, ShadowState after, Action<string> hit)
    {
        string name = op.GetType().Name;
        hit($"op {name} -> {r.GetType().Name}");
        if (r is ShadowResult.GuestFault { Fault: var f }) hit($"{name} fault {(f is WalkResult.PageFault ? "#PF" : "#GP")}");
        if (r is ShadowResult.GuestFault { Fault: WalkResult.PageFault pf })
            hit($"#PF kind: {((pf.ErrorCode & PageFaultErrorCode.ReservedBit) != 0 ? "reserved bit" : (pf.ErrorCode & PageFaultErrorCode.Present) != 0 ? "rights" : "not present")}");
        if (r is ShadowResult.Translated t) hit(t.Faulted ? "access: fill" : "access: hit");
        if (r is VmResult.DirtyLog { Gfns.Length: > 0 }) hit("dirty log: non-empty");

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
        if (op is ShadowOp.GuestSetPaging sp && before.GuestCpu is { } old2 && r is VmResult.Ok
            && (old2.Controls.Mode != sp.Controls.Mode || old2.Controls.Cr4Pse != sp.Controls.Cr4Pse))
            hit("set paging: mode or PSE changed (zap all)");
    }

    /// <summary>The cached-root rules: hits, misses and evictions, PAE rebuilds, flags set and cleared, roots freed.</summary>
    static void ClassifyRoots(ShadowOp op, VmResult r, ShadowState before, ShadowState after, Action<string> hit)
    {
        string name = op.GetType().Name;
        var (b, a) = (before.Roots, after.Roots);
        if (op is ShadowOp.GuestMovCr3 && r is VmResult.Ok && a.Current is { } now)
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
        if (op is ShadowOp.Invpcid i && r is VmResult.Ok) hit($"INVPCID type {i.Type}");
    }
}
