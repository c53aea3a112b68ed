using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.GuestWalk;

/// <summary>
/// One step a guest (or the test) takes. Operations are immutable values with no behaviour; the
/// spec and the impl each interpret them. Print through <see cref="object.ToString"/> in traces.
/// </summary>
public abstract record Op
{
    private Op() { }

    /// <summary>The guest touches a linear address: a page walk.</summary>
    public sealed record GuestAccess(Access Access) : Op
    {
        public override string ToString() => Access.ToString();
    }

    /// <summary>The guest stores 4 or 8 bytes to guest-physical memory (e.g. edits a page-table entry).</summary>
    public sealed record WriteGuest(ulong Gpa, ulong Value, int Size) : Op
    {
        public override string ToString() => $"write{Size * 8} [{Bits.Hex(Gpa)}] = {Bits.Hex(Value)}";
    }

    /// <summary>MOV CR3 (PAE: reloads the PDPTE registers).</summary>
    public sealed record LoadCr3(ulong Cr3) : Op
    {
        public override string ToString() => $"mov cr3, {Bits.Hex(Cr3)}";
    }

    /// <summary>Changes the paging controls (a write to CR0/CR4/EFER/EFLAGS/PKRU); PAE reloads the PDPTEs.</summary>
    public sealed record SetControls(PagingControls Controls) : Op
    {
        public override string ToString() => $"set controls {Controls}";
    }
}

/// <summary>What an operation returned to the guest.</summary>
public abstract record OpResult
{
    private OpResult() { }

    /// <summary>The operation completed with nothing to report (a store, a successful MOV CR3).</summary>
    public sealed record Completed : OpResult
    {
        public static Completed Instance { get; } = new();
        public override string ToString() => "ok";
    }

    /// <summary>An access: its walk's outcome.</summary>
    public sealed record Walked(WalkResult Result) : OpResult
    {
        public override string ToString() => Result.ToString();
    }

    /// <summary>MOV CR3 or a control change raised #GP; the state is unchanged.</summary>
    public sealed record GeneralProtection(GpReason Reason) : OpResult
    {
        public override string ToString() => $"#GP: {Reason.Describe()}";
    }
}
