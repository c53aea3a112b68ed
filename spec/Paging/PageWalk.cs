using System.Collections.Immutable;
using System.Runtime.CompilerServices;
using MmuSpec.Spec.Memory;

namespace MmuSpec.Spec.Paging;

/// <summary>One level of a walk, as the explain command prints it.</summary>
/// <param name="Level">1 = PTE ... 5 = PML5E.</param>
/// <param name="EntryGpa">Where the entry was read; null for PAE's PDPTE registers.</param>
/// <param name="Entry">The raw entry, decoded.</param>
/// <param name="RightsSoFar">U/S and R/W ANDed and XD ORed over this level and the ones above.</param>
/// <param name="Note">What this level decided.</param>
public sealed record WalkStep(int Level, string EntryName, ulong? EntryGpa, PagingEntry Entry, TranslationRights RightsSoFar, string Note)
{
    public override string ToString() =>
        $"{EntryName,-5} @ {(EntryGpa is { } g ? Bits.Hex(g) : "PDPTE register")}: {Bits.Hex(Entry.Raw)}  {Note}";
}

/// <summary>An A/D update a successful walk wrote back to a paging-structure entry.</summary>
public sealed record EntryUpdate(ulong Gpa, ulong Before, ulong After)
{
    public override string ToString() => $"{Bits.Hex(Gpa)}: {Bits.Hex(Before)} -> {Bits.Hex(After)}";
}

/// <summary>What a walk returns: its outcome and guest memory afterwards (with any A/D updates).</summary>
public sealed record Translation(WalkResult Result, GuestMemory Memory);

/// <summary>A walk with everything it read, decided and wrote.</summary>
public sealed record WalkExplanation(
    Access Access,
    CpuState Cpu,
    ImmutableArray<WalkStep> Steps,
    WalkResult Result,
    string Rule,
    ImmutableArray<EntryUpdate> Updates,
    GuestMemory MemoryAfter)
{
    public override string ToString()
    {
        var lines = new List<string> { $"{Access} with {Cpu}" };
        lines.AddRange(Steps.Select(s => "  " + s));
        lines.Add($"  => {Result}: {Rule}");
        lines.AddRange(Updates.Select(u => "  A/D " + u));
        return string.Join(Environment.NewLine, lines);
    }
}

/// <summary>
/// The x86 page walk (SDM Vol. 3 §4.3 to §4.8), written to be read. At each level the walk
/// (1) reads the entry, (2) stops with #PF (P=0) if it is not present, (3) stops with #PF (P=1,
/// RSVD=1) if a reserved bit is set, (4) folds the entry's rights into the translation's, and
/// (5) either maps the page or descends. Only a complete translation is checked for rights
/// (<see cref="AccessRights"/>). Only a translation that is allowed sets A/D bits: A in every
/// entry used, D in the leaf for a write; a faulting walk writes nothing (as KVM's
/// walk_addr_generic, which updates A/D only after the permission check).
/// </summary>
public static class PageWalk
{
    /// <summary>The outcome and the memory afterwards (A/D bits set).</summary>
    public static Translation Translate(CpuState cpu, GuestMemory memory, Access access)
    {
        var e = Walk(cpu, memory, access);
        return new Translation(e.Result, e.MemoryAfter);
    }

    /// <summary>The walk, step by step, with the words: each step's note and the rule that ended it.</summary>
    public static WalkExplanation Explain(CpuState cpu, GuestMemory memory, Access access) =>
        new Walker(cpu, memory, access, explains: true).Run();

    /// <summary>
    /// The walk as <see cref="Explain"/> gives it (the same steps, result, updates and memory) without the
    /// words: every step's note and the rule are empty. For the MMU models, which read the entries used and
    /// the A/D updates on every guest access and never print them.
    /// </summary>
    public static WalkExplanation Walk(CpuState cpu, GuestMemory memory, Access access) =>
        new Walker(cpu, memory, access, explains: false).Run();

    /// <summary>
    /// One walk. Every rule is written once, below; whether its words are formatted is the only thing
    /// <see cref="Explain"/> and <see cref="Walk"/> change (a note or rule is a <see cref="WalkText"/>,
    /// which skips the formatting when nobody will read it).
    /// </summary>
    internal sealed class Walker(CpuState cpu, GuestMemory memory, Access access, bool explains)
    {
        readonly ImmutableArray<WalkStep>.Builder steps = ImmutableArray.CreateBuilder<WalkStep>();

        internal bool Explains => explains;

        void Step(int level, string name, ulong? entryGpa, PagingEntry entry, TranslationRights rights, string note) =>
            steps.Add(new WalkStep(level, name, entryGpa, entry, rights, explains ? note : ""));
        void Step(int level, string name, ulong? entryGpa, PagingEntry entry, TranslationRights rights,
            [InterpolatedStringHandlerArgument("")] ref WalkText note) =>
            steps.Add(new WalkStep(level, name, entryGpa, entry, rights, note.ToStringAndClear()));

        WalkExplanation End(WalkResult result, string rule) =>
            new(access, cpu, steps.ToImmutable(), result, explains ? rule : "", ImmutableArray<EntryUpdate>.Empty, memory);
        WalkExplanation End(WalkResult result, [InterpolatedStringHandlerArgument("")] ref WalkText rule) =>
            End(result, rule.ToStringAndClear());
        WalkExplanation Fault(bool present, bool reserved, bool pk, string rule) =>
            End(new WalkResult.PageFault(AccessRights.ErrorCode(cpu.Controls, access, present, reserved, pk)), rule);
        WalkExplanation Fault(bool present, bool reserved, bool pk, [InterpolatedStringHandlerArgument("")] ref WalkText rule) =>
            Fault(present, reserved, pk, rule.ToStringAndClear());

        public WalkExplanation Run()
        {
            var c = cpu.Controls;
            var mode = c.Mode;

            if (!mode.IsLongMode() && access.Gva > uint.MaxValue)
                throw new ArgumentOutOfRangeException(nameof(access), access.Gva, $"linear addresses are 32 bits in {mode.Name()} paging");
            if (mode.IsLongMode() && !IsCanonical(mode, access.Gva))
                return End(new WalkResult.GeneralProtection(GpReason.NonCanonical),
                    $"bits 63:{mode.LinearAddressBits() - 1} are not all equal: a non-canonical address is #GP, never #PF (SDM §3.3.7.1)");

            int entryBytes = mode.EntryBytes();
            var rights = TranslationRights.All;
            var used = new List<ulong>();     // gpas of the entries used, for the A bits
            ulong table = cpu.RootTableAddress;
            int level = mode.RootLevel();

            if (mode == PagingMode.Pae)
            {
                // §4.4.1: PAE's top level comes from the PDPTE registers, not from memory; reserved
                // bits were checked at MOV CR3; a PDPTE has no rights bits and no A bit.
                var pdpte = new PagingEntry(cpu.Pdptes[PagingLevels.Index(mode, 3, access.Gva)]);
                if (!pdpte.Present)
                {
                    Step(3, "PDPTE", null, pdpte, rights, "not present");
                    return Fault(false, false, false, "the PDPTE register is not present (P=0)");
                }
                Step(3, "PDPTE", null, pdpte, rights, $"page directory at {Bits.Hex(pdpte.Raw & Bits.Range(c.MaxPhyAddr - 1, 12))}");
                table = pdpte.Raw & Bits.Range(c.MaxPhyAddr - 1, 12);
                level = 2;
            }

            for (; ; level--)
            {
                string name = PagingLevels.EntryName(mode, level);
                ulong entryGpa = table + (ulong)(PagingLevels.Index(mode, level, access.Gva) * entryBytes);
                if (memory.Read(entryGpa, entryBytes) is not { } raw)
                {
                    // Not architectural: KVM treats a table outside every memslot as not present.
                    Step(level, name, entryGpa, new PagingEntry(0), rights, "outside guest memory");
                    return Fault(false, false, false, $"the {name} at {Bits.Hex(entryGpa)} is outside guest memory (KVM: treated as not present)");
                }
                var entry = new PagingEntry(raw);
                if (!entry.Present)
                {
                    Step(level, name, entryGpa, entry, rights, "not present");
                    return Fault(false, false, false, $"the {name} is not present (P=0)");
                }

                bool mapsPage = PagingLevels.MapsPage(c, level, entry);
                ulong reserved = raw & ReservedBits.Mask(c, level, mapsPage);
                if (reserved != 0)
                {
                    Step(level, name, entryGpa, entry, rights, $"reserved bits {Bits.Hex(reserved)} set");
                    return Fault(true, true, false, $"the {name} sets reserved bits {Bits.Hex(reserved)}");
                }

                rights = FoldRights(c, rights, entry);
                used.Add(entryGpa);
                ulong frame = PagingLevels.FrameAddress(c, level, entry, mapsPage);

                if (!mapsPage)
                {
                    Step(level, name, entryGpa, entry, rights, $"[{entry.Flags(entryBytes)}] table at {Bits.Hex(frame)}, rights so far {rights}");
                    table = frame;
                    continue;
                }

                var size = PagingLevels.PageSizeAt(mode, level);
                if (mode.IsLongMode() && c.Cr4Pke) rights = rights.WithProtectionKey(entry.ProtectionKey);
                Step(level, name, entryGpa, entry, rights, $"[{entry.Flags(entryBytes)}] maps a {size.Name()} page at {Bits.Hex(frame)}, rights {rights}");

                var verdict = AccessRights.Check(c, access, rights);
                if (!verdict.Allowed)
                {
                    string rule = verdict.PageRightsAllow ? "protection key: PKRU denies this data access"
                        : verdict.ProtectionKeyDenies ? verdict.Rule + "; PKRU also denies it"
                        : verdict.Rule;
                    return Fault(true, false, verdict.ProtectionKeyDenies, rule);
                }

                ulong gpa = frame | (access.Gva & (size.Bytes() - 1));
                var (after, updates) = SetAccessedDirty(memory, used, entryGpa, entryBytes, access.Type == AccessType.Write);
                return new WalkExplanation(access, cpu, steps.ToImmutable(), new WalkResult.Translated(gpa, size, rights),
                    explains ? verdict.Rule : "", updates, after);
            }
        }
    }

    /// <summary>§4.6: U/S and R/W are ANDed over the levels, XD is ORed (only meaningful with NXE outside 32-bit paging).</summary>
    public static TranslationRights FoldRights(PagingControls c, TranslationRights soFar, PagingEntry entry)
    {
        bool xdApplies = c.Mode != PagingMode.Bits32 && c.EferNxe;
        return soFar with
        {
            User = soFar.User && entry.User,
            Writable = soFar.Writable && entry.Writable,
            NoExecute = soFar.NoExecute || (xdApplies && entry.Xd),
        };
    }

    /// <summary>
    /// §4.8: the processor sets A in every paging-structure entry it used and D in the leaf of a
    /// write. The bits are ORed into memory in place, so an entry used at two levels (a table that
    /// maps itself) ends with both.
    /// </summary>
    static (GuestMemory, ImmutableArray<EntryUpdate>) SetAccessedDirty(GuestMemory memory, List<ulong> used, ulong leafGpa, int entryBytes, bool write)
    {
        var updates = ImmutableArray.CreateBuilder<EntryUpdate>();
        void Or(ulong gpa, ulong bits)
        {
            ulong before = memory.Read(gpa, entryBytes)!.Value;
            if ((before & bits) == bits) return;
            memory = memory.Write(gpa, before | bits, entryBytes);
            updates.Add(new EntryUpdate(gpa, before, before | bits));
        }
        foreach (var gpa in used) Or(gpa, PagingEntry.Accessed);
        if (write) Or(leafGpa, PagingEntry.Dirty);
        return (memory, updates.ToImmutable());
    }

    /// <summary>§3.3.7.1: bits 63 down to the top linear-address bit must all equal that bit.</summary>
    public static bool IsCanonical(PagingMode mode, ulong gva)
    {
        int width = mode.LinearAddressBits();
        long signExtended = (long)(gva << (64 - width)) >> (64 - width);
        return (ulong)signExtended == gva;
    }
}

/// <summary>
/// A walk's note or rule, formatted only when the walk explains itself (<see cref="PageWalk.Explain"/>):
/// the rules keep their words in place, and <see cref="PageWalk.Walk"/> pays nothing for them.
/// </summary>
[InterpolatedStringHandler]
internal ref struct WalkText
{
    DefaultInterpolatedStringHandler text;
    readonly bool formats;

    public WalkText(int literalLength, int formattedCount, PageWalk.Walker walker, out bool formats)
    {
        this.formats = formats = walker.Explains;
        text = formats ? new DefaultInterpolatedStringHandler(literalLength, formattedCount) : default;
    }

    public void AppendLiteral(string s) => text.AppendLiteral(s);
    public void AppendFormatted<T>(T value) => text.AppendFormatted(value);

    public string ToStringAndClear() => formats ? text.ToStringAndClear() : "";
}
