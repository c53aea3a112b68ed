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
        if (full || !logged || before is null) return null;
        if (ReferenceEquals(before, spec) && frames.Count == 0)
        {
            agreed = spec;
            return true;
        }
        // The pass below reads words in ascending hpa order, so a frame's words come together.
        if (!ReferenceEquals(spec.KeyComparer, Comparer<ulong>.Default) || !ReferenceEquals(before.KeyComparer, Comparer<ulong>.Default)) return null;
        try
        {
            if (!CollectChangedFrames(before, spec)) return null;
            foreach (ulong pfn in frames)
                if (!expected.ContainsKey(pfn)) expected[pfn] = Zeroed();   // no spec word on it
            foreach (var (pfn, page) in expected)
            {
                readFrame(pfn, actual);
                if (!actual.AsSpan().SequenceEqual(page)) return false;
            }
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
        agreed = spec;
        return true;
    }

    /// <summary>The caller found the impl's host memory equal to <paramref name="spec"/> in full.</summary>
    public void Agree(ImmutableSortedDictionary<ulong, ulong> spec) => agreed = spec;

    ulong[] Zeroed() => spare.TryPop(out var page) ? page : new ulong[WordsPerPage];

    // The current frame's spec words in the pass below (word index, value).
    readonly int[] frameIndex = new int[WordsPerPage];
    readonly ulong[] frameValue = new ulong[WordsPerPage];

    /// <summary>
    /// One pass over <paramref name="before"/> and <paramref name="spec"/> side by side: every frame on which a
    /// word differs joins <see cref="frames"/>, and <see cref="expected"/> gets the spec's words of every frame in
    /// it. False when the spec holds a word the full comparison would question (zero, or unaligned).
    /// </summary>
    bool CollectChangedFrames(ImmutableSortedDictionary<ulong, ulong> before, ImmutableSortedDictionary<ulong, ulong> spec)
    {
        bool same = ReferenceEquals(before, spec);
        // Mutable struct enumerators, advanced in place (not through IEnumerable, which boxes them).
        var was = before.GetEnumerator();
        var now = spec.GetEnumerator();
        try
        {
            bool hasWas = !same && was.MoveNext(), hasNow = now.MoveNext();
            ulong frame = ulong.MaxValue;
            bool changed = false;
            int count = 0;
            while (hasWas || hasNow)
            {
                int order = !hasNow ? -1 : !hasWas ? 1 : was.Current.Key.CompareTo(now.Current.Key);
                ulong hpa = order < 0 ? was.Current.Key : now.Current.Key;
                if (hpa >> PageShift != frame)
                {
                    Keep(frame, changed, count);
                    (frame, changed, count) = (hpa >> PageShift, false, 0);
                }
                if (order <= 0)
                {
                    // A word the spec dropped, or holds with another value.
                    if (order < 0 || was.Current.Value != now.Current.Value) changed = true;
                    hasWas = was.MoveNext();
                }
                else if (!same) changed = true;   // a word only the spec holds now
                if (order >= 0)
                {
                    ulong value = now.Current.Value;
                    if (value == 0 || (hpa & 7) != 0) return false;
                    (frameIndex[count], frameValue[count]) = ((int)((hpa & 0xFFF) / 8), value);
                    count++;
                    hasNow = now.MoveNext();
                }
            }
            Keep(frame, changed, count);
            return true;
        }
        finally { was.Dispose(); now.Dispose(); }
    }

    /// <summary>The spec's words of <paramref name="frame"/> into <see cref="expected"/> when either side changed it.</summary>
    void Keep(ulong frame, bool changed, int count)
    {
        if (frame == ulong.MaxValue) return;   // before the first word
        if (changed) frames.Add(frame);
        else if (!frames.Contains(frame)) return;
        var page = Zeroed();
        for (int i = 0; i < count; i++) page[frameIndex[i]] = frameValue[i];
        expected[frame] = page;
    }
}
