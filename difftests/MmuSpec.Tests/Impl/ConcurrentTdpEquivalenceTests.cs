using System.Text;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// One vCPU on the concurrent TDP MMU (impl/TdpConcurrent) must behave exactly as the single-threaded
/// <see cref="TdpMmu{TFormat}"/>: for seeded random sequences of faults, zaps, slot and policy changes,
/// every result, every flush log, the tables (keys and entries), the slots, the dirty bitmaps and the
/// table count are equal after every step, and no fault ever answers Retry. Impl against impl: a
/// regression check; the spec comparison comes through the harness later. The sequences depend on the
/// seed alone.
/// </summary>
public sealed class ConcurrentTdpEquivalenceTests
{
    const int Sequences = 120, OpsPerSequence = 60;

    public static TheoryData<TdpFormatKind, int?> Configs => new()
    {
        { TdpFormatKind.Ept, null },
        { TdpFormatKind.Ept, 47 },
        { TdpFormatKind.Ept, 51 },
        { TdpFormatKind.Stage2, null },
        { TdpFormatKind.Stage2, 47 },
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void One_vcpu_matches_the_single_threaded_mmu(TdpFormatKind format, int? sharedBit)
    {
        int ops = 0, faults = 0, tableReplacements = 0;
        long fastTaken = 0, fastRefused = 0;
        for (int seed = 0; seed < Sequences; seed++)
        {
            var counts = format == TdpFormatKind.Ept
                ? Run<EptFormat>(sharedBit, seed)
                : Run<Stage2Format>(sharedBit, seed);
            ops += counts.Ops;
            faults += counts.Faults;
            tableReplacements += counts.Replacements;
            fastTaken += counts.FastTaken;
            fastRefused += counts.FastRefused;
        }
        Assert.Equal(Sequences * OpsPerSequence, ops);
        // The sequences reach the paths that matter (not a vacuous comparison).
        Assert.True(faults > Sequences * OpsPerSequence / 16, $"only {faults} faults");
        Console.WriteLine($"{format} shared bit {sharedBit}: {ops} ops, {faults} faults, {tableReplacements} table replacements");
        Assert.True(tableReplacements > 0, "no huge leaf ever replaced a table");
        Console.WriteLine($"  fast faults taken {fastTaken}, refused {fastRefused}");
    }

    /// <summary>
    /// The same comparison with accesses drawn from 64 gfns of the first slot, so gfns come back after
    /// dirty logging protected them: write-protection faults are fixed by the lockless fast fault (a
    /// generator of its own; the theory above draws exactly what it always drew).
    /// </summary>
    [Theory]
    [MemberData(nameof(Configs))]
    public void One_vcpu_with_fast_faults_matches_the_single_threaded_mmu(TdpFormatKind format, int? sharedBit)
    {
        long fastTaken = 0, fastRefused = 0;
        for (int seed = 0; seed < Sequences; seed++)
        {
            var counts = format == TdpFormatKind.Ept
                ? Run<EptFormat>(sharedBit, seed, FewGfns)
                : Run<Stage2Format>(sharedBit, seed, FewGfns);
            fastTaken += counts.FastTaken;
            fastRefused += counts.FastRefused;
        }
        Console.WriteLine($"{format} shared bit {sharedBit}, few gfns: fast faults taken {fastTaken}, refused {fastRefused}");
        // Write-protection faults were fixed without mmu_lock, and huge leaves of logging slots left to the slow path.
        Assert.True(fastTaken > 0 && fastRefused > 0, $"fast faults taken {fastTaken}, refused {fastRefused}");
    }

    static (int Ops, int Faults, int Replacements, long FastTaken, long FastRefused) Run<TFormat>(int? sharedBit, int seed,
        Func<Random, ulong>? pickGfn = null) where TFormat : struct, IPteFormat
    {
        pickGfn ??= PickGfn;
        var rng = new Random(seed * 7919 + (sharedBit ?? 0) * 31 + (typeof(TFormat) == typeof(EptFormat) ? 0 : 1));
        using var pool = new NativePagePool();
        int faults = 0, replacements = 0;
        var single = new TdpMmu<TFormat>(sharedBit, pool);
        var shared = new ConcurrentTdpMmu<TFormat, NoSchedulePoints>(sharedBit, pool);
        var vcpu = shared.CreateVcpu();
        ulong sharedGfn = sharedBit is int s ? 1UL << (s - 12) : 0;
        ulong gpaLimit = 1UL << single.GpaBits;
        // Every sequence starts with a slot, so most of its accesses fault or hit rather than exit.
        Assert.Equal(SlotStatus.Ok, single.CreateSlot(0, 0, 0x800, 0x1000000, 30, readOnly: false));
        Assert.Equal(SlotStatus.Ok, shared.CreateSlot(0, 0, 0x800, 0x1000000, 30, readOnly: false));
        for (int step = 0; step < OpsPerSequence; step++)
        {
            string where = $"seed {seed}, step {step}";
            int pick = rng.Next(100);
            string op;
            string a, b;
            long retiredBefore = shared.DeferredTablesRetired;
            if (pick < 55)
            {
                ulong gfn = pickGfn(rng) | (sharedGfn != 0 && rng.Next(2) == 0 ? sharedGfn : 0);
                ulong gpa = (gfn << 12) | (uint)rng.Next(4096);
                if (rng.Next(40) == 0)
                    gpa = gpaLimit + gpa; // beyond the gpa width: rejected
                var type = (AccessType)rng.Next(rng.Next(50) == 0 ? 4 : 3);
                op = $"Access(0x{gpa:X}, {type})";
                var expected = single.Access(gpa, type);
                var actual = vcpu.Access(gpa, type);
                Assert.False(actual.IsRetry, $"{where}: {op} retried with one vCPU");
                a = expected + " " + (expected.Status == TdpAccessStatus.Rejected ? single.LastRejection : "");
                b = actual.Access + " " + (actual.Access.Status == TdpAccessStatus.Rejected ? vcpu.LastRejection : "");
                if (expected.Faulted)
                    faults++;
            }
            else if (pick < 62)
            {
                ulong start = PickGfn(rng), end = start + (ulong)rng.Next(1, 0x600);
                if (rng.Next(20) == 0)
                    (start, end) = (end, start); // empty: rejected
                op = $"ZapRange(0x{start:X}, 0x{end:X})";
                a = Status(single.ZapRange(start, end), single.LastRejection);
                b = Status(shared.ZapRange(start, end), shared.LastRejection);
            }
            else if (pick < 64)
            {
                op = "ZapAll";
                a = single.ZapAll().ToString();
                b = shared.ZapAll().ToString();
            }
            else if (pick < 72)
            {
                byte shift = (byte)(rng.Next(12) == 0 ? 13 : new byte[] { 12, 21, 30 }[rng.Next(3)]);
                op = $"SetMaxPageSize({shift})";
                a = Status(single.SetMaxPageSize(shift), single.LastRejection);
                b = Status(shared.SetMaxPageSize(shift), shared.LastRejection);
            }
            else if (pick < 82)
            {
                int id = rng.Next(4);
                ulong baseGfn = (ulong)rng.Next(8) * 0x200 + (rng.Next(4) == 0 ? (ulong)rng.Next(0x200) : 0);
                ulong pages = new ulong[] { 1, 0x200, 0x400, 0x40000, (ulong)rng.Next(1, 0x900) }[rng.Next(5)];
                if (pages == 0x40000)
                    baseGfn = (ulong)rng.Next(1, 3) * 0x40000;
                ulong hostBase = 0x1000000UL * (ulong)(id + 1) + (rng.Next(5) == 0 ? 0x1UL : 0);
                byte hostShift = new byte[] { 12, 21, 30 }[rng.Next(3)];
                bool readOnly = rng.Next(5) == 0;
                op = $"CreateSlot({id}, 0x{baseGfn:X}, 0x{pages:X}, 0x{hostBase:X}, {hostShift}, {readOnly})";
                a = Status(single.CreateSlot(id, baseGfn, pages, hostBase, hostShift, readOnly), single.LastRejection);
                b = Status(shared.CreateSlot(id, baseGfn, pages, hostBase, hostShift, readOnly), shared.LastRejection);
            }
            else if (pick < 85)
            {
                int id = rng.Next(5);
                op = $"DeleteSlot({id})";
                a = Status(single.DeleteSlot(id), single.LastRejection);
                b = Status(shared.DeleteSlot(id), shared.LastRejection);
            }
            else if (pick < 88)
            {
                int id = rng.Next(4);
                ulong baseGfn = (ulong)rng.Next(16) * 0x200;
                op = $"MoveSlot({id}, 0x{baseGfn:X})";
                a = Status(single.MoveSlot(id, baseGfn), single.LastRejection);
                b = Status(shared.MoveSlot(id, baseGfn), shared.LastRejection);
            }
            else if (pick < 94)
            {
                int id = rng.Next(4);
                bool on = rng.Next(3) != 0;
                op = $"SetDirtyLogging({id}, {on})";
                a = Status(single.SetDirtyLogging(id, on), single.LastRejection);
                b = Status(shared.SetDirtyLogging(id, on), shared.LastRejection);
            }
            else
            {
                int id = rng.Next(4);
                op = $"GetDirtyLog({id})";
                var ga = new List<ulong>();
                var gb = new List<ulong>();
                a = Status(single.GetDirtyLog(id, ga), single.LastRejection) + " " + string.Join(",", ga);
                b = Status(shared.GetDirtyLog(id, gb), shared.LastRejection) + " " + string.Join(",", gb);
            }
            Assert.True(a == b, $"{where}: {op}: single-threaded {a}, concurrent {b}");
            Assert.Equal(single.TakeFlushes().ToString(), shared.TakeFlushes().ToString());
            string stateA = State(single.VisitPages, single.TablePages, single.Slots, single.MaxPageShift, single.DirtyOffsets, single.DirectRoot, single.MirrorRoot);
            string stateB = State(shared.VisitPages, shared.TablePages, shared.Slots, shared.MaxPageShift, shared.DirtyOffsets, shared.DirectRoot, shared.MirrorRoot);
            Assert.True(stateA == stateB, $"{where}: after {op} the states differ:\nsingle-threaded:\n{stateA}\nconcurrent:\n{stateB}");
            Assert.Equal(0, shared.DeferredTablesPending); // one vCPU: freed as soon as it leaves its epoch
            if (shared.DeferredTablesRetired > retiredBefore)
                replacements++;
        }
        Assert.Equal(shared.DeferredTablesRetired, shared.DeferredTablesFreed);
        long fastTaken = shared.FastFaultsTaken, fastRefused = shared.FastFaultsRefused;
        vcpu.Dispose();
        single.Dispose();
        shared.Dispose();
        Assert.Equal(0, pool.PagesInUse);
        return (OpsPerSequence, faults, replacements, fastTaken, fastRefused);
    }

    // Mostly inside the first few 2 MiB regions, where the slots are; sometimes anywhere below 2^36 frames.
    static ulong PickGfn(Random rng) =>
        rng.Next(10) == 0 ? (ulong)rng.NextInt64(1L << 30) : (ulong)rng.Next(0x2400);

    // Two 2 MiB regions of the first slot, 32 gfns from each.
    static ulong FewGfns(Random rng) => (ulong)rng.Next(2) * 0x200 + (ulong)rng.Next(32);

    static string Status<T>(T status, string? why) where T : Enum =>
        status.ToString() == "Rejected" ? $"Rejected({why})" : status.ToString();

    static string State(Action<Action<TdpPageKey, IReadOnlyList<TdpEntryInfo>>> visitPages, long tablePages,
        IReadOnlyList<HostMemslotInfo> slots, byte maxPageShift, Func<int, IEnumerable<ulong>> dirty,
        TdpPageKey? directRoot, TdpPageKey? mirrorRoot)
    {
        var sb = new StringBuilder();
        sb.Append($"tables {tablePages}, policy {maxPageShift}, roots {directRoot} {mirrorRoot}\n");
        foreach (var slot in slots)
            sb.Append($"{slot} dirty [{string.Join(",", dirty(slot.Id))}]\n");
        visitPages((key, entries) =>
        {
            sb.Append(key).Append(':');
            foreach (var e in entries)
                sb.Append(' ').Append(e).Append($"={(e.IsLeaf ? e.Raw : e.Raw & 0xFFF):X}"); // a table's address differs
            sb.Append('\n');
        });
        return sb.ToString();
    }
}
