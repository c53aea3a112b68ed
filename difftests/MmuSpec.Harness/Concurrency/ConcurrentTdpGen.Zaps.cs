using System.Collections.Immutable;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// Programs of the `tdp-concurrent-zaps` property: zaps beside vCPUs that use what they drop, each case one of two
/// shapes around 4 KiB leaves the setup faulted in (gfn X and a neighbour Y in one 2 MiB region of the 2 MiB-backed slot).
/// <list type="bullet">
/// <item>Dirty logging turned off (the collapsible zap under the read side) with, in most cases, a reason the region
/// must stay 4 KiB: the 4 KiB policy kept, X's writes tracked, or a host invalidation beside X in progress or its
/// pages moved (the thread turning logging off does that first, so the reason holds when the walk looks). The links
/// stay and so do X's and Y's leaves (KVM 9eba50f8d7fc: the max mapping level, not the host page size, decides);
/// otherwise the policy was raised and the link collapses while the other threads fault in the region. A leaf in the
/// other 2 MiB region has no reason of its own: wherever the policy was raised its link collapses beside X's. X is left to
/// the setup, so a leaf the zap must keep cannot come back by a later fault.</item>
/// <item>A zap of the region that yields after its first two leaves and every two more (the property's VMs yield every
/// 2), racing a host unmap of X (an invalidation, or a zap of X alone) by a thread that then reads X, and sometimes
/// another reader. The setup read X on every vCPU (<see cref="ConcurrentTdpCase.SetupOnEveryVcpu"/>), so each starts
/// with X in its TLB. An unmap that runs inside the zap's yield finds X already gone; a read after it returned must not
/// hit X (KVM a835429cda91: the zap flushes what it cleared before it yields).</item>
/// </list>
/// Its own property, so the other concurrent properties' draws stay as they were.
/// </summary>
public static partial class ConcurrentTdpGen
{
    static readonly ulong[] ZapGfns = [0x3, 0x5, 0x105, 0x203, 0x305];

    public static Gen<ConcurrentTdpCase> ZapsCase(VmConfig config) =>
        Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed => BuildZaps(seed, size, config)));

    public static Arbitrary<ConcurrentTdpCase> ZapsArbitrary(VmConfig config) => Arb.From(ZapsCase(config), Shrink);

    public static ConcurrentTdpCase BuildZaps(int seed, int size, VmConfig config)
    {
        var rng = new Random(seed);
        ulong x = ZapGfns[rng.Next(ZapGfns.Length)];
        ulong region = x & ~0x1FFUL;
        var setup = ImmutableArray.CreateBuilder<TdpOp>();
        setup.Add(new TdpOp.CreateSlot(0, BaseGfn: 0, Pages: 0x400, HostPfnBase: 0x100000, PageSize.Size2M, ReadOnly: false));
        setup.Add(new TdpOp.SetMaxPageSize(PageSize.Size4K));
        int most = size < 30 ? 2 : 3;
        var program = new List<IReadOnlyList<TdpOp>>();
        bool everyVcpu = rng.Next(2) == 0;
        if (!everyVcpu) CollapseShape(rng, x, region, most, setup, program);
        else UnmapInYieldShape(rng, x, region, most, setup, program);
        return new ConcurrentTdpCase(config, setup.ToImmutable(), new(program), (uint)rng.Next(), IterationsPerStrategy, SetupOnEveryVcpu: everyVcpu);
    }

    /// <summary>Dirty logging on over X and Y (4 KiB), then turned off by one thread, with a reason to stay 4 KiB in most cases.</summary>
    static void CollapseShape(Random rng, ulong x, ulong region, int most, ImmutableArray<TdpOp>.Builder setup, List<IReadOnlyList<TdpOp>> program)
    {
        ulong y = x + 2, between = x + 1;
        setup.Add(new TdpOp.AccessGpa(x << 12, AccessType.Read));
        setup.Add(new TdpOp.AccessGpa(y << 12, rng.Next(2) == 0 ? AccessType.Write : AccessType.Read));
        // A leaf in the other region, with no reason of its own: under a raised policy its link collapses beside X's kept one.
        ulong other = (region ^ 0x200) + 0x9;
        setup.Add(new TdpOp.AccessGpa(other << 12, AccessType.Read));
        setup.Add(new TdpOp.SetDirtyLogging(0, true));
        var turner = new List<TdpOp>();
        int reason = rng.Next(10);
        if (reason >= 3) setup.Add(new TdpOp.SetMaxPageSize(PageSize.Size2M)); // below 3 the 4 KiB policy is the reason
        switch (reason)
        {
            case 3 or 4: // X's writes tracked: no huge leaf may cover it (disallow_lpage)
                turner.Add(new TdpOp.TrackWrites(x));
                turner.Add(new TdpOp.SetDirtyLogging(0, false));
                if (rng.Next(2) == 0) turner.Add(new TdpOp.AccessGpa(x << 12, AccessType.Write)); // exits for emulation
                break;
            case 5 or 6: // host pages in motion beside X: an invalidation in progress, or its page moved
                turner.Add(new TdpOp.HostInvalidateStart(between, between + 1));
                if (reason == 6) turner.Add(new TdpOp.HostInvalidateEnd(between, between + 1));
                turner.Add(new TdpOp.SetDirtyLogging(0, false));
                if (reason == 5) turner.Add(new TdpOp.HostInvalidateEnd(between, between + 1));
                break;
            default: // below 3 the policy; from 7 none: the link collapses beside the faults
                turner.Add(new TdpOp.SetDirtyLogging(0, false));
                break;
        }
        program.Add(turner);
        ulong[] faulted = [y, between, region + 0x40, region + 0x1FF, other];
        int others = 1 + rng.Next(2);
        for (int t = 0; t < others; t++)
        {
            var ops = new List<TdpOp>();
            int count = 1 + rng.Next(most);
            for (int k = 0; k < count; k++)
            {
                if (rng.Next(8) == 0) { ops.Add(new TdpOp.SetDirtyLogging(0, true)); continue; } // logging back on beside the zap
                int kind = rng.Next(10);
                ops.Add(new TdpOp.AccessGpa(faulted[rng.Next(faulted.Length)] << 12, kind < 4 ? AccessType.Write : kind < 9 ? AccessType.Read : AccessType.Fetch));
            }
            program.Add(ops);
        }
        // The turner's place decides its vCPU.
        var first = program[0];
        program.RemoveAt(0);
        program.Insert(rng.Next(program.Count + 1), first);
    }

    /// <summary>
    /// A zap of X's region (or of 16 frames from X) over two to six 4 KiB leaves from X, so it yields after X
    /// and X + 1 and after every two more; a host unmap of X (or X + 1) on a thread that then reads it itself (its vCPU
    /// holds it from the setup, and its read surely begins after the unmap returned); sometimes another reader.
    /// </summary>
    static void UnmapInYieldShape(Random rng, ulong x, ulong region, int most, ImmutableArray<TdpOp>.Builder setup, List<IReadOnlyList<TdpOp>> program)
    {
        int leaves = 2 + rng.Next(5);
        for (ulong g = x; g < x + (ulong)leaves; g++) setup.Add(new TdpOp.AccessGpa(g << 12, AccessType.Read));
        program.Add([rng.Next(2) == 0 ? new TdpOp.ZapRange(region, region + 0x200) : new TdpOp.ZapRange(x, x + 0x10)]);
        ulong target = rng.Next(3) == 0 ? x + 1 : x;
        var type = rng.Next(4) == 0 ? AccessType.Fetch : AccessType.Read;
        var reads = Enumerable.Range(0, 1 + rng.Next(2)).Select(_ => (TdpOp)new TdpOp.AccessGpa(target << 12, type));
        program.Add(rng.Next(3) == 0
            ? [new TdpOp.ZapRange(target, target + 1), .. reads]
            : [new TdpOp.HostInvalidateStart(target, target + 1), .. reads, new TdpOp.HostInvalidateEnd(target, target + 1)]);
        if (rng.Next(2) == 0)
        {
            int count = 1 + rng.Next(most);
            program.Add([.. Enumerable.Range(0, count).Select(_ => new TdpOp.AccessGpa((rng.Next(4) == 0 ? x + 1 : target) << 12, type))]);
        }
        // Shuffle the threads' places: which vCPU zaps, unmaps or reads, and which starts first.
        for (int i = program.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (program[i], program[j]) = (program[j], program[i]);
        }
    }
}
