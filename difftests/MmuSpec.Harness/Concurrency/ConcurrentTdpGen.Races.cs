using System.Collections.Immutable;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// Programs of the `tdp-concurrent-races` property: narrow windows the general programs seldom hit, each case one
/// shape around a leaf the setup faulted in (gfn X, and mostly a neighbour Y under the same 2 MiB region).
/// <list type="bullet">
/// <item>A vCPU uses a stale TLB entry: one or two vCPU threads access X (filling their TLBs), then X or Y again,
/// while another thread zaps the range, write-protects it for dirty logging or runs a host invalidation over it.
/// A later access that enters between the change and its flush request hits the stale entry
/// (docs/tdp-concurrency.md, "Per-vCPU TLBs"): a zap or an invalidation leaves the window between clearing the
/// leaf and setting the vCPU's request, write-protection the whole walk (its flush comes after it).</item>
/// <item>Dirty logging's write-protection loses its compare-and-exchange: with EPT A/D on (the TLB is off then)
/// the vCPUs write X and Y, read in clean by the setup, and each first write sets D by exchange, racing the
/// write-protection walk that read the leaf before.</item>
/// </list>
/// Its own property, so `tdp-concurrent`'s draws and schedules stay as they were.
/// </summary>
public static partial class ConcurrentTdpGen
{
    static readonly ulong[] RaceGfns = [0x5, 0x7, 0x1fd, 0x203, 0x305];

    public static Gen<ConcurrentTdpCase> RacesCase(VmConfig config) =>
        Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed => BuildRaces(seed, size, config)));

    public static Arbitrary<ConcurrentTdpCase> RacesArbitrary(VmConfig config) => Arb.From(RacesCase(config), Shrink);

    public static ConcurrentTdpCase BuildRaces(int seed, int size, VmConfig config)
    {
        var rng = new Random(seed);
        ulong x = RaceGfns[rng.Next(RaceGfns.Length)];
        ulong y = x + 1;
        ulong region = x & ~0x1FFUL;
        int shape = rng.Next(10);
        bool writes = shape >= 3 && shape != 5; // write-protection: the vCPUs' entries must be writable to go stale
        bool dirtyRace = shape >= 6;
        var setup = ImmutableArray.CreateBuilder<TdpOp>();
        setup.Add(new TdpOp.CreateSlot(0, BaseGfn: 0, Pages: 0x400, HostPfnBase: 0x100000, PageSize.Size2M, ReadOnly: false));
        // The D race wants two 4 KiB leaves: each vCPU's first write to one sets its D once.
        setup.Add(new TdpOp.SetMaxPageSize(!dirtyRace && rng.Next(3) == 0 ? PageSize.Size2M : PageSize.Size4K));
        setup.Add(new TdpOp.AccessGpa(x << 12, AccessType.Read));
        if (dirtyRace || rng.Next(4) != 0) setup.Add(new TdpOp.AccessGpa(y << 12, AccessType.Read));
        if (dirtyRace) config = config.WithAccessedDirty(AccessedDirty.Enabled);
        var change = new List<TdpOp>();
        switch (shape)
        {
            case < 3:
                change.Add(rng.Next(3) switch
                {
                    0 => new TdpOp.ZapRange(region, region + 0x200),
                    1 => new TdpOp.ZapRange(x, y + 1),
                    _ => new TdpOp.ZapRange(x, x + 1),
                });
                break;
            case 5:
                change.Add(new TdpOp.HostInvalidateStart(region, region + 0x200));
                change.Add(new TdpOp.HostInvalidateEnd(region, region + 0x200));
                break;
            default:
                change.Add(new TdpOp.SetDirtyLogging(0, true));
                break;
        }
        if (rng.Next(3) == 0) change.Add(new TdpOp.AccessGpa(y << 12, AccessType.Read));

        int users = dirtyRace ? 2 : 1 + rng.Next(2);
        int most = size < 30 ? 2 : 3;
        var program = new List<IReadOnlyList<TdpOp>>();
        for (int u = 0; u < users; u++)
        {
            var type = writes ? AccessType.Write : rng.Next(4) == 0 ? AccessType.Fetch : AccessType.Read;
            var ops = new List<TdpOp> { new TdpOp.AccessGpa((u == 0 ? x : y) << 12, type) };
            int more = 1 + rng.Next(most);
            for (int k = 0; k < more; k++) ops.Add(new TdpOp.AccessGpa((rng.Next(3) == 0 ? y : x) << 12, type));
            program.Add(ops);
        }
        // The changer's place decides its vCPU, and so which vCPU's request it sets first.
        program.Insert(rng.Next(program.Count + 1), change);
        return new ConcurrentTdpCase(config, setup.ToImmutable(), new(program), (uint)rng.Next(), IterationsPerStrategy);
    }
}
