using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Shadow;

/// <summary>Host frames written since the harness last looked (IShadowVm.TrackHostWrites): host memory's stores are its only writes.</summary>
internal sealed partial class ShadowMmu
{
    public void TrackHostWrites()
    {
        ThrowIfDisposed();
        _slots.TrackHostWrites();
    }

    public bool TakeWrittenHostFrames(ICollection<ulong> hostPfns)
    {
        ArgumentNullException.ThrowIfNull(hostPfns);
        ThrowIfDisposed();
        return _slots.TakeWrittenHostFrames(hostPfns);
    }

    public bool ReadHostFrame(ulong hostPfn, ulong[] words)
    {
        ThrowIfDisposed();
        return _slots.ReadHostFrame(hostPfn, words); // checks the words
    }
}
