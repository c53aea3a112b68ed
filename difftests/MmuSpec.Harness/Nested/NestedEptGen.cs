using System.Collections.Immutable;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

/// <summary>What a nested-EPT property generates: the impl's cached-root policy at INVEPT and whether it unsyncs leaf pages (null: each case draws).</summary>
/// <param name="StaleBursts">Also draw stale bursts (NestedEptGen.Unsync.cs): only nested-ept-unsync turns it on, so the other draws stay.</param>
/// <param name="L2Paging">L2 runs on its own page tables in L1's memory and accesses by linear address (NestedEptL2Gen.cs): only nested-ept-l2 turns it on.</param>
/// <param name="Vpid">VM entries and exits with VPIDs, INVVPID and VMFUNC over the L2 layout, the impl's gva TLB on (NestedEptVpidGen.cs): only nested-ept-vpid.</param>
public sealed record NestedEptGenOptions(NestedRootPolicy? RootPolicy = null, bool? Unsync = null, bool StaleBursts = false, bool L2Paging = false, bool Vpid = false)
{
    public override string ToString() => RootPolicy switch
    {
        NestedRootPolicy.Upstream => "upstream root policy",
        NestedRootPolicy.KeepAndResync => "keep-and-resync roots",
        _ => "either root policy",
    } + Unsync switch { true => ", unsync leaf pages", false => ", strict", _ => "" } + (L2Paging ? ", L2 paging" : "") + (Vpid ? ", VPIDs" : "");
}

/// <summary>
/// Generators for nested-EPT cases (docs/nested-ept.md, "The differential property"). FsCheck draws a seed and a size;
/// a deterministic builder turns them into a case, so every case replays from FsCheck's (seed, gamma, size).
///
/// The setup gives L1 its RAM (EPT tables and data pages) and a 1 GiB-aligned data slot, writes two to five EPT
/// hierarchies (4- or 5-level, EPT A/D on or off, some sharing sub-tables) mapping L2 gpas with 4 KiB, 2 MiB and
/// 1 GiB pages, with narrowed rights, execute-only entries and now and then a misconfigured entry, and enters L2 with
/// the first EPTP. The operations favour what breaks a nested EPT MMU: L2 accesses through the built paths, L1
/// stores into its EPT tables (rights, present, A/D, large-page and reserved bits, retargeting), EPTP switches among
/// more hierarchies than the roots a vCPU caches, INVEPT of both types, and memslot changes.
/// </summary>
public static class NestedEptGen
{
    public static Gen<NestedEptCase> Case(NestedEptGenOptions options) =>
        Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed => Build(seed, size, options)));

    public static Arbitrary<NestedEptCase> Arbitrary(NestedEptGenOptions options) => Arb.From(Case(options), NestedEptShrink.Candidates);

    internal static readonly int[] MaxPhyAddrs = [39, 40, 42, 46, 48, 52];
    const int UnsyncStream = 0x5E_C0DE;

    public static NestedEptCase Build(int seed, int size, NestedEptGenOptions options)
    {
        if (options.Vpid) return NestedEptCaseBuilder.BuildVpid(seed, size, options);
        if (options.L2Paging) return NestedEptCaseBuilder.BuildL2(seed, size, options);
        var rng = new Random(seed);
        int maxPhyAddr = MaxPhyAddrs[rng.Next(MaxPhyAddrs.Length)];
        bool executeOnly = rng.Next(4) != 0;
        var policy = rng.Next(2) == 0 ? NestedRootPolicy.KeepAndResync : NestedRootPolicy.Upstream;
        // Unsync comes from a stream of its own, so every case draws what it drew before the strict/unsync switch.
        bool unsync = options.Unsync ?? new Random(seed ^ UnsyncStream).Next(2) == 0;
        var config = new NestedEptConfig(maxPhyAddr, executeOnly, options.RootPolicy ?? policy, unsync);
        var b = new NestedEptCaseBuilder(rng, config) { StaleBursts = options.StaleBursts };
        b.BuildSetup(hierarchies: 2 + rng.Next(4), pathsPerHierarchy: 3 + rng.Next(3 + size / 10));
        int count = 10 + rng.Next(10 + Math.Max(10, size));
        while (b.Ops.Count < count) b.NextOps();
        return new NestedEptCase(config, b.Setup.ToImmutable(), b.Ops.ToImmutable());
    }
}

/// <summary>Builds one nested-EPT case; keeps the EPT entries it wrote, so most operations touch what the MMU shadows.</summary>
internal sealed partial class NestedEptCaseBuilder(Random rng, NestedEptConfig config)
{
    // ---- L1's physical layout ----
    public const int RamSlot = 0, DataSlot = 1, HoleSlot = 2;
    /// <summary>L1's RAM from gfn 0: EPT tables from its first gfn up, data pages in its upper half (a leaf with its high
    /// target bits cleared by the shrinker still lands in RAM, so the data slot can go).</summary>
    public const ulong RamBase = 0, RamPages = 0x100, RamHostPfn = 0x1000, DataPagesBase = 0x80;
    /// <summary>1 GiB aligned, so 2 MiB and 1 GiB EPT pages map into it from their start.</summary>
    public const ulong DataBase = 0x4_0000, DataPages = 0x400, DataHostPfn = 0x10_0000;
    /// <summary>No slot at first: leaves there give MMIO exits until the slot is created.</summary>
    public const ulong HoleBase = 0x2_0000, HolePages = 0x20, HoleHostPfn = 0x20_0000;

    /// <summary>L2 gpa regions the paths map: 4 KiB pages low, a 2 MiB region, a 1 GiB region, a second PML4E, a second PML5E.</summary>
    static readonly ulong[] L2Regions = [0x0, 0x20_0000, 0x4000_0000, 0x80_0000_0000, 0x1_0000_0000_0000];

    public ImmutableArray<NestedEptOp>.Builder Setup { get; } = ImmutableArray.CreateBuilder<NestedEptOp>();
    public ImmutableArray<NestedEptOp>.Builder Ops { get; } = ImmutableArray.CreateBuilder<NestedEptOp>();

    sealed record Hierarchy(ulong Root, int Levels, bool AccessedDirty)
    {
        public EptPointer Eptp => EptPointer.Create(Root, Levels, AccessedDirty);
    }

    readonly List<Hierarchy> hierarchies = new();
    /// <summary>Table gpa -> its level.</summary>
    readonly Dictionary<ulong, int> tables = new();
    readonly List<ulong> tableList = new();
    /// <summary>Entry gpa -> the value the builder believes is there, with the level it was written for.</summary>
    readonly Dictionary<ulong, (ulong Value, int Level)> entries = new();
    readonly List<ulong> entryList = new();
    /// <summary>L2 gpas of the built paths, and those accessed recently (most recent first).</summary>
    readonly List<(ulong Gpa, int LeafLevel, Hierarchy Owner)> paths = new();
    readonly List<ulong> recent = new();
    ulong nextTable = RamBase;
    bool holeSlot, dataSlot = true;
    Hierarchy current = null!;

    ImmutableArray<NestedEptOp>.Builder target = null!;

    void Emit(NestedEptOp op) => target.Add(op);

    public void BuildSetup(int hierarchies, int pathsPerHierarchy)
    {
        target = Setup;
        Emit(new NestedEptOp.CreateSlot(RamSlot, RamBase, RamPages, RamHostPfn));
        Emit(new NestedEptOp.CreateSlot(DataSlot, DataBase, DataPages, DataHostPfn));
        for (int h = 0; h < hierarchies; h++)
        {
            int levels = rng.Next(3) == 0 ? 5 : 4;
            var hier = new Hierarchy(NewTable(levels), levels, rng.Next(2) == 0);
            this.hierarchies.Add(hier);
            for (int p = 0; p < pathsPerHierarchy; p++) BuildPath(hier);
        }
        current = this.hierarchies[0];
        Emit(new NestedEptOp.LoadEptp(current.Eptp));
        target = Ops;
    }

    ulong NewTable(int level)
    {
        // Out of table pages: reuse one of this level (a shared sub-table) or any.
        if (nextTable >= DataPagesBase)
            return tableList.Where(t => tables[t] == level).DefaultIfEmpty(tableList[rng.Next(tableList.Count)]).First();
        ulong gpa = nextTable++ << 12;
        tables[gpa] = level;
        tableList.Add(gpa);
        return gpa;
    }

    void Write(ulong gpa, ulong value, int level)
    {
        if (!entries.ContainsKey(gpa)) entryList.Add(gpa);
        entries[gpa] = (value, level);
        Emit(new NestedEptOp.L1Store(gpa, value, 8));
    }

    void BuildPath(Hierarchy h)
    {
        int leafLevel = rng.Next(10) switch { < 6 => 1, < 9 => 2, _ => 3 };
        ulong region = L2Regions[rng.Next(h.Levels == 5 ? L2Regions.Length : L2Regions.Length - 1)];
        ulong gpa = region + ((ulong)rng.Next(leafLevel == 1 ? 16 : 2) << (12 + 9 * (leafLevel - 1)));
        paths.Add((gpa, leafLevel, h));
        ulong table = h.Root;
        for (int level = h.Levels; level > leafLevel; level--)
        {
            ulong entry = table + (EptWalk.Index(level, gpa) << 3);
            if (entries.TryGetValue(entry, out var e) && (e.Value & 7) != 0 && e.Level == level && (e.Value & 0x80) == 0 && tables.ContainsKey(e.Value & 0xF_FFFF_FFFF_F000))
            {
                table = e.Value & 0xF_FFFF_FFFF_F000;
                continue;
            }
            // Now and then link a table of the right level that another path built: shared sub-tables, several roles.
            var shared = tableList.Where(t => tables[t] == level - 1).ToList();
            ulong child = shared.Count > 0 && rng.Next(5) == 0 ? shared[rng.Next(shared.Count)] : NewTable(level - 1);
            Write(entry, child | NonLeafRights() | (rng.Next(4) == 0 ? EptEntry.Accessed : 0) | Rarely(ReservedNonLeaf()), level);
            table = child;
        }
        Write(table + (EptWalk.Index(leafLevel, gpa) << 3), Leaf(leafLevel), leafLevel);
    }

    ulong Rarely(ulong bits) => rng.Next(40) == 0 ? bits : 0;

    ulong NonLeafRights() => rng.Next(12) switch { < 9 => 7UL, 9 => 1, 10 => 5, _ => 3 };

    ulong LeafRights() => rng.Next(40) switch { < 20 => 7UL, < 24 => 1, < 28 => 3, < 32 => 5, < 38 => 4, 38 => 6, _ => 2 };

    ulong ReservedNonLeaf() => rng.Next(2) == 0 && config.MaxPhyAddr < 52 ? 1UL << (config.MaxPhyAddr + rng.Next(52 - config.MaxPhyAddr)) : 1UL << (3 + rng.Next(5));

    /// <summary>A leaf at <paramref name="level"/>: a frame in RAM, the data slot, the hole or nowhere; rights, memory type, A/D.</summary>
    ulong Leaf(int level)
    {
        ulong frame = level switch
        {
            1 => rng.Next(10) switch
            {
                < 4 => DataPagesBase + (ulong)rng.Next(8),
                < 7 => DataBase + (ulong)rng.Next(8),
                7 => HoleBase + (ulong)rng.Next(4),
                8 => 0x3_0000 + (ulong)rng.Next(4),
                _ => tableList[rng.Next(tableList.Count)] >> 12, // L2 reaches one of L1's EPT tables
            },
            2 => rng.Next(4) switch { < 2 => DataBase + (ulong)rng.Next(2) * 0x200, 2 => HoleBase, _ => 0 },
            _ => rng.Next(3) == 0 ? 0 : DataBase,
        };
        ulong memoryType = rng.Next(40) switch { < 34 => 6UL, < 38 => 0, 38 => 2, _ => 7 };
        ulong value = (frame << 12) | LeafRights() | (memoryType << 3) | (level > 1 ? 0x80UL : 0) | (rng.Next(6) == 0 ? 0x40UL : 0);
        if (rng.Next(3) == 0) value |= EptEntry.Accessed | (rng.Next(2) == 0 ? EptEntry.Dirty : 0);
        if (level > 1 && rng.Next(40) == 0) value |= 1UL << 12; // reserved in a large leaf
        return value;
    }

    public void NextOps()
    {
        if (StaleBursts && rng.Next(3) == 0)
        {
            StaleBurst();
            return;
        }
        int roll = rng.Next(100);
        if (roll < 38) Access(RecentOrPath());
        else if (roll < 58) EditEntry(entryList[rng.Next(entryList.Count)]);
        else if (roll < 64) BurstOnPath();
        else if (roll < 68) Emit(new NestedEptOp.L1Store((DataPagesBase + (ulong)rng.Next(8)) << 12 | (ulong)rng.Next(512) * 8, (ulong)rng.NextInt64(), 8));
        else if (roll < 80) SwitchEptp();
        else if (roll < 91) Invept();
        else SlotOp();
    }

    ulong RecentOrPath()
    {
        if (recent.Count > 0 && rng.Next(3) == 0) return recent[rng.Next(Math.Min(4, recent.Count))];
        if (rng.Next(12) == 0) return (ulong)rng.Next(0x400) << 12;
        var mine = paths.Where(p => p.Owner.Root == current.Root).ToList();
        var (gpa, leafLevel, _) = mine.Count > 0 && rng.Next(4) != 0 ? mine[rng.Next(mine.Count)] : paths[rng.Next(paths.Count)];
        // Inside a large page, another 4 KiB piece now and then.
        ulong piece = leafLevel > 1 && rng.Next(2) == 0 ? (ulong)rng.Next(4) << 12 : 0;
        return gpa + piece + (rng.Next(4) == 0 ? (ulong)rng.Next(0x1000) : 0);
    }

    void Access(ulong gpa)
    {
        var type = rng.Next(20) switch { < 9 => AccessType.Read, < 16 => AccessType.Write, _ => AccessType.Fetch };
        Emit(new NestedEptOp.L2Access(gpa, type));
        recent.Remove(gpa);
        recent.Insert(0, gpa);
    }

    /// <summary>An L1 store that changes one EPT entry: rights, present, A/D, large page, a reserved bit, memory type or its target.</summary>
    void EditEntry(ulong gpa)
    {
        var (value, level) = entries[gpa];
        ulong next = rng.Next(13) switch
        {
            0 => value & ~7UL,                                              // not present
            1 => value ^ (1UL << rng.Next(3)),                              // one right toggled
            2 => value & ~(EptEntry.Accessed | EptEntry.Dirty),             // L1 clears A/D (aging)
            3 => value | EptEntry.Accessed | EptEntry.Dirty,
            4 => level is 2 or 3 ? value ^ 0x80 : value & ~EptEntry.Dirty,  // large page on or off
            5 => value | ReservedNonLeaf(),
            6 when level == 1 || (value & 0x80) != 0 => (value & ~0x38UL) | ((ulong)rng.Next(8) << 3), // memory type
            6 => value ^ 0x10,                                              // a reserved bit of a table link
            7 => (value & ~0xF_FFFF_FFFF_F000UL) | (level == 1 ? Leaf(1) & 0xF_FFFF_FFFF_F000
                : rng.Next(4) == 0 ? HoleBase << 12 : tableList[rng.Next(tableList.Count)]), // retargeted (a table in the hole: outside L1 memory, or zeros)
            8 => value & ~2UL,                                              // write-protect
            9 => Leaf(Math.Min(level, 3)),
            _ => value | 7,                                                 // (twice as often) every right
        };
        if (rng.Next(6) == 0)
        {
            // A 4-byte store of one half: KVM sees the entry change in two steps.
            bool high = rng.Next(2) == 0;
            ulong half = high ? next >> 32 : next & 0xFFFF_FFFF;
            Emit(new NestedEptOp.L1Store(gpa + (high ? 4UL : 0), half, 4));
            next = high ? (value & 0xFFFF_FFFF) | (half << 32) : (value & ~0xFFFF_FFFFUL) | half;
            entries[gpa] = (next, level);
            return;
        }
        Write(gpa, next, level);
    }

    /// <summary>Access, change an entry on that path, access again: write tracking must drop what was built from it.</summary>
    void BurstOnPath()
    {
        var mine = paths.Where(p => p.Owner.Root == current.Root).ToList();
        var (gpa, _, _) = mine.Count > 0 ? mine[rng.Next(mine.Count)] : paths[rng.Next(paths.Count)];
        Access(gpa);
        var onPath = entryList.Where(e => PathEntries(current, gpa).Contains(e)).ToList();
        if (onPath.Count > 0) EditEntry(onPath[rng.Next(onPath.Count)]);
        Access(gpa);
    }

    /// <summary>The entry gpas the builder believes a walk of <paramref name="gpa"/> under <paramref name="h"/> reads.</summary>
    IEnumerable<ulong> PathEntries(Hierarchy h, ulong gpa)
    {
        ulong table = h.Root;
        for (int level = h.Levels; level >= 1; level--)
        {
            ulong entry = table + (EptWalk.Index(level, gpa) << 3);
            yield return entry;
            if (!entries.TryGetValue(entry, out var e) || (e.Value & 7) == 0 || (level <= 3 && (e.Value & 0x80) != 0)) yield break;
            table = e.Value & 0xF_FFFF_FFFF_F000;
        }
    }

    void SwitchEptp()
    {
        if (rng.Next(12) == 0)
        {
            // An EPTP VM entry refuses: a reserved memory type, a 3-level walk or bit 7.
            ulong raw = current.Eptp.Raw;
            raw = rng.Next(3) switch { 0 => (raw & ~7UL) | 1, 1 => (raw & ~0x38UL) | (2UL << 3), _ => raw | 0x80 };
            Emit(new NestedEptOp.LoadEptp(new EptPointer(raw)));
            return;
        }
        if (rng.Next(6) == 0)
        {
            // L1 turns EPT A/D on or off for the same tables: another root role over the same EPT.
            var flipped = current with { AccessedDirty = !current.AccessedDirty };
            if (!hierarchies.Contains(flipped)) hierarchies.Add(flipped);
            current = flipped;
        }
        else current = hierarchies[rng.Next(hierarchies.Count)];
        Emit(new NestedEptOp.LoadEptp(current.Eptp));
    }

    void Invept()
    {
        int roll = rng.Next(10);
        if (roll < 6)
        {
            // The descriptor names the current EPTP, another hierarchy's, or the current root with the other A/D bit (one EP4TA).
            var h = rng.Next(2) == 0 ? current : hierarchies[rng.Next(hierarchies.Count)];
            var eptp = rng.Next(5) == 0 ? EptPointer.Create(h.Root, h.Levels, !h.AccessedDirty) : h.Eptp;
            Emit(new NestedEptOp.Invept(InveptType.SingleContext, eptp));
        }
        else if (roll < 9) Emit(new NestedEptOp.Invept(InveptType.AllContext, default));
        else Emit(new NestedEptOp.Invept(InveptType.SingleContext, new EptPointer(current.Eptp.Raw | 0x100)));
    }

    void SlotOp()
    {
        switch (rng.Next(4))
        {
            case 0 when !holeSlot:
                Emit(new NestedEptOp.CreateSlot(HoleSlot, HoleBase, HolePages, HoleHostPfn));
                holeSlot = true;
                break;
            case 0 or 1 when holeSlot:
                Emit(new NestedEptOp.DeleteSlot(HoleSlot));
                holeSlot = false;
                break;
            case 2 when dataSlot:
                Emit(new NestedEptOp.DeleteSlot(DataSlot));
                dataSlot = false;
                break;
            case 2 or 3 when !dataSlot:
                Emit(new NestedEptOp.CreateSlot(DataSlot, DataBase, DataPages, DataHostPfn));
                dataSlot = true;
                break;
            default:
                // A slot that overlaps RAM: rejected by both.
                Emit(new NestedEptOp.CreateSlot(3, RamBase + 0x10, 4, 0x30_0000));
                break;
        }
    }
}
