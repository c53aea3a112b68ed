using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.GuestWalk;

/// <summary>The state after an operation and what the operation returned.</summary>
public sealed record Stepped(GuestMachine Machine, OpResult Result);

/// <summary>
/// A vCPU's paging state and the guest memory it walks: the architecture layer's whole state.
/// <see cref="Step"/> is a pure function from (state, operation) to (state, result).
/// </summary>
public sealed record GuestMachine(CpuState Cpu, GuestMemory Memory)
{
    /// <summary>
    /// A machine with the given controls whose CR3 is loaded from <paramref name="cr3"/>, or null if
    /// that MOV CR3 would raise #GP (e.g. a PAE PDPTE with a reserved bit).
    /// </summary>
    public static GuestMachine? Boot(PagingControls controls, ulong cr3, GuestMemory memory)
    {
        var loaded = CpuState.LoadCr3(controls, cr3, memory);
        return loaded.State is { } cpu ? new GuestMachine(cpu, memory) : null;
    }

    public GuestMachine WithCpu(CpuState value) => new(value, Memory);
    public GuestMachine WithMemory(GuestMemory value) => new(Cpu, value);

    public Stepped Step(Op op)
    {
        switch (op)
        {
            case Op.GuestAccess a:
                var (result, memory) = PageWalk.Translate(Cpu, Memory, a.Access);
                return new Stepped(WithMemory(memory), new OpResult.Walked(result));

            case Op.WriteGuest w:
                // A store outside every memslot goes nowhere (in KVM it would exit to userspace as MMIO).
                return new Stepped(WithMemory(Memory.Write(w.Gpa, w.Value, w.Size)), OpResult.Completed.Instance);

            case Op.LoadCr3 l:
                return Reload(Cpu.Controls, l.Cr3);

            case Op.SetControls s:
                // Leaving IA-32e mode with a CR3 wider than 32 bits. A real CPU cannot get here (it
                // leaves long mode with paging off and reloads CR3); the model calls it #GP so that
                // the step stays total, and the impl agrees.
                if (!s.Controls.Mode.IsLongMode() && Cpu.Cr3 > uint.MaxValue)
                    return new Stepped(this, new OpResult.GeneralProtection(GpReason.Cr3ReservedBits));
                if (s.Controls.Mode == PagingMode.Pae && !ReloadsPdptes(Cpu.Controls, s.Controls))
                    return new Stepped(WithCpu(Cpu.WithControls(s.Controls)), OpResult.Completed.Instance);
                // Otherwise the current CR3 is loaded again under the new controls, with MOV CR3's checks.
                return Reload(s.Controls, Cpu.Cr3);

            default:
                throw new ArgumentException($"unknown operation {op}", nameof(op));
        }
    }

    /// <summary>
    /// SDM §4.4.1: the PDPTE registers are loaded when PAE paging is entered and, in PAE paging,
    /// when a MOV to CR0/CR4 changes CR0.CD, CR0.NW, CR0.PG, CR4.PAE, CR4.PGE, CR4.PSE or CR4.SMEP.
    /// Of those the model has CR4.PSE and CR4.SMEP (PG and PAE are the mode). Any other control
    /// change keeps the registers as they are, whatever the PDPT in memory now holds.
    /// </summary>
    public static bool ReloadsPdptes(PagingControls before, PagingControls after) =>
        after.Mode == PagingMode.Pae
        && (before.Mode != PagingMode.Pae || before.Cr4Pse != after.Cr4Pse || before.Cr4Smep != after.Cr4Smep);

    Stepped Reload(PagingControls controls, ulong cr3)
    {
        var loaded = CpuState.LoadCr3(controls, cr3, Memory);
        return loaded.State is { } cpu
            ? new Stepped(WithCpu(cpu), OpResult.Completed.Instance)
            : new Stepped(this, new OpResult.GeneralProtection(loaded.Fault!.Value));
    }

    public override string ToString() => $"{Cpu}; {Memory}";
}
