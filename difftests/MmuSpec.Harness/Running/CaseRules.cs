using System.Globalization;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Running;

/// <summary>
/// What every case the generators draw satisfies beyond what the spec's constructors check, one
/// method per case type; <see cref="CaseJson"/> applies them to every case it reads. A case outside
/// them is not a guest event but a caller error: the spec throws on it, or the impl refuses it as a
/// precondition (or runs out of memory), so replaying it would report a divergence that is no bug
/// (a memslot past 2^64 was reported as one). Values the MMUs reject as guest or VMM events (a slot
/// id out of range, a store of 3 bytes to a TDP guest, an INVPCID type of 9, an empty zap range)
/// are not here: the generators produce them on purpose and both sides must reject them alike.
/// Each refusal is an <see cref="InputException"/> naming the JSON path (docs/counterexample-format.md).
/// </summary>
public static partial class CaseRules
{
    /// <summary>
    /// Pages of all of a walk case's memslots together: the impl backs each page with native memory
    /// and the trace compares all of it after every step. The generators use 0x50 (<see cref="WalkGen.Slots"/>).
    /// </summary>
    public const ulong MaxWalkPages = 0x1_0000;

    /// <summary>
    /// Pages of one TDP or shadow memslot: the impl reserves the slot's host memory up front (lazily
    /// zeroed). The generators' largest is 1 GiB and 2 MiB (0x40200 pages).
    /// </summary>
    public const ulong MaxSlotPages = 0x10_0000;

    /// <summary>The gfn where the 64-bit guest-physical address space ends.</summary>
    public const ulong GfnLimit = 1UL << (64 - 12);

    /// <summary>Whether <paramref name="c"/> obeys the rules (the shrinkers keep only candidates that do).</summary>
    public static bool Obeys(object c)
    {
        try { Check(c, ""); return true; }
        catch (InputException) { return false; }
    }

    /// <summary>
    /// <paramref name="arbitrary"/> with a shrinker that offers only cases within the rules: dropping a
    /// mode switch, say, can leave a later 64-bit CR3 in PAE paging, which the spec refuses by throwing,
    /// and FsCheck would count the throw as the failure still reproducing.
    /// </summary>
    public static Arbitrary<T> Shrinking<T>(Arbitrary<T> arbitrary) where T : notnull =>
        Arb.From(arbitrary.Generator, c => arbitrary.Shrinker(c).Where(x => Obeys(x)));

    public static void Check(object c, string path) => Families.For(c).CheckRules(c, path);

    /// <summary>
    /// A walk case: memslots of at least one page that neither overlap nor run past 2^64, 0x10000
    /// pages at most in all; guest writes of 4 or 8 bytes, aligned, with a value that fits; outside
    /// IA-32e mode CR3 and linear addresses of 32 bits (the mode an op runs in is the one last named,
    /// at boot or by set_controls, as the generator tracks it: a mode switch that raises #GP only
    /// makes this stricter, never looser, since entering IA-32e mode never raises it).
    /// </summary>
    public static void Check(WalkCase c, string path)
    {
        ulong total = 0;
        var order = Enumerable.Range(0, c.Slots.Length).OrderBy(i => c.Slots[i].BaseGfn).ToList();
        for (int i = 0; i < c.Slots.Length; i++)
        {
            var s = c.Slots[i];
            string at = At(path, $"slots[{I(i)}]");
            Slot(at, s.BaseGfn, s.Pages);
            total += s.Pages;
            if (total > MaxWalkPages)
                throw new InputException($"{At(path, "slots")}: more than {Hex.Format(MaxWalkPages)} pages ({Hex.Size(MaxWalkPages << 12)}) in all; a walk case's memory is at most that");
        }
        for (int k = 1; k < order.Count; k++)
        {
            var (a, b) = (c.Slots[order[k - 1]], c.Slots[order[k]]);
            if (b.BaseGfn < a.EndGfn)
                throw new InputException($"{At(path, $"slots[{I(order[k])}]")}: overlaps slots[{I(order[k - 1])}] ({b} and {a})");
        }

        for (int i = 0; i < c.Setup.Length; i++) Write(At(path, $"setup[{I(i)}]"), c.Setup[i].Gpa, c.Setup[i].Value, c.Setup[i].Size);
        var mode = c.Controls.Mode;
        Cr3(At(path, "cr3"), mode, c.Cr3);
        for (int i = 0; i < c.Ops.Length; i++)
        {
            string at = At(path, $"ops[{I(i)}]");
            switch (c.Ops[i])
            {
                case Op.WriteGuest w: Write(at, w.Gpa, w.Value, w.Size); break;
                case Op.LoadCr3 l: Cr3($"{at}.cr3", mode, l.Cr3); break;
                case Op.SetControls s: mode = s.Controls.Mode; break;
                case Op.GuestAccess a: Gva($"{at}.access.gva", mode, a.Access.Gva); break;
            }
        }
    }

    /// <summary>
    /// A TDP case: every memslot created is at most <see cref="MaxSlotPages"/> pages, and so is every
    /// pre-fault range (the spec takes a fault per leaf, so a range of terabytes in 4 KiB leaves would
    /// not finish; an empty, unaligned or wrapping range is a guest-visible rejection and stays allowed).
    /// </summary>
    public static void Check(TdpCase c, string path)
    {
        for (int i = 0; i < c.Ops.Length; i++)
        {
            if (c.Ops[i] is TdpOp.CreateSlot s) SlotSize(At(path, $"ops[{I(i)}]"), s.Pages);
            // Write tracking is the concurrent MMU's (tdp-concurrent); the sequential one has none.
            if (c.Ops[i] is TdpOp.TrackWrites or TdpOp.UntrackWrites)
                throw new InputException($"{At(path, $"ops[{I(i)}]")}: {c.Ops[i]} is an op of the concurrent MMU only (a tdp-concurrent case)");
            if (c.Ops[i] is TdpOp.PreFault f && f.Size >> 12 > MaxSlotPages && f.Gpa + f.Size >= f.Gpa)
                throw new InputException($"{At(path, $"ops[{I(i)}]")}.size: {Hex.Format(f.Size)} bytes is more than a pre-fault may cover here ({Hex.Size(MaxSlotPages << 12)})");
        }
    }

    /// <summary>A shadow case: every memslot created, in the setup or the ops, is at most <see cref="MaxSlotPages"/> pages.</summary>
    public static void Check(ShadowCase c, string path)
    {
        foreach (var (list, name) in new[] { (c.Setup, "setup"), (c.Ops, "ops") })
            for (int i = 0; i < list.Length; i++)
                if (list[i] is ShadowOp.CreateSlot s) SlotSize(At(path, $"{name}[{I(i)}]"), s.Pages);
    }

    static void Slot(string at, ulong baseGfn, ulong pages)
    {
        if (pages == 0) throw new InputException($"{at}.pages: a memslot has at least one page");
        if (baseGfn >= GfnLimit || pages > GfnLimit - baseGfn)
            throw new InputException($"{at}: {Hex.Format(pages)} pages from gfn {Hex.Format(baseGfn)} run past the 64-bit guest-physical address space (gfn {Hex.Format(GfnLimit)})");
    }

    static void SlotSize(string at, ulong pages)
    {
        if (pages > MaxSlotPages)
            throw new InputException($"{at}.pages: {Hex.Format(pages)} pages is more than a memslot may have here ({Hex.Format(MaxSlotPages)}, {Hex.Size(MaxSlotPages << 12)})");
    }

    static void Write(string at, ulong gpa, ulong value, int size)
    {
        if (size is not (4 or 8)) throw new InputException($"{at}.size: a guest write is 4 or 8 bytes (a page-table entry), not {I(size)}");
        if (gpa % (ulong)size != 0) throw new InputException($"{at}.gpa: {Hex.Format(gpa)} is not {I(size)}-byte aligned");
        if (size == 4 && value > uint.MaxValue) throw new InputException($"{at}.value: {Hex.Format(value)} does not fit a 4-byte write");
    }

    static void Cr3(string at, PagingMode mode, ulong cr3)
    {
        if (!mode.IsLongMode() && cr3 > uint.MaxValue)
            throw new InputException($"{at}: {Hex.Format(cr3)} is wider than CR3's 32 bits in {mode.Name()} paging");
    }

    static void Gva(string at, PagingMode mode, ulong gva)
    {
        if (!mode.IsLongMode() && gva > uint.MaxValue)
            throw new InputException($"{at}: {Hex.Format(gva)} is wider than a linear address's 32 bits in {mode.Name()} paging");
    }

    static string At(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";

    static string I(int n) => n.ToString(CultureInfo.InvariantCulture);
}
