using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// Pages by key (KVM's mmu_page_hash): buckets chosen by the gfn alone and chained through the headers'
/// <see cref="ShadowPageHeader.HashNext"/>, so one structure serves both lookups the rules need:
/// (gfn, role) -> page (walk the bucket comparing the packed key, one masked compare per page), and
/// "the indirect pages of gfn G" (walk the same bucket filtering gfn == G and !direct) for write protection,
/// unsync and tracked writes, with no scan of all pages and no second index to keep in step. Chains stay
/// short: the table doubles when pages outnumber buckets (only when a page is created).
/// </summary>
internal sealed class ShadowPageHash
{
    private const int InitialBits = 6;
    private const ulong Multiplier = 0x9E3779B97F4A7C15UL; // Fibonacci hashing: top bits of gfn * 2^64/phi

    private nint[] _buckets = new nint[1 << InitialBits];
    private int _shift = 64 - InitialBits;
    private int _count;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int BucketOf(ulong gfn) => (int)((gfn * Multiplier) >> _shift);

    /// <summary>First page of the bucket holding <paramref name="gfn"/>'s pages (others may share it: filter by gfn).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ShadowPage Bucket(ulong gfn) => ShadowPage.FromAddress(_buckets[BucketOf(gfn)]);

    public ShadowPage Find(ulong gfn, ShadowRole role)
    {
        ulong key = ShadowPageHeader.PackKey(gfn, role);
        for (ShadowPage p = Bucket(gfn); !p.IsNull; p = p.HashNext)
        {
            if ((p.Header.Word & ShadowPageHeader.KeyMask) == key)
                return p;
        }
        return default;
    }

    public void Add(ShadowPage page)
    {
        if (_count >= _buckets.Length)
            Grow();
        int b = BucketOf(page.Gfn);
        page.Header.HashNext = _buckets[b];
        _buckets[b] = page.Address;
        _count++;
    }

    public void Remove(ShadowPage page)
    {
        ref nint link = ref _buckets[BucketOf(page.Gfn)];
        while (link != page.Address)
        {
            if (link == 0)
                ThrowHelper.InvalidOperation("shadow page missing from its hash bucket");
            link = ref ShadowPage.FromAddress(link).Header.HashNext;
        }
        link = page.Header.HashNext;
        page.Header.HashNext = 0;
        _count--;
    }

    public void Clear()
    {
        Array.Clear(_buckets);
        _count = 0;
    }

    private void Grow()
    {
        nint[] old = _buckets;
        _buckets = new nint[old.Length * 2];
        _shift--;
        foreach (nint head in old)
        {
            ShadowPage p = ShadowPage.FromAddress(head);
            while (!p.IsNull)
            {
                ShadowPage next = p.HashNext;
                int b = BucketOf(p.Gfn);
                p.Header.HashNext = _buckets[b];
                _buckets[b] = p.Address;
                p = next;
            }
        }
    }
}
