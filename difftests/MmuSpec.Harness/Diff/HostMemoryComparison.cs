using System.Collections.Immutable;

namespace MmuSpec.Harness.Diff;

/// <summary>
/// The host-memory half of the TDP and shadow families' per-step state comparison, as
/// <see cref="WalkMemoryComparison"/> is the walk family's. Reading every written host page after every
/// step was a twentieth of a campaign; this reads only the frames that changed on either side since both
/// were last found to hold the same words: the frames of the words the spec changed (a merge of its last
/// and current maps) and every frame the impl logged (host memory's stores are its only writes, and a
/// deleted slot logs the pages it wrote). Changes on neither side leave a frame as it was when the two
/// agreed, so the union is enough. It cannot tell before the first agreement, when the impl logs nothing,
/// or when asked for all of memory (at the case's last step): the caller then compares all of memory as
/// before and calls <see cref="Agree"/> when it finds it equal. A difference leaves nothing agreed, so
/// the comparison after it reads all of memory again.
/// </summary>
public sealed class HostMemoryComparison
{
    const int PageShift = 12;
    const int WordsPerPage = 4096 / 8;

    readonly Func<ICollection<ulong>, bool> takeWritten;
    readonly Func<ulong, ulong[], bool> readFrame;
    readonly HashSet<ulong> frames = [];
    readonly Dictionary<ulong, ulong[]> expected = [];
    readonly Stack<ulong[]> spare = [];
    readonly ulong[] actual = new ulong[WordsPerPage];
    // The spec's host memory when both sides last held the same words; null when they are not known to.
    ImmutableSortedDictionary<ulong, ulong>? agreed;

    /// <param name="takeWritten">The impl's <c>TakeWrittenHostFrames</c>: moves its logged host frames out, false when it logs none.</param>
    /// <param name="readFrame">The impl's <c>ReadHostFrame</c>: a host frame's 512 words as its visit of host memory reports them.</param>
    public HostMemoryComparison(Func<ICollection<ulong>, bool> takeWritten, Func<ulong, ulong[], bool> readFrame)
    {
        this.takeWritten = takeWritten;
        this.readFrame = readFrame;
    }

    /// <summary>
    /// Whether the impl's host memory holds exactly <paramref name="spec"/>'s words, judged from the frames
    /// either side changed since they last agreed; null when it cannot tell (see the class). Takes the impl's
    /// log whatever the answer, so call it once per comparison, before anything that may return early.
    /// </summary>
    public bool? ChangedFramesEqual(ImmutableSortedDictionary<ulong, ulong> spec, bool full)
    {
        frames.Clear();
        bool logged = takeWritten(frames);
        var before = agreed;
        agreed = null;   // until the frames are found equal
        if (full || !logged || before is null || !Equals(before.KeyComparer, spec.KeyComparer)) return null;
        if (!ReferenceEquals(before, spec))
            foreach (var (hpa, was, now) in SortedMerge.Outer(before, spec))
                if (was != now) frames.Add(hpa >> PageShift);
        if (frames.Count > 0)
        {
            bool? same = FramesEqual(spec);
            if (same != true) return same;
        }
        agreed = spec;
        return true;
    }

    /// <summary>The caller found the impl's host memory equal to <paramref name="spec"/> in full.</summary>
    public void Agree(ImmutableSortedDictionary<ulong, ulong> spec) => agreed = spec;

    /// <summary>Whether every frame in <see cref="frames"/> holds the same words on both sides; null when the spec's map has a word the full comparison would question.</summary>
    bool? FramesEqual(ImmutableSortedDictionary<ulong, ulong> spec)
    {
        try
        {
            foreach (ulong pfn in frames) expected[pfn] = spare.TryPop(out var page) ? page : new ulong[WordsPerPage];
            foreach (var (hpa, value) in spec)
            {
                if (!expected.TryGetValue(hpa >> PageShift, out var page)) continue;
                // The spec keeps only non-zero, aligned words: anything else is the full comparison's to report.
                if (value == 0 || (hpa & 7) != 0) return null;
                page[(hpa & 0xFFF) / 8] = value;
            }
            foreach (var (pfn, page) in expected)
            {
                readFrame(pfn, actual);
                if (!actual.AsSpan().SequenceEqual(page)) return false;
            }
            return true;
        }
        finally
        {
            foreach (var page in expected.Values)
            {
                Array.Clear(page);
                spare.Push(page);
            }
            expected.Clear();
        }
    }
}
