using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>
/// The shadow family's comparisons and checks (<see cref="ShadowFamily"/> runs them in lock step):
/// after every step oracle 1 (equal results, equal abstract state), the impl's derived structures
/// against its own pages, and oracle 2 (the architecture layer, <see cref="ShadowTlb"/>, allows the
/// spec's result; the impl's too when it differs). Finally every native page must go back to the
/// pool when the VM is destroyed.
/// </summary>
public static class ShadowDiff
{
    /// <summary>Oracle 2's verdict on <paramref name="result"/>: "allowed" or why not.</summary>
    public static string Judge(ShadowTlb tlb, ShadowOp op, VmResult result, ShadowState after)
    {
        try { return tlb.Violation(op, result, after) ?? "allowed"; }
        catch (Exception e) { return Threw(e); }
    }

    /// <summary><see cref="ImplShadowEngine.Matches"/>, false when reading the impl throws (the view then says so).</summary>
    public static bool SafeMatches(ImplShadowEngine impl, ShadowState spec, bool fullMemory = false)
    {
        try { return impl.Matches(spec, fullMemory); } catch { return false; }
    }

    public static ShadowState? SafeView(ImplShadowEngine impl)
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

    /// <summary>What <see cref="Describe"/> leaves out, blanked: the structural comparison compares the rest.</summary>
    public static VmResult Comparable(VmResult r) => r switch
    {
        VmResult.Rejected => NoReason,
        ShadowResult.GuestFault { Fault: WalkResult.GeneralProtection } => GuestGp,
        _ => r,
    };
    static readonly VmResult NoReason = new VmResult.Rejected(""), GuestGp = new ShadowResult.GuestFault(new WalkResult.GeneralProtection(default));

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
