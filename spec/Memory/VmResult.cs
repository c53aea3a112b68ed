using System.Collections.Immutable;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Memory;

/// <summary>
/// What an operation on a VM returned, whichever MMU ran it. The outcomes both MMUs share are the cases
/// here: a memslot operation (KVM_SET_USER_MEMORY_REGION, KVM_GET_DIRTY_LOG) returns only these, as
/// does every other operation that maps nothing. Each MMU's own outcomes of a guest access derive from
/// this type (<c>TdpResult</c>, <c>ShadowResult</c>), so a step returns one <see cref="VmResult"/>.
/// </summary>
public abstract record VmResult
{
    private protected VmResult() { }

    public sealed record Ok : VmResult
    {
        public static Ok Instance { get; } = new();
        public override string ToString() => "ok";
    }

    /// <summary>The operation was invalid (for a memslot ioctl, KVM's -EINVAL, -EEXIST or -ENOENT); nothing changed.</summary>
    public sealed record Rejected(string Reason) : VmResult
    {
        public override string ToString() => $"rejected: {Reason}";
    }

    /// <summary>The dirty frames of a slot since the last fetch, as sorted absolute gfns (KVM_GET_DIRTY_LOG's bitmap, read as gfns).</summary>
    public sealed record DirtyLog(ImmutableArray<ulong> Gfns) : VmResult
    {
        public bool Equals(DirtyLog? other) => other is not null && Gfns.SequenceEqual(other.Gfns);
        public override int GetHashCode() => Gfns.Length;
        public override string ToString() => $"dirty gfns [{string.Join(", ", Gfns.Select(Bits.Hex))}]";
    }
}
