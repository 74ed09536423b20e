using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;
using static DiffKeeper.Capture.Fanotify.FanotifyAbi;

namespace DiffKeeper.Capture.Fanotify;

/// <summary>
/// fanotify with a filesystem mark on each root's file system, reporting directory file handles and names
/// (FAN_REPORT_DFID_NAME) and the target's handle (FAN_REPORT_TARGET_FID), read by a dedicated thread. Sees
/// every change on those file systems by any process, with its pid; events outside the roots are dropped here.
/// A directory handle is turned into a path with open_by_handle_at and /proc/self/fd; the handles of directories
/// created while recording are cached from their CREATE event, so a directory deleted before its events are
/// read still has a path (otherwise ESTALE). Like inotify, the recorder reads a file after its event: fanotify
/// merges events and carries no data. A queue overflow becomes <see cref="CaptureKind.Overflow"/>.
/// </summary>
public sealed unsafe class FanotifySource : ICaptureSource
{
    private const uint FAN_REPORT_FID = 0x200;
    private const uint FAN_REPORT_DIR_FID = 0x400;
    private const uint FAN_REPORT_NAME = 0x800;
    private const uint FAN_REPORT_TARGET_FID = 0x1000;
    private const uint FAN_MARK_FILESYSTEM = 0x100;
    private const ulong FAN_ATTRIB = 0x4;
    private const ulong FAN_CREATE = 0x100;
    private const ulong FAN_DELETE = 0x200;
    private const ulong FAN_RENAME = 0x10000000;
    private const ulong FAN_ONDIR = 0x40000000;
    private const byte InfoFid = 1;
    private const byte InfoDfidName = 2;
    private const byte InfoDfid = 3;
    private const byte InfoOldDfidName = 10;
    private const byte InfoNewDfidName = 12;

    private const ulong Mask = FAN_MODIFY | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_ONDIR;

    private readonly IReadOnlyList<string> _roots;
    private readonly PathFilter _filter;
    private readonly List<int> _mountFds = [];
    // Directory handle -> path (null: cannot be resolved, e.g. deleted before we asked). The mark covers whole
    // file systems, so most events are outside the roots: each directory is resolved once.
    private readonly Dictionary<string, string?> _directories = new(StringComparer.Ordinal);
    // A rename held until the next event (see Handle: an exchange is two renames back to back).
    private (string From, string To, bool IsDir, long Ts, int Pid)? _heldRename;
    private readonly Dictionary<int, string?> _comms = [];
    private int _fd = -1;
    private Thread? _thread;
    private ChannelWriter<CaptureEvent>? _sink;
    private readonly StopSignal _stop = new();
    private readonly DrainRequests _drains = new();

    public FanotifySource(IReadOnlyList<string> roots, PathFilter filter)
    {
        _roots = roots;
        _filter = filter;
    }

    public string Name => "fanotify";

    public bool ReportsExactNames => false;

    public bool FollowsProcessTree => false;

    public bool DrainsToNow => true;

    /// <summary>Completes once the reader has read the fanotify queue until it was empty, after this call.</summary>
    public Task DrainToNowAsync() => _thread is { IsAlive: true } ? _drains.Request(_stop.Wake) : Task.CompletedTask;

    public void Start(ChannelWriter<CaptureEvent> sink)
    {
        _sink = sink;
        _fd = Libc.FanotifyInit(FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME | FAN_REPORT_TARGET_FID,
            (uint)(Libc.O_RDONLY | O_LARGEFILE));
        if (_fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new DiffKeeperException(ExitCode.SystemError, errno == 1
                ? "fanotify capture needs CAP_SYS_ADMIN (root)"
                : $"fanotify capture is not available: {Libc.StrError(errno)} (errno {errno})");
        }

        foreach (var root in _roots)
        {
            if (Libc.FanotifyMark(_fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, Mask, Libc.AT_FDCWD, root) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new DiffKeeperException(ExitCode.SystemError, $"fanotify cannot mark the file system of {root}: {Libc.StrError(errno)} (errno {errno})");
            }

            var mountFd = Libc.Open(root, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0); // open_by_handle_at refuses O_PATH
            if (mountFd >= 0)
            {
                _mountFds.Add(mountFd);
            }
        }

        _thread = new Thread(ReadLoop) { IsBackground = true, Name = "fanotify reader" };
        _thread.Start();
    }

    public Task StopAsync()
    {
        _stop.Set();
        _thread?.Join();
        return Task.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        _stop.Set();
        _thread?.Join();
        foreach (var fd in _mountFds)
        {
            Libc.Close(fd);
        }

        _mountFds.Clear();
        if (_fd >= 0)
        {
            Libc.Close(_fd);
            _fd = -1;
        }

        _stop.Dispose();
        return ValueTask.CompletedTask;
    }

    private void ReadLoop()
    {
        var buffer = new byte[256 * 1024];
        while (true)
        {
            var stopping = _stop.IsSet;
            var drain = _drains.Requested;
            int n;
            fixed (byte* p = buffer)
            {
                n = (int)Libc.Read(_fd, p, buffer.Length);
                if (n > 0)
                {
                    Parse(p, n);
                    continue;
                }
            }

            // A read begun after the drain request found the queue empty: every event before it is in the sink.
            _drains.Complete(drain);
            if (stopping)
            {
                _drains.CompleteAll();
                return; // the queue is drained
            }

            if (_drains.Pending)
            {
                continue;
            }

            _stop.Wait(_fd, 1000);
        }
    }

    private void Parse(byte* data, int length)
    {
        var pos = 0;
        while (pos + MetadataSize <= length)
        {
            var e = new ReadOnlySpan<byte>(data + pos, length - pos);
            var eventLength = (int)BinaryPrimitives.ReadUInt32LittleEndian(e);
            if (eventLength < MetadataSize || eventLength > e.Length)
            {
                return;
            }

            Handle(data + pos, eventLength);
            pos += eventLength;
        }

        FlushHeldRename();
    }

    private void FlushHeldRename()
    {
        if (_heldRename is { } h)
        {
            _heldRename = null;
            Renamed(h.From, h.To, h.IsDir, h.Ts, h.Pid);
        }
    }

    private void Renamed(string oldPath, string newPath, bool isDir, long ts, int pid)
    {
        if (isDir)
        {
            MoveCachedDirectories(oldPath, newPath);
        }

        var from = Locate(oldPath);
        var to = Locate(newPath);
        if (from is { } a && to is { } b && a.Root == b.Root)
        {
            _sink!.TryWrite(new CaptureEvent(CaptureKind.Renamed, a.Root, a.Rel, b.Rel, isDir, ts, pid, Comm(pid)));
        }
        else
        {
            Emit(CaptureKind.Deleted, oldPath, from, isDir, ts, pid);
            Emit(CaptureKind.Created, newPath, to, isDir, ts, pid, CaptureEvent.MovedIn);
        }
    }

    private void Handle(byte* ev, int eventLength)
    {
        var e = new ReadOnlySpan<byte>(ev, eventLength);
        var metadataLength = BinaryPrimitives.ReadUInt16LittleEndian(e[6..]);
        var mask = BinaryPrimitives.ReadUInt64LittleEndian(e[8..]);
        var pid = BinaryPrimitives.ReadInt32LittleEndian(e[20..]);
        var ts = Stopwatch.GetTimestamp();
        if ((mask & FAN_Q_OVERFLOW) != 0)
        {
            _sink!.TryWrite(new CaptureEvent(CaptureKind.Overflow, 0, "", null, false, ts, Detail: "fanotify queue overflow: events were lost; rescanning"));
            return;
        }

        string? path = null, oldPath = null, newPath = null;
        byte* child = null;
        for (var pos = (int)metadataLength; pos + 4 <= eventLength;)
        {
            var type = ev[pos];
            var len = BinaryPrimitives.ReadUInt16LittleEndian(e[(pos + 2)..]);
            if (len < 4 || pos + len > eventLength)
            {
                break;
            }

            switch (type)
            {
                case InfoDfidName or InfoOldDfidName or InfoNewDfidName or InfoDfid:
                {
                    var named = DirectoryEntry(ev + pos, len, type != InfoDfid);
                    if (type == InfoOldDfidName)
                    {
                        oldPath = named;
                    }
                    else if (type == InfoNewDfidName)
                    {
                        newPath = named;
                    }
                    else
                    {
                        path = named;
                    }

                    break;
                }

                case InfoFid:
                    child = ev + pos;
                    break;
            }

            pos += len;
        }

        var isDir = (mask & FAN_ONDIR) != 0;
        if ((mask & FAN_RENAME) == 0)
        {
            FlushHeldRename();
        }

        if ((mask & FAN_CREATE) != 0 && path is not null)
        {
            if (isDir && child is not null)
            {
                _directories[HandleKey(child)] = path; // resolvable even after it is deleted
            }

            Emit(CaptureKind.Created, path, null, isDir, ts, pid);
        }

        if ((mask & FAN_RENAME) != 0 && oldPath is not null && newPath is not null)
        {
            // renameat2(RENAME_EXCHANGE) is reported as two renames back to back (a to b, then b to a): held until
            // the next event, a pair whose names are both still there (lstat: a dangling symlink is there) is one
            // exchange; so is a pair that moved a file one way and a directory the other (two renames move one
            // object back and forth). Two files, one name gone by now: the recorder decides by inode, as with inotify.
            bool certain;
            if (_heldRename is { } h && h.From == newPath && h.To == oldPath && Locate(oldPath) is { } x && Locate(newPath) is { } y &&
                x.Root == y.Root && ((certain = h.IsDir != isDir || (EntryStat.Lstat(oldPath) is not null && EntryStat.Lstat(newPath) is not null)) || !(isDir || h.IsDir)))
            {
                _heldRename = null;
                SwapCachedDirectories(oldPath, newPath);
                // Named in the order of the first rename (a to b), which two renames would replay first.
                _sink!.TryWrite(new CaptureEvent(CaptureKind.Exchanged, y.Root, y.Rel, x.Rel, isDir || h.IsDir, ts, pid, Comm(pid),
                    Detail: certain ? null : CaptureEvent.UncertainExchange));
            }
            else if (_heldRename is { } c && c.From == newPath && c.To == oldPath && Locate(oldPath) is var cx && Locate(newPath) is var cy &&
                (cx is null || cy is null || cx.Value.Root != cy.Value.Root) && (cx is not null || cy is not null) &&
                (c.IsDir != isDir || (EntryStat.Lstat(oldPath) is not null && EntryStat.Lstat(newPath) is not null)))
            {
                // An exchange across the roots' boundary: each name inside lost its entry (now at the other name) and
                // holds the other's, which moved in. The first rename moved c.IsDir's kind from c.From to c.To.
                _heldRename = null;
                SwapCachedDirectories(oldPath, newPath);
                Emit(CaptureKind.Deleted, c.To, cx, isDir, c.Ts, c.Pid);
                Emit(CaptureKind.Created, c.To, cx, c.IsDir, c.Ts, c.Pid, CaptureEvent.MovedIn);
                Emit(CaptureKind.Deleted, c.From, cy, c.IsDir, c.Ts, c.Pid);
                Emit(CaptureKind.Created, c.From, cy, isDir, c.Ts, c.Pid, CaptureEvent.MovedIn);
            }
            else
            {
                FlushHeldRename();
                _heldRename = (oldPath, newPath, isDir, ts, pid);
            }
        }

        if (path is null)
        {
            return;
        }

        if ((mask & FAN_MODIFY) != 0)
        {
            Emit(CaptureKind.Modified, path, null, isDir, ts, pid);
        }

        if ((mask & FAN_ATTRIB) != 0)
        {
            Emit(CaptureKind.Attributes, path, null, isDir, ts, pid);
        }

        if ((mask & FAN_CLOSE_WRITE) != 0)
        {
            Emit(CaptureKind.ClosedWrite, path, null, isDir, ts, pid);
        }

        if ((mask & FAN_DELETE) != 0)
        {
            Emit(CaptureKind.Deleted, path, null, isDir, ts, pid);
        }
    }

    // The program's name is looked up only for events under a root: a filesystem mark also reports every other
    // process on the file system, and a /proc read for each of those would only make the reader fall behind (and
    // a process that exits before its event is read has no name left to read).
    private void Emit(CaptureKind kind, string abs, (int Root, string Rel)? at, bool isDir, long ts, int pid, string? detail = null)
    {
        if ((at ?? Locate(abs)) is { } where)
        {
            _sink!.TryWrite(new CaptureEvent(kind, where.Root, where.Rel, null, isDir, ts, pid, Comm(pid), Detail: detail));
        }
    }

    /// <summary>The path of a DFID(_NAME) record: its directory's path, joined with its name when it has one.</summary>
    private string? DirectoryEntry(byte* record, int length, bool named)
    {
        // header (4), fsid (8), struct file_handle { u32 handle_bytes; s32 handle_type; u8 f_handle[]; }, name
        var handleBytes = (int)BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(record + 12, 4));
        var nameStart = 12 + 8 + handleBytes;
        if (nameStart > length)
        {
            return null;
        }

        var directory = ResolveDirectory(record);
        if (directory is null)
        {
            return null;
        }

        if (!named)
        {
            return directory;
        }

        var name = new ReadOnlySpan<byte>(record + nameStart, length - nameStart);
        var end = name.IndexOf((byte)0);
        var text = PathBytes.Decode(end < 0 ? name : name[..end]);
        return text.Length == 0 || text == "." ? directory : directory == "/" ? "/" + text : directory + "/" + text;
    }

    private string? ResolveDirectory(byte* record)
    {
        var key = HandleKey(record);
        if (_directories.TryGetValue(key, out var cached))
        {
            return cached;
        }

        string? path = null;
        foreach (var mountFd in _mountFds)
        {
            var fd = Libc.OpenByHandleAt(mountFd, record + 12, Libc.O_PATH | Libc.O_CLOEXEC);
            if (fd < 0)
            {
                continue;
            }

            // Also names a directory deeper than the kernel prints a descriptor's path (PATH_MAX).
            path = LongPath.PathOfDirectory(fd);
            Libc.Close(fd);
            break;
        }

        if (_directories.Count > 200_000)
        {
            _directories.Clear();
        }

        _directories[key] = path;
        return path;
    }

    private void SwapCachedDirectories(string x, string y)
    {
        foreach (var (key, path) in _directories.Where(kv => kv.Value is not null && (TracePath.IsAtOrBelow(kv.Value, x) || TracePath.IsAtOrBelow(kv.Value, y))).ToList())
        {
            _directories[key] = TracePath.IsAtOrBelow(path!, x) ? y + path![x.Length..] : x + path![y.Length..];
        }
    }

    private void MoveCachedDirectories(string from, string to)
    {
        foreach (var (key, path) in _directories.Where(kv => kv.Value is not null && TracePath.IsAtOrBelow(kv.Value, from)).ToList())
        {
            _directories[key] = to + path![from.Length..];
        }
    }

    /// <summary>fsid and file handle of a fid record, as a dictionary key.</summary>
    private static string HandleKey(byte* record)
    {
        var handleBytes = (int)BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(record + 12, 4));
        return Convert.ToHexString(new ReadOnlySpan<byte>(record + 4, 16 + Math.Min(handleBytes, 128)));
    }

    private string? Comm(int pid)
    {
        if (_comms.TryGetValue(pid, out var comm))
        {
            return comm;
        }

        try
        {
            comm = File.ReadAllText($"/proc/{pid}/comm").TrimEnd('\n');
        }
        catch (IOException)
        {
            comm = null; // already gone
        }

        if (_comms.Count > 10_000)
        {
            _comms.Clear();
        }

        _comms[pid] = comm;
        return comm;
    }

    /// <summary>The root and root-relative path of an absolute path; null outside every root or excluded.</summary>
    private (int Root, string Rel)? Locate(string abs)
    {
        for (var i = 0; i < _roots.Count; i++)
        {
            var root = _roots[i];
            var rel = root == "/" ? abs.TrimStart('/') : abs.Length > root.Length && TracePath.IsAtOrBelow(abs, root) ? abs[(root.Length + 1)..] : null;
            if (rel is not null)
            {
                return rel.Length == 0 || _filter.IsExcluded(i, rel) ? null : (i, rel);
            }
        }

        return null;
    }
}
