using System.Collections.Immutable;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>
/// What a shadow property generates: one guest paging mode (null: any), or two modes the guest
/// switches between, the unsync policy, the cached-root policy, and whether the case is about cached
/// roots (<paramref name="Roots"/>: five or more address spaces with PCIDs, frequent MOV CR3 with and
/// without NOFLUSH, INVPCID of every type, stale-root patterns).
/// </summary>
public sealed record ShadowGenOptions(PagingMode? Mode, bool AllowUnsync = true, bool Mixed = false,
    ShadowRootPolicy RootPolicy = ShadowRootPolicy.KeepAndResync, bool Roots = false)
{
    public override string ToString() =>
        $"{(Mixed ? "mixed modes" : Mode?.Name() ?? "any mode")}{(AllowUnsync ? "" : ", no unsync")}"
        + $"{(Roots ? ", cached roots" : "")}{(RootPolicy == ShadowRootPolicy.Upstream ? ", upstream root policy" : "")}";
}

/// <summary>
/// Generators for shadow-MMU cases (docs/shadow-model.md). FsCheck draws a seed and a size; a
/// deterministic builder (<see cref="ShadowCaseBuilder"/>) turns them into a case, so every case
/// replays from FsCheck's (seed, gamma, size).
///
/// The setup creates the guest's RAM (tables and data) and a data slot whose start is 1 GiB
/// aligned (so 2 MiB, 4 MiB and 1 GiB guest pages land in memory), writes page-table forests for
/// two to four address spaces (CR3 values) that share sub-tables, with large pages, and turns
/// paging on. The operations then favour what breaks a shadow MMU: accesses through the built
/// paths, edits of page-table entries the MMU shadows (also of shared tables and of address spaces
/// not loaded), bursts of stores to one upper-level table (write flooding), misaligned stores,
/// INVLPG of recently used addresses, CR3 switches and control toggles, memslot changes, dirty
/// logging and zaps.
/// </summary>
public static class ShadowGen
{
    public static Gen<ShadowCase> Case(ShadowGenOptions options) =>
        Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed => Build(seed, size, options)));

    public static Arbitrary<ShadowCase> Arbitrary(ShadowGenOptions options) => Arb.From(Case(options), ShadowShrink.Candidates);

    static readonly int[] MaxPhyAddrs = [36, 39, 40, 42, 46, 48, 52];

    public static ShadowCase Build(int seed, int size, ShadowGenOptions options)
    {
        var rng = new Random(seed);
        var config = new ShadowConfig(MaxPhyAddrs[rng.Next(MaxPhyAddrs.Length)], options.AllowUnsync, options.RootPolicy);
        // Cached-root cases are mostly IA-32e (PCIDs); PAE and 32-bit switch roots without them.
        var anyMode = options.Roots
            ? rng.Next(100) switch { < 45 => PagingMode.Long4, < 75 => PagingMode.Long5, < 90 => PagingMode.Pae, _ => PagingMode.Bits32 }
            : (PagingMode)rng.Next(4);
        var modes = new List<PagingMode> { options.Mode ?? anyMode };
        if (options.Mixed)
        {
            var other = (PagingMode)rng.Next(4);
            if (other == modes[0]) other = (PagingMode)(((int)other + 1 + rng.Next(3)) % 4);
            modes.Add(other);
        }
        var b = new ShadowCaseBuilder(rng, config, modes, options.Mixed, options.Roots);
        // Cached-root cases have more address spaces than the four roots a vCPU keeps.
        int spaces = options.Roots ? 4 + rng.Next(3) : options.Mixed ? 1 + rng.Next(2) : 2 + rng.Next(3);
        b.BuildSetup(spacesPerMode: spaces, pathsPerSpace: 2 + rng.Next(2 + size / 12));
        int count = 10 + rng.Next(10 + Math.Max(10, size));
        while (b.Ops.Count < count) b.NextOps();
        // KVM's neighbouring-entry prefetch in half the cases, drawn last: the ops a seed draws do not depend on it.
        bool prefetch = rng.Next(2) == 0;
        return new ShadowCase(config.WithPrefetch(prefetch), b.Setup.ToImmutable(), b.Ops.ToImmutable());
    }
}

/// <summary>Builds one shadow case; keeps a rough model of the guest's tables so that most operations touch what the MMU shadows.</summary>
internal sealed class ShadowCaseBuilder
{
    // ---- guest-physical layout ----
    public const int RamSlot = 0, DataSlot = 1, HoleSlot = 2;
    /// <summary>The data slot starts 1 GiB aligned: 2 MiB, 4 MiB and 1 GiB guest pages map into it from their start.</summary>
    public const ulong DataBase = 0x4_0000, DataPages = 1024, DataHostPfn = 0x10_0000;
    /// <summary>A gfn range that no slot holds at first (leaves point there: MMIO exits), created as a slot later.</summary>
    public const ulong HoleBase = 0x2_0000, HolePages = 32, HoleHostPfn = 0x20_0000;
    const ulong RamHostPfn = 0x1000;

    readonly Random rng;
    readonly ShadowConfig config;
    readonly IReadOnlyList<PagingMode> modes;
    readonly bool mixed;
    readonly bool rootsFocus;
    /// <summary>CR4.PCIDE as the guest last set it.</summary>
    bool pcide;
    /// <summary>Address spaces most recently switched to, most recent first (so MOV CR3 often hits a cached root).</summary>
    readonly List<int> recentSpaces = new();

    public ImmutableArray<ShadowOp>.Builder Setup { get; } = ImmutableArray.CreateBuilder<ShadowOp>();
    public ImmutableArray<ShadowOp>.Builder Ops { get; } = ImmutableArray.CreateBuilder<ShadowOp>();

    ulong ramBase, ramPages;
    bool dataSlotReadOnly;
    readonly Dictionary<int, (ulong Base, ulong Pages)> slots = new();
    readonly HashSet<int> logging = new();

    /// <summary>A guest table page: its gpa, the level it was built for and the mode whose tables it belongs to.</summary>
    sealed record Table(ulong Gpa, int Level, PagingMode Mode)
    {
        public readonly HashSet<ulong> Parents = new();      // entry gpas that link it
        public readonly HashSet<int> Spaces = new();         // address spaces that reach it
    }

    /// <summary>An entry written in a table: the value the builder believes is there, and what it was at boot.</summary>
    sealed class Entry(ulong gpa, Table table, ulong value)
    {
        public ulong Gpa { get; } = gpa;
        public Table Table { get; } = table;
        public ulong Value { get; set; } = value;
        public ulong Original { get; set; } = value;
        public int Level => Table.Level;
        public int Size => Table.Mode.EntryBytes();
    }

    /// <summary>An address space: a CR3 in a mode, and the linear addresses whose paths were built in it.</summary>
    sealed record Space(int Index, PagingMode Mode, ulong Cr3, ulong RootTable)
    {
        /// <summary>The PCID bits of <see cref="Cr3"/> (IA-32e only; 0 for PAE and 32-bit spaces).</summary>
        public int Pcid => Mode.IsLongMode() ? (int)(Cr3 & 0xFFF) : 0;
        public readonly List<ulong> Gvas = new();
    }

    readonly List<ulong> freePages = new();
    readonly List<ulong> dataPagesInRam = new();
    readonly List<Table> tables = new();
    readonly Dictionary<ulong, Table> tableAt = new();
    readonly Dictionary<ulong, Entry> entries = new();
    readonly List<Entry> entryOrder = new();
    readonly List<Space> spaces = new();
    readonly Dictionary<(PagingMode, int, ulong), Table> tableForPrefix = new();
    readonly List<ulong> recentGvas = new();

    PagingControls controls;
    Space current = null!;

    public ShadowCaseBuilder(Random rng, ShadowConfig config, IReadOnlyList<PagingMode> modes, bool mixed, bool rootsFocus = false)
    {
        this.rng = rng; this.config = config; this.modes = modes; this.mixed = mixed; this.rootsFocus = rootsFocus;
        controls = GenControls(modes[0]);
        pcide = rootsFocus && modes[0].IsLongMode() && rng.Next(10) != 0;
    }

    PagingControls GenControls(PagingMode mode)
    {
        var c = WalkGen.GenControls(rng, mode).WithMaxPhyAddr(config.MaxPhyAddr);
        // 4 MiB pages need CR4.PSE: mostly on in 32-bit paging.
        if (mode == PagingMode.Bits32 && rng.Next(8) != 0) c = c.WithCr4Pse(true);
        // KVM offers protection keys only with TDP: CR4.PKE is rejected under shadow paging.
        return c.WithCr4Pke(false);
    }

    void AddSetup(ShadowOp op) { Setup.Add(op); Track(op); }
    void Add(ShadowOp op) { Ops.Add(op); Track(op); }

    void Track(ShadowOp op)
    {
        switch (op)
        {
            case ShadowOp.CreateSlot c when !slots.ContainsKey(c.Id): slots[c.Id] = (c.BaseGfn, c.Pages); break;
            case ShadowOp.DeleteSlot d: slots.Remove(d.Id); logging.Remove(d.Id); break;
            case ShadowOp.MoveSlot m when slots.TryGetValue(m.Id, out var s): slots[m.Id] = (m.NewBaseGfn, s.Pages); break;
            case ShadowOp.SetDirtyLogging l when l.On && slots.ContainsKey(l.Id): logging.Add(l.Id); break;
            case ShadowOp.SetDirtyLogging l: logging.Remove(l.Id); break;
        }
    }

    // ---- setup: memslots and page-table forests ----

    public void BuildSetup(int spacesPerMode, int pathsPerSpace)
    {
        // The guest's RAM: below 4 GiB so that 32-bit and PAE CR3 values can point into it.
        ramBase = new ulong[] { 0x100, 0x800, 0x8_0000, 0xF_F000 }[rng.Next(4)];
        ramPages = (ulong)(64 + rng.Next(65));
        AddSetup(new ShadowOp.CreateSlot(RamSlot, ramBase, ramPages, RamHostPfn + (ulong)rng.Next(0, 4) * 0x1000, ReadOnly: false));
        bool dataSlot = rng.Next(5) != 0;
        if (dataSlot)
        {
            dataSlotReadOnly = rng.Next(8) == 0;
            AddSetup(new ShadowOp.CreateSlot(DataSlot, DataBase, DataPages, DataHostPfn, dataSlotReadOnly));
        }
        for (ulong i = 0; i < ramPages; i++) freePages.Add((ramBase + i) << 12);
        Shuffle(freePages);
        // A few RAM pages hold data only.
        for (int i = 0; i < 4; i++) dataPagesInRam.Add(TakePage());

        foreach (var mode in modes)
        {
            int n = spacesPerMode;
            var regions = Regions(mode);
            for (int s = 0; s < n; s++)
            {
                var space = NewSpace(mode);
                // Paths: mostly through the shared regions (so the spaces share sub-tables), sometimes elsewhere.
                for (int p = 0; p < pathsPerSpace; p++)
                {
                    ulong gva = rng.Next(5) == 0 ? RandomGva(mode) : Near(regions[rng.Next(regions.Count)], mode);
                    Grow(space, gva);
                }
            }
        }
        foreach (var e in entryOrder) { e.Original = e.Value; AddSetup(new ShadowOp.GuestStore(e.Gpa, e.Value, e.Size)); }
        current = spaces.First(s => s.Mode == modes[0]);
        recentSpaces.Add(current.Index);
        AddSetup(new ShadowOp.GuestSetPaging(controls, current.Cr3, pcide));
    }

    void Shuffle(List<ulong> list)
    {
        for (int i = list.Count - 1; i > 0; i--) { int j = rng.Next(i + 1); (list[i], list[j]) = (list[j], list[i]); }
    }

    ulong TakePage()
    {
        if (freePages.Count == 0) return 0;
        ulong p = freePages[^1];
        freePages.RemoveAt(freePages.Count - 1);
        return p;
    }

    Space NewSpace(PagingMode mode)
    {
        ulong root;
        ulong cr3;
        if (mode == PagingMode.Pae)
        {
            // PDPTs are 32 bytes: usually a fresh page, sometimes the next 32 bytes of another space's PDPT page.
            var other = spaces.FirstOrDefault(s => s.Mode == PagingMode.Pae && rng.Next(2) == 0);
            cr3 = other is not null && (other.RootTable & 0xFFF) < 0xFE0 ? other.RootTable + 32 : TakePage() + (rng.Next(4) == 0 ? 32UL * (ulong)rng.Next(4) : 0);
            root = cr3;
            var pdpt = new Table(cr3 & ~0xFFFUL, 3, mode);
            tables.Add(pdpt);
            tableAt.TryAdd(pdpt.Gpa, pdpt);
        }
        else
        {
            root = TakePage();
            var t = new Table(root, mode.RootLevel(), mode);
            tables.Add(t);
            tableAt[root] = t;
            cr3 = root;
            if (rootsFocus && mode.IsLongMode())
            {
                // A PCID per space, sometimes one another space has (two address spaces, one TLB tag).
                var withPcid = spaces.Where(s => s.Mode.IsLongMode()).ToList();
                // Small PCIDs mostly, sometimes any of the 12 bits (so a PCID compared on fewer bits shows).
                ulong own = rng.Next(3) == 0 ? (ulong)rng.Next(1, 0x1000) : (ulong)(spaces.Count + 1);
                cr3 |= withPcid.Count > 0 && rng.Next(3) == 0 ? (ulong)withPcid[rng.Next(withPcid.Count)].Pcid : own;
            }
            else if (mode.IsLongMode() && rng.Next(5) == 0) cr3 |= 0x18;   // PWT/PCD, ignored
        }
        var space = new Space(spaces.Count, mode, cr3, root);
        spaces.Add(space);
        return space;
    }

    /// <summary>Two to four regions of linear-address space where most paths of all spaces go.</summary>
    List<ulong> Regions(PagingMode mode)
    {
        var r = new List<ulong>();
        int n = 2 + rng.Next(3);
        for (int i = 0; i < n; i++)
        {
            // Half of them 1 GiB aligned in IA-32e paging, so that accesses through a 1 GiB page stay in the data slot.
            ulong align = mode.IsLongMode() && rng.Next(2) == 0 ? 0x3FFF_FFFFUL : 0x3F_FFFFUL;
            r.Add(Canonical(RandomGva(mode) & ~align, mode));
        }
        return r;
    }

    /// <summary>A gva near a region: the same 4 KiB page, another page of the same table, the other half (bit 21) of a 4 MiB range, or the next 1 GiB.</summary>
    ulong Near(ulong region, PagingMode mode)
    {
        ulong gva = region + (rng.Next(4) switch
        {
            0 => 0,
            1 => (ulong)rng.Next(0, 8) << 12,
            2 => ((ulong)rng.Next(0, 2) << 21) | ((ulong)rng.Next(0, 512) << 12),
            _ => ((ulong)rng.Next(0, 2) << 30) | ((ulong)rng.Next(0, 4) << 21),
        });
        return Canonical(gva, mode);
    }

    ulong RandomGva(PagingMode mode)
    {
        int bits = mode.LinearAddressBits();
        return Canonical((ulong)rng.NextInt64() & Bits.Range(bits - 1, 0), mode);
    }

    static ulong Canonical(ulong gva, PagingMode mode)
    {
        if (!mode.IsLongMode()) return gva & uint.MaxValue;
        int bits = mode.LinearAddressBits();
        return (ulong)((long)(gva << (64 - bits)) >> (64 - bits));
    }

    static ulong FrameMask(PagingMode mode) => mode == PagingMode.Bits32 ? Bits.Range(31, 12) : Bits.Range(51, 12);

    void Grow(Space space, ulong gva)
    {
        var mode = space.Mode;
        space.Gvas.Add(gva);
        ulong table = space.RootTable;
        int level = mode.RootLevel();
        var seen = new HashSet<ulong>();
        while (seen.Add(table))
        {
            if (tableAt.TryGetValue(table & ~0xFFFUL, out var t)) t.Spaces.Add(space.Index);
            ulong entryGpa = table + (ulong)(PagingLevels.Index(mode, level, gva) * mode.EntryBytes());
            if (entries.TryGetValue(entryGpa, out var existing))
            {
                ulong v = existing.Value;
                bool large = Bits.Test(v, 7) && (level == 2 || level == 3 && mode.IsLongMode());
                if (!Bits.Test(v, 0) || level == 1 || large) return;
                table = v & FrameMask(mode);
                level--;
                continue;
            }
            var owner = tableAt.GetValueOrDefault(table & ~0xFFFUL) ?? new Table(table & ~0xFFFUL, level, mode);
            ulong value;
            Table? child = null;
            bool paePdpte = mode == PagingMode.Pae && level == 3;
            bool canBeLarge = level == 2 || (level == 3 && mode.IsLongMode());
            if (level == 1 || (canBeLarge && rng.Next(4) == 0))
                value = LeafEntry(mode, level);
            else
            {
                child = ChooseChild(mode, level - 1, gva);
                value = child.Gpa | (paePdpte ? 1UL | (rng.Next(6) == 0 ? 0x18UL : 0) : TableFlags(mode));
                child.Parents.Add(entryGpa);
            }
            var e = new Entry(entryGpa, owner, value);
            entries[entryGpa] = e;
            entryOrder.Add(e);
            if (child is null || !Bits.Test(value, 0)) return;
            table = child.Gpa;
            level--;
        }
    }

    /// <summary>
    /// The table for a new entry at <paramref name="level"/> + 1: often the table another space built
    /// for the same region (a sub-table shared by address spaces), sometimes any table of the level
    /// (one table under two parents with different rights), else a fresh page.
    /// </summary>
    Table ChooseChild(PagingMode mode, int level, ulong gva)
    {
        int shift = PagingLevels.IndexShift(mode, level + 1);
        var prefix = (mode, level, gva >> shift);
        int roll = rng.Next(100);
        if (roll < 55 && tableForPrefix.TryGetValue(prefix, out var shared)) return shared;
        var sameLevel = tables.Where(t => t.Mode == mode && t.Level == level && !(mode == PagingMode.Pae && t.Level == 3)).ToList();
        if (roll < 67 && sameLevel.Count > 0) return sameLevel[rng.Next(sameLevel.Count)];
        ulong page = TakeAlignedTablePage(level) ?? TakePage();
        if (page == 0) return sameLevel.Count > 0 ? sameLevel[rng.Next(sameLevel.Count)] : new Table(HoleBase << 12, level, mode);
        var t = new Table(page, level, mode);
        tables.Add(t);
        tableAt[page] = t;
        tableForPrefix.TryAdd(prefix, t);
        return t;
    }

    /// <summary>
    /// Sometimes a level-1 (level-2) table goes to the first 2 MiB (1 GiB) aligned frame of RAM, where
    /// large guest pages into RAM start: an indirect page shadowing that table and a direct page
    /// splitting such a large page then have the same gfn and level, and only the role's direct bit
    /// keeps them apart (the bug of reusing a child whose gfn matches but whose role does not).
    /// </summary>
    ulong? TakeAlignedTablePage(int level)
    {
        if (level > 2 || rng.Next(3) != 0) return null;
        ulong frames = level == 1 ? 512UL : 1UL << 18;
        ulong gpa = ((ramBase + frames - 1) & ~(frames - 1)) << 12;
        int i = freePages.IndexOf(gpa);
        if (i < 0) return null;
        freePages.RemoveAt(i);
        return gpa;
    }

    ulong TableFlags(PagingMode mode)
    {
        ulong f = 0;
        if (rng.Next(100) < 97) f |= 1;
        if (rng.Next(100) < 85) f |= 2;
        if (rng.Next(100) < 85) f |= 4;
        if (rng.Next(100) < 50) f |= PagingEntry.Accessed;
        if (rng.Next(100) < 8) f |= 0x18;
        if (mode.EntryBytes() == 8 && rng.Next(100) < 10) f |= 1UL << PagingEntry.XdBit;
        return f;
    }

    ulong LeafEntry(PagingMode mode, int level)
    {
        ulong f = 0;
        if (rng.Next(100) < 95) f |= 1;
        if (rng.Next(100) < 75) f |= 2;
        if (rng.Next(100) < 70) f |= 4;
        if (rng.Next(100) < 50) f |= PagingEntry.Accessed;
        if (rng.Next(100) < 40) f |= PagingEntry.Dirty;
        if (rng.Next(100) < 10) f |= 1UL << 8;                       // G
        if (mode.EntryBytes() == 8 && rng.Next(100) < 15) f |= 1UL << PagingEntry.XdBit;
        if (mode.IsLongMode() && rng.Next(100) < 25) f |= (ulong)rng.Next(16) << PagingEntry.ProtectionKeyShift;
        if (rng.Next(100) < 3) f |= ReservedBit(mode);
        if (level > 1) f |= 1UL << PagingEntry.PageSizeBit;
        return LeafFrame(mode, level) | f;
    }

    /// <summary>Where a leaf points: mostly the data slot (large pages at its aligned start), sometimes a RAM page (even a table), the hole, anywhere.</summary>
    ulong LeafFrame(PagingMode mode, int level)
    {
        int roll = rng.Next(100);
        if (level == 1)
        {
            ulong gfn = roll switch
            {
                < 55 => DataBase + (ulong)rng.Next((int)DataPages),
                < 67 => dataPagesInRam[rng.Next(dataPagesInRam.Count)] >> 12,
                < 82 => SomeTableGfn(),   // the guest maps its own page table
                < 92 => HoleBase + (ulong)rng.Next((int)HolePages),
                _ => (ulong)rng.NextInt64(0, (long)Math.Min(config.GfnLimit, mode == PagingMode.Bits32 ? 1UL << 20 : config.GfnLimit)),
            };
            return gfn << 12;
        }
        ulong size = PagingLevels.PageSizeAt(mode, level).Bytes();
        ulong frame = roll switch
        {
            < 60 => (DataBase << 12) + (size == (2UL << 20) ? (ulong)rng.Next(2) * size : 0),
            < 75 => (ramBase << 12) & ~(size - 1),
            < 85 => (HoleBase << 12) & ~(size - 1),
            _ => (ulong)rng.NextInt64(0, 1L << Math.Min(config.MaxPhyAddr, mode == PagingMode.Bits32 ? 32 : 40)) & ~(size - 1),
        };
        if (mode == PagingMode.Bits32 && rng.Next(12) == 0) frame |= (ulong)rng.Next(1, 256) << 13;   // PSE-36 bits (some reserved)
        return frame;
    }

    /// <summary>A table's gfn, mostly a level-1 table's (a guest writing its own page table through a mapping may unsync it).</summary>
    ulong SomeTableGfn()
    {
        if (tables.Count == 0) return ramBase;
        var leafTables = tables.Where(t => t.Level == 1).ToList();
        return (leafTables.Count > 0 && rng.Next(3) != 0 ? leafTables[rng.Next(leafTables.Count)] : tables[rng.Next(tables.Count)]).Gpa >> 12;
    }

    ulong ReservedBit(PagingMode mode)
    {
        if (mode == PagingMode.Bits32) return 1UL << (13 + rng.Next(9));
        int m = config.MaxPhyAddr;
        int[] candidates = [Math.Min(m, 51), 51, 62, rng.Next(m, 52)];
        return 1UL << candidates[rng.Next(candidates.Length)];
    }

    // ---- operations ----

    /// <summary>genOps: one operation, or a burst of stores (write flooding).</summary>
    public void NextOps()
    {
        if (rootsFocus && rng.Next(100) < 50) { RootsOps(); return; }
        // A mode switch in a single-mode case is a detour: go back to the tables' own mode soon.
        if (!mixed && controls.Mode != modes[0] && rng.Next(3) == 0)
        {
            controls = controls.WithMode(modes[0]);
            Add(SetPagingOp(controls, current.Cr3));
            return;
        }
        int roll = rng.Next(100);
        if (roll < 38) { Add(Access()); return; }
        if (roll < 46) { EditPathOfRecentGva(); return; }
        if (roll < 56) { Add(EditEntry()); return; }
        if (roll < 59) { FloodBurst(); return; }
        if (roll < 61) { Add(MisalignedStore()); return; }
        if (rng.Next(100) < 4) { AliasBurst(); return; }
        if (roll < 66) { Add(new ShadowOp.Invlpg(SomeGva())); return; }
        if (roll < 68) { Add(new ShadowOp.FlushTlb()); return; }
        if (roll < 77) { Add(SetPaging()); return; }
        if (roll < 80) { Add(DataStore()); return; }
        if (roll < 82) { Add(new ShadowOp.SetDirtyLogging(SomeSlot(), rng.Next(3) != 0)); return; }
        if (roll < 84 && rng.Next(2) == 0) { DirtyLogRound(); return; }
        if (roll < 84) { Add(new ShadowOp.GetDirtyLog(logging.Count > 0 && rng.Next(5) != 0 ? logging.ElementAt(rng.Next(logging.Count)) : SomeSlot())); return; }
        if (roll < 87) { Add(Zap()); return; }
        if (roll < 88) { Add(new ShadowOp.ZapAll()); return; }
        if (roll < 91) { Add(SlotChange()); return; }
        Add(Access());
    }

    /// <summary>A gva for an access or INVLPG: mostly a built path of the loaded space (or a recently used one), sometimes another space's, sometimes anywhere.</summary>
    ulong SomeGva()
    {
        int roll = rng.Next(100);
        ulong gva;
        if (roll < 30 && recentGvas.Count > 0) gva = recentGvas[rng.Next(recentGvas.Count)];
        else if (roll < 85 && current.Gvas.Count > 0) gva = current.Gvas[rng.Next(current.Gvas.Count)];
        else if (roll < 94) { var s = spaces[rng.Next(spaces.Count)]; gva = s.Gvas.Count > 0 ? s.Gvas[rng.Next(s.Gvas.Count)] : RandomGva(controls.Mode); }
        else gva = RandomGva(controls.Mode);
        // Another 4 KiB page of the same large page / table, or the other quadrant half.
        if (rng.Next(6) == 0) gva ^= (ulong)rng.Next(1, 16) << 12;
        if (rng.Next(12) == 0) gva ^= 1UL << 21;
        gva = (gva & ~0xFFFUL) | (uint)rng.Next(0x1000);
        gva = Canonical(gva, controls.Mode);
        if (controls.Mode.IsLongMode() && rng.Next(40) == 0) gva ^= 1UL << (controls.Mode.LinearAddressBits() + rng.Next(0, 64 - controls.Mode.LinearAddressBits()));   // non-canonical
        return gva;
    }

    ShadowOp Access()
    {
        ulong gva = SomeGva();
        recentGvas.Add(gva);
        if (recentGvas.Count > 12) recentGvas.RemoveAt(0);
        var type = rng.Next(10) switch { < 5 => AccessType.Read, < 8 => AccessType.Write, _ => AccessType.Fetch };
        var priv = rng.Next(100) switch { < 50 => Privilege.Supervisor, < 88 => Privilege.User, _ => Privilege.ImplicitSupervisor };
        if (type == AccessType.Fetch && priv == Privilege.ImplicitSupervisor) priv = Privilege.Supervisor;
        return new ShadowOp.GuestAccess(new Access(gva, type, priv));
    }

    /// <summary>An entry to edit: usually on the loaded space's paths, often of a shared table or of a space not loaded.</summary>
    Entry SomeEntry(Func<Entry, bool>? filter = null)
    {
        var candidates = filter is null ? entryOrder : entryOrder.Where(filter).ToList();
        if (candidates.Count == 0) candidates = entryOrder;
        int roll = rng.Next(100);
        List<Entry> pool = roll switch
        {
            < 45 => candidates.Where(e => e.Table.Spaces.Contains(current.Index)).ToList(),
            < 65 => candidates.Where(e => e.Table.Parents.Count > 1 || e.Table.Spaces.Count > 1).ToList(),
            < 80 => candidates.Where(e => !e.Table.Spaces.Contains(current.Index)).ToList(),
            _ => candidates,
        };
        if (pool.Count == 0) pool = candidates;
        return pool[rng.Next(pool.Count)];
    }

    /// <summary>
    /// The entries the builder believes translate <paramref name="gva"/> in the loaded space, root first
    /// (its model of guest memory may be wrong after some stores; that only makes the edit less targeted).
    /// </summary>
    List<Entry> PathOf(ulong gva, Space? space = null)
    {
        space ??= current;
        var path = new List<Entry>();
        var mode = space.Mode;
        if (mode != controls.Mode) return path;
        ulong table = space.RootTable;
        for (int level = mode.RootLevel(); level >= 1; level--)
        {
            if (!entries.TryGetValue(table + (ulong)(PagingLevels.Index(mode, level, gva) * mode.EntryBytes()), out var e)) break;
            path.Add(e);
            bool large = Bits.Test(e.Value, 7) && (level == 2 || level == 3 && mode.IsLongMode());
            if (!Bits.Test(e.Value, 0) || large) break;
            table = e.Value & FrameMask(mode);
        }
        return path;
    }

    /// <summary>
    /// The unsync/INVLPG pattern: an edit of an entry that translates a recently accessed gva (mostly its
    /// leaf), then often an access through it (a stale hit or a refill) and an INVLPG of it.
    /// </summary>
    void EditPathOfRecentGva()
    {
        ulong gva = recentGvas.Count > 0 ? recentGvas[rng.Next(recentGvas.Count)] : SomeGva();
        var path = PathOf(gva);
        if (path.Count == 0) { Add(EditEntry()); return; }
        var e = rng.Next(3) != 0 ? path[^1] : path[rng.Next(path.Count)];
        Add(EditEntry(e));
        if (rng.Next(3) == 0) Add(new ShadowOp.GuestAccess(new Access(gva, rng.Next(3) == 0 ? AccessType.Write : AccessType.Read, Privilege.Supervisor)));
        if (rng.Next(3) != 0) Add(new ShadowOp.Invlpg(gva));
        if (rng.Next(2) == 0) Add(new ShadowOp.GuestAccess(new Access(gva, rng.Next(3) == 0 ? AccessType.Write : AccessType.Read, rng.Next(3) == 0 ? Privilege.User : Privilege.Supervisor)));
    }

    ShadowOp Store(Entry e, ulong value)
    {
        e.Value = value;
        return new ShadowOp.GuestStore(e.Gpa, value, e.Size);
    }

    /// <summary>An edit of a page-table entry: present toggled, rights narrowed or widened, PS toggled, retargeted, A/D cleared, half of an 8-byte entry, restored, zeroed.</summary>
    ShadowOp EditEntry(Entry? target = null)
    {
        if (entryOrder.Count == 0) return DataStore();
        var e = target ?? SomeEntry();
        ulong v = e.Value;
        var mode = e.Table.Mode;
        int roll = rng.Next(100);
        if (roll < 14) return Store(e, v ^ 1);
        if (roll < 24) return Store(e, rng.Next(3) switch { 0 => v & ~2UL, 1 => v & ~4UL, _ => e.Size == 8 ? v | (1UL << 63) : v & ~6UL });
        if (roll < 34) return Store(e, (v | 7) & (e.Size == 8 ? ~(1UL << 63) : ulong.MaxValue));
        if (roll < 40 && e.Level is 2 or 3) return Store(e, v ^ (1UL << PagingEntry.PageSizeBit));
        if (roll < 52)
        {
            // Retarget: a table entry to another table (of the level below, or any), a leaf to another frame.
            bool large = Bits.Test(v, 7) && e.Level > 1;
            ulong frame;
            if (e.Level > 1 && !large)
            {
                var below = tables.Where(t => t.Mode == mode && (t.Level == e.Level - 1 || rng.Next(6) == 0)).ToList();
                frame = below.Count > 0 ? below[rng.Next(below.Count)].Gpa : LeafFrame(mode, 1);
            }
            else frame = LeafFrame(mode, e.Level);
            return Store(e, (v & ~FrameMask(mode) & ~(e.Size == 4 ? 0x3FE000UL : 0)) | frame);
        }
        if (roll < 60) return Store(e, v & ~(PagingEntry.Accessed | (rng.Next(2) == 0 ? PagingEntry.Dirty : 0)));
        if (roll < 64) return Store(e, e.Size == 8 && rng.Next(2) == 0 ? v ^ (1UL << 63) : v | ReservedBit(mode));
        if (roll < 70 && e.Size == 8)
        {
            // A 4-byte store into an 8-byte entry: the low half (flags) or the high half (XD, pkey, high frame bits).
            if (rng.Next(2) == 0)
            {
                uint low = (uint)v ^ (uint)(1 << new[] { 0, 1, 2, 5, 6 }[rng.Next(5)]);
                e.Value = (v & 0xFFFF_FFFF_0000_0000UL) | low;
                return new ShadowOp.GuestStore(e.Gpa, low, 4);
            }
            uint high = (uint)(v >> 32) ^ (rng.Next(2) == 0 ? 0x8000_0000u : (uint)rng.Next(16) << 27);
            e.Value = (v & 0xFFFF_FFFFUL) | ((ulong)high << 32);
            return new ShadowOp.GuestStore(e.Gpa + 4, high, 4);
        }
        if (roll < 90) return Store(e, e.Original);
        if (roll < 96) return Store(e, v | PagingEntry.Accessed | PagingEntry.Dirty);
        return Store(e, 0);
    }

    /// <summary>
    /// Many translations of one frame and many links to one table: the guest copies a mapped gva's leaf
    /// into several other entries of its page table, and that table's directory entry into several other
    /// entries of its directory, then touches the new gvas. The shadow MMU then keeps long reverse maps
    /// and parent lists (the impl's pte_list descriptor chains), and later edits remove from their middle.
    /// </summary>
    void AliasBurst()
    {
        var mode = controls.Mode;
        var known = current.Gvas.Where(g => PathOf(g) is { Count: >= 2 } p && p[^1].Level == 1 && p[^2].Level == 2).ToList();
        if (known.Count == 0 || current.Mode != mode) { Add(Access()); return; }
        ulong gva = known[rng.Next(known.Count)];
        var path = PathOf(gva);
        var (leaf, pde) = (path[^1], path[^2]);
        int entriesPerTable = 4096 / mode.EntryBytes();
        void Copy(Entry of, int level)
        {
            int shift = PagingLevels.IndexShift(mode, level);
            int original = PagingLevels.Index(mode, level, gva);
            foreach (int index in Enumerable.Range(0, entriesPerTable).Where(i => i != original).OrderBy(_ => rng.Next()).Take(7 + rng.Next(6)))
            {
                ulong gpa = (of.Gpa & ~0xFFFUL) + (ulong)(index * mode.EntryBytes());
                if (!entries.TryGetValue(gpa, out var e))
                {
                    e = new Entry(gpa, of.Table, of.Value);
                    entries[gpa] = e;
                    entryOrder.Add(e);
                }
                Add(Store(e, of.Value));
                ulong alias = (gva & ~((ulong)(entriesPerTable - 1) << shift)) | ((ulong)index << shift);
                current.Gvas.Add(alias);
                Add(new ShadowOp.GuestAccess(new Access(alias, rng.Next(4) == 0 ? AccessType.Write : AccessType.Read, Privilege.Supervisor)));
            }
        }
        Copy(leaf, 1);
        Copy(pde, 2);
    }

    /// <summary>
    /// Write flooding: three to five stores to one upper-level table of the loaded mode with no access
    /// in between (the same entry rewritten, other entries, unused slots).
    /// </summary>
    void FloodBurst()
    {
        var upper = tables.Where(t => t.Level > 1 && t.Mode == controls.Mode && !(t.Mode == PagingMode.Pae && t.Level == 3)).ToList();
        if (upper.Count == 0) { Add(EditEntry()); return; }
        var onPath = upper.Where(t => t.Spaces.Contains(current.Index)).ToList();
        var from = onPath.Count > 0 && rng.Next(4) != 0 ? onPath : upper;
        var table = from[rng.Next(from.Count)];
        var inTable = entryOrder.Where(e => e.Table == table || (e.Gpa & ~0xFFFUL) == table.Gpa).ToList();
        int n = 3 + rng.Next(3);
        int size = table.Mode.EntryBytes();
        for (int i = 0; i < n; i++)
        {
            if (inTable.Count > 0 && rng.Next(3) != 0)
            {
                var e = inTable[rng.Next(inTable.Count)];
                Add(Store(e, rng.Next(3) == 0 ? e.Value ^ PagingEntry.Accessed : e.Value));
            }
            else
            {
                ulong gpa = table.Gpa + (ulong)(rng.Next(4096 / size) * size);
                if (entries.TryGetValue(gpa, out var e)) Add(Store(e, e.Value));
                else Add(new ShadowOp.GuestStore(gpa, 0, size));
            }
        }
    }

    /// <summary>An 8-byte store over two 4-byte entries of a 32-bit table (misaligned for the shadow page), else a 4-byte half of an 8-byte entry.</summary>
    ShadowOp MisalignedStore()
    {
        var small = entryOrder.Where(e => e.Size == 4).ToList();
        if (small.Count == 0)
        {
            var e = SomeEntry(x => x.Size == 8);
            uint low = (uint)e.Value;
            return new ShadowOp.GuestStore(e.Gpa, rng.Next(2) == 0 ? low : low ^ 1, 4);
        }
        var pick = small[rng.Next(small.Count)];
        ulong gpa = pick.Gpa & ~7UL;
        ulong lo = entries.TryGetValue(gpa, out var a) ? a.Value : 0, hi = entries.TryGetValue(gpa + 4, out var b) ? b.Value : 0;
        if (rng.Next(2) == 0) lo ^= PagingEntry.Accessed;
        if (a is not null) a.Value = lo;
        if (b is not null) b.Value = hi;
        return new ShadowOp.GuestStore(gpa, (lo & uint.MaxValue) | (hi << 32), 8);
    }

    /// <summary>A store to data memory: the data slot, a RAM data page, a read-only or unbacked gpa, rarely an invalid store.</summary>
    ShadowOp DataStore()
    {
        int roll = rng.Next(100);
        ulong gpa = roll switch
        {
            < 55 => (DataBase + (ulong)rng.Next((int)DataPages)) << 12,
            < 80 => dataPagesInRam[rng.Next(dataPagesInRam.Count)],
            < 95 => (HoleBase + (ulong)rng.Next((int)HolePages)) << 12,
            _ => (ulong)rng.NextInt64(0, (long)Math.Min(1UL << 40, config.GfnLimit << 12)),
        };
        int size = rng.Next(2) == 0 ? 4 : 8;
        gpa = (gpa & ~0xFFFUL) | ((ulong)rng.Next(0x1000) & ~(ulong)(size - 1));
        if (rng.Next(100) == 0) gpa |= 1;                               // misaligned: rejected
        if (rng.Next(100) == 0) gpa = 1UL << config.MaxPhyAddr;         // beyond MAXPHYADDR: rejected
        ulong value = (ulong)rng.NextInt64() & (size == 4 ? uint.MaxValue : ulong.MaxValue);
        return new ShadowOp.GuestStore(gpa, value, size);
    }

    /// <summary>MOV CR3 to another space, a control toggled, a mode switch (mixed cases), a CR3 load that raises #GP.</summary>
    ShadowOp SetPaging()
    {
        int roll = rng.Next(100);
        if ((roll < 45 || rng.Next(3) != 0) && rootsFocus) return MovCr3(SomeSpace());
        if (roll < 45)
        {
            var same = spaces.Where(s => s.Mode == controls.Mode).ToList();
            current = same.Count > 0 ? same[rng.Next(same.Count)] : current;
            return SetPagingOp(controls, current.Cr3);
        }
        if (roll < 84 && rng.Next(6) == 0)
            return SetPagingOp(controls.WithCr4Pke(true), current.Cr3);   // rejected: no PKE under shadow paging
        if (roll < 84)
        {
            controls = rng.Next(9) switch
            {
                0 => controls.WithCr0Wp(!controls.Cr0Wp),
                1 => controls.WithEferNxe(!controls.EferNxe),
                2 => controls.WithCr4Smep(!controls.Cr4Smep),
                3 => controls.WithCr4Smap(!controls.Cr4Smap),
                4 => controls.WithEflagsAc(!controls.EflagsAc),
                5 => controls.WithEflagsAc(!controls.EflagsAc),
                6 => controls.WithPkru(WalkGen.GenPkru(rng)),
                _ => controls.WithCr4Pse(!controls.Cr4Pse),
            };
            return SetPagingOp(controls, current.Cr3);
        }
        if (roll < 94 && (mixed || rng.Next(4) == 0))
        {
            // A mode switch: in mixed cases to the other mode's own tables; otherwise the same tables reinterpreted (and usually back later).
            var other = mixed ? modes.FirstOrDefault(m => m != controls.Mode, modes[0]) : (PagingMode)rng.Next(4);
            var target = spaces.Where(s => s.Mode == other).ToList();
            controls = controls.WithMode(other);
            if (target.Count > 0) current = target[rng.Next(target.Count)];
            else if (!other.IsLongMode() && current.Cr3 > uint.MaxValue) current = spaces[0];
            if (!mixed && other != modes[0] && rng.Next(2) == 0) controls = controls.WithMode(modes[0]);   // back to the tables' own mode
            return SetPagingOp(controls, current.Cr3);
        }
        // #GP: a reserved CR3 bit in IA-32e paging; a PAE CR3 whose PDPT is outside memory or holds reserved bits.
        if (controls.Mode.IsLongMode())
            return SetPagingOp(controls, current.Cr3 | (1UL << rng.Next(config.MaxPhyAddr, 63)));
        if (controls.Mode == PagingMode.Pae)
            return SetPagingOp(controls, rng.Next(2) == 0 ? (HoleBase << 12) & uint.MaxValue : current.Cr3 ^ 0x20);
        return SetPagingOp(controls, current.Cr3);
    }

    /// <summary>A change of paging controls; CR4.PCIDE stays as it was where the mode allows it.</summary>
    ShadowOp SetPagingOp(PagingControls c, ulong cr3)
    {
        pcide &= c.Mode.IsLongMode();
        return new ShadowOp.GuestSetPaging(c, cr3, pcide);
    }

    int SomeSlot()
    {
        if (slots.Count == 0 || rng.Next(15) == 0) return rng.Next(0, 4);
        return slots.Keys.ElementAt(rng.Next(slots.Count));
    }

    /// <summary>Memslot changes: mostly the data slot moved, deleted and recreated, the hole turned into memory; rarely the RAM slot.</summary>
    ShadowOp SlotChange()
    {
        int roll = rng.Next(100);
        if (roll < 25)
            return slots.ContainsKey(DataSlot)
                ? new ShadowOp.MoveSlot(DataSlot, slots[DataSlot].Base == DataBase ? DataBase + (ulong)rng.Next(1, 3) * 0x200 : DataBase)
                : new ShadowOp.CreateSlot(DataSlot, DataBase, DataPages, DataHostPfn, dataSlotReadOnly && rng.Next(2) == 0);
        if (roll < 45)
            return slots.ContainsKey(DataSlot) ? new ShadowOp.DeleteSlot(DataSlot) : new ShadowOp.CreateSlot(DataSlot, DataBase, DataPages, DataHostPfn, ReadOnly: false);
        if (roll < 75)
            return slots.ContainsKey(HoleSlot) ? new ShadowOp.DeleteSlot(HoleSlot)
                : new ShadowOp.CreateSlot(HoleSlot, HoleBase, HolePages, HoleHostPfn, ReadOnly: rng.Next(4) == 0);
        if (roll < 85)
            return slots.ContainsKey(RamSlot)
                ? (rng.Next(2) == 0 ? new ShadowOp.DeleteSlot(RamSlot) : new ShadowOp.MoveSlot(RamSlot, ramBase + 0x1000))
                : new ShadowOp.CreateSlot(RamSlot, ramBase, ramPages, RamHostPfn, ReadOnly: false);
        if (roll < 90 && slots.TryGetValue(RamSlot, out var ram) && ram.Base != ramBase) return new ShadowOp.MoveSlot(RamSlot, ramBase);
        // Invalid: an overlapping slot, an id out of range, a slot beyond the guest-physical space.
        return rng.Next(3) switch
        {
            0 => new ShadowOp.CreateSlot(3, ramBase, 1, 0x30_0000, false),
            1 => new ShadowOp.CreateSlot(32, 0x3_0000, 1, 0x30_0000, false),
            _ => new ShadowOp.CreateSlot(3, config.GfnLimit - 1, 2, 0x30_0000, false),
        };
    }

    /// <summary>genZap: around a table page, a data page or a large page's range; sometimes invalid.</summary>
    ShadowOp Zap()
    {
        ulong start = rng.Next(4) switch
        {
            0 => tables.Count > 0 ? tables[rng.Next(tables.Count)].Gpa >> 12 : ramBase,
            1 => DataBase + (ulong)rng.Next((int)DataPages),
            2 => DataBase,
            _ => ramBase + (ulong)rng.Next((int)ramPages),
        };
        if (rng.Next(3) == 0 && start > 0) start -= 1;
        ulong length = rng.Next(4) switch { 0 => 1, 1 => (ulong)rng.Next(1, 16), 2 => 512, _ => (ulong)rng.Next(1, 2048) };
        if (rng.Next(60) == 0) return new ShadowOp.ZapRange(start, start);                     // empty: rejected
        return new ShadowOp.ZapRange(start, Math.Min(start + length, config.GfnLimit));
    }

    // ---- cached roots: MOV CR3 with PCIDs and NOFLUSH, INVPCID, stale roots ----

    /// <summary>One cached-root operation or pattern (cases built with <c>Roots</c>).</summary>
    void RootsOps()
    {
        if (controls.Mode == PagingMode.Pae && rng.Next(12) == 0) { PdptChange(); return; }
        int roll = rng.Next(100);
        if (roll < 30) { Add(MovCr3(SomeSpace())); return; }
        if (roll < 65) { StaleRoot(); return; }
        if (roll < 82) { Add(SomeInvpcid()); return; }
        if (roll < 95)
        {
            if (rng.Next(12) == 0) FloodPreviousRoot();
            else Add(Access());
            return;
        }
        if (roll < 97 && controls.Mode.IsLongMode())
        {
            // PCIDE toggled (KVM: 0->1 frees every root, 1->0 flushes every PCID; the model's GuestSetPaging frees all).
            pcide = !pcide;
            Add(new ShadowOp.GuestSetPaging(controls, current.Cr3, pcide));
            return;
        }
        // A role bit toggled: every cached root goes.
        controls = rng.Next(3) switch { 0 => controls.WithCr0Wp(!controls.Cr0Wp), 1 => controls.WithEferNxe(!controls.EferNxe), _ => controls.WithCr4Smep(!controls.Cr4Smep) };
        Add(SetPagingOp(controls, current.Cr3));
    }

    /// <summary>An address space of the current mode: mostly one of the four most recently used (a cached-root hit), else any.</summary>
    Space SomeSpace()
    {
        var same = spaces.Where(s => s.Mode == controls.Mode).ToList();
        if (same.Count == 0) return current;
        if (rng.Next(100) < 65)
        {
            var recent = recentSpaces.Take(4).Select(i => spaces[i]).Where(s => s.Mode == controls.Mode).ToList();
            if (recent.Count > 0) return recent[rng.Next(recent.Count)];
        }
        return same[rng.Next(same.Count)];
    }

    /// <summary>MOV CR3 to <paramref name="space"/>: with PCIDs mostly NOFLUSH; rarely a value that raises #GP.</summary>
    ShadowOp MovCr3(Space space, bool? noFlush = null)
    {
        if (rng.Next(40) == 0 && controls.Mode.IsLongMode())
            return new ShadowOp.GuestMovCr3(space.Cr3 | (1UL << rng.Next(config.MaxPhyAddr, pcide ? 63 : 64)));   // reserved bit (bit 63 is NOFLUSH only with PCIDE)
        current = space;
        recentSpaces.Remove(space.Index);
        recentSpaces.Insert(0, space.Index);
        bool nf = pcide && (noFlush ?? rng.Next(100) < 60);
        return new ShadowOp.GuestMovCr3(space.Cr3 | (nf ? ShadowOp.GuestMovCr3.NoFlush : 0));
    }

    /// <summary>INVPCID of every type, at PCIDs and addresses of the built spaces; rarely an operand that raises #GP.</summary>
    ShadowOp SomeInvpcid()
    {
        var space = spaces[rng.Next(spaces.Count)];
        ulong pcid = pcide ? (ulong)space.Pcid : 0;
        ulong gva = space.Gvas.Count > 0 && space.Mode == controls.Mode ? space.Gvas[rng.Next(space.Gvas.Count)] : SomeGva();
        int roll = rng.Next(100);
        if (roll < 4) return new ShadowOp.Invpcid((ulong)rng.Next(4, 9), pcid, gva);                                  // #GP: type
        if (roll < 7) return new ShadowOp.Invpcid((ulong)rng.Next(2), pcide ? 0x1000UL << rng.Next(0, 8) : 1 + (ulong)rng.Next(8), gva);   // #GP: PCID
        if (roll < 9 && controls.Mode.IsLongMode())
            return new ShadowOp.Invpcid(ShadowOp.Invpcid.IndividualAddress, pcid, gva ^ (1UL << 62));                  // #GP: non-canonical
        ulong type = roll switch { < 45 => ShadowOp.Invpcid.IndividualAddress, < 80 => ShadowOp.Invpcid.SingleContext, < 90 => ShadowOp.Invpcid.AllContexts, _ => ShadowOp.Invpcid.AllNonGlobal };
        return new ShadowOp.Invpcid(type, pcid, gva);
    }

    /// <summary>
    /// The pattern cached roots exist for, and the one that breaks them: a space S fills a translation;
    /// the guest switches to another space and changes S's entry for it (the shadow page goes unsync);
    /// then maybe an invalidation of S's PCID (INVPCID single context or address, INVLPG, a flushing
    /// MOV CR3 of another space with S's PCID, a full flush) or nothing; then a NOFLUSH switch back
    /// to S and an access through the changed entry. The architecture allows the stale translation
    /// only if nothing invalidated it.
    /// </summary>
    void StaleRoot()
    {
        var same = spaces.Where(sp => sp.Mode == controls.Mode && sp.Gvas.Count > 0).ToList();
        if (same.Count < 2) { Add(Access()); return; }
        // Mostly a space and gva whose path the builder believes complete down to a 4 KiB leaf in the data
        // slot, so the fill builds a level-1 shadow page that the edit can make unsync.
        var withMapped = same.Select(sp => (Space: sp, Gvas: MappedToData(sp))).Where(x => x.Gvas.Count > 0).ToList();
        Space s;
        ulong gva;
        if (withMapped.Count > 0 && rng.Next(10) != 0)
        {
            var pick = withMapped[rng.Next(withMapped.Count)];
            (s, gva) = (pick.Space, pick.Gvas[rng.Next(pick.Gvas.Count)]);
        }
        else
        {
            s = same[rng.Next(same.Count)];
            gva = s.Gvas[rng.Next(s.Gvas.Count)];
        }
        // A user read of an all-user path (SMAP would refuse a supervisor one), else a supervisor read.
        var reader = ReaderOf(gva, s);
        if (current != s) Add(MovCr3(s));
        Add(new ShadowOp.GuestAccess(new Access(gva, AccessType.Read, reader)));
        var others = same.Where(o => o != s).ToList();
        Add(MovCr3(others[rng.Next(others.Count)], noFlush: rng.Next(4) != 0));
        var path = PathOf(gva, s);
        if (path.Count > 0) Add(EditEntry(rng.Next(10) != 0 ? path[^1] : path[rng.Next(path.Count)]));
        else Add(EditEntry());
        if (rng.Next(2) == 0) Add(new ShadowOp.GuestAccess(new Access(gva, AccessType.Read, reader)));
        ulong pcid = pcide ? (ulong)s.Pcid : 0;
        switch (rng.Next(9))
        {
            case 0: case 1: Add(new ShadowOp.Invpcid(ShadowOp.Invpcid.SingleContext, pcid, 0)); break;
            case 2: Add(new ShadowOp.Invpcid(ShadowOp.Invpcid.IndividualAddress, pcid, gva)); break;
            case 3: Add(new ShadowOp.Invlpg(gva)); break;
            case 4: case 5:
                var sharing = spaces.Where(o => o != s && o.Mode == controls.Mode && o.Pcid == s.Pcid).ToList();
                if (sharing.Count > 0) Add(MovCr3(sharing[rng.Next(sharing.Count)], noFlush: false));
                else Add(new ShadowOp.Invpcid(ShadowOp.Invpcid.SingleContext, pcid, 0));
                break;
            case 6: Add(rng.Next(2) == 0 ? new ShadowOp.FlushTlb() : new ShadowOp.Invpcid(ShadowOp.Invpcid.AllNonGlobal, 0, 0)); break;
            default: break;   // nothing: the stale translation stays allowed
        }
        Add(MovCr3(s, noFlush: rng.Next(5) != 0));
        Add(new ShadowOp.GuestAccess(new Access(gva, rng.Next(4) == 0 ? AccessType.Write : AccessType.Read, reader)));
    }

    /// <summary>The gvas of <paramref name="sp"/> whose path the builder believes complete down to a 4 KiB leaf in the data slot.</summary>
    List<ulong> MappedToData(Space sp) => sp.Gvas.Where(g => PathOf(g, sp) is { Count: > 0 } p && p[^1].Level == 1 && p.All(e => Bits.Test(e.Value, 0))
        && (p[^1].Value & FrameMask(sp.Mode)) >> 12 is var gfn && gfn >= DataBase && gfn < DataBase + DataPages).ToList();

    /// <summary>A user access where the builder believes the whole path is user (SMAP would refuse a supervisor one), else a supervisor access.</summary>
    Privilege ReaderOf(ulong gva, Space sp) => PathOf(gva, sp).All(e => Bits.Test(e.Value, 2)) ? Privilege.User : Privilege.Supervisor;

    /// <summary>
    /// A round of dirty logging on the data slot: logging turned on, writes through gvas that map into
    /// it (writable leaves for dirty pages), the log fetched (those leaves write-protected again), and
    /// sometimes a write after the fetch (it faults and marks the page dirty again).
    /// </summary>
    void DirtyLogRound()
    {
        if (!slots.ContainsKey(DataSlot) || current.Mode != controls.Mode) { Add(new ShadowOp.GetDirtyLog(SomeSlot())); return; }
        if (!logging.Contains(DataSlot)) Add(new ShadowOp.SetDirtyLogging(DataSlot, true));
        var mapped = MappedToData(current);
        ulong? last = null;
        for (int i = 0, n = 1 + rng.Next(2); i < n && mapped.Count > 0; i++)
        {
            ulong gva = (mapped[rng.Next(mapped.Count)] & ~0xFFFUL) | (uint)rng.Next(0x1000);
            Add(new ShadowOp.GuestAccess(new Access(gva, AccessType.Write, ReaderOf(gva, current))));
            last = gva;
        }
        Add(new ShadowOp.GetDirtyLog(DataSlot));
        if (last is { } again && rng.Next(2) == 0) Add(new ShadowOp.GuestAccess(new Access(again, AccessType.Write, ReaderOf(again, current))));
    }

    /// <summary>
    /// PAE: the guest changes a PDPTE of a cached address space (present toggled or another page
    /// directory), then switches to it: the cached root no longer matches the PDPTE registers and is
    /// rebuilt; then an access through it.
    /// </summary>
    void PdptChange()
    {
        var pae = spaces.Where(sp => sp.Mode == PagingMode.Pae && controls.Mode == PagingMode.Pae && sp != current).ToList();
        if (pae.Count == 0) { Add(Access()); return; }
        var cached = pae.Where(sp => recentSpaces.Take(ShadowRoots.MaxPrevious + 1).Contains(sp.Index)).ToList();
        var s = cached.Count > 0 ? cached[rng.Next(cached.Count)] : pae[rng.Next(pae.Count)];
        if (cached.Count == 0)
        {
            // Load it once so that a root for it is cached, then come back.
            var back = current;
            Add(MovCr3(s));
            Add(MovCr3(back));
        }
        ulong gpa = s.RootTable + 8UL * (ulong)rng.Next(4);
        var directories = tables.Where(t => t.Mode == PagingMode.Pae && t.Level == 2).ToList();
        ulong Directory() => directories.Count > 0 ? directories[rng.Next(directories.Count)].Gpa : TakePageOrHole();
        if (entries.TryGetValue(gpa, out var e))
            Add(Store(e, Bits.Test(e.Value, 0) && rng.Next(2) == 0 ? e.Value & ~1UL : Directory() | 1));
        else Add(new ShadowOp.GuestStore(gpa, Directory() | 1, 8));
        Add(MovCr3(s));
        Add(Access());
    }

    ulong TakePageOrHole() => freePages.Count > 0 ? TakePage() : HoleBase << 12;

    /// <summary>
    /// Write flooding of a table that is the root page of a previous (cached, not current) root: three
    /// stores with no walk in between zap it, which frees that root.
    /// </summary>
    void FloodPreviousRoot()
    {
        var previous = recentSpaces.Skip(1).Take(ShadowRoots.MaxPrevious).Select(i => spaces[i])
            .Where(sp => sp.Mode == controls.Mode && sp != current).ToList();
        if (previous.Count == 0) { Add(Access()); return; }
        var s = previous[rng.Next(previous.Count)];
        ulong table = s.RootTable & ~0xFFFUL;
        if (s.Mode == PagingMode.Pae)
        {
            // A PAE root's pages are its page directories: one a present PDPTE points to.
            var pdptes = Enumerable.Range(0, 4).Select(i => entries.GetValueOrDefault(s.RootTable + 8UL * (ulong)i))
                .Where(e => e is not null && Bits.Test(e.Value, 0)).ToList();
            if (pdptes.Count == 0) { Add(Access()); return; }
            table = pdptes[rng.Next(pdptes.Count)]!.Value & FrameMask(PagingMode.Pae);
        }
        int size = s.Mode.EntryBytes();
        var inTable = entryOrder.Where(e => (e.Gpa & ~0xFFFUL) == table).ToList();
        for (int i = 0; i < 3; i++)
        {
            if (inTable.Count > 0 && rng.Next(2) == 0)
            {
                var e = inTable[rng.Next(inTable.Count)];
                Add(Store(e, e.Value));
            }
            else
            {
                ulong gpa = table + (ulong)(rng.Next(4096 / size) * size);
                Add(entries.TryGetValue(gpa, out var e) ? Store(e, e.Value) : new ShadowOp.GuestStore(gpa, 0, size));
            }
        }
    }
}
