using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

/// <summary>One level of an EPT walk, as an explanation prints it.</summary>
/// <param name="Level">1 = EPT PTE ... 5 = EPT PML5E.</param>
/// <param name="EntryAddress">Where the entry was read, in L1's guest-physical space.</param>
/// <param name="RightsSoFar">The AND of R, W, X (and XU) over this level and the ones above.</param>
public sealed record EptStep(int Level, string EntryName, ulong EntryAddress, EptEntry Entry, EptRights RightsSoFar, string Note)
{
    public override string ToString() => $"EPT {EntryName,-5} @ {Bits.Hex(EntryAddress)}: {Bits.Hex(Entry.Raw)}  {Note}";
}

/// <summary>What an EPT walk returns: its outcome and L1's memory afterwards (with any EPT A/D updates).</summary>
public sealed record EptTranslation(EptResult Result, GuestMemory Memory);

/// <summary>An EPT walk with everything it read, decided and wrote.</summary>
public sealed record EptExplanation(
    EptCapabilities Caps,
    EptPointer Eptp,
    EptAccess Access,
    ImmutableArray<EptStep> Steps,
    EptResult Result,
    string Rule,
    ImmutableArray<EntryUpdate> Updates,
    GuestMemory MemoryAfter)
{
    public override string ToString()
    {
        var lines = new List<string> { $"{Access} through {Eptp}" };
        lines.AddRange(Steps.Select(s => "  " + s));
        lines.Add($"  => {Result}: {Rule}");
        lines.AddRange(Updates.Select(u => "  EPT A/D " + u));
        return string.Join(Environment.NewLine, lines);
    }
}

/// <summary>
/// The EPT walk of L1's tables (SDM Vol. 3C §29.3.2 to §29.3.4; the order is §29.3.3.3's), written to be read. From the EPTP's root,
/// at each level the walk (1) reads the 8-byte entry indexed by the guest-physical address, (2) stops with an
/// EPT violation if it is not present, (3) stops with an EPT misconfiguration if it is misconfigured, (4) ANDs
/// its R, W, X (and XU) into the translation's, and (5) either maps the page or descends. Only a complete
/// translation is checked for the access (§29.3.3.2). With EPTP bit 6, a permitted walk sets A in every entry
/// used and D in the leaf of a write (§29.3.4); a walk that ends in a VM exit writes nothing, as the guest
/// page walk (<see cref="PageWalk"/>) and KVM's walk_addr_generic do.
/// </summary>
public static class EptWalk
{
    /// <summary>The outcome and L1's memory afterwards.</summary>
    public static EptTranslation Translate(EptCapabilities caps, EptPointer eptp, GuestMemory l1Memory, EptAccess access)
    {
        var e = Explain(caps, eptp, l1Memory, access);
        return new EptTranslation(e.Result, e.MemoryAfter);
    }

    /// <summary>The walk, step by step, with each step's note and the rule that ended it.</summary>
    /// <exception cref="ArgumentException">The EPTP is invalid (VM entry would have failed), the gpa is wider than the walk, or a fetch is marked as a paging-structure access.</exception>
    public static EptExplanation Explain(EptCapabilities caps, EptPointer eptp, GuestMemory l1Memory, EptAccess access)
    {
        if (eptp.Problem(caps) is { } problem)
            throw new ArgumentException($"invalid {eptp}: {problem.Describe()}", nameof(eptp));
        if (access.PagingStructure && access.Type == AccessType.Fetch)
            throw new ArgumentException("the processor reads and updates guest paging-structure entries; it never fetches from them", nameof(access));
        int levels = eptp.WalkLength;
        if (access.Gpa >> AddressBits(levels) != 0)
            throw new ArgumentOutOfRangeException(nameof(access), access.Gpa, $"a {levels}-level EPT translates {AddressBits(levels)}-bit guest-physical addresses");

        var steps = ImmutableArray.CreateBuilder<EptStep>();
        var rights = EptRights.All;
        var used = new List<ulong>();
        ulong table = eptp.RootAddress;

        EptExplanation End(EptResult result, string rule) =>
            new(caps, eptp, access, steps.ToImmutable(), result, rule, ImmutableArray<EntryUpdate>.Empty, l1Memory);
        EptExplanation Violate(EptRights perms, string rule) =>
            End(new EptResult.Violation(Qualification(caps, eptp, access, perms), access.Gpa, access.LinearAddress), rule);

        for (int level = levels; ; level--)
        {
            string name = EntryName(level);
            ulong entryAddress = table + Index(level, access.Gpa) * 8;
            if (l1Memory.Read64(entryAddress) is not { } raw)
            {
                // Not architectural: KVM ends the walk when a table is outside L1's memslots, with the rights of the levels above.
                steps.Add(new EptStep(level, name, entryAddress, new EptEntry(0), rights, "outside L1 memory"));
                return Violate(rights, $"the EPT {name} at {Bits.Hex(entryAddress)} is outside L1 memory (KVM: an EPT violation)");
            }
            var entry = new EptEntry(raw);
            if (!entry.IsPresent(caps))
            {
                // §29.3.3.2 and the exit-qualification table: the permission bits AND every entry used, the not-present one included.
                var perms = rights.And(entry);
                steps.Add(new EptStep(level, name, entryAddress, entry, perms, "not present"));
                return Violate(perms, $"the EPT {name} is not present (bits 2:0{(caps.ModeBasedExecuteControl ? " and bit 10" : "")} are 0)");
            }

            bool mapsPage = MapsPage(caps, level, entry);
            if (Misconfiguration(caps, level, entry, mapsPage) is { } kind)
            {
                steps.Add(new EptStep(level, name, entryAddress, entry, rights, kind.ToString()));
                return End(new EptResult.Misconfiguration(kind, level, access.Gpa), $"the EPT {name} is misconfigured: {Describe(kind, caps, level, entry, mapsPage)}");
            }

            rights = rights.And(entry);
            used.Add(entryAddress);
            if (!mapsPage)
            {
                table = raw & Bits.Range(caps.MaxPhyAddr - 1, 12);
                steps.Add(new EptStep(level, name, entryAddress, entry, rights, $"[{entry.Flags()}] table at {Bits.Hex(table)}, rights so far {rights}"));
                continue;
            }

            var size = PageSizeAt(level);
            ulong frame = raw & Bits.Range(caps.MaxPhyAddr - 1, size.Shift());
            steps.Add(new EptStep(level, name, entryAddress, entry, rights, $"[{entry.Flags()}] maps a {size.Name()} page at {Bits.Hex(frame)}, rights {rights}"));

            if (!Permits(caps, eptp, access, rights, out string why))
                return Violate(rights, why);

            var (after, updates) = SetAccessedDirty(eptp, l1Memory, used, entryAddress, TreatedAsWrite(eptp, access));
            var result = new EptResult.Translated(frame | (access.Gpa & (size.Bytes() - 1)), size, rights, (EptMemoryType)entry.MemoryTypeBits, entry.IgnorePat);
            return new EptExplanation(caps, eptp, access, steps.ToImmutable(), result, why, updates, after);
        }
    }

    /// <summary>§29.3.2: a 4-level EPT translates 48-bit guest-physical addresses, a 5-level one 57-bit addresses.</summary>
    public static int AddressBits(int levels) => 12 + 9 * levels;

    /// <summary>§29.3.2: each level is indexed by 9 bits of the gpa, bits 47:39 for the PML4E down to 20:12 for the PTE (56:48 for the PML5E).</summary>
    public static ulong Index(int level, ulong gpa) => (gpa >> (12 + 9 * (level - 1))) & 0x1FF;

    public static string EntryName(int level) => level switch
    {
        5 => "PML5E",
        4 => "PML4E",
        3 => "PDPTE",
        2 => "PDE",
        1 => "PTE",
        _ => throw new ArgumentOutOfRangeException(nameof(level), level, "EPT levels are 1 to 5"),
    };

    public static PageSize PageSizeAt(int level) => level switch
    {
        1 => PageSize.Size4K,
        2 => PageSize.Size2M,
        3 => PageSize.Size1G,
        _ => throw new ArgumentOutOfRangeException(nameof(level), level, "only EPT PTEs, PDEs and PDPTEs map pages"),
    };

    /// <summary>
    /// §29.3.2: a PTE always maps a 4 KiB page; a PDE with bit 7 maps 2 MiB and a PDPTE with bit 7 maps 1 GiB,
    /// where the processor supports that size (else bit 7 is reserved, <see cref="ReservedMask"/>). Bit 7 of a
    /// PML4E or PML5E is reserved.
    /// </summary>
    public static bool MapsPage(EptCapabilities caps, int level, EptEntry entry) => level switch
    {
        1 => true,
        2 => entry.LargePage && caps.Pages2M,
        3 => entry.LargePage && caps.Pages1G,
        _ => false,
    };

    /// <summary>
    /// §29.3.2, the EPT entry format tables: bits 51:N in every entry; bits 7:3 in a PML5E, a PML4E and in a
    /// PDPTE or PDE that references a table (bit 7 there being a page size the processor lacks); bits 29:12 in
    /// a PDPTE mapping 1 GiB and 20:12 in a PDE mapping 2 MiB. Bits 63:52 and a PTE's bit 7 are ignored.
    /// </summary>
    public static ulong ReservedMask(EptCapabilities caps, int level, bool mapsPage)
    {
        ulong mask = Bits.Range(51, caps.MaxPhyAddr);
        if (!mapsPage) return level == 1 ? mask : mask | Bits.Range(7, 3);
        return level switch
        {
            3 => mask | Bits.Range(29, 12),
            2 => mask | Bits.Range(20, 12),
            _ => mask,
        };
    }

    /// <summary>
    /// §29.3.3.1, in the SDM's order: bits 2:0 write-only (010b) or write/execute (110b); execute-only where the
    /// processor does not support it (100b, or 000b with bit 10 under mode-based execute control); a reserved
    /// bit; the leaf's memory type 2, 3 or 7. Null when the present entry is well formed.
    /// </summary>
    public static EptMisconfigurationKind? Misconfiguration(EptCapabilities caps, int level, EptEntry entry, bool mapsPage)
    {
        if (entry.Rwx is 0b010 or 0b110) return EptMisconfigurationKind.WriteWithoutRead;
        bool executeOnly = entry.Rwx == 0b100 || (entry.Rwx == 0 && caps.ModeBasedExecuteControl && entry.UserExecute);
        if (executeOnly && !caps.ExecuteOnly) return EptMisconfigurationKind.ExecuteOnlyUnsupported;
        if ((entry.Raw & ReservedMask(caps, level, mapsPage)) != 0) return EptMisconfigurationKind.ReservedBits;
        if (mapsPage && entry.MemoryTypeBits is 2 or 3 or 7) return EptMisconfigurationKind.MemoryType;
        return null;
    }

    static string Describe(EptMisconfigurationKind kind, EptCapabilities caps, int level, EptEntry entry, bool mapsPage) => kind switch
    {
        EptMisconfigurationKind.WriteWithoutRead => $"bits 2:0 are {Convert.ToString(entry.Rwx, 2).PadLeft(3, '0')}b, writable but not readable (SDM §29.3.3.1)",
        EptMisconfigurationKind.ExecuteOnlyUnsupported => "execute-only, which this processor does not support (SDM §29.3.3.1)",
        EptMisconfigurationKind.ReservedBits => $"reserved bits {Bits.Hex(entry.Raw & ReservedMask(caps, level, mapsPage))} are set (SDM §29.3.3.1)",
        _ => $"the leaf's memory type {entry.MemoryTypeBits} is reserved (SDM §29.3.3.1)",
    };

    /// <summary>
    /// §29.3.4: with EPT A/D enabled, the processor's accesses to the guest's paging-structure entries are
    /// treated as writes (for the permission check, the exit qualification and the dirty flag).
    /// </summary>
    public static bool TreatedAsWrite(EptPointer eptp, EptAccess access) =>
        access.Type == AccessType.Write || (access.PagingStructure && eptp.AccessedDirtyEnabled);

    /// <summary>
    /// §29.3.3.2: a read needs R, a write (or an access treated as one) needs W, an instruction fetch needs X;
    /// with mode-based execute control, a fetch from a user-mode linear address needs XU (bit 10) instead.
    /// Each right is the AND over every entry used.
    /// </summary>
    public static bool Permits(EptCapabilities caps, EptPointer eptp, EptAccess access, EptRights rights, out string rule)
    {
        if (TreatedAsWrite(eptp, access))
        {
            string what = access.Type == AccessType.Write ? "a write" : "a guest paging-structure access with EPT A/D on (treated as a write, §29.3.4)";
            rule = rights.Write ? $"{what} needs W: allowed" : $"{what} needs W, which some EPT entry clears (SDM §29.3.3.2)";
            return rights.Write;
        }
        if (access.Type == AccessType.Read)
        {
            rule = rights.Read ? "a read needs R: allowed" : "a read needs R, which some EPT entry clears (SDM §29.3.3.2)";
            return rights.Read;
        }
        if (caps.ModeBasedExecuteControl && access.UserModeLinear)
        {
            rule = rights.UserExecute ? "a fetch from a user-mode linear address needs XU (bit 10): allowed"
                : "a fetch from a user-mode linear address needs XU (bit 10) under mode-based execute control, which some EPT entry clears (SDM §29.3.3.2)";
            return rights.UserExecute;
        }
        rule = rights.Execute ? "a fetch needs X: allowed" : "a fetch needs X, which some EPT entry clears (SDM §29.3.3.2)";
        return rights.Execute;
    }

    /// <summary>
    /// The exit qualification of a violation (SDM table "Exit Qualification for EPT Violations"). Bits 2:0: the
    /// access; a guest paging-structure access treated as a write (EPT A/D on) sets both read and write, and so
    /// does a guest A/D update, a read-modify-write for which the SDM leaves bit 0 to the implementation (the
    /// model sets it, as KVM's nested walk does). Bits 6:3: the rights ANDed over the entries used (bit 6 only
    /// with mode-based execute control). Bit 7: a guest linear address is known; bit 8, given bit 7: the access
    /// was the final one, not to a guest paging-structure entry.
    /// </summary>
    public static EptViolationQualification Qualification(EptCapabilities caps, EptPointer eptp, EptAccess access, EptRights perms)
    {
        ulong q = 0;
        void Set(int bit, bool on) { if (on) q |= 1UL << bit; }
        bool write = TreatedAsWrite(eptp, access);
        Set(EptViolationQualification.DataReadBit, access.Type == AccessType.Read || access.PagingStructure);
        Set(EptViolationQualification.DataWriteBit, write);
        Set(EptViolationQualification.InstructionFetchBit, access.Type == AccessType.Fetch);
        Set(EptViolationQualification.ReadableBit, perms.Read);
        Set(EptViolationQualification.WritableBit, perms.Write);
        Set(EptViolationQualification.ExecutableBit, perms.Execute);
        Set(EptViolationQualification.UserExecutableBit, caps.ModeBasedExecuteControl && perms.UserExecute);
        Set(EptViolationQualification.LinearAddressValidBit, access.LinearAddress is not null);
        Set(EptViolationQualification.TranslatedAccessBit, access.LinearAddress is not null && !access.PagingStructure);
        return new EptViolationQualification(q);
    }

    /// <summary>
    /// §29.3.4: with EPTP bit 6, the processor sets A (bit 8) in every EPT entry it used and D (bit 9) in the
    /// leaf of a write (or an access treated as one). Without bit 6 it writes nothing. The bits are ORed into
    /// L1's memory in place, so an entry used at two levels ends with both.
    /// </summary>
    static (GuestMemory, ImmutableArray<EntryUpdate>) SetAccessedDirty(EptPointer eptp, GuestMemory memory, List<ulong> used, ulong leaf, bool write)
    {
        var updates = ImmutableArray.CreateBuilder<EntryUpdate>();
        if (!eptp.AccessedDirtyEnabled) return (memory, updates.ToImmutable());
        void Or(ulong address, ulong bits)
        {
            ulong before = memory.Read64(address)!.Value;
            if ((before & bits) == bits) return;
            memory = memory.Write64(address, before | bits);
            updates.Add(new EntryUpdate(address, before, before | bits));
        }
        foreach (var address in used) Or(address, EptEntry.Accessed);
        if (write) Or(leaf, EptEntry.Dirty);
        return (memory, updates.ToImmutable());
    }
}
