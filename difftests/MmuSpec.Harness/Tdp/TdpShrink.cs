using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>
/// Shrinks a failing <see cref="TdpCase"/>: drop operations (big chunks first), then make the
/// remaining ones plainer (reads instead of writes, page offset 0, smaller zap ranges, 4K host
/// pages off, read-only off).
/// </summary>
public static class TdpShrink
{
    public static IEnumerable<TdpCase> Candidates(TdpCase c)
    {
        foreach (var ops in WalkShrink.DropChunks(c.Ops)) yield return c.WithOps(ops);
        for (int i = 0; i < c.Ops.Length; i++)
            foreach (var simpler in Simpler(c.Ops[i]))
                yield return c.WithOps(c.Ops.SetItem(i, simpler));        foreach (var narrower in NarrowerInvalidations(c)) yield return narrower;
    }

    /// <summary>An invalidation and its End narrowed together (half the range), so the End still matches.</summary>
    static IEnumerable<TdpCase> NarrowerInvalidations(TdpCase c)
    {
        for (int i = 0; i < c.Ops.Length; i++)
        {
            if (c.Ops[i] is not TdpOp.HostInvalidateStart { } start || start.EndGfn - start.StartGfn <= 1) continue;
            var half = start with { EndGfn = start.StartGfn + (start.EndGfn - start.StartGfn) / 2 };
            var ops = c.Ops.SetItem(i, half);
            for (int j = i + 1; j < c.Ops.Length; j++)
                if (c.Ops[j] is TdpOp.HostInvalidateEnd e && e.StartGfn == start.StartGfn && e.EndGfn == start.EndGfn)
                {
                    ops = ops.SetItem(j, new TdpOp.HostInvalidateEnd(half.StartGfn, half.EndGfn));
                    break;
                }
            yield return c.WithOps(ops);
        }
    }

    static IEnumerable<TdpOp> Simpler(TdpOp op)
    {
        switch (op)
        {
            case TdpOp.AccessGpa a:
                if ((a.Gpa & 0xFFF) != 0) yield return a with { Gpa = a.Gpa & ~0xFFFUL };
                if (a.Type != AccessType.Read) yield return a with { Type = AccessType.Read };
                break;
            case TdpOp.ZapRange z when z.EndGfn - z.StartGfn > 1:
                yield return z with { EndGfn = z.StartGfn + (z.EndGfn - z.StartGfn) / 2 };
                break;
            case TdpOp.Age a when a.EndGfn - a.StartGfn > 1:
                yield return a with { EndGfn = a.StartGfn + (a.EndGfn - a.StartGfn) / 2 };
                break;
            case TdpOp.TestAge t when t.EndGfn - t.StartGfn > 1:
                yield return t with { EndGfn = t.StartGfn + (t.EndGfn - t.StartGfn) / 2 };
                break;
            case TdpOp.PreFault f when f.Size > 0x1000 && (f.Size & 0xFFF) == 0:
                yield return f with { Size = (f.Size >> 13) << 12 };   // half, in whole pages
                break;
            case TdpOp.CreateSlot s:
                if (s.ReadOnly) yield return s with { ReadOnly = false };
                if (s.Pages > 1) yield return s with { Pages = s.Pages / 2 };
                break;
            case TdpOp.GuestAccess g:
                if ((g.Access.Gva & 0xFFF) != 0) yield return new TdpOp.GuestAccess(g.Access.WithGva(g.Access.Gva & ~0xFFFUL));
                if (g.Access.Privilege != Privilege.Supervisor) yield return new TdpOp.GuestAccess(g.Access.WithPrivilege(Privilege.Supervisor));
                if (g.Access.Type != AccessType.Read) yield return new TdpOp.GuestAccess(g.Access.WithType(AccessType.Read));
                break;
            case TdpOp.GuestStore w:
                foreach (ulong value in WalkShrink.ClearedBits(w.Value)) yield return w with { Value = value };
                break;
        }
    }
}
