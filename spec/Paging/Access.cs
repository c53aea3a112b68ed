namespace MmuSpec.Spec.Paging;

/// <summary>What the access does with the bytes: read data, write data or fetch an instruction (SDM §4.6).</summary>
public enum AccessType
{
    Read,
    Write,
    Fetch,
}

/// <summary>
/// Who makes the access (SDM §4.6): a supervisor-mode access at CPL &lt; 3, a user-mode access at
/// CPL 3, or an <em>implicit</em> supervisor-mode access, which the processor makes itself to
/// system structures (GDT, IDT, TSS...) at any CPL. Implicit accesses cannot use EFLAGS.AC to pass
/// SMAP and are never instruction fetches.
/// </summary>
public enum Privilege
{
    Supervisor,
    User,
    ImplicitSupervisor,
}

/// <summary>One memory access by the guest to a linear address.</summary>
public sealed record Access
{
    public Access(ulong gva, AccessType type, Privilege privilege)
    {
        if (!Enum.IsDefined(type)) throw new ArgumentOutOfRangeException(nameof(type), type, "unknown access type");
        if (!Enum.IsDefined(privilege)) throw new ArgumentOutOfRangeException(nameof(privilege), privilege, "unknown privilege");
        if (type == AccessType.Fetch && privilege == Privilege.ImplicitSupervisor)
            throw new ArgumentException("an instruction fetch is never an implicit supervisor-mode access", nameof(privilege));
        Gva = gva; Type = type; Privilege = privilege;
    }

    public ulong Gva { get; }
    public AccessType Type { get; }
    public Privilege Privilege { get; }

    /// <summary>A user-mode access (CPL 3, not implicit): the U/S bit of the error code.</summary>
    public bool IsUserMode => Privilege == Privilege.User;

    public Access WithGva(ulong value) => new(value, Type, Privilege);
    public Access WithType(AccessType value) => new(Gva, value, Privilege);
    public Access WithPrivilege(Privilege value) => new(Gva, Type, value);

    public static Access Read(ulong gva, Privilege privilege = Privilege.Supervisor) => new(gva, AccessType.Read, privilege);
    public static Access Write(ulong gva, Privilege privilege = Privilege.Supervisor) => new(gva, AccessType.Write, privilege);
    public static Access Fetch(ulong gva, Privilege privilege = Privilege.Supervisor) => new(gva, AccessType.Fetch, privilege);

    public override string ToString()
    {
        string who = Privilege switch
        {
            Privilege.User => "user",
            Privilege.Supervisor => "supervisor",
            _ => "implicit-supervisor",
        };
        return $"{who} {Type.ToString().ToLowerInvariant()} {Bits.Hex(Gva)}";
    }
}
