using System.Collections.Immutable;
using MmuSpec.Harness.Running;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

/// <summary>
/// The `nested-ept-l2` cases (docs/nested-ept.md, "L2's gva accesses"): the EPT hierarchies of the nested-ept cases, each
/// also mapping a window of L2 gpas onto L1 pages that hold L2's own page tables; two L2 paging states (32-bit, PAE,
/// 4-level or 5-level; CR0.WP, NXE, SMEP, SMAP drawn) with their tables written by L1 stores, leaves into the L2 gpas the
/// EPT paths map (and into L2's tables, and nowhere). The operations: L2 gva accesses (user, supervisor, implicit), L1
/// stores into L2's tables and into the EPT entries mapping them, VM entries with another paging state, paging off or a
/// state VM entry refuses, EPTP switches, INVEPT, L2 accesses by gpa, slot changes.
/// </summary>
internal sealed partial class NestedEptCaseBuilder
{
    /// <summary>L2's tables: L2 gpas from <see cref="L2TableGpa"/> up, which every hierarchy maps 4 KiB by 4 KiB onto L1 gfns from <see cref="L2TableGfn"/> (RAM above the data pages).</summary>
    public const ulong L2TableGpa = 0xC000_0000, L2TableGfn = 0xC0;
    public const int L2TablePages = 32;

    sealed record L2State(CpuState Cpu, List<ulong> Gvas);

    readonly List<L2State> l2States = new();
    /// <summary>L1 gpa of an L2 entry -> (value, level, bytes) as the builder believes it is.</summary>
    readonly Dictionary<ulong, (ulong Value, int Level, int Size)> l2Entries = new();
    readonly List<ulong> l2EntryList = new();
    /// <summary>The EPT leaves that map L2's table pages.</summary>
    readonly List<ulong> l2TableMappings = new();
    int nextL2Table;
    L2State? l2Current;

    public static NestedEptCase BuildL2(int seed, int size, NestedEptGenOptions options)
    {
        var rng = new Random(seed);
        int maxPhyAddr = NestedEptGen.MaxPhyAddrs[rng.Next(NestedEptGen.MaxPhyAddrs.Length)];
        bool executeOnly = rng.Next(4) != 0;
        var policy = rng.Next(2) == 0 ? Impl.Nested.NestedRootPolicy.KeepAndResync : Impl.Nested.NestedRootPolicy.Upstream;
        var config = new NestedEptConfig(maxPhyAddr, executeOnly, options.RootPolicy ?? policy);
        var b = new NestedEptCaseBuilder(rng, config);
        b.BuildSetup(hierarchies: 2 + rng.Next(3), pathsPerHierarchy: 3 + rng.Next(3 + size / 10));
        b.BuildL2Setup();
        int count = 10 + rng.Next(10 + Math.Max(10, size));
        while (b.Ops.Count < count) b.NextL2Ops();
        return new NestedEptCase(config, b.Setup.ToImmutable(), b.Ops.ToImmutable());
    }

    void BuildL2Setup()
    {
        // The setup's LoadEptp is its last op: L2's tables and their EPT mappings go before it.
        var enter = Setup[^1];
        Setup.RemoveAt(Setup.Count - 1);
        target = Setup;
        foreach (var h in hierarchies)
            for (int i = 0; i < L2TablePages; i++)
                if (rng.Next(10) != 0 || i == 0)
                    MapL2Table(h, i);
        for (int s = 0; s < 2; s++) l2States.Add(BuildL2State());
        Emit(enter);
        l2Current = l2States[0];
        Emit(new NestedEptOp.SetL2Paging(l2Current.Cpu));
        target = Ops;
    }

    /// <summary>An EPT 4 KiB leaf from L2 table page <paramref name="i"/> to its L1 page: mostly every right, now and then read-only or read/execute (a paging-structure access that EPT A/D treats as a write is then denied).</summary>
    void MapL2Table(Hierarchy h, int i)
    {
        ulong gpa = L2TableGpa + ((ulong)i << 12);
        ulong table = h.Root;
        for (int level = h.Levels; level > 1; level--)
        {
            ulong entry = table + (EptWalk.Index(level, gpa) << 3);
            if (entries.TryGetValue(entry, out var e) && (e.Value & 7) != 0 && e.Level == level && (e.Value & 0x80) == 0 && tables.ContainsKey(e.Value & 0xF_FFFF_FFFF_F000))
            {
                table = e.Value & 0xF_FFFF_FFFF_F000;
                continue;
            }
            ulong child = NewTable(level - 1);
            Write(entry, child | 7, level);
            table = child;
        }
        ulong rights = rng.Next(12) switch { 0 => 1UL, 1 => 5, _ => 7 };
        ulong leaf = table + (EptWalk.Index(1, gpa) << 3);
        Write(leaf, ((L2TableGfn + (ulong)i) << 12) | rights | (6UL << 3) | (rng.Next(4) == 0 ? EptEntry.Accessed : 0), 1);
        l2TableMappings.Add(leaf);
    }

    /// <summary>L2 gpa of the next free L2 table page (when all are used, one at random: shared tables).</summary>
    ulong NewL2Table() => L2TableGpa + ((ulong)(nextL2Table < L2TablePages ? nextL2Table++ : rng.Next(L2TablePages)) << 12);

    static ulong L1GpaOfL2(ulong l2Gpa) => (L2TableGfn << 12) + (l2Gpa - L2TableGpa);

    static bool IsL2Table(ulong l2Gpa) => l2Gpa - L2TableGpa < (ulong)L2TablePages << 12;

    L2State BuildL2State()
    {
        var mode = rng.Next(8) switch { < 2 => PagingMode.Bits32, < 4 => PagingMode.Pae, < 7 => PagingMode.Long4, _ => PagingMode.Long5 };
        bool wide = mode != PagingMode.Bits32;
        var controls = new PagingControls(mode, cr0Wp: rng.Next(2) == 0, cr4Pse: mode == PagingMode.Bits32 && rng.Next(3) != 0,
            cr4Smep: rng.Next(5) == 0, cr4Smap: rng.Next(5) == 0, eferNxe: wide && rng.Next(2) == 0, eflagsAc: rng.Next(4) == 0,
            maxPhyAddr: Math.Min(config.MaxPhyAddr, 48));
        ulong root = NewL2Table();
        var pdptes = new ulong[4];
        if (mode == PagingMode.Pae)
            for (int i = 0; i < 4; i++)
                pdptes[i] = rng.Next(5) == 0 ? 0 : NewL2Table() | 1;
        var gvas = new List<ulong>();
        int count = 4 + rng.Next(5);
        for (int g = 0; g < count; g++)
        {
            ulong gva = Gva(mode);
            if (MapGva(controls, root, pdptes, gva)) gvas.Add(gva);
        }
        return new L2State(new CpuState(controls, mode == PagingMode.Pae ? root & 0xFFFF_FFE0 : root, pdptes), gvas);
    }

    ulong Gva(PagingMode mode)
    {
        ulong low = ((ulong)rng.Next(4) << 30) | ((ulong)rng.Next(4) << 21) | ((ulong)rng.Next(16) << 12);
        return mode switch
        {
            PagingMode.Bits32 or PagingMode.Pae => low,
            PagingMode.Long4 => rng.Next(4) == 0 ? 0xFFFF_8000_0000_0000 | ((ulong)rng.Next(4) << 39) | low : ((ulong)rng.Next(4) << 39) | low,
            _ => rng.Next(4) == 0 ? 0xFF00_0000_0000_0000 | ((ulong)rng.Next(4) << 48) | low : ((ulong)rng.Next(4) << 48) | ((ulong)rng.Next(2) << 39) | low,
        };
    }

    /// <summary>Writes the L2 entries that map <paramref name="gva"/>, linking into tables already there; false when the path ends in a PAE PDPTE that is not present.</summary>
    bool MapGva(PagingControls c, ulong root, ulong[] pdptes, ulong gva)
    {
        var mode = c.Mode;
        bool wide = mode != PagingMode.Bits32;
        int entryBytes = wide ? 8 : 4;
        ulong table = root;
        int level = mode.RootLevel();
        if (mode == PagingMode.Pae)
        {
            ulong pdpte = pdptes[PagingLevels.Index(mode, 3, gva)];
            if ((pdpte & 1) == 0) return false;
            table = pdpte & ~0xFFFUL;
            level = 2;
        }
        bool large = rng.Next(5) == 0 && (mode != PagingMode.Bits32 || c.Cr4Pse);
        int leafLevel = large ? 2 : 1;
        for (; level > leafLevel; level--)
        {
            ulong entry = L1GpaOfL2(table + (ulong)(PagingLevels.Index(mode, level, gva) * entryBytes));
            if (l2Entries.TryGetValue(entry, out var e) && (e.Value & 1) != 0 && (e.Value & 0x80) == 0 && e.Level == level && IsL2Table(e.Value & 0xFFFF_FFFF_F000))
            {
                table = e.Value & 0xFFFF_FFFF_F000;
                continue;
            }
            ulong next = NewL2Table();
            WriteL2(entry, next | L2Flags(c, leaf: false), level, entryBytes);
            table = next;
        }
        ulong leafEntry = L1GpaOfL2(table + (ulong)(PagingLevels.Index(mode, level, gva) * entryBytes));
        WriteL2(leafEntry, L2Target(c, leafLevel) | L2Flags(c, leaf: true) | (large ? 0x80UL : 0), leafLevel, entryBytes);
        return true;
    }

    /// <summary>P, mostly W and U, now and then NX (with NXE), A and D set, a reserved bit.</summary>
    ulong L2Flags(PagingControls c, bool leaf)
    {
        ulong f = 1;
        if (rng.Next(7) != 0) f |= 2;
        if (rng.Next(4) != 0) f |= 4;
        if (rng.Next(3) == 0) f |= 0x20;
        if (leaf && rng.Next(3) == 0) f |= 0x40;
        if (c.EferNxe && rng.Next(8) == 0) f |= 1UL << 63;
        if (c.Mode != PagingMode.Bits32 && rng.Next(40) == 0) f |= 1UL << (c.MaxPhyAddr + rng.Next(52 - c.MaxPhyAddr)) & ((1UL << 52) - 1);
        return f;
    }

    /// <summary>Where an L2 leaf points: an L2 gpa an EPT path maps (most often), one of L2's own table pages, or a gpa no EPT path maps.</summary>
    ulong L2Target(PagingControls c, int leafLevel)
    {
        ulong limit = c.Mode == PagingMode.Bits32 ? 1UL << 32 : 1UL << c.MaxPhyAddr;
        var mapped = paths.Where(p => p.Gpa < limit).ToList();
        ulong gpa = rng.Next(10) switch
        {
            < 6 when mapped.Count > 0 => mapped[rng.Next(mapped.Count)].Gpa,
            < 8 => L2TableGpa + ((ulong)rng.Next(L2TablePages) << 12),
            _ => (ulong)rng.Next(0x400) << 12,
        };
        ulong pageMask = leafLevel == 1 ? 0xFFFUL : c.Mode == PagingMode.Bits32 ? 0x3F_FFFFUL : 0x1F_FFFFUL;
        return gpa & ~pageMask;
    }

    void WriteL2(ulong l1Gpa, ulong value, int level, int size)
    {
        if (!l2Entries.ContainsKey(l1Gpa)) l2EntryList.Add(l1Gpa);
        l2Entries[l1Gpa] = (value, level, size);
        Emit(new NestedEptOp.L1Store(l1Gpa, size == 4 ? value & 0xFFFF_FFFF : value, size));
    }

    void NextL2Ops()
    {
        int roll = rng.Next(100);
        if (roll < 42) GvaAccess();
        else if (roll < 56) EditL2Entry();
        else if (roll < 66) EditEntry(rng.Next(2) == 0 ? l2TableMappings[rng.Next(l2TableMappings.Count)] : entryList[rng.Next(entryList.Count)]);
        else if (roll < 72) SwitchL2Paging();
        else if (roll < 80) SwitchEptp();
        else if (roll < 86) Invept();
        else if (roll < 92) Access(RecentOrPath());
        else if (roll < 95) Emit(new NestedEptOp.L1Store((DataPagesBase + (ulong)rng.Next(8)) << 12 | (ulong)rng.Next(512) * 8, (ulong)rng.NextInt64(), 8));
        else SlotOp();
    }

    void GvaAccess()
    {
        var type = rng.Next(20) switch { < 9 => AccessType.Read, < 16 => AccessType.Write, _ => AccessType.Fetch };
        int who = rng.Next(20);
        var privilege = who < 8 ? Privilege.User : who < 19 || type == AccessType.Fetch ? Privilege.Supervisor : Privilege.ImplicitSupervisor;
        ulong gva;
        if (l2Current is null)
        {
            // Paging off: the gva is an L2 gpa.
            var low = paths.Where(p => p.Gpa >> Math.Min(config.MaxPhyAddr, 48) == 0).ToList();
            gva = low.Count > 0 && rng.Next(5) != 0 ? low[rng.Next(low.Count)].Gpa : L2TableGpa + ((ulong)rng.Next(L2TablePages) << 12);
        }
        else
        {
            var mode = l2Current.Cpu.Controls.Mode;
            gva = rng.Next(30) == 0 && mode.IsLongMode() ? 0x0000_8000_0000_0000UL << (mode == PagingMode.Long5 ? 9 : 0) // not canonical
                : l2Current.Gvas.Count > 0 && rng.Next(8) != 0 ? l2Current.Gvas[rng.Next(l2Current.Gvas.Count)]
                : Gva(mode);
        }
        if (rng.Next(4) == 0) gva += (ulong)rng.Next(0x1000) & ~7UL;
        Emit(new NestedEptOp.L2GvaAccess(new Access(gva, type, privilege)));
    }

    /// <summary>An L1 store that changes one of L2's entries: present, R/W, U/S, NX, A/D cleared, page size, a reserved bit, retargeted.</summary>
    void EditL2Entry()
    {
        ulong gpa = l2EntryList[rng.Next(l2EntryList.Count)];
        var (value, level, size) = l2Entries[gpa];
        ulong next = rng.Next(10) switch
        {
            0 => value & ~1UL,
            1 => value ^ 2,
            2 => value ^ 4,
            3 when size == 8 => value ^ (1UL << 63),
            4 => value & ~0x60UL,
            5 when level == 2 => value ^ 0x80,
            6 => value | (size == 8 ? 1UL << 51 : 1UL << 21),
            7 => (value & 0xFFF) | (L2TableGpa + ((ulong)rng.Next(L2TablePages) << 12)),
            _ => value | 7,
        };
        WriteL2(gpa, next, level, size);
    }

    /// <summary>VM entry with the other paging state, paging off, or guest state VM entry refuses (CR3 beyond MAXPHYADDR, a PDPTE with a reserved bit).</summary>
    void SwitchL2Paging()
    {
        int roll = rng.Next(10);
        if (roll == 0)
        {
            var bad = l2States[rng.Next(l2States.Count)].Cpu;
            Emit(new NestedEptOp.SetL2Paging(bad.Controls.Mode == PagingMode.Pae
                ? bad.WithPdptes([bad.Pdptes[0] | 1 | 2, bad.Pdptes[1], bad.Pdptes[2], bad.Pdptes[3]])
                : bad.Controls.Mode.IsLongMode() ? bad.WithCr3(bad.Cr3 | 1UL << 62) : new CpuState(bad.Controls, bad.Cr3 | 1UL << 35)));
            return;
        }
        l2Current = roll == 1 ? null : l2States[rng.Next(l2States.Count)];
        Emit(new NestedEptOp.SetL2Paging(l2Current?.Cpu));
    }
}
