using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

/// <summary>
/// The `nested-ept-vpid` cases (docs/nested-ept.md, "VPIDs, VM entries and exits, EPTP switching"): the nested-ept-l2
/// layout (EPT hierarchies, L2's tables in L1's memory), an EPTP list in L1's memory, and the impl's gva TLB on. The ops
/// alternate L2 running (gva accesses, VMFUNC EPTP switches, accesses by gpa) and L1 running after a VM exit (stores into
/// L2's tables and the EPT, INVVPID of each type, INVEPT, list edits), joined by VM entries with VPID on or off, the same
/// VPID12 or another (now and then 0, which VM entry refuses), EPTP switching on or off. A stale burst reads a gva, changes
/// its L2 leaf from L1 and reads it again across the exit, an optional INVVPID and the entry.
/// </summary>
internal sealed partial class NestedEptCaseBuilder
{
    /// <summary>L1's EPTP list: one RAM page above L2's tables.</summary>
    public const ulong EptpListGpa = 0xF0UL << 12;

    /// <summary>The hierarchy each EPTP-list entry names (null: an EPTP VM entry refuses); the list's other entries are 0.</summary>
    readonly Dictionary<uint, Hierarchy?> eptpList = new();
    bool inL2 = true, vpidOn = true, listOn;
    ushort vpid12 = 1;

    public static NestedEptCase BuildVpid(int seed, int size, NestedEptGenOptions options)
    {
        var rng = new Random(seed);
        int maxPhyAddr = NestedEptGen.MaxPhyAddrs[rng.Next(NestedEptGen.MaxPhyAddrs.Length)];
        bool executeOnly = rng.Next(4) != 0;
        var policy = rng.Next(2) == 0 ? Impl.Nested.NestedRootPolicy.KeepAndResync : Impl.Nested.NestedRootPolicy.Upstream;
        var config = new NestedEptConfig(maxPhyAddr, executeOnly, options.RootPolicy ?? policy, Unsync: false, GvaTlb: true, L2GlobalPages: rng.Next(2) == 0);
        var b = new NestedEptCaseBuilder(rng, config);
        b.BuildSetup(hierarchies: 2 + rng.Next(3), pathsPerHierarchy: 3 + rng.Next(3 + size / 10));
        b.BuildL2Setup();
        b.BuildVpidSetup();
        int count = 12 + rng.Next(12 + Math.Max(10, size));
        while (b.Ops.Count < count) b.NextVpidOps();
        return new NestedEptCase(config, b.Setup.ToImmutable(), b.Ops.ToImmutable());
    }

    /// <summary>The EPTP list (each hierarchy, the same tables with the other A/D bit, an EPTP VM entry refuses) and the first VMRESUME with VPID.</summary>
    void BuildVpidSetup()
    {
        target = Setup;
        for (int i = 0; i < hierarchies.Count; i++) WriteListEntry((uint)i, hierarchies[i]);
        WriteListEntry((uint)hierarchies.Count, null);
        Emit(new NestedEptOp.VmExit());
        Entry();
        target = Ops;
    }

    void WriteListEntry(uint index, Hierarchy? h)
    {
        eptpList[index] = h;
        ulong raw = h?.Eptp.Raw ?? (hierarchies[0].Eptp.Raw & ~7UL) | 2; // memory type 2: refused
        Emit(new NestedEptOp.L1Store(EptpListGpa + index * 8UL, raw, 8));
    }

    void NextVpidOps()
    {
        int roll = rng.Next(100);
        if (inL2)
        {
            if (roll < 40) GvaAccess();
            else if (roll < 52) GvaStaleBurst();
            else if (roll < 58) VpidSwitchBurst();
            else if (roll < 68) Vmfunc();
            else if (roll < 88) Exit();
            else if (roll < 93) EditL2Entry(); // another vCPU of L1
            else Access(RecentOrPath());
            return;
        }
        if (roll < 30) Entry();
        else if (roll < 48) EditL2Entry();
        else if (roll < 54) EditEntry(rng.Next(2) == 0 ? l2TableMappings[rng.Next(l2TableMappings.Count)] : entryList[rng.Next(entryList.Count)]);
        else if (roll < 74) Invvpid();
        else if (roll < 80) Invept();
        else if (roll < 85) { SwitchEptp(); inL2 = true; }
        else if (roll < 89) { SwitchL2Paging(); inL2 = true; }
        else if (roll < 93) WriteListEntry((uint)rng.Next(eptpList.Count + 1), rng.Next(6) == 0 ? null : hierarchies[rng.Next(hierarchies.Count)]);
        else if (roll < 96) Emit(new NestedEptOp.VmExit()); // refused: L2 is not running
        else SlotOp();
    }

    void Exit()
    {
        Emit(new NestedEptOp.VmExit());
        inL2 = false;
    }

    /// <summary>VMRESUME: VPID on with the same VPID12 (most often), another, or 0 (refused); VPID off; EPTP switching on or off.</summary>
    void Entry()
    {
        int roll = rng.Next(20);
        bool on = roll >= 6;
        ushort vpid = roll == 6 ? (ushort)0 : roll < 10 ? (ushort)(1 + rng.Next(3)) : vpid12;
        if (rng.Next(5) == 0) listOn = !listOn;
        Emit(new NestedEptOp.VmEntry(on, on ? vpid : (ushort)0, listOn ? EptpListGpa : null));
        if (on && vpid == 0) return; // refused: L1 stays
        (vpidOn, vpid12, inL2) = (on, on ? vpid : vpid12, true);
    }

    /// <summary>INVVPID of each type, mostly for the VPID12 in use, now and then another or 0 (types 0, 1, 3 fail).</summary>
    void Invvpid()
    {
        var type = (InvvpidType)rng.Next(4);
        ushort vpid = rng.Next(8) switch { 0 => 0, 1 => (ushort)(1 + rng.Next(3)), _ => vpid12 };
        ulong gva = l2Current is { Gvas.Count: > 0 } s && rng.Next(5) != 0 ? s.Gvas[rng.Next(s.Gvas.Count)] : Gva(l2Current?.Cpu.Controls.Mode ?? PagingMode.Long4);
        Emit(new NestedEptOp.Invvpid(type, vpid, type == InvvpidType.IndividualAddress ? (gva & ~0xFFFUL) | (uint)rng.Next(0x1000) : 0));
    }

    /// <summary>VMFUNC leaf 0: an entry of the list (the EPTP switches), a refused EPTP or an empty entry, or an index of 512 or more (a VM exit).</summary>
    void Vmfunc()
    {
        uint index = rng.Next(10) switch { 0 => 512 + (uint)rng.Next(4), 1 => (uint)(eptpList.Count + rng.Next(4)), _ => (uint)rng.Next(eptpList.Count) };
        Emit(new NestedEptOp.Vmfunc(index));
        if (listOn && eptpList.TryGetValue(index, out var h) && h is not null) current = h;
        else inL2 = false;
    }

    /// <summary>A gva read, its L2 leaf changed by L1 across an exit (retargeted, not present, read-only, made global), an optional INVVPID, the entry, the read again.</summary>
    void GvaStaleBurst()
    {
        if (l2Current is not { Gvas.Count: > 0 } s) { GvaAccess(); return; }
        ulong gva = s.Gvas[rng.Next(s.Gvas.Count)];
        var read = new NestedEptOp.L2GvaAccess(new Access(gva, AccessType.Read, Privilege.Supervisor));
        if (LeafOf(s, gva) is not { } leaf) { Emit(read); return; }
        var (value, level, size) = l2Entries[leaf];
        if (config.L2GlobalPages && rng.Next(3) == 0) WriteL2(leaf, value |= 0x100, level, size);
        Emit(read);
        Exit();
        ulong next = rng.Next(4) switch
        {
            0 => value & ~1UL,
            1 => value & ~2UL,
            _ => (value & 0xFFF) | (L2TableGpa + ((ulong)rng.Next(L2TablePages) << 12)) | (value & 0x8000_0000_0000_0000UL),
        };
        WriteL2(leaf, next, level, size);
        if (rng.Next(3) == 0) Invvpid();
        if (rng.Next(4) != 0) Entry(); else { Emit(new NestedEptOp.VmEntry(vpidOn, vpidOn ? vpid12 : (ushort)0, listOn ? EptpListGpa : null)); inL2 = true; }
        if (inL2) Emit(rng.Next(3) == 0 ? new NestedEptOp.L2GvaAccess(new Access(gva, AccessType.Write, Privilege.Supervisor)) : read);
    }

    /// <summary>
    /// L2 without VPID reads a gva (a combined mapping of VPID 0), L1 re-enters it with VPID (an entry whose exit the
    /// sequence leaves implicit, as LoadEptp's), exits, changes the gva's leaf and enters without VPID: that entry must
    /// flush VPID 0 again (KVM: vpid01, which L2 shares then; upstream 2657b82a78f1), so the read after it walks.
    /// </summary>
    void VpidSwitchBurst()
    {
        if (l2Current is not { Gvas.Count: > 0 } s) { GvaAccess(); return; }
        ulong gva = s.Gvas[rng.Next(s.Gvas.Count)];
        if (LeafOf(s, gva) is not { } leaf) { GvaAccess(); return; }
        var read = new NestedEptOp.L2GvaAccess(new Access(gva, AccessType.Read, Privilege.Supervisor));
        ulong? list = listOn ? EptpListGpa : null;
        if (vpidOn)
        {
            Exit();
            Emit(new NestedEptOp.VmEntry(false, 0, list));
        }
        Emit(read);
        vpid12 = rng.Next(3) == 0 ? (ushort)(1 + rng.Next(3)) : vpid12 == 0 ? (ushort)1 : vpid12;
        Emit(new NestedEptOp.VmEntry(true, vpid12, list));
        Exit();
        var (value, level, size) = l2Entries[leaf];
        WriteL2(leaf, rng.Next(2) == 0 ? value & ~1UL : (value & 0xFFF) | (L2TableGpa + ((ulong)rng.Next(L2TablePages) << 12)) | (value & 0x8000_0000_0000_0000UL), level, size);
        Emit(new NestedEptOp.VmEntry(false, 0, list));
        (vpidOn, inL2) = (false, true);
        Emit(read);
    }

    /// <summary>The L1 gpa of the L2 leaf that maps <paramref name="gva"/> in <paramref name="s"/>, as the builder believes the tables are, or null.</summary>
    ulong? LeafOf(L2State s, ulong gva)
    {
        var mode = s.Cpu.Controls.Mode;
        int entryBytes = mode == PagingMode.Bits32 ? 4 : 8;
        ulong table = s.Cpu.Cr3 & ~0xFFFUL;
        int level = mode.RootLevel();
        if (mode == PagingMode.Pae)
        {
            ulong pdpte = s.Cpu.Pdptes[PagingLevels.Index(mode, 3, gva)];
            if ((pdpte & 1) == 0) return null;
            (table, level) = (pdpte & ~0xFFFUL, 2);
        }
        for (; level >= 1; level--)
        {
            ulong entry = L1GpaOfL2(table + (ulong)(PagingLevels.Index(mode, level, gva) * entryBytes));
            if (!IsL2Table(table) || !l2Entries.TryGetValue(entry, out var e) || (e.Value & 1) == 0) return null;
            if (level == 1 || (e.Value & 0x80) != 0) return entry;
            table = e.Value & 0xFFFF_FFFF_F000;
        }
        return null;
    }
}
