using System.Collections.Immutable;
using MmuSpec.Harness.Concurrency;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.PageTable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// The `tdp-concurrent-zaps` programs (ConcurrentTdpGen.Zaps.cs) do what the catalog's c11 and c12 rely on: the
/// collapsible zap's reason to stay 4 KiB holds when logging goes off, and with the setup on every vCPU each thread
/// starts with the setup's reads in its TLB; the case field that asks for it survives a counterexample file.
/// </summary>
public sealed class ConcurrentTdpZapsTests(ITestOutputHelper output)
{
    static DiffProperty Property => DiffProperties.Find("tdp-concurrent-zaps");

    static List<ConcurrentTdpCase> Sampled(int count) => [.. Property.Sample(20261121, count).Cast<ConcurrentTdpCase>()];

    /// <summary>
    /// The thread turning logging off, run alone on the spec after the setup: with a reason (the 4 KiB policy kept, X
    /// tracked, an invalidation beside X open or its page moved) X's 4 KiB leaf stays; without one the link collapses.
    /// </summary>
    [Fact]
    public void Turning_logging_off_keeps_x_s_leaf_exactly_when_the_case_drew_a_reason_to_stay_4k()
    {
        int kept = 0, collapsed = 0;
        foreach (var c in Sampled(40).Where(c => !c.SetupOnEveryVcpu))
        {
            var turner = Assert.Single(c.Program.Threads, t => t.Contains(new TdpOp.SetDirtyLogging(0, false)));
            ulong x = c.Setup.OfType<TdpOp.AccessGpa>().First().Gpa >> 12;
            bool policy4K = c.Setup.OfType<TdpOp.SetMaxPageSize>().Last().Size == PageSize.Size4K;
            bool reason = policy4K || turner.Any(op => op is TdpOp.TrackWrites or TdpOp.HostInvalidateStart);
            var state = TdpState.Create(c.Config);
            foreach (var op in c.Setup.Concat(turner.TakeWhile(op => op is not TdpOp.SetDirtyLogging)).Append(new TdpOp.SetDirtyLogging(0, false)))
                state = state.Step(op).State;
            bool leaf = state.Leaves().Any(l => l.Leaf.Covers(x) && l.Leaf.Level == 1);
            Assert.True(leaf == reason, $"{c}\nreason {reason}, X's 4 KiB leaf {(leaf ? "kept" : "gone")}");
            if (reason) kept++; else collapsed++;
        }
        output.WriteLine($"{kept} cases keep 4 KiB for a reason, {collapsed} collapse");
        Assert.True(kept > collapsed && collapsed > 0, $"{kept} with a reason, {collapsed} without");
    }

    [Fact]
    public void With_the_setup_on_every_vcpu_each_thread_starts_with_the_setup_s_reads_in_its_tlb()
    {
        var c = Sampled(40).First(c => c.SetupOnEveryVcpu && c.Program.Threads.Count >= 3);
        var x = c.Setup.OfType<TdpOp.AccessGpa>().First();
        using (var vm = new ConcurrentTdpVm<EptFormat, NoSchedulePoints>(null, c.Setup, c.Program.Threads.Count, setupOnEveryVcpu: true))
            for (int t = 0; t < c.Program.Threads.Count; t++)
            {
                long hits = vm.Vcpu(t).TlbHitCount;
                Assert.False(Assert.IsType<TdpResult.Mapped>(vm.Apply(t, x).Result).Faulted);
                Assert.Equal(hits + 1, vm.Vcpu(t).TlbHitCount);
            }
        // Without it only vCPU 0 read the setup: vCPU 1 walks to the same leaf.
        using (var vm = new ConcurrentTdpVm<EptFormat, NoSchedulePoints>(null, c.Setup, c.Program.Threads.Count))
        {
            Assert.False(Assert.IsType<TdpResult.Mapped>(vm.Apply(1, x).Result).Faulted);
            Assert.Equal(0, vm.Vcpu(1).TlbHitCount);
        }
    }

    [Fact]
    public void The_setup_on_every_vcpu_survives_a_counterexample_file_and_older_files_read_as_vcpu_0_only()
    {
        var c = Sampled(40).First(c => c.SetupOnEveryVcpu);
        string json = CaseJson.ToJson(c);
        Assert.Contains("\"setup_on_every_vcpu\":true", json.Replace(" ", ""));
        var back = Assert.IsType<ConcurrentTdpCase>(CaseJson.Parse(json));
        Assert.Equal(c, back);
        Assert.NotEqual(c, c with { SetupOnEveryVcpu = false });
        var older = Assert.IsType<ConcurrentTdpCase>(CaseJson.Parse(CaseJson.ToJson(c with { SetupOnEveryVcpu = false })));
        Assert.False(older.SetupOnEveryVcpu);
        Assert.DoesNotContain("setup_on_every_vcpu", CaseJson.ToJson(older));
        Assert.Contains("accesses on every vCPU", c.Render());
        var bad = System.Text.RegularExpressions.Regex.Replace(json, "\"setup_on_every_vcpu\":\\s*true", "\"setup_on_every_vcpu\": 1");
        Assert.NotEqual(json, bad);
        Assert.Throws<InputException>(() => CaseJson.Parse(bad));
    }

    /// <summary>
    /// The coverage of c11's window: an unmap counts only when it releases mmu_lock while another thread's zap has
    /// yielded and not returned. Each logical thread runs on its own OS thread, as under Coyote (the watch's current op is per thread).
    /// </summary>
    [Fact]
    public void An_unmap_counts_as_inside_a_zap_s_yield_only_between_the_zap_s_first_yield_and_its_return()
    {
        var zap = new TdpOp.ZapRange(0, 0x10);
        var unmap = new TdpOp.HostInvalidateStart(3, 4);
        static void On(Action a) { var t = new Thread(() => a()); t.Start(); t.Join(); }
        void Unmap(RangeWalkWatch w) => On(() =>
        {
            w.Enter(1, unmap);
            RangeWalkWatch.AtSchedulePoint(SchedulePointKind.LockRelease);
            w.Leave(1);
        });
        RangeWalkWatch Watch() => new(2, () => 0, () => 0, _ => 1000);

        var inside = Watch();
        On(() => { inside.Enter(0, zap); RangeWalkWatch.AtSchedulePoint(SchedulePointKind.Other); });
        Unmap(inside);
        Assert.Equal(1, inside.UnmapsInsideZapYield);

        var before = Watch();
        On(() => before.Enter(0, zap));               // begun, not yet yielded: it may not have cleared anything
        Unmap(before);
        Assert.Equal(0, before.UnmapsInsideZapYield);

        var after = Watch();
        On(() => { after.Enter(0, zap); RangeWalkWatch.AtSchedulePoint(SchedulePointKind.Other); after.Leave(0); });
        Unmap(after);
        Assert.Equal(0, after.UnmapsInsideZapYield);
    }

    [Fact]
    public void Every_case_is_one_of_the_two_shapes_within_the_twelve_ops_the_catalog_shrinks_to()
    {
        var cases = Sampled(40);
        Assert.Contains(cases, c => c.SetupOnEveryVcpu);
        Assert.Contains(cases, c => !c.SetupOnEveryVcpu);
        foreach (var c in cases)
        {
            Assert.InRange(c.OpCount, 1, 12);
            var ops = c.Program.Threads.SelectMany(t => t).ToImmutableArray();
            if (c.SetupOnEveryVcpu)
            {
                // A zap over X and X + 1 that goes on past them (so it yields with both cleared), and an unmap of one of them.
                ulong x = c.Setup.OfType<TdpOp.AccessGpa>().First().Gpa >> 12;
                Assert.Contains(ops, op => op is TdpOp.ZapRange z && z.StartGfn <= x && z.EndGfn > x + 2);
                Assert.Contains(ops, op => op is TdpOp.HostInvalidateStart i && i.StartGfn >= x && i.EndGfn <= x + 2
                    || op is TdpOp.ZapRange u && u.EndGfn == u.StartGfn + 1 && u.StartGfn >= x && u.StartGfn <= x + 1);
            }
            else Assert.Contains(new TdpOp.SetDirtyLogging(0, false), ops);
        }
    }
}
