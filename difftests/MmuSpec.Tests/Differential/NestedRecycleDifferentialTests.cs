using System.Collections.Immutable;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Nested;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// Recycling under the bound, against the spec (docs/nested-ept.md, "Write flooding and recycling"): the generated cases
/// never hold 64 shadow pages, so here six EPTPs share 30 paths (up to 181 pages against KVM's default of 64) and a seeded
/// stream of L2 accesses, EPT edits, flooding stores, EPTP switches and INVEPTs runs in lockstep with the spec under both
/// root policies, strict and unsync. Every answer and L1's memory must be the spec's (oracle 2 for unsync), the impl's
/// invariants (the bound among them) must hold after every step, and the bound and flooding must both have zapped.
/// </summary>
public sealed class NestedRecycleDifferentialTests(ITestOutputHelper output)
{
    const int Paths = 30;
    static readonly ulong[] Roots = [0x1000, 0x5000, 0x6000, 0x7000, 0x8000, 0x9000];

    static ulong PathGpa(int i) => (ulong)i << 39;

    static NestedEptOp Store(ulong gpa, ulong value) => new NestedEptOp.L1Store(gpa, value, 8);

    /// <summary>Path i: root entry i -> PDPT 0x10+i -> PD 0x40+i -> PT 0x70+i -> L1 frame 0x100+i, in every root.</summary>
    static NestedEptCase Case(int seed, bool unsync, NestedRootPolicy policy, int ops = 400)
    {
        var setup = ImmutableArray.CreateBuilder<NestedEptOp>();
        setup.Add(new NestedEptOp.CreateSlot(0, 0, 0x200, 0x1000));
        foreach (ulong root in Roots)
            for (ulong i = 0; i < Paths; i++)
                setup.Add(Store(root + 8 * i, ((0x10 + i) << 12) | 7));
        for (ulong i = 0; i < Paths; i++)
        {
            setup.Add(Store((0x10 + i) << 12, ((0x40 + i) << 12) | 7));
            setup.Add(Store((0x40 + i) << 12, ((0x70 + i) << 12) | 7));
            setup.Add(Store((0x70 + i) << 12, ((0x100 + i) << 12) | 7 | (6UL << 3)));
        }
        setup.Add(new NestedEptOp.LoadEptp(EptPointer.Create(Roots[0])));

        var random = new Random(seed);
        var list = new List<NestedEptOp>();
        ulong[] leafRights = [0, 1, 3, 4, 5, 7];
        while (list.Count < ops)
        {
            ulong i = (ulong)random.Next(Paths);
            int kind = random.Next(100);
            if (kind < 45)
                list.Add(new NestedEptOp.L2Access(PathGpa((int)i) + (uint)random.Next(0x1000), (AccessType)random.Next(3)));
            else if (kind < 55)
                list.Add(new NestedEptOp.LoadEptp(EptPointer.Create(Roots[random.Next(Roots.Length)], accessedDirty: random.Next(4) == 0)));
            else if (kind < 65) // a leaf's rights or frame
                list.Add(Store((0x70 + i) << 12, ((0x100 + (ulong)random.Next(Paths)) << 12) | leafRights[random.Next(leafRights.Length)] | (6UL << 3)));
            else if (kind < 72) // a PD entry retargeted to another path's PT, or back
                list.Add(Store((0x40 + i) << 12, ((0x70 + (ulong)random.Next(Paths)) << 12) | 7));
            else if (kind < 90) // stores L2 does not use, into a root, PDPT or PD: three in a row flood it
            {
                ulong table = random.Next(3) switch { 0 => Roots[random.Next(Roots.Length)], 1 => (0x10 + i) << 12, _ => (0x40 + i) << 12 };
                for (int n = random.Next(1, 4); n > 0; n--)
                    list.Add(Store(table + 8 * (ulong)random.Next(100, 512), 0));
            }
            else if (kind < 95) // a root entry cleared or restored
                list.Add(Store(Roots[random.Next(Roots.Length)] + 8 * i, random.Next(3) == 0 ? 0 : ((0x10 + i) << 12) | 7));
            else
                list.Add(random.Next(2) == 0
                    ? new NestedEptOp.Invept(InveptType.AllContext, default)
                    : new NestedEptOp.Invept(InveptType.SingleContext, EptPointer.Create(Roots[random.Next(Roots.Length)])));
        }
        return new NestedEptCase(new NestedEptConfig(46, ExecuteOnly: true, policy, unsync), setup.ToImmutable(), [.. list]);
    }

    [Theory]
    [InlineData(false, NestedRootPolicy.KeepAndResync)]
    [InlineData(false, NestedRootPolicy.Upstream)]
    [InlineData(true, NestedRootPolicy.KeepAndResync)]
    [InlineData(true, NestedRootPolicy.Upstream)]
    public void Shadow_pages_recycled_under_the_bound_and_zapped_for_flooding_give_the_specs_answers(bool unsync, NestedRootPolicy policy)
    {
        long atLimit = 0, flooded = 0, orphans = 0;
        int maxLive = 0;
        for (int seed = 0; seed < 2; seed++)
        {
            var c = Case(seed, unsync, policy);
            var report = Families.NestedEpt.Run(c);
            Assert.True(report.Agreed, $"seed {seed}: {report.Divergence}");

            var pool = new NativePagePool();
            using (var impl = new ImplNestedEngine(c.Config, pool))
            {
                foreach (var op in c.AllOps)
                {
                    impl.Step(op);
                    maxLive = Math.Max(maxLive, impl.Vm.RecycleCounters.LivePages);
                }
                var r = impl.Vm.RecycleCounters;
                (atLimit, flooded, orphans) = (atLimit + r.ZappedAtLimit, flooded + r.ZappedForFlooding, orphans + r.OrphansZapped);
            }
            Assert.Equal(0, pool.PagesInUse);
        }
        output.WriteLine($"unsync {unsync}, {policy}: 2 x 400 ops, max live {maxLive} of 64; zapped at the bound {atLimit}, for flooding {flooded}, orphans {orphans}");
        Assert.True(atLimit > 0, "the bound was met");
        Assert.True(flooded > 0 && orphans > 0, "pages flooded, with children");
        Assert.InRange(maxLive, 60, 64);
    }
}
