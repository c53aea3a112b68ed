using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// KVM's pte_list: a set of spte addresses behind one 8-byte head word, used for the reverse maps
/// (gfn -> leaves) and the parent lists (page -> table entries linking it).
/// <code>
/// head == 0          empty
/// head bit 0 == 0    the one spte address itself (sptes are 8-aligned): no allocation for the common case
/// head bit 0 == 1    a chain of 64-byte descriptors: [next][count][6 spte addresses]
/// </code>
/// Only the first descriptor of a chain may be partly full: an add fills it (or pushes a new one in front),
/// a remove moves the first descriptor's last element into the hole, so both are O(1) after the search and
/// a chain of n entries uses ceil(n/6) descriptors. A list that drops back to one entry is inlined again.
/// Descriptors come from pool pages (64 per page) through a free list; pages return only at
/// <see cref="ReleaseAll"/>.
/// </summary>
internal sealed unsafe class PteListPool
{
    private const int DescWords = 8;
    private const int Capacity = DescWords - 2;
    private const int NextWord = 0;
    private const int CountWord = 1;
    private const int FirstSpteWord = 2;
    private const ulong ChainTag = 1;

    private readonly NativePagePool _pool;
    private readonly List<nint> _pages = new();
    private nint* _free;

    public PteListPool(NativePagePool pool) => _pool = pool;

    public void Add(ref ulong head, SpteRef spte)
    {
        ulong value = (ulong)spte.Address;
        if (head == 0)
        {
            head = value;
            return;
        }
        if ((head & ChainTag) == 0)
        {
            nint* pair = AllocateDesc();
            pair[FirstSpteWord] = (nint)head;
            pair[FirstSpteWord + 1] = (nint)value;
            pair[CountWord] = 2;
            head = (ulong)pair | ChainTag;
            return;
        }
        nint* first = Desc(head);
        if (first[CountWord] < Capacity)
        {
            first[FirstSpteWord + first[CountWord]++] = (nint)value;
            return;
        }
        nint* desc = AllocateDesc();
        desc[NextWord] = (nint)first;
        desc[CountWord] = 1;
        desc[FirstSpteWord] = (nint)value;
        head = (ulong)desc | ChainTag;
    }

    /// <summary>Removes <paramref name="spte"/>, which must be in the list.</summary>
    public void Remove(ref ulong head, SpteRef spte)
    {
        nint value = spte.Address;
        Debug.Assert(head != 0, "removing from an empty pte list");
        if ((head & ChainTag) == 0)
        {
            Debug.Assert((nint)head == value, "spte not in its pte list");
            head = 0;
            return;
        }
        nint* first = Desc(head);
        for (nint* desc = first; desc != null; desc = (nint*)desc[NextWord])
        {
            for (int i = 0; i < desc[CountWord]; i++)
            {
                if (desc[FirstSpteWord + i] != value)
                    continue;
                int last = (int)first[CountWord] - 1;
                desc[FirstSpteWord + i] = first[FirstSpteWord + last];
                first[FirstSpteWord + last] = 0;
                first[CountWord] = last;
                if (last == 0)
                {
                    nint* next = (nint*)first[NextWord];
                    FreeDesc(first);
                    head = next == null ? 0 : (ulong)next | ChainTag;
                }
                Collapse(ref head);
                return;
            }
        }
        Debug.Fail("spte not in its pte list");
    }

    /// <summary>Empties the list, returning its descriptors.</summary>
    public void Clear(ref ulong head)
    {
        if ((head & ChainTag) != 0)
        {
            nint* desc = Desc(head);
            while (desc != null)
            {
                nint* next = (nint*)desc[NextWord];
                FreeDesc(desc);
                desc = next;
            }
        }
        head = 0;
    }

    /// <summary>Some element of a non-empty list.</summary>
    public static SpteRef First(ulong head)
    {
        Debug.Assert(head != 0, "empty pte list");
        return (head & ChainTag) == 0 ? SpteRef.FromAddress((nint)head) : SpteRef.FromAddress(Desc(head)[FirstSpteWord]);
    }

    /// <summary>Allocation-free enumeration; the list must not change meanwhile.</summary>
    public static Enumerator Enumerate(ulong head) => new(head);

    public void ReleaseAll()
    {
        foreach (nint page in _pages)
            _pool.FreePages((byte*)page, 1);
        _pages.Clear();
        _free = null;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static nint* Desc(ulong head)
    {
        Debug.Assert((head & ChainTag) != 0, "an inline head is not a descriptor");
        Debug.Assert(((head & ~ChainTag) & (DescWords * sizeof(ulong) - 1)) == 0, "a descriptor is 64-byte aligned in its pool page");
        return (nint*)(head & ~ChainTag);
    }

    private void Collapse(ref ulong head)
    {
        if ((head & ChainTag) == 0)
            return;
        nint* desc = Desc(head);
        if (desc[CountWord] == 1 && desc[NextWord] == 0)
        {
            head = (ulong)desc[FirstSpteWord];
            FreeDesc(desc);
        }
    }

    private nint* AllocateDesc()
    {
        if (_free == null)
            AddPage();
        nint* desc = _free;
        _free = (nint*)desc[NextWord];
        desc[NextWord] = 0;
        return desc;
    }

    private void FreeDesc(nint* desc)
    {
        for (int i = 0; i < DescWords; i++)
            desc[i] = 0;
        desc[NextWord] = (nint)_free;
        _free = desc;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddPage()
    {
        byte* page = _pool.AllocatePages(1);
        _pages.Add((nint)page);
        const int perPage = NativePagePool.PageSize / (DescWords * sizeof(ulong));
        for (int i = perPage - 1; i >= 0; i--)
        {
            nint* desc = (nint*)(page + i * DescWords * sizeof(ulong));
            desc[NextWord] = (nint)_free;
            _free = desc;
        }
    }

    public ref struct Enumerator
    {
        private nint _single;
        private nint* _desc;
        private int _index;
        private SpteRef _current;

        public Enumerator(ulong head)
        {
            _index = -1;
            if ((head & ChainTag) == 0)
                _single = (nint)head;
            else
                _desc = Desc(head);
        }

        public readonly SpteRef Current => _current;

        public readonly Enumerator GetEnumerator() => this;

        public bool MoveNext()
        {
            if (_single != 0)
            {
                _current = SpteRef.FromAddress(_single);
                _single = 0;
                return true;
            }
            while (_desc != null)
            {
                if (++_index < _desc[CountWord])
                {
                    _current = SpteRef.FromAddress(_desc[FirstSpteWord + _index]);
                    return true;
                }
                _desc = (nint*)_desc[NextWord];
                _index = -1;
            }
            return false;
        }
    }
}
