namespace DiffKeeper.Recording;

/// <summary>
/// A list that holds one item in place and allocates a <see cref="List{T}"/> only for a second: a followed copy of a
/// file keeps its data ranges and its chunks in two of these, and most files have one of each. As two lists of room for
/// one they were four objects per followed file, each copied by the collections that promoted it (20,000 creates:
/// the lists' constructors were among the largest allocators of the recorder's samples).
/// A mutable struct: use it only as a field, never through a copy.
/// </summary>
internal struct CompactList<T>
{
    private T _only;
    private bool _hasOnly;
    private List<T>? _many; // once made, every item lives here

    public readonly int Count => _many?.Count ?? (_hasOnly ? 1 : 0);

    public T this[int index]
    {
        readonly get => _many is not null ? _many[index] : _hasOnly && index == 0 ? _only : throw new ArgumentOutOfRangeException(nameof(index));
        set
        {
            if (_many is not null)
            {
                _many[index] = value;
            }
            else if (_hasOnly && index == 0)
            {
                _only = value;
            }
            else
            {
                throw new ArgumentOutOfRangeException(nameof(index));
            }
        }
    }

    public void Add(T item)
    {
        if (_many is not null)
        {
            _many.Add(item);
        }
        else if (!_hasOnly)
        {
            _only = item;
            _hasOnly = true;
        }
        else
        {
            _many = new List<T>(4) { _only, item };
            _only = default!;
            _hasOnly = false;
        }
    }

    public void Insert(int index, T item)
    {
        if (_many is null && Count == 0 && index == 0)
        {
            Add(item);
            return;
        }

        Many().Insert(index, item);
    }

    public void RemoveAt(int index)
    {
        if (_many is not null)
        {
            _many.RemoveAt(index);
        }
        else if (_hasOnly && index == 0)
        {
            _only = default!;
            _hasOnly = false;
        }
        else
        {
            throw new ArgumentOutOfRangeException(nameof(index));
        }
    }

    public void RemoveRange(int index, int count)
    {
        if (count > 0)
        {
            Many().RemoveRange(index, count);
        }
    }

    public void Clear()
    {
        _many?.Clear();
        _only = default!;
        _hasOnly = false;
    }

    private List<T> Many()
    {
        if (_many is null)
        {
            _many = new List<T>(4);
            if (_hasOnly)
            {
                _many.Add(_only);
                _only = default!;
                _hasOnly = false;
            }
        }

        return _many;
    }
}
