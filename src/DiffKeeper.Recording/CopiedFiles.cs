namespace DiffKeeper.Recording;

/// <summary>
/// The files (device, inode) given a version from a followed copy since the last rescan (<see cref="Versioner"/>).
/// Such a version takes the file's stat when the sizes agree; after a loss (dropped write records) the copy may miss a
/// write while the stat is already the final one, so the rescan after a loss reads these files again, whatever their
/// stat. Only that rescan looks them up, and every recording's last scan asks with nearly always no loss: so a note is
/// an append to a list (a file's consecutive versions once), and the set is made only when a rescan wants it (a hash
/// set insert per version, and the set's doublings, were ~2 % of the eBPF recorder's CPU and 3.8 MB of its
/// allocations for 20,000 creates). Not thread-safe: the recorder's thread.
/// </summary>
internal sealed class CopiedFiles(int limit)
{
    private List<(ulong Device, ulong Inode)> _noted = [];
    private bool _overflow;

    /// <summary>
    /// Notes a file. When the list reaches twice the limit its repeats are folded (a log written all along is noted
    /// at every version); when the distinct files still reach <c>limit</c>, every file counts from then on (a keep-mode
    /// agent rescans only after a loss, and a churn of new files would otherwise grow this for days).
    /// </summary>
    public void Note(ulong device, ulong inode)
    {
        if (_overflow || (_noted.Count > 0 && _noted[^1] == (device, inode)))
        {
            return;
        }

        if (_noted.Count >= 2 * limit)
        {
            var distinct = new HashSet<(ulong, ulong)>(_noted);
            if (distinct.Count >= limit)
            {
                _overflow = true;
                _noted = []; // its memory back, not only its entries
                return;
            }

            _noted = [.. distinct];
        }

        _noted.Add((device, inode));
    }

    /// <summary>
    /// The files noted since the last call as a set when <paramref name="wanted"/> (empty otherwise), and <c>All</c>:
    /// more distinct files than the limit were noted, take every file. Forgets them.
    /// </summary>
    public (IReadOnlySet<(ulong Device, ulong Inode)> Files, bool All) Take(bool wanted)
    {
        var (noted, all) = (_noted, _overflow);
        _noted = [];
        _overflow = false;
        return (wanted && !all ? new HashSet<(ulong, ulong)>(noted) : Empty, all);
    }

    private static readonly HashSet<(ulong Device, ulong Inode)> Empty = [];
}
