using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using DiffKeeper.Native.Interop;
using Microsoft.Win32.SafeHandles;
using static DiffKeeper.Capture.Fanotify.FanotifyAbi;

namespace DiffKeeper.Capture.Fanotify;

/// <summary>
/// Says whether the write events of the recorded tree (eBPF) are every change made to a file since it was last read,
/// so keep mode may read only the written blocks of a big file instead of every data extent. It vouches for a file
/// only when all of these hold since that read:
/// <list type="bullet">
/// <item>the file has been watched by a fanotify inode mark (open, modify, queue overflow) placed
/// before that read, and no such event came from a process outside the tree (<see cref="Refresh"/>): every write
/// through a syscall, io_uring or AIO by anyone is a modify event, and any other process must open the file first;</item>
/// <item>a scan of /proc made after the mark found no process outside the tree holding the file open for writing or
/// mapped shared (<see cref="ScanNewWatches"/>): those would need no open to write;</item>
/// <item>the file has one name (the tree's writes through another name would be events of that name);</item>
/// <item>no process of the tree ever made a shared mapping of a file opened for writing, an io_uring or an AIO
/// context (the eBPF program's count of them, <see cref="Refresh"/>): writes through those carry no event.</item>
/// </list>
/// A file it does not vouch for is read whole, as before. Not covered: writes by the kernel itself with no process
/// behind them (a loop device backed by the file). Keep mode asks it at each cut, with the tree stopped; `record`
/// asks it around each read of a file while the tree runs (Recording/LiveWriteWitness.cs). Not thread-safe: the
/// keep agent's loop or the recorder's consumer calls it.
/// </summary>
public sealed unsafe class WriteWitness : IDisposable
{
    private const ulong FAN_OPEN = 0x20;
    private const int O_ACCMODE = 3;

    private readonly int _fd;
    private readonly int _self = Environment.ProcessId;
    // Watched files. Dirty: an event from outside the tree came since the file's last read. Held: a process outside
    // the tree may hold it open or mapped (until a /proc scan made after the mark or that event says none does).
    private readonly Dictionary<(ulong Dev, ulong Ino), (bool Dirty, bool Held)> _files = [];
    private readonly HashSet<(ulong Dev, ulong Ino)> _unscanned = [];
    private bool _unseenWriters;
    // Refresh's read buffer, kept: `record` refreshes after every commit (a new 64 KiB array each time before).
    private byte[]? _events;

    private WriteWitness(int fd) => _fd = fd;

    /// <summary>A witness, or null (with the reason) when fanotify is unavailable: then no file is vouched for.</summary>
    public static WriteWitness? TryCreate(out string? reason)
    {
        var fd = Libc.FanotifyInit(FAN_CLOEXEC | FAN_NONBLOCK, (uint)(Libc.O_RDONLY | O_LARGEFILE | Libc.O_CLOEXEC));
        if (fd < 0)
        {
            reason = $"fanotify_init: {Libc.StrError(Marshal.GetLastPInvokeError())}";
            return null;
        }

        reason = null;
        return new WriteWitness(fd);
    }

    /// <summary>
    /// Starts watching the open file (its inode), if not watched yet, and counts it as read now: events read by
    /// later <see cref="Refresh"/> calls are counted against this read. Call it before the file's bytes are read.
    /// </summary>
    public void ReadNow(SafeFileHandle file)
    {
        if (Id(file) is not { } id)
        {
            return;
        }

        if (_files.TryGetValue(id, out var state))
        {
            _files[id] = state with { Dirty = false };
            if (state.Held)
            {
                _unscanned.Add(id); // held at the last look: look again after this read
            }

            return;
        }

        // Not close-after-write: it tells nothing an open or a modify did not (a process outside the tree writes the
        // file only after an open the mark reports, or holding it from before the mark, which the /proc scan finds, and
        // its write(2)s are modify events). And the tree's own processes close their files as they exit, after eBPF has
        // stopped following them (sched_process_exit comes before exit_files): read later, such a close tainted a file
        // the tree alone had written, and its last version was read whole (RecordBigFileTests, once in a CI run).
        if (Libc.FanotifyMarkFile(_fd, FAN_MARK_ADD, FAN_OPEN | FAN_MODIFY, (int)file.DangerousGetHandle()) != 0)
        {
            return; // not watched: never vouched for
        }

        _files[id] = (false, true); // held until a scan finds no process outside the tree holding it
        _unscanned.Add(id);
    }

    /// <summary>Whether the file's write events since its last <see cref="ReadNow"/> are all its changes (see the class comment).</summary>
    public bool Vouches(SafeFileHandle file)
    {
        // One name only: the write events of a file with another name may come under that name, not this path's.
        return !_unseenWriters && Id(file, out var links) is { } id && links == 1 && _files.TryGetValue(id, out var state) && state is { Dirty: false, Held: false };
    }

    /// <summary>
    /// Reads the events queued since the last call: each from a process not in <paramref name="tree"/> (nor this
    /// one) taints its file; an overflow taints every file. <paramref name="unseenWriters"/> is the eBPF program's
    /// count of the tree's shared writable mappings, io_urings and AIO contexts: once it is not 0, nothing is vouched
    /// for again in this session. Keep mode calls it with the tree stopped and its events drained, before the cut's
    /// reads; `record` before and after each read from written blocks.
    /// </summary>
    /// <returns>True the first time the count is not 0 (the caller says so once).</returns>
    public bool Refresh(Func<int, bool> tree, ulong unseenWriters)
    {
        var first = !_unseenWriters && unseenWriters != 0;
        _unseenWriters |= unseenWriters != 0;
        var buffer = _events ??= new byte[64 * 1024];
        while (true)
        {
            int n;
            fixed (byte* p = buffer)
            {
                n = (int)Libc.Read(_fd, p, buffer.Length);
            }

            if (n <= 0)
            {
                return first; // EAGAIN: the queue is empty
            }

            for (var pos = 0; pos + MetadataSize <= n;)
            {
                var e = buffer.AsSpan(pos, n - pos);
                var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(e);
                if (length < MetadataSize || length > e.Length)
                {
                    break;
                }

                var mask = BinaryPrimitives.ReadUInt64LittleEndian(e[8..]);
                var fd = BinaryPrimitives.ReadInt32LittleEndian(e[16..]);
                var pid = BinaryPrimitives.ReadInt32LittleEndian(e[20..]);
                pos += length;
                (ulong, ulong)? id = null;
                if (fd >= 0)
                {
                    using var handle = new SafeFileHandle(fd, ownsHandle: true);
                    id = Id(handle);
                }

                if ((mask & FAN_Q_OVERFLOW) != 0)
                {
                    foreach (var k in _files.Keys.ToList())
                    {
                        _files[k] = (true, true);
                        _unscanned.Add(k);
                    }
                }
                else if (pid != _self && !tree(pid) && id is { } key && _files.ContainsKey(key))
                {
                    // It may still hold the file (opened for writing, mapped): look after the next read.
                    _files[key] = (true, true);
                    _unscanned.Add(key);
                }
            }
        }
    }

    /// <summary>
    /// Looks through /proc for processes outside <paramref name="tree"/> that hold a file watched since the last
    /// scan open for writing or mapped shared (they could write it without an event); a file none holds is vouched
    /// for from its next read on. Call it after the tree continues: it reads every process's fd table and maps.
    /// </summary>
    /// <returns>Whether it scanned (false: no file was waiting for a scan).</returns>
    public bool ScanNewWatches(Func<int, bool> tree)
    {
        if (_unscanned.Count == 0)
        {
            return false;
        }

        var wanted = _unscanned.ToHashSet();
        _unscanned.Clear();
        var held = new HashSet<(ulong, ulong)>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid == _self || tree(pid))
            {
                continue;
            }

            try
            {
                HeldWritable(dir, wanted, held);
                MappedShared(dir, wanted, held);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // the process exited while being looked at
            }
        }

        foreach (var id in wanted)
        {
            if (_files.TryGetValue(id, out var state))
            {
                _files[id] = state with { Held = held.Contains(id) };
            }
        }

        return true;
    }

    private static void HeldWritable(string dir, HashSet<(ulong, ulong)> wanted, HashSet<(ulong, ulong)> held)
    {
        foreach (var link in Directory.EnumerateFiles(Path.Combine(dir, "fd")))
        {
            if (Libc.StatxCall(Libc.AT_FDCWD, link, 0, Libc.STATX_BASIC_STATS, out var st) != 0)
            {
                continue;
            }

            var id = (((ulong)st.DevMajor << 32) | st.DevMinor, st.Ino);
            if (!wanted.Contains(id))
            {
                continue;
            }

            var info = File.ReadAllLines(Path.Combine(dir, "fdinfo", Path.GetFileName(link)));
            var flags = info.FirstOrDefault(l => l.StartsWith("flags:", StringComparison.Ordinal));
            if (flags is null || (Convert.ToInt32(flags[6..].Trim(), 8) & O_ACCMODE) != Libc.O_RDONLY)
            {
                held.Add(id);
            }
        }
    }

    private static void MappedShared(string dir, HashSet<(ulong, ulong)> wanted, HashSet<(ulong, ulong)> held)
    {
        // "start-end perms offset major:minor inode path"; a shared mapping has 's' as the fourth perm character.
        foreach (var line in File.ReadLines(Path.Combine(dir, "maps")))
        {
            var f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 5 || f[1].Length < 4 || f[1][3] != 's')
            {
                continue;
            }

            var dev = f[3].Split(':');
            if (dev.Length == 2 &&
                uint.TryParse(dev[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var major) &&
                uint.TryParse(dev[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var minor) &&
                ulong.TryParse(f[4], NumberStyles.None, CultureInfo.InvariantCulture, out var ino) &&
                wanted.Contains((((ulong)major << 32) | minor, ino)))
            {
                held.Add((((ulong)major << 32) | minor, ino));
            }
        }
    }

    private static (ulong Dev, ulong Ino)? Id(SafeFileHandle file) => Id(file, out _);

    private static (ulong Dev, ulong Ino)? Id(SafeFileHandle file, out uint links)
    {
        var ok = Libc.StatxCall((int)file.DangerousGetHandle(), "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var st) == 0;
        links = ok ? st.Nlink : 0;
        return ok ? (((ulong)st.DevMajor << 32) | st.DevMinor, st.Ino) : null;
    }

    public void Dispose() => Libc.Close(_fd);
}
