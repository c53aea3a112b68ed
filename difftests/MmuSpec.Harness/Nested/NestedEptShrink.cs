using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

/// <summary>
/// Shrinks a failing <see cref="NestedEptCase"/>: drop operations (big chunks first), then setup pieces, then make
/// what is left plainer: reads at page offset 0, any bit of a stored value cleared, EPTPs without EPT A/D, INVEPT
/// all-context for single-context.
/// </summary>
public static class NestedEptShrink
{
    public static IEnumerable<NestedEptCase> Candidates(NestedEptCase c)
    {
        foreach (var ops in WalkShrink.DropChunks(c.Ops)) yield return c.WithOps(ops);
        foreach (var setup in WalkShrink.DropChunks(c.Setup)) yield return c.WithSetup(setup);
        for (int i = 0; i < c.Ops.Length; i++)
            foreach (var simpler in Simpler(c.Ops[i]))
                yield return c.WithOps(c.Ops.SetItem(i, simpler));
        for (int i = 0; i < c.Setup.Length; i++)
            foreach (var simpler in Simpler(c.Setup[i]))
                yield return c.WithSetup(c.Setup.SetItem(i, simpler));
    }

    static IEnumerable<NestedEptOp> Simpler(NestedEptOp op)
    {
        switch (op)
        {
            case NestedEptOp.L2Access a:
                if ((a.Gpa & 0xFFF) != 0) yield return a with { Gpa = a.Gpa & ~0xFFFUL };
                if (a.Type != AccessType.Read) yield return a with { Type = AccessType.Read };
                break;
            case NestedEptOp.L1Store s:
                // Any set bit, address bits too: a leaf into the data slot may become one into RAM, and the slot go.
                for (int bit = 63; bit >= 0; bit--)
                    if ((s.Value >> bit & 1) != 0) yield return s with { Value = s.Value & ~(1UL << bit) };
                break;
            case NestedEptOp.LoadEptp { Eptp.AccessedDirtyEnabled: true } l:
                yield return new NestedEptOp.LoadEptp(new EptPointer(l.Eptp.Raw & ~(1UL << EptPointer.AccessedDirtyBit)));
                break;
            case NestedEptOp.L2GvaAccess g:
                // L2's gva accesses: page offset 0, a read, by the supervisor.
                if ((g.Access.Gva & 0xFFF) != 0) yield return g with { Access = g.Access.WithGva(g.Access.Gva & ~0xFFFUL) };
                if (g.Access.Type != AccessType.Read) yield return g with { Access = new Access(g.Access.Gva, AccessType.Read, g.Access.Privilege == Privilege.ImplicitSupervisor ? Privilege.Supervisor : g.Access.Privilege) };
                if (g.Access.Privilege != Privilege.Supervisor) yield return g with { Access = g.Access.WithPrivilege(Privilege.Supervisor) };
                break;
            case NestedEptOp.Invept { Type: InveptType.SingleContext }:
                yield return new NestedEptOp.Invept(InveptType.AllContext, default);
                break;
        }
    }
}
