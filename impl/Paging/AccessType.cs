namespace MmuSpec.Impl.Paging;

/// <summary>Kind of memory access being translated.</summary>
public enum AccessType : byte
{
    Read,
    Write,

    /// <summary>Instruction fetch.</summary>
    Fetch,
}
