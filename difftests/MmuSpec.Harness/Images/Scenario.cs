using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>One word of guest memory given by a scenario: an entry of the mode's width at <paramref name="Gpa"/>.</summary>
public sealed record MemoryWord(ulong Gpa, ulong Value);

/// <summary>
/// An address space to walk: paging controls, CR3, guest memory (either memslots plus the words a
/// scenario lists, or a read-only image) and optionally one access. Everything is checked when it
/// is created, so what reaches the spec is a valid machine: a bad scenario is an
/// <see cref="InputException"/> with a one-line message, never an exception from deep inside.
/// </summary>
public sealed partial class Scenario
{
    /// <summary>Default memory when a scenario names no memslots: gpa 0 up to at least this, in 2 MiB steps.</summary>
    public const ulong DefaultMemoryBytes = 1UL << 20;

    Scenario(PagingControls controls, ulong cr3, ImmutableArray<Memslot> slots, ImmutableArray<MemoryWord> memory, Access? access, IPhysicalMemoryImage? image, bool qemuPdptes = false, L1Ept? ept = null)
    {
        Controls = controls; Cr3 = cr3; Slots = slots; Memory = memory; Access = access; Image = image; QemuPdptes = qemuPdptes; Ept = ept;
    }

    /// <summary>The PDPTE bits QEMU's TCG walker ignores, and sets bit 5 (A) of: reserved by SDM Table 4-8.</summary>
    public static readonly ulong QemuIgnoredPdpteBits = Bits.Range(8, 5);

    /// <summary>
    /// PAE only: the PDPTEs are read with bits 8:5 cleared before MOV CR3 checks them (an input
    /// transformation the user asks for, for dumps taken under QEMU TCG; the spec's rule is unchanged).
    /// </summary>
    public bool QemuPdptes { get; }

    /// <summary>
    /// The error for a present PDPTE with reserved bits at MOV CR3 (#GP, SDM §4.4.1), in the words both
    /// walk engines use, so a bad batch line reads the same from either.
    /// </summary>
    public static string PdpteReservedMessage(ulong cr3, int index, ulong gpa, ulong pdpte, ulong reserved)
    {
        string message = $"cr3 {Hex.Format(cr3)}: PDPTE {index} at gpa {Hex.Format(gpa)} = {Hex.Format(pdpte)} sets reserved bits {Hex.Format(reserved)}, so loading CR3 would #GP";
        // QEMU's TCG sets A (bit 5) in the PDPTEs it walks: a dump taken under it trips the SDM's rule.
        if ((reserved & ~QemuIgnoredPdpteBits) == 0)
            message += " (SDM Table 4-8 reserves PDPTE bits 8:5; QEMU TCG sets bit 5, A, in PDPTEs it walked: for such a dump, --pdpte-as-qemu ignores bits 8:5 as QEMU does)";
        return message;
    }

    public PagingControls Controls { get; }
    public ulong Cr3 { get; }
    /// <summary>The memslots backing guest memory (one slot over the whole image for an image).</summary>
    public ImmutableArray<Memslot> Slots { get; }
    /// <summary>The words written into zeroed memory before the walk (empty for an image).</summary>
    public ImmutableArray<MemoryWord> Memory { get; }
    public Access? Access { get; }
    /// <summary>The memory image, when guest memory is a file instead of listed words.</summary>
    public IPhysicalMemoryImage? Image { get; }

    public PagingMode Mode => Controls.Mode;
    public int EntryBytes => Controls.Mode.EntryBytes();

    /// <summary>A scenario whose memory is zeroed <paramref name="slots"/> (default: low memory covering every word) plus <paramref name="memory"/>.</summary>
    public static Scenario Create(PagingControls controls, ulong cr3, IReadOnlyList<Memslot>? slots, IReadOnlyList<MemoryWord> memory, Access? access)
    {
        CheckCr3(controls, cr3);
        var slotArray = slots is null ? DefaultSlots(controls, cr3, memory) : CheckSlots(controls, slots);
        CheckMemory(controls, slotArray, memory);
        if (access is not null) CheckAccess(controls, access);
        return new Scenario(controls, cr3, slotArray, memory.ToImmutableArray(), access, null);
    }

    /// <summary>A scenario over a memory image (file offset = gpa).</summary>
    public static Scenario FromImage(PagingControls controls, ulong cr3, IPhysicalMemoryImage image, Access? access)
    {
        CheckCr3(controls, cr3);
        if (access is not null) CheckAccess(controls, access);
        // An ELF core backs only its segments: a gpa in a hole (MMIO, or simply not dumped) is not memory.
        var slots = image is MappedImage mapped ? GuestMemory.FromSlots(mapped.Memslots).Slots : GuestMemory.FromImage(image).Slots;
        return new Scenario(controls, cr3, slots, ImmutableArray<MemoryWord>.Empty, access, image);
    }

    public Scenario WithAccess(Access access)
    {
        CheckAccess(Controls, access);
        return new Scenario(Controls, Cr3, Slots, Memory, access, Image, QemuPdptes, Ept);
    }

    /// <summary>The same scenario with its PDPTEs read as QEMU reads them (<see cref="QemuPdptes"/>).</summary>
    public Scenario WithQemuPdptes() => new(Controls, Cr3, Slots, Memory, Access, Image, qemuPdptes: true, Ept);

    /// <summary>Guest memory as the spec sees it.</summary>
    public GuestMemory BuildMemory()
    {
        if (Image is { } image) return GuestMemory.FromSlots(Slots, image);
        var memory = GuestMemory.FromSlots(Slots);
        foreach (var w in Memory) memory = memory.Write(w.Gpa, w.Value, EntryBytes);
        return memory;
    }

    /// <summary>
    /// The vCPU state after MOV CR3 (PAE: with the PDPTE registers loaded from memory). A CR3 the
    /// CPU would refuse is bad input: there is no machine to walk.
    /// </summary>
    public CpuState Boot(GuestMemory memory)
    {
        L1Ept.RefuseL1Walk(this);
        var loaded = CpuState.LoadCr3(Controls, Cr3, QemuPdptes ? WithoutQemuPdpteBits(memory) : memory);
        if (loaded.State is { } state) return state;
        ulong pdpt = Cr3 & Bits.Range(31, 5);
        switch (loaded.Fault)
        {
            case GpReason.PdptNotInMemory when Image is { } image:
                throw new InputException(TooShort(image, "PDPT", pdpt));
            case GpReason.PdptNotInMemory:
                throw new InputException($"cr3 {Hex.Format(Cr3)}: the PDPT at gpa {Hex.Format(pdpt)} is outside guest memory, so loading CR3 would #GP");
            case GpReason.PdpteReservedBits:
                for (int i = 0; i < 4; i++)
                {
                    ulong pdpte = memory.Read64(pdpt + 8 * (ulong)i) ?? 0;
                    ulong reserved = pdpte & ReservedBits.PaePdpteMask(Controls) & (QemuPdptes ? ~QemuIgnoredPdpteBits : ~0UL);
                    if (!new PagingEntry(pdpte).Present || reserved == 0) continue;
                    throw new InputException(PdpteReservedMessage(Cr3, i, pdpt + 8 * (ulong)i, pdpte, reserved));
                }
                goto default;
            default:
                throw new InputException($"cr3 {Hex.Format(Cr3)} cannot be loaded: #GP, {loaded.Fault!.Value.Describe()}");
        }
    }

    /// <summary>PAE: memory with the four PDPTEs' bits 8:5 cleared (the others are checked as the SDM says).</summary>
    GuestMemory WithoutQemuPdpteBits(GuestMemory memory)
    {
        if (Mode != PagingMode.Pae) return memory;
        ulong pdpt = Cr3 & Bits.Range(31, 5);
        for (ulong i = 0; i < 4; i++)
            if (memory.Read64(pdpt + 8 * i) is { } pdpte && (pdpte & QemuIgnoredPdpteBits) != 0)
                memory = memory.Write64(pdpt + 8 * i, pdpte & ~QemuIgnoredPdpteBits);
        return memory;
    }

    /// <summary>The error for an image too short for a table the walk needs.</summary>
    public static string TooShort(IPhysicalMemoryImage image, string what, ulong gpa) => image is MappedImage { Core: not null } core
        ? $"the ELF core '{core.Path}' holds no memory at gpa {Hex.Format(gpa)}, where the walk needs the {what} (its segments end at gpa {Hex.Format(core.Length)})"
        : $"image is {image.Length} bytes but the walk needs the {what} at gpa {Hex.Format(gpa)}";

    static void CheckCr3(PagingControls c, ulong cr3)
    {
        if (!c.Mode.IsLongMode() && cr3 > uint.MaxValue)
            throw new InputException($"cr3 {Hex.Format(cr3)} does not fit in 32 bits (CR3 is 32 bits wide in {c.Mode.Name()} paging)");
        ulong reserved = c.Mode.IsLongMode() ? cr3 & ReservedBits.LongModeCr3Mask(c) : 0;
        if (reserved != 0)
            throw new InputException($"cr3 {Hex.Format(cr3)} sets bits above MAXPHYADDR ({c.MaxPhyAddr}): bits 63:{c.MaxPhyAddr} of CR3 are reserved and MOV CR3 would #GP");
    }

    static ImmutableArray<Memslot> CheckSlots(PagingControls c, IReadOnlyList<Memslot> slots)
    {
        ulong limitGfn = 1UL << (c.MaxPhyAddr - Memslot.PageShift);
        for (int i = 0; i < slots.Count; i++)
        {
            var s = slots[i];
            if (s.Pages == 0) throw new InputException($"memslots[{i}]: size must be a positive multiple of 4 KiB");
            if (s.BaseGfn >= limitGfn || s.Pages > limitGfn - s.BaseGfn)
                throw new InputException($"memslots[{i}]: [{Hex.Format(s.BaseGfn << 12)}, {Hex.Format((s.BaseGfn + s.Pages) << 12)}) reaches beyond MAXPHYADDR ({c.MaxPhyAddr} bits)");
        }
        try { return GuestMemory.FromSlots(slots).Slots; }
        catch (ArgumentException e) { throw new InputException(Messages.Of(e)); }
    }

    static ImmutableArray<Memslot> DefaultSlots(PagingControls c, ulong cr3, IReadOnlyList<MemoryWord> memory)
    {
        ulong top = DefaultMemoryBytes;
        ulong root = new CpuState(c, cr3).RootTableAddress;
        top = Math.Max(top, root + 4096);
        foreach (var w in memory) if (w.Gpa < ulong.MaxValue - 4096) top = Math.Max(top, w.Gpa + 8);
        const ulong step = 2UL << 20;
        ulong limit = 1UL << c.MaxPhyAddr;
        top = top > limit - step ? limit : (top + step - 1) & ~(step - 1);
        return ImmutableArray.Create(new Memslot(0, top >> Memslot.PageShift));
    }

    static void CheckMemory(PagingControls c, ImmutableArray<Memslot> slots, IReadOnlyList<MemoryWord> memory)
    {
        int bytes = c.Mode.EntryBytes();
        var seen = new HashSet<ulong>();
        foreach (var w in memory)
        {
            string at = $"memory {Hex.Format(w.Gpa)}";
            if ((w.Gpa & (ulong)(bytes - 1)) != 0)
                throw new InputException($"{at}: gpa is not {bytes}-byte aligned ({c.Mode.Name()} entries are {bytes} bytes)");
            if (bytes == 4 && w.Value > uint.MaxValue)
                throw new InputException($"{at}: value {Hex.Format(w.Value)} does not fit in a 4-byte bits32 entry");
            if (w.Gpa >> c.MaxPhyAddr != 0)
                throw new InputException($"{at}: gpa is beyond MAXPHYADDR ({c.MaxPhyAddr} bits)");
            if (!slots.Any(s => s.ContainsGpa(w.Gpa)))
                throw new InputException($"{at}: gpa is outside every memslot");
            if (!seen.Add(w.Gpa))
                throw new InputException($"{at}: gpa is given twice");
        }
    }

    static void CheckAccess(PagingControls c, Access a)
    {
        if (!c.Mode.IsLongMode() && a.Gva > uint.MaxValue)
            throw new InputException($"access: gva {Hex.Format(a.Gva)} is wider than 32 bits (linear addresses are 32 bits in {c.Mode.Name()} paging)");
    }

    public override string ToString() => $"{Controls}, CR3={Hex.Format(Cr3)}";
}
