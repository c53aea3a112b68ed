using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>The outcome of running one shadow case on both sides.</summary>
public sealed record ShadowReport(ShadowCase Case, int StepsRun, Divergence? Divergence)
{
    public bool Agreed => Divergence is null;

    public string Render() => Divergence is { } d
        ? d.Render(Case.Render, "when the VM was destroyed")
        : Running.CaseRuns.AgreeOnAll(StepsRun);
}

/// <summary>
/// Runs a <see cref="ShadowCase"/> (setup, then ops) on the spec's shadow MMU model and the impl's
/// shadow MMU in lock step. After every step: oracle 1 (equal results, equal abstract state), the
/// impl's derived structures against its own pages, and oracle 2 (the architecture layer,
/// <see cref="ShadowTlb"/>, allows the spec's result; the impl's too when it differs). Finally every
/// native page must go back to the pool when the VM is destroyed.
/// </summary>
public static class ShadowDiff
{
    public static ShadowReport Run(ShadowCase c)
    {
        var pool = new MmuSpec.Impl.Memory.NativePagePool();
        var spec = ShadowState.Create(c.Config);
        var tlb = ShadowTlb.Start(spec);
        int steps = 0;
        using (var impl = new ImplShadowEngine(c.Config, pool))
        {
            for (int i = 0; i < c.Length; i++, steps++)
            {
                var op = c[i];
                string sr, ir;
                VmResult? specResult = null, implResult = null;
                try { var s = spec.Step(op); spec = s.State; specResult = s.Result; sr = Describe(s.Result); }
                catch (Exception e) { sr = Threw(e); }
                try { implResult = impl.Step(op); ir = Describe(implResult); } catch (Exception e) { ir = Threw(e); }
                if (specResult is null || sr != ir)
                {
                    var view = SafeView(impl);
                    var lines = ImmutableArray.CreateBuilder<string>();
                    // Oracle 2 on both results says which side the architecture allows.
                    if (specResult is not null) lines.Add($"oracle 2 on the spec's result: {Judge(tlb, op, specResult, spec)}");
                    if (implResult is not null && specResult is not null) lines.Add($"oracle 2 on the impl's result: {Judge(tlb, op, implResult, view ?? spec)}");
                    lines.AddRange(Differences(spec, view));
                    return new ShadowReport(c, i + 1, new Divergence(i, op, sr, ir, lines.ToImmutable()));
                }

                var diffs = Differences(spec, SafeView(impl));
                if (diffs.Length > 0) return new ShadowReport(c, i + 1, new Divergence(i, op, sr, ir, diffs));

                ImmutableArray<string> problems;
                try { problems = impl.InvariantProblems(); }
                catch (Exception e) { problems = [$"reading the impl's structures {Threw(e)}"]; }
                if (problems.Length > 0)
                    return new ShadowReport(c, i + 1, new Divergence(i, op, sr, ir, [.. problems.Select(p => $"impl invariant: {p}")]));

                string? violation;
                try { violation = tlb.Violation(op, specResult, spec); tlb = tlb.Record(op, specResult, spec); }
                catch (Exception e) { violation = $"the architecture layer {Threw(e)}"; }
                if (violation is not null)
                    return new ShadowReport(c, i + 1, new Divergence(i, op, sr, ir, [$"oracle 2: {violation}"]));
            }
        }
        if (pool.PagesInUse != 0)
            return new ShadowReport(c, steps, new Divergence(-1, null, "all native pages freed", $"{pool.PagesInUse} pages still allocated after the VM was destroyed", []));
        return new ShadowReport(c, steps, null);
    }

    static string Judge(ShadowTlb tlb, ShadowOp op, VmResult result, ShadowState after)
    {
        try { return tlb.Violation(op, result, after) ?? "allowed"; }
        catch (Exception e) { return Threw(e); }
    }

    static ShadowState? SafeView(ImplShadowEngine impl)
    {
        try { return impl.View(); } catch { return null; }
    }

    /// <summary>
    /// Results compare in full, except a rejection's reason (each side words it its own way) and a
    /// guest #GP's reason (the impl, like hardware, reports none).
    /// </summary>
    public static string Describe(VmResult r) => r switch
    {
        VmResult.Rejected => "rejected",
        ShadowResult.GuestFault { Fault: WalkResult.GeneralProtection } => "guest #GP",
        _ => r.ToString()!,
    };

    static string Threw(Exception e) => $"threw {e.GetType().Name}: {e.Message}";

    static string Root(ShadowRootInfo? r) => r is null ? "none" : r.ToString();

    static string Bitmap(ImmutableSortedSet<ulong>? b) => b is null ? "none" : $"[{string.Join(", ", b.Select(Bits.Hex))}]";

    /// <summary>
    /// Human-readable differences between the spec's state and the impl's, empty when equal: only
    /// the root, guest paging state, host memory words, slots, bitmaps, pages and entries that differ.
    /// </summary>
    public static ImmutableArray<string> Differences(ShadowState spec, ShadowState? impl, int max = 16)
    {
        if (impl is null) return ["the impl's state could not be read"];
        if (spec.Equals(impl with { Config = spec.Config })) return [];     // the common case: one linear compare
        var d = ImmutableArray.CreateBuilder<string>();
        bool Full() { if (d.Count < max) return false; if (d[^1] != "...") d.Add("..."); return true; }

        if (!Equals(spec.Roots.Current, impl.Roots.Current)) d.Add($"current root: spec {Root(spec.Roots.Current)} / impl {Root(impl.Roots.Current)}");
        for (int i = 0; i < Math.Max(spec.Roots.Previous.Count, impl.Roots.Previous.Count); i++)
        {
            var sr = i < spec.Roots.Previous.Count ? spec.Roots.Previous[i] : null;
            var ir = i < impl.Roots.Previous.Count ? impl.Roots.Previous[i] : null;
            if (!Equals(sr, ir)) d.Add($"previous root {i}: spec {Root(sr)} / impl {Root(ir)}");
        }
        if (spec.GuestPcide != impl.GuestPcide) d.Add($"CR4.PCIDE: spec {spec.GuestPcide} / impl {impl.GuestPcide}");
        if (!Equals(spec.GuestCpu, impl.GuestCpu))
            d.Add($"guest paging: spec {spec.GuestCpu?.ToString() ?? "off"} / impl {impl.GuestCpu?.ToString() ?? "off"}");
        foreach (int id in spec.Slots.Keys.Union(impl.Slots.Keys).Order())
        {
            var s = spec.Slots.GetValueOrDefault(id); var i = impl.Slots.GetValueOrDefault(id);
            if (!Equals(s, i)) d.Add($"slot {id}: spec {s?.ToString() ?? "-"} / impl {i?.ToString() ?? "-"}");
        }
        foreach (int id in spec.DirtyBitmaps.Keys.Union(impl.DirtyBitmaps.Keys).Order())
        {
            var sb = spec.DirtyBitmaps.GetValueOrDefault(id); var ib = impl.DirtyBitmaps.GetValueOrDefault(id);
            if (sb is null || ib is null || !sb.SetEquals(ib))
                d.Add($"dirty bitmap of slot {id} (offsets): spec {Bitmap(sb)} / impl {Bitmap(ib)}");
        }
        foreach (ulong hpa in spec.HostMemory.Keys.Union(impl.HostMemory.Keys).Order())
        {
            ulong sv = spec.HostMemory.GetValueOrDefault(hpa), iv = impl.HostMemory.GetValueOrDefault(hpa);
            if (sv == iv) continue;
            if (Full()) return d.ToImmutable();
            d.Add($"host memory [{Bits.Hex(hpa)}]: spec {Bits.Hex(sv)} / impl {Bits.Hex(iv)}");
        }
        foreach (var key in spec.Pages.Keys.Union(impl.Pages.Keys).Order())
        {
            if (Full()) return d.ToImmutable();
            bool inSpec = spec.Pages.TryGetValue(key, out var sp), inImpl = impl.Pages.TryGetValue(key, out var ip);
            if (!inSpec) { d.Add($"only in impl: {Short(ip!)}"); continue; }
            if (!inImpl) { d.Add($"only in spec: {Short(sp!)}"); continue; }
            if (sp!.Unsync != ip!.Unsync) d.Add($"page {key}: spec {(sp.Unsync ? "unsync" : "sync")} / impl {(ip.Unsync ? "unsync" : "sync")}");
            if (sp.WriteFlooding != ip.WriteFlooding) d.Add($"page {key}: write flooding spec {sp.WriteFlooding} / impl {ip.WriteFlooding}");
            foreach (int index in sp.Entries.Keys.Union(ip.Entries.Keys).Order())
            {
                var se = sp.Entries.GetValueOrDefault(index); var ie = ip.Entries.GetValueOrDefault(index);
                if (Equals(se, ie)) continue;
                if (Full()) return d.ToImmutable();
                d.Add($"page {key} [{index}]: spec {se?.ToString() ?? "-"} / impl {ie?.ToString() ?? "-"}");
            }
        }
        if (d.Count == 0 && !spec.Equals(impl with { Config = spec.Config }))
            d.Add("the states differ in a way this rendering does not show:\n      spec " + spec + "\n      impl " + impl);
        return d.ToImmutable();
    }

    /// <summary>A page in one line, at most four entries.</summary>
    static string Short(ShadowPage p)
    {
        string entries = p.Entries.Count == 0 ? "empty"
            : string.Join("; ", p.Entries.Take(4).Select(e => $"[{e.Key}] {e.Value}")) + (p.Entries.Count > 4 ? $"; ... ({p.Entries.Count} entries)" : "");
        return $"page {p.Key}{(p.Unsync ? " unsync" : "")}{(p.WriteFlooding != 0 ? $" flooding={p.WriteFlooding}" : "")}: {entries}";
    }
}
