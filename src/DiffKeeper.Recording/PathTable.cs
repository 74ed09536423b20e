using System.Collections;
using System.Diagnostics.CodeAnalysis;
using DiffKeeper.Core;

namespace DiffKeeper.Recording;

/// <summary>
/// A table keyed by (root, root-relative path) that remembers its last lookup by the name string's identity: the
/// recorder handles one file's events one after another (a created file's CREATE, its version, its WRITE, that
/// version), and each asks the same tables for the same key, passing the one string the capture source made. A hit
/// costs a compare of two references instead of hashing the name and missing the cache in a table of every path.
/// Not thread-safe (the recorder's thread only); enumerating it while changing it is refused as by a Dictionary.
/// </summary>
internal sealed class PathTable<T> : IEnumerable<KeyValuePair<(int Root, string Rel), T>>
    where T : class
{
    private readonly Dictionary<(int Root, string Rel), T> _table = new(PathKeyComparer.Instance);

    // The last key looked up or changed, by reference, and what the table holds for it (null: nothing).
    private int _lastRoot;
    private string? _lastRel;
    private T? _last;

    public int Count => _table.Count;

    public Dictionary<(int Root, string Rel), T>.KeyCollection Keys => _table.Keys;

    public T this[(int Root, string Rel) key]
    {
        get => TryGetValue(key, out var value) ? value : throw new KeyNotFoundException($"{key.Root}:{key.Rel}");
        set
        {
            _table[key] = value;
            Remember(key, value);
        }
    }

    public bool TryGetValue((int Root, string Rel) key, [MaybeNullWhen(false)] out T value)
    {
        if (key.Root == _lastRoot && ReferenceEquals(key.Rel, _lastRel))
        {
            value = _last;
            return value is not null;
        }

        _table.TryGetValue(key, out value);
        Remember(key, value);
        return value is not null;
    }

    public T? GetValueOrDefault((int Root, string Rel) key) => TryGetValue(key, out var value) ? value : null;

    public bool Remove((int Root, string Rel) key) => Remove(key, out _);

    public bool Remove((int Root, string Rel) key, [MaybeNullWhen(false)] out T value)
    {
        var removed = _table.Remove(key, out value);
        Remember(key, null);
        return removed;
    }

    public void Clear()
    {
        _table.Clear();
        _lastRel = null;
        _last = null;
    }

    public IEnumerator<KeyValuePair<(int Root, string Rel), T>> GetEnumerator() => _table.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private void Remember((int Root, string Rel) key, T? value)
    {
        _lastRoot = key.Root;
        _lastRel = key.Rel;
        _last = value;
    }
}
