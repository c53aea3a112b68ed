using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// The 2D walk adds nothing of its own to L2's dimension: under an EPT that maps every L2 gpa to the same L1 gpa
/// with full rights and A/D off, <see cref="NestedWalk"/> must give exactly <see cref="PageWalk"/>'s outcome and
/// write exactly its A/D updates, for every access of the walk family's generated cases (all four paging modes,
/// shared tables, reserved bits, tables outside memory, edits and mode changes between accesses). A spec-only
/// property with its own FsCheck run: the walk family's properties draw what they always drew.
/// </summary>
public sealed class EptIdentityPropertyTests
{
    const int Cases = 500;
    static readonly EptCapabilities Caps = EptCapabilities.Default.WithMaxPhyAddr(52);
    static readonly EptPointer Eptp = EptPointer.Create(IdentityEpt.Base, levels: 5);

    [Fact]
    public void Under_an_identity_EPT_the_2D_walk_is_the_guest_walk()
    {
        int accesses = 0;
        var property = Prop.ForAll(WalkGen.Arbitrary(), (WalkCase c) =>
        {
            var machine = c.BootSpec();
            if (machine is null) return true;
            foreach (var op in c.Ops)
            {
                if (op is Op.GuestAccess a)
                {
                    accesses++;
                    var expected = PageWalk.Walk(machine.Cpu, machine.Memory, a.Access);
                    var l1 = GuestMemory.FromSlots(machine.Memory.Slots.Add(IdentityEpt.Slot), new IdentityEpt(machine.Memory));
                    var nested = NestedWalk.Explain(Caps, Eptp, machine.Cpu, l1, a.Access);
                    string? why = Differs(expected, nested);
                    if (why is not null) throw new Xunit.Sdk.XunitException($"{a.Access} with {machine.Cpu}: {why}\n{nested}");
                }
                machine = machine.Step(op).Machine;
            }
            return true;
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(Cases), property);
        Assert.True(accesses > Cases, $"only {accesses} accesses were walked");
    }

    static string? Differs(WalkExplanation expected, NestedExplanation nested)
    {
        switch (expected.Result, nested.Result)
        {
            case (WalkResult.Translated t, NestedResult.Translated n):
                if ((t.Gpa, t.Size, t.Rights) != (n.L2Gpa, n.GuestSize, n.GuestRights)) return $"translated {n}, expected {t}";
                if (n.L1Gpa != IdentityEpt.Maps(t.Gpa)) return $"L1 gpa {Bits.Hex(n.L1Gpa)} for L2 gpa {Bits.Hex(t.Gpa)}";
                break;
            case (WalkResult r, NestedResult.GuestFault f):
                if (r is WalkResult.Translated || r != f.Result) return $"{f}, expected {r}";
                break;
            default:
                return $"{nested.Result}, expected {expected.Result}";
        }
        if (!expected.Updates.SequenceEqual(nested.GuestUpdates))
            return $"A/D updates [{string.Join(", ", nested.GuestUpdates)}], expected [{string.Join(", ", expected.Updates)}]";
        int size = nested.GuestWalk!.Cpu.Controls.Mode.EntryBytes();
        foreach (var u in expected.Updates)
            if (nested.L1MemoryAfter.Read(u.Gpa, size) != expected.MemoryAfter.Read(u.Gpa, size)) return $"L1 memory at {Bits.Hex(u.Gpa)}";
        return null;
    }

    /// <summary>
    /// A 5-level EPT, computed on the fly, that maps each L2 gpa below 2^52 to the same L1 gpa with 1 GiB pages (RWX,
    /// WB) and reads everything below <see cref="Base"/> from L2's memory. Its tables live at <see cref="Base"/> = 2^51:
    /// page 0 the PML5, pages 1..16 the PML4s, then one PDPT per (PML5, PML4) index pair. The 1 GiB they lie in is
    /// mapped one GiB higher (outside L1 memory), so L2 sees no memory there, as without EPT.
    /// </summary>
    sealed class IdentityEpt(GuestMemory l2) : IPhysicalMemoryImage
    {
        public const ulong Base = 1UL << 51;
        const ulong Pml4Pages = 16, PdptPages = 16 * 512, Rwx = 7, Wb = 6 << 3, Ps = 1 << 7;
        public static readonly Memslot Slot = new(Base >> 12, 1 + Pml4Pages + PdptPages);

        public static ulong Maps(ulong gpa) => (gpa >> 30) == (Base >> 30) ? gpa + (1UL << 30) : gpa;

        public ulong Length => Base + ((1 + Pml4Pages + PdptPages) << 12);

        public ulong ReadQword(ulong gpa)
        {
            if (gpa < Base) return l2.Read64(gpa) ?? 0;
            ulong page = (gpa - Base) >> 12, index = (gpa & 0xFFF) >> 3;
            if (page == 0) return index < Pml4Pages ? (Base + ((1 + index) << 12)) | Rwx : 0;
            if (page <= Pml4Pages) return (Base + ((1 + Pml4Pages + (page - 1) * 512 + index) << 12)) | Rwx;
            ulong n = page - 1 - Pml4Pages;
            ulong frame = ((n / 512) << 48) | ((n % 512) << 39) | (index << 30);
            return Maps(frame) | Ps | Rwx | Wb;
        }
    }
}
