using MmuSpec.Harness.Nested;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;
using Xunit;
using Xunit.Abstractions;
using ImplAccess = MmuSpec.Impl.Paging.AccessType;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The measurement docs/nested-ept.md reports for unsync pages: the same 200 nested-ept-unsync cases on the strict and
/// the unsync MMU under both INVEPT policies (deterministic: counts, not times): roots built, shadow pages created,
/// L1 EPT walks (L2 accesses the shadow did not answer) and pages synced.
/// </summary>
public sealed class NestedUnsyncPolicyTests(ITestOutputHelper output)
{
    sealed record Tally(long Roots, long Pages, long Walks, long Synced, long Unsynced);

    static Tally Run(NativePagePool pool, IEnumerable<NestedEptCase> cases)
    {
        long roots = 0, pages = 0, walks = 0, synced = 0, unsynced = 0;
        foreach (var c in cases)
        {
            using var engine = new ImplNestedEngine(c.Config, pool);
            foreach (var op in c.AllOps)
            {
                if (op is NestedEptOp.L2Access a) walks += engine.Vm.L2Access(a.Gpa, (ImplAccess)(int)a.Type).Faulted ? 1 : 0;
                else engine.Step(op);
            }
            var (r, n) = (engine.Vm.Counters, engine.Vm.UnsyncCounters);
            roots += r.RootsBuilt;
            pages += r.ShadowPagesCreated;
            synced += n.PagesSyncedAtInvept + n.PagesSyncedAtRootLoad + n.PagesSyncedAtLink + n.GpasSyncedAtViolation;
            unsynced += n.PagesUnsynced;
        }
        return new(roots, pages, walks, synced, unsynced);
    }

    [Fact]
    public void Unsync_pages_save_L1_EPT_walks_under_both_INVEPT_policies()
    {
        var pool = new NativePagePool();
        var cases = Enumerable.Range(0, 200).Select(seed => NestedEptGen.Build(seed, size: 50, new NestedEptGenOptions(Unsync: true, StaleBursts: true))).ToList();
        IEnumerable<NestedEptCase> With(NestedRootPolicy policy, bool unsync) =>
            cases.Select(c => c with { Config = c.Config with { RootPolicy = policy, Unsync = unsync } });
        foreach (var policy in new[] { NestedRootPolicy.KeepAndResync, NestedRootPolicy.Upstream })
        {
            var strict = Run(pool, With(policy, unsync: false));
            var unsync = Run(pool, With(policy, unsync: true));
            output.WriteLine($"{policy}: strict {strict}; unsync {unsync}");
            Assert.Equal(0, strict.Unsynced + strict.Synced);
            Assert.True(unsync.Unsynced > 0 && unsync.Synced > 0, $"{policy}: the cases unsync and sync pages");
            Assert.True(unsync.Walks < strict.Walks, $"{policy}: unsync walked L1's EPT {unsync.Walks} times, strict {strict.Walks}");
        }
        Assert.Equal(0, pool.PagesInUse);
    }
}
