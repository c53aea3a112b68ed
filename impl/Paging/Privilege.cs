namespace MmuSpec.Impl.Paging;

/// <summary>Mode of an access for the rights checks (SDM 4.6).</summary>
public enum Privilege : byte
{
    /// <summary>Explicit supervisor-mode access (CPL &lt; 3).</summary>
    Supervisor,

    /// <summary>User-mode access (CPL = 3).</summary>
    User,

    /// <summary>
    /// Implicit supervisor-mode access: the CPU touching system structures (GDT, IDT, TSS...) even at CPL 3.
    /// Never an instruction fetch; EFLAGS.AC cannot lift SMAP for it.
    /// </summary>
    ImplicitSupervisor,
}
