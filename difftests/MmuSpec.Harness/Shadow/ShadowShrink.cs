using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>
/// Shrinks a failing <see cref="ShadowCase"/>: drop operations (big chunks first), then setup
/// pieces (page-table stores, the data slots; the candidates that stop failing are simply not
/// taken), then make what is left plainer: cleared bits of stored values (table addresses kept),
/// plain supervisor reads at page offset 0, smaller zap ranges, writable slots, calmer controls, and
/// prefetch off.
/// </summary>
public static class ShadowShrink
{
    public static IEnumerable<ShadowCase> Candidates(ShadowCase c)
    {
        foreach (var ops in WalkShrink.DropChunks(c.Ops)) yield return c.WithOps(ops);
        // The setup's last op turns paging on; dropping stores before it keeps the rest meaningful.
        foreach (var setup in WalkShrink.DropChunks(c.Setup)) yield return c.WithSetup(setup);

        for (int i = 0; i < c.Ops.Length; i++)
            foreach (var simpler in Simpler(c.Ops[i]))
                yield return c.WithOps(c.Ops.SetItem(i, simpler));

        for (int i = 0; i < c.Setup.Length; i++)
            foreach (var simpler in Simpler(c.Setup[i]))
                yield return c.WithSetup(c.Setup.SetItem(i, simpler));

        // A failure that does not need the neighbours' prefetch is shown without it.
        if (c.Config.Prefetch) yield return c with { Config = c.Config.WithPrefetch(false) };
    }

    static IEnumerable<ShadowOp> Simpler(ShadowOp op)
    {
        switch (op)
        {
            case ShadowOp.GuestAccess { Access: var a }:
                if ((a.Gva & 0xFFF) != 0) yield return new ShadowOp.GuestAccess(a.WithGva(a.Gva & ~0xFFFUL));
                if (a.Privilege != Privilege.Supervisor) yield return new ShadowOp.GuestAccess(a.WithPrivilege(Privilege.Supervisor));
                if (a.Type != AccessType.Read) yield return new ShadowOp.GuestAccess(a.WithType(AccessType.Read));
                break;
            case ShadowOp.Invlpg inv when (inv.Gva & 0xFFF) != 0:
                yield return new ShadowOp.Invlpg(inv.Gva & ~0xFFFUL);
                break;
            case ShadowOp.GuestStore w:
                foreach (ulong value in WalkShrink.ClearedBits(w.Value)) yield return w with { Value = value };
                break;
            case ShadowOp.ZapRange z when z.EndGfn - z.StartGfn > 1:
                yield return z with { EndGfn = z.StartGfn + (z.EndGfn - z.StartGfn) / 2 };
                yield return z with { StartGfn = z.StartGfn + (z.EndGfn - z.StartGfn) / 2 };
                break;
            case ShadowOp.CreateSlot s when s.ReadOnly:
                yield return s with { ReadOnly = false };
                break;
            case ShadowOp.GuestSetPaging p:
                foreach (var c in SimplerControls(p.Controls)) yield return p with { Controls = c };
                if ((p.Cr3 & 0x18) != 0 && p.Controls.Mode.IsLongMode()) yield return p with { Cr3 = p.Cr3 & ~0x18UL };
                if (p.Pcide) yield return p with { Pcide = false };
                break;
            case ShadowOp.GuestMovCr3 m when (m.Cr3 & ShadowOp.GuestMovCr3.NoFlush) != 0:
                yield return new ShadowOp.GuestMovCr3(m.Cr3 & ~ShadowOp.GuestMovCr3.NoFlush);
                break;
            case ShadowOp.Invpcid i when i.Type <= ShadowOp.Invpcid.AllNonGlobal:
                if (i.Type != ShadowOp.Invpcid.AllContexts) yield return new ShadowOp.FlushTlb();
                if (i.Type == ShadowOp.Invpcid.IndividualAddress) yield return new ShadowOp.Invlpg(i.Gva);
                break;
        }
    }

    /// <summary>
    /// The walk shrinker's simpler controls (each flag off, PKRU cleared; never the mode or MAXPHYADDR),
    /// except a CR4.PSE change: under shadow paging it zaps every page, a different case, not a smaller one.
    /// </summary>
    static IEnumerable<PagingControls> SimplerControls(PagingControls c) =>
        WalkShrink.SimplerControls(c).Where(simpler => simpler.Cr4Pse == c.Cr4Pse);

}
