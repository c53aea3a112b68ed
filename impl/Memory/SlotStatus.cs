namespace MmuSpec.Impl.Memory;

/// <summary>
/// What a memslot operation returned, on either MMU (create, delete, move, dirty logging on or off, fetch
/// the dirty log). A rejected operation changed nothing; the VM's LastRejection says why.
/// </summary>
public enum SlotStatus : byte
{
    Ok,
    Rejected,
}
