using System.Collections.Immutable;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Walk;

/// <summary>
/// Shrinks a failing <see cref="WalkCase"/> toward one a kernel engineer can read at a glance:
/// first drop operations (big chunks, then single ones), then drop setup writes, then simplify
/// what is left (clear bits of written values, calm the controls, make accesses plain supervisor
/// reads at page offset 0). FsCheck takes the first candidate that still fails and repeats.
/// </summary>
public static class WalkShrink
{
    public static IEnumerable<WalkCase> Candidates(WalkCase c)
    {
        foreach (var ops in DropChunks(c.Ops)) yield return c.WithOps(ops);
        foreach (var setup in DropChunks(c.Setup)) yield return c.WithSetup(setup);

        for (int i = 0; i < c.Ops.Length; i++)
            foreach (var simpler in SimplerOps(c.Ops[i]))
                yield return c.WithOps(c.Ops.SetItem(i, simpler));

        foreach (var controls in SimplerControls(c.Controls)) yield return c.WithControls(controls);

        for (int i = 0; i < c.Setup.Length; i++)
            foreach (var value in ClearedBits(c.Setup[i].Value))
                yield return c.WithSetup(c.Setup.SetItem(i, c.Setup[i] with { Value = value }));
    }

    /// <summary>Removes halves, quarters, ... down to single elements, the largest cuts first (a lone
    /// element too: a case may fail with no operation at all).</summary>
    public static IEnumerable<ImmutableArray<T>> DropChunks<T>(ImmutableArray<T> items)
    {
        for (int chunk = Math.Max(1, items.Length / 2); chunk >= 1; chunk /= 2)
            for (int start = 0; start + chunk <= items.Length; start += chunk)
                yield return items.RemoveRange(start, chunk);
    }

    static IEnumerable<Op> SimplerOps(Op op)
    {
        switch (op)
        {
            case Op.GuestAccess { Access: var a }:
                if ((a.Gva & 0xFFF) != 0) yield return new Op.GuestAccess(a.WithGva(a.Gva & ~0xFFFUL));
                if (a.Privilege != Privilege.Supervisor) yield return new Op.GuestAccess(a.WithPrivilege(Privilege.Supervisor));
                if (a.Type != AccessType.Read) yield return new Op.GuestAccess(a.WithType(AccessType.Read));
                break;
            case Op.WriteGuest w:
                foreach (var v in ClearedBits(w.Value)) yield return w with { Value = v };
                break;
            case Op.SetControls s:
                foreach (var c in SimplerControls(s.Controls)) yield return new Op.SetControls(c);
                break;
            case Op.LoadCr3 l:
                if ((l.Cr3 & 0xFFF) != 0) yield return new Op.LoadCr3(l.Cr3 & ~0xFFFUL);
                break;
        }
    }

    /// <summary>Each flag turned off, PKRU cleared. Never changes the mode or MAXPHYADDR: that would change what the tables mean.</summary>
    public static IEnumerable<PagingControls> SimplerControls(PagingControls c)
    {
        if (c.Cr0Wp) yield return c.WithCr0Wp(false);
        if (c.Cr4Pse) yield return c.WithCr4Pse(false);
        if (c.Cr4Smep) yield return c.WithCr4Smep(false);
        if (c.Cr4Smap) yield return c.WithCr4Smap(false);
        if (c.Cr4Pke) yield return c.WithCr4Pke(false);
        if (c.EferNxe) yield return c.WithEferNxe(false);
        if (c.EflagsAc) yield return c.WithEflagsAc(false);
        if (c.Pkru != 0) yield return c.WithPkru(0);
    }

    /// <summary>The value with one set bit cleared, for each set bit outside the frame address (flags and high bits).</summary>
    public static IEnumerable<ulong> ClearedBits(ulong value)
    {
        for (int bit = 63; bit >= 0; bit--)
        {
            bool addressBit = bit is >= 12 and < 36;   // keep table addresses; high frame bits may go
            if (!addressBit && Bits.Test(value, bit)) yield return value & ~(1UL << bit);
        }
    }
}
