using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Capture.Ebpf;

/// <summary>
/// Kernel-level capture of the recorded process tree: the programs of bpf/diffkeeper.bpf.c on the syscall
/// tracepoints and the scheduler's fork/exit tracepoints, read through a BPF ring buffer by a dedicated thread.
/// Sees every write, truncate and namespace change made by the tree anywhere, with pid and program, and the
/// written bytes of each write up to <see cref="MaxPayload"/> (larger ones are read back: no payload).
/// This process registers itself as "propagate to children, do not record", so only the command it starts
/// (and everything that forks from it, even a daemon that double-forks away) is recorded. Drops of the ring
/// buffer are counted in the kernel and reported as <see cref="CaptureKind.Overflow"/>.
/// Invisible to syscall tracing: writes through shared mappings, io_uring and AIO (the final reconcile scan
/// catches their result); the kernel side counts the tree's openings of those (<see cref="UnseenWriters"/>), and
/// reports splice into a file and clone/dedupe ioctls onto one as changes to read back.
/// </summary>
public sealed unsafe class EbpfSource : ICaptureSource
{
    private const byte TrackRecord = 1;
    private const byte TrackPropagateOnly = 2;
    private const string ResourceName = "DiffKeeper.Capture.diffkeeper.bpf.o";
    private const string VmlinuxBtf = "/sys/kernel/btf/vmlinux";
    private static readonly string[] Programs = DkEbpf.Programs;

    private readonly IReadOnlyList<string> _roots;
    private readonly PathFilter _filter;
    private readonly Dictionary<(uint Dev, ulong Ino), string> _pathByInode = [];
    private readonly Dictionary<string, (uint Dev, ulong Ino)> _inodeByPath = new(StringComparer.Ordinal);
    private readonly Dictionary<int, (string Path, EbpfRecordFlags Flags)> _renameFrom = [];
    private readonly Dictionary<int, string> _linkFrom = [];
    private const int FallocAllocate = 0;
    private const int FallocKeepSize = 1;
    private const int FallocPunchHole = 3; // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (the only way to punch)
    // Inodes remembered under more than one name (hard links): forgetting one name falls back to another.
    private readonly HashSet<(uint Dev, ulong Ino)> _aliased = [];
    // A symlink's target, sent just before its K_SYMLINK by the same thread.
    private readonly Dictionary<int, string> _symlinkTarget = [];
    private readonly List<BpfLinkHandle> _links = [];
    private BpfObjectHandle? _object;
    // Loaded through the light skeleton (then _object stays null), else through libbpf's loader.
    private LightSkeletonHandle? _skeleton;
    private RingBufferHandle? _ring;
    private GCHandle _self;
    private void* _objectBytes;
    private int _dropsFd = -1;
    private int _unseenFd = -1;
    private int _trackedFd = -1;
    private ulong _drops;
    private int _cpus;
    private Thread? _thread;
    private ChannelWriter<CaptureEvent>? _sink;
    // Wakes the reader out of its wait at once for a stop or a drain (it waited out its 10 ms poll before: up to
    // 10 ms added to the end of every recording and to every keep-mode cut).
    private StopSignal? _stop;
    private readonly DrainRequests _drains = new();

    public EbpfSource(IReadOnlyList<string> roots, PathFilter filter)
    {
        _roots = roots;
        _filter = filter;
    }

    public string Name => "ebpf";

    public bool ReportsExactNames => true;

    public bool FollowsProcessTree => true;

    public bool DrainsToNow => true;

    /// <summary>
    /// Completes once the reader has consumed the ring buffer to empty after this call (a record the kernel
    /// submitted before it is then in the sink). The request wakes the reader out of its wait.
    /// </summary>
    public Task DrainToNowAsync() => _thread is { IsAlive: true } ? _drains.Request(_stop!.Wake) : Task.CompletedTask;

    /// <summary>Bytes of a write carried to user space with its event (at most 256 KiB, the kernel side's limit).</summary>
    public int MaxPayload { get; init; } = 256 * 1024;

    /// <summary>Pending ring buffer bytes that wake the reader at once (otherwise it wakes every few ms).</summary>
    public int WakeBytes { get; init; } = 256 * 1024;

    /// <summary>Size of the ring buffer between the kernel and the reader: a power of two, at least a page.</summary>
    public int RingBytes { get; init; } = 64 << 20;

    /// <summary>Why this backend cannot run here (checked before trying to load), or null.</summary>
    public static string? Unavailable()
    {
        var status = File.ReadAllLines("/proc/self/status");
        if (!HasTracingCapabilities(status))
        {
            return "not root (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)";
        }

        if (!File.Exists(VmlinuxBtf))
        {
            return "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing)";
        }

        // Left loaded: Load uses it next, and unloading it here made that map libbpf, libelf and libz a second time.
        if (!NativeLibrary.TryLoad("libbpf.so.1", out _))
        {
            return "libbpf.so.1 is not installed (apt install libbpf1)";
        }

        if (status.FirstOrDefault(l => l.StartsWith("NSpid:", StringComparison.Ordinal)) is { } nspid &&
            nspid.Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries).Length > 2)
        {
            return "running in a nested PID namespace (the kernel's process ids differ from ours)";
        }

        return null;
    }

    public void Start(ChannelWriter<CaptureEvent> sink)
    {
        _sink = sink;
        if (Unavailable() is { } reason)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"eBPF capture is not available: {reason}");
        }

        Load();
        _stop = new StopSignal();
        _thread = new Thread(ReadLoop) { IsBackground = true, Name = "ebpf reader" };
        _thread.Start();
    }

    public Task StopAsync()
    {
        _stop?.Set();
        _thread?.Join();
        ReleaseRing();
        return Task.CompletedTask;
    }

    /// <summary>
    /// The reader is gone: nothing reads the ring any more, and its mapping (its size twice over: 3–4 ms of page-table
    /// teardown for 64 MiB on this VM) is released on a pool thread, beside the recorder's last work. The programs
    /// stay attached until dispose: the witness reads <c>tracked</c> and <c>unseen</c> after this, and they must
    /// still follow forks, exits and shared mappings of what the command left running.
    /// </summary>
    private void ReleaseRing()
    {
        if (_ring is { } ring && _ringReleased is null)
        {
            _ringReleased = Task.Run(ring.Dispose);
        }
    }

    private Task? _ringReleased;

    public ValueTask DisposeAsync()
    {
        _stop?.Set();
        _thread?.Join();
        _stop?.Dispose();
        foreach (var link in _links)
        {
            link.Dispose();
        }

        _links.Clear();
        ReleaseRing();
        _ringReleased?.GetAwaiter().GetResult();
        _slabs.Dispose(); // the reader is gone; slabs still held by events are unmapped when they are collected
        _object?.Dispose();
        _skeleton?.Dispose(); // detaches the programs and closes the maps
        if (_self.IsAllocated)
        {
            _self.Free();
        }

        if (_objectBytes is not null)
        {
            NativeMemory.Free(_objectBytes);
            _objectBytes = null;
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Where a line goes saying why the light skeleton was not used (libbpf's loader was), once per start; null
    /// says nothing (record --verbose sets it).
    /// </summary>
    public TextWriter? Notes { get; init; }

    /// <summary>Set to <c>libbpf</c>, the start skips the light skeleton (to compare the loaders, or to get round a kernel that mishandles it).</summary>
    public const string LoaderVariable = "DIFFKEEPER_EBPF_LOADER";

    private void Load()
    {
        _cpus = Math.Max(1, LibBpf.NumPossibleCpus());
        var why = Environment.GetEnvironmentVariable(LoaderVariable) == "libbpf" ? $"{LoaderVariable}=libbpf" : LoadLightSkeleton();
        if (why is not null)
        {
            Notes?.WriteLine($"diffkeeper: capture: ebpf: not using the light-skeleton loader ({why}); loading with libbpf");
            LoadWithLibbpf();
        }

        _dropsFd = MapFd("drops");
        _unseenFd = MapFd("unseen");
        _trackedFd = MapFd("tracked");
        _self = GCHandle.Alloc(this);
        _ring = LibBpf.RingBufferNew(MapFd("events"), &OnRecord, GCHandle.ToIntPtr(_self), 0);
        if (_ring.IsInvalid)
        {
            throw Refused("cannot open the eBPF ring buffer", Marshal.GetLastPInvokeError());
        }
    }

    private int MapFd(string name) => _skeleton is { } skeleton ? DkEbpf.MapFd(skeleton, name) : LibBpf.MapFdByName(_object!, name);

    /// <summary>
    /// Loads, configures and attaches the programs through the light skeleton (native/ebpf_skeleton.c): the kernel
    /// resolves the CO-RE relocations and BTF ids against the BTF it holds, so the start skips libbpf's parse of the
    /// kernel's BTF. Null once attached; otherwise why not, with nothing left loaded.
    /// </summary>
    private string? LoadLightSkeleton()
    {
        LightSkeletonHandle? skeleton;
        int error, stage;
        try
        {
            skeleton = DkEbpf.Load((uint)RingBytes, (uint)_cpus, out error, out stage);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return $"{e.GetType().Name}: {e.Message}"; // a JIT run without libdkebpf.so beside it
        }

        if (skeleton is null)
        {
            if (stage == DkEbpf.StageOpen)
            {
                // The stub of a build without the skeleton fails here with ENOSYS; the real one only without memory.
                return error == -Libc.ENOSYS ? "this diffkeeper was built without it" : $"opening the skeleton: {Libc.StrError(-error)} (errno {-error})";
            }

            return $"the loader program: {Libc.StrError(-error)} (errno {-error})";
        }

        _skeleton = skeleton;
        try
        {
            Configure();
            var attached = DkEbpf.Attach(skeleton, out var failed);
            if (attached != 0)
            {
                throw Refused($"the kernel refused to attach eBPF program {DkEbpf.Programs[Math.Max(failed, 0)]}", -attached);
            }

            return null;
        }
        catch (DiffKeeperException e)
        {
            _skeleton = null;
            skeleton.Dispose();
            return e.Message;
        }
    }

    /// <summary>libbpf's loader (bpf_object__load), which parses the kernel's BTF in user space for CO-RE and the attach ids.</summary>
    private void LoadWithLibbpf()
    {
        using var resource = typeof(EbpfSource).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new DiffKeeperException(ExitCode.Failure, "this diffkeeper was built without its eBPF program (bpf/build.sh did not run)");
        var size = (int)resource.Length;
        _objectBytes = NativeMemory.Alloc((nuint)size); // libbpf keeps pointers into the ELF image while the object lives
        resource.ReadExactly(new Span<byte>(_objectBytes, size));
        LibBpf.SetPrint(0); // libbpf's own messages go to stderr; our errors say what failed instead
        _object = LibBpf.ObjectOpenMem(_objectBytes, (nuint)size, 0);
        if (_object.IsInvalid)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw Refused("libbpf cannot open the eBPF object", errno);
        }

        if (!LibBpf.SetMaxEntries(_object, "scratch", (uint)_cpus))
        {
            throw new DiffKeeperException(ExitCode.Failure, "the eBPF object has no 'scratch' map");
        }

        if (!LibBpf.SetMaxEntries(_object, "events", (uint)RingBytes))
        {
            throw new DiffKeeperException(ExitCode.Usage, $"the eBPF ring buffer cannot be {RingBytes} bytes (a power of two, at least a page)");
        }

        int loaded;
        // libbpf reads the kernel's BTF into a fresh buffer and copies it into another (2 x 5.4 MB here): on a VM
        // whose page faults are traps, ~2,700 faults. Populated in one call beforehand, they cost a fraction.
        using (HeapPrefault.Reserve((nuint)(2 * new FileInfo(VmlinuxBtf).Length + (1 << 20))))
        {
            loaded = LibBpf.ObjectLoad(_object);
        }

        if (loaded < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw Refused("the kernel refused to load the eBPF programs", errno != 0 ? errno : -loaded);
        }

        Configure();
        foreach (var name in Programs)
        {
            var link = LibBpf.Attach(_object, name);
            if (link.IsInvalid)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw Refused($"the kernel refused to attach eBPF program {name}", errno);
            }

            _links.Add(link);
        }
    }

    /// <summary>Writes the settings and registers this process, before the programs are attached.</summary>
    private void Configure()
    {
        // Wake the reader once a quarter of the ring is pending, however small the ring.
        var wake = (uint)Math.Min(WakeBytes, RingBytes / 4);
        var settings = new Settings { MaxPayload = (uint)Math.Clamp(MaxPayload, 0, 256 * 1024), WakeBytes = wake };
        var zero = 0u;
        if (LibBpf.MapUpdateElem(MapFd("settings"), &zero, &settings, LibBpf.BPF_ANY) != 0)
        {
            throw Refused("cannot configure the eBPF programs", Marshal.GetLastPInvokeError());
        }

        // This process forwards tracking to the command it starts but is not recorded itself (its trace writes).
        var self = (uint)Environment.ProcessId;
        var track = TrackPropagateOnly;
        if (LibBpf.MapUpdateElem(MapFd("tracked"), &self, &track, LibBpf.BPF_ANY) != 0)
        {
            throw Refused("cannot register the recorder with the eBPF programs", Marshal.GetLastPInvokeError());
        }
    }

    private static DiffKeeperException Refused(string what, int errno) =>
        new(ExitCode.SystemError, $"{what}: {Libc.StrError(errno)} (errno {errno})");

    private void ReadLoop()
    {
        var epollFd = LibBpf.RingBufferEpollFd(_ring!);
        while (true)
        {
            var stopping = _stop!.IsSet;
            var drain = _drains.Requested;
            if (!_drains.Pending)
            {
                // The kernel side wakes us only once WakeBytes are pending; the timeout picks up the rest. The
                // ring's epoll set is readable when the ring is; the consume below reads it either way.
                _stop.Wait(epollFd, 10);
            }

            // Consumes every record submitted so far, so also every one submitted before the drain request.
            LibBpf.RingBufferConsume(_ring!);
            CheckDrops();
            _drains.Complete(drain);
            if (stopping)
            {
                // Every record the command's syscalls produced was in the ring before it exited: drained.
                _drains.CompleteAll();
                return;
            }
        }
    }

    /// <summary>The kernel side's count of the tree's mmaps of files opened for writing, io_uring and AIO contexts (its `unseen` map).</summary>
    public ulong? UnseenWriters
    {
        get
        {
            ulong value = 0;
            var zero = 0u;
            // Not readable: as unsafe as it can be.
            return _unseenFd >= 0 && LibBpf.MapLookupElem(_unseenFd, &zero, &value) == 0 ? value : ulong.MaxValue;
        }
    }

    /// <inheritdoc />
    public bool InTree(int pid)
    {
        var key = (uint)pid;
        byte value = 0;
        return _trackedFd >= 0 && LibBpf.MapLookupElem(_trackedFd, &key, &value) == 0 && value == TrackRecord;
    }

    private void CheckDrops()
    {
        var values = stackalloc ulong[_cpus];
        var zero = 0u;
        if (LibBpf.MapLookupElem(_dropsFd, &zero, values) != 0)
        {
            return;
        }

        ulong total = 0;
        for (var i = 0; i < _cpus; i++)
        {
            total += values[i];
        }

        if (total > _drops)
        {
            var lost = total - _drops;
            _drops = total;
            Emit(new CaptureEvent(CaptureKind.Overflow, 0, "", null, false, Stopwatch.GetTimestamp(),
                Detail: $"eBPF ring buffer full: {lost} events were lost; rescanning"));
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnRecord(nint context, void* data, nuint size)
    {
        var source = (EbpfSource)GCHandle.FromIntPtr(context).Target!;
        try
        {
            var record = new ReadOnlySpan<byte>(data, (int)size);
            RecordTap?.Invoke(record);
            source.Handle(record);
        }
        catch (Exception e) when (IsUndecodable(e))
        {
            // Never let an exception cross into libbpf: report the record as lost so the recorder rescans.
            source.Emit(new CaptureEvent(CaptureKind.Overflow, 0, "", null, false, Stopwatch.GetTimestamp(),
                Detail: $"an eBPF record could not be decoded ({e.Message}); rescanning"));
        }

        return 0;
    }

    private void Emit(in CaptureEvent e) => _sink!.TryWrite(e);

    /// <summary>Sees every ring buffer record before it is decoded (fuzz/: the seed corpus is real records); null in the product.</summary>
    internal static RawRecordTap? RecordTap { get; set; }

    /// <summary>
    /// The failures of decoding one record that the reader thread reports as a loss (then the recorder rescans);
    /// any other exception is a bug in the decoder.
    /// </summary>
    internal static bool IsUndecodable(Exception e) =>
        e is ArgumentException or InvalidOperationException or IOException or DecoderFallbackException;

    /// <summary>
    /// Decodes one record as the reader thread does, into <paramref name="sink"/>, with the state earlier records
    /// left (open files, pending renames); what fuzz/ drives with arbitrary bytes.
    /// </summary>
    internal void Decode(ReadOnlySpan<byte> record, ChannelWriter<CaptureEvent> sink)
    {
        _sink = sink;
        Handle(record);
    }

    private void Handle(ReadOnlySpan<byte> data)
    {
        if (!EbpfRecord.TryRead(data, out var r))
        {
            throw new InvalidOperationException($"a record of {data.Length} bytes is shorter than its lengths");
        }

        var kind = r.Kind;
        if (kind == EbpfRecordKind.SymlinkTarget)
        {
            _symlinkTarget[r.ThreadId] = PathBytes.Decode(r.UserPath);
            return;
        }

        if (r.Flags.HasFlag(EbpfRecordFlags.PathTruncated))
        {
            // Deeper than the kernel side walks (16 KiB or 1024 names): the change is not lost, a rescan finds it.
            Emit(new CaptureEvent(CaptureKind.Overflow, 0, "", null, false, ToStopwatch(r.TimeNs),
                Detail: "a changed path is longer than the 16 KiB the eBPF program walks; rescanning"));
            return;
        }

        var abs = AbsolutePath(r);
        var inode = (r.Device, r.Inode);
        if (kind is EbpfRecordKind.Open or EbpfRecordKind.Write or EbpfRecordKind.Changed or EbpfRecordKind.Copy || (kind is EbpfRecordKind.Truncate or EbpfRecordKind.Chmod && r.UserPath.IsEmpty))
        {
            // fd-based: the kernel sends the path with the first event of an open file; later ones only the inode.
            if (abs is not null)
            {
                Remember(inode, abs);
            }
            else if (!_pathByInode.TryGetValue(inode, out abs))
            {
                return; // a file opened before recording started, outside every root
            }
        }

        if (abs is null)
        {
            return;
        }

        var ts = ToStopwatch(r.TimeNs);
        var pid = r.ProcessId;
        var comm = CommOf(r);
        switch (kind)
        {
            case EbpfRecordKind.Open:
                if (r.Flags.HasFlag(EbpfRecordFlags.Created))
                {
                    EmitAt(abs, CaptureKind.Created, ts, pid, comm, knownEmpty: true, mode: r.Mode == 0 ? null : r.Mode & 0xFFF,
                        fileId: (StatDevice(r.Device, abs, r.Inode), r.Inode));
                }
                else if (r.Flags.HasFlag(EbpfRecordFlags.Truncated))
                {
                    EmitAt(abs, CaptureKind.Truncated, ts, pid, comm, offset: 0);
                }

                return;
            case EbpfRecordKind.Write:
                EmitAt(abs, CaptureKind.Written, ts, pid, comm, offset: r.Offset, length: r.Length,
                    payload: PayloadOf(r));
                return;
            case EbpfRecordKind.Changed when r.Flags.HasFlag(EbpfRecordFlags.Fallocate) && ((int)r.Flags >> 8) is FallocPunchHole or FallocAllocate or FallocKeepSize:
            {
                // fallocate: a punched hole, or an allocation (which changes no byte, and the size only when it
                // extends the file without KEEP_SIZE), is applied to the recorder's copy like a write. Either carries
                // its range (the syscall's offset and len; the kernel refused the call unless both were valid).
                var mode = (int)r.Flags >> 8;
                EmitAt(abs, mode == FallocPunchHole ? CaptureKind.Punched : CaptureKind.Allocated, ts, pid, comm, offset: r.Offset, length: r.Length,
                    keepSize: mode != FallocAllocate);
                return;
            }

            case EbpfRecordKind.Changed:
                EmitAt(abs, CaptureKind.Modified, ts, pid, comm);
                return;
            case EbpfRecordKind.Copy when r.TryCopySource(out var sourceDevice, out var sourceInode, out var sourceOffset, out var sourceBytes):
            {
                var sourcePath = sourceBytes.IsEmpty ? null : PathBytes.Decode(sourceBytes);
                EmitAt(abs, CaptureKind.Copied, ts, pid, comm, offset: r.Offset, length: r.Length,
                    source: new CopiedFrom((StatDevice(sourceDevice, sourcePath, sourceInode), sourceInode), sourceOffset, sourcePath, sourcePath is null ? null : LocateAnew(sourcePath),
                        Sized: r.Flags.HasFlag(EbpfRecordFlags.Sized)));
                return;
            }
            case EbpfRecordKind.Copy:
                EmitAt(abs, CaptureKind.Modified, ts, pid, comm); // the source or an offset unknown: read the file
                return;
            case EbpfRecordKind.Truncate:
                EmitAt(abs, CaptureKind.Truncated, ts, pid, comm, offset: r.Offset);
                return;
            case EbpfRecordKind.Chmod:
                // fchmod: the inode's mode after it; chmod of a path: the mode asked for (the kernel keeps its 07777 bits).
                EmitAt(abs, CaptureKind.Attributes, ts, pid, comm, mode: (int)((r.Mode != 0 ? r.Mode : r.Offset) & 0xFFF));
                return;
            case EbpfRecordKind.Unlink:
                Forget(abs);
                EmitAt(abs, CaptureKind.Deleted, ts, pid, comm);
                return;
            case EbpfRecordKind.Rmdir:
                EmitAt(abs, CaptureKind.Deleted, ts, pid, comm, isDirectory: true);
                return;
            case EbpfRecordKind.Mkdir:
                EmitAt(abs, CaptureKind.Created, ts, pid, comm, isDirectory: true, mode: (int)(r.Offset & 0xFFF));
                return;
            case EbpfRecordKind.Symlink:
                EmitAt(abs, CaptureKind.Created, ts, pid, comm, target: _symlinkTarget.Remove(r.ThreadId, out var target) ? target : null);
                return;
            case EbpfRecordKind.LinkFrom:
                _linkFrom[r.ThreadId] = abs;
                return;
            case EbpfRecordKind.Link:
                if (_linkFrom.Remove(r.ThreadId, out var existing) && Locate(existing) is { } x && Locate(abs) is { } y && x.Root == y.Root)
                {
                    Emit(new CaptureEvent(CaptureKind.Linked, x.Root, x.Rel, y.Rel, false, ts, pid, comm));
                }
                else
                {
                    EmitAt(abs, CaptureKind.Created, ts, pid, comm); // from outside the roots: read it
                }

                return;
            case EbpfRecordKind.RenameFrom:
                _renameFrom[r.ThreadId] = (abs, r.Flags);
                return;
            case EbpfRecordKind.RenameTo:
                if (_renameFrom.Remove(r.ThreadId, out var from))
                {
                    Renamed(from.Path, abs, r.Flags.HasFlag(EbpfRecordFlags.Exchange), ts, pid, comm);
                }

                return;
        }
    }

    private void Renamed(string from, string to, bool exchange, long ts, int pid, string comm)
    {
        var isDirectory = IsDirectoryAt(to);
        if (exchange)
        {
            // Both names now hold the other's entry.
            SwapRemembered(from, to);
            if (Locate(from) is { } p && Locate(to) is { } q && p.Root == q.Root)
            {
                Emit(new CaptureEvent(CaptureKind.Exchanged, p.Root, p.Rel, q.Rel, isDirectory, ts, pid, comm));
                return;
            }

            // Across the roots' boundary: each name inside lost its entry (now at the other name) and holds the
            // other's, which moved in. Each one's kind is looked at where it is now.
            var fromIsDirectory = IsDirectoryAt(from);
            EmitAt(from, CaptureKind.Deleted, ts, pid, comm, isDirectory: isDirectory);
            EmitAt(from, CaptureKind.Created, ts, pid, comm, isDirectory: fromIsDirectory, detail: CaptureEvent.MovedIn);
            EmitAt(to, CaptureKind.Deleted, ts, pid, comm, isDirectory: fromIsDirectory);
            EmitAt(to, CaptureKind.Created, ts, pid, comm, isDirectory: isDirectory, detail: CaptureEvent.MovedIn);
            return;
        }

        MoveRemembered(from, to, isDirectory);
        var a = Locate(from);
        var b = Locate(to);
        if (a is { } x && b is { } y && x.Root == y.Root)
        {
            Emit(new CaptureEvent(CaptureKind.Renamed, x.Root, x.Rel, y.Rel, isDirectory, ts, pid, comm));
        }
        else
        {
            EmitAt(from, CaptureKind.Deleted, ts, pid, comm, isDirectory: isDirectory);
            EmitAt(to, CaptureKind.Created, ts, pid, comm, isDirectory: isDirectory, detail: CaptureEvent.MovedIn);
        }
    }

    private static bool IsDirectoryAt(string abs)
    {
        try
        {
            return Scan.EntryStat.Lstat(abs)?.Kind == EntryKind.Directory;
        }
        catch (IOException)
        {
            return false; // not stat-able (a permission): as a file, whose name is re-read
        }
    }

    private void EmitAt(string abs, CaptureKind kind, long ts, int pid, string comm, bool isDirectory = false,
        long offset = 0, long length = 0, ReadOnlyMemory<byte>? payload = null, bool knownEmpty = false, int? mode = null, string? target = null,
        (ulong, ulong)? fileId = null, bool keepSize = false, string? detail = null, CopiedFrom? source = null)
    {
        if (Locate(abs) is { } at)
        {
            Emit(new CaptureEvent(kind, at.Root, at.Rel, null, isDirectory, ts, pid, comm, offset, length, payload, knownEmpty, detail, Mode: mode, Target: target,
                FileId: fileId, KeepSize: keepSize, Source: source));
        }
    }

    // The device stat gives for files of a kernel superblock device, learned once per device (see StatDevice).
    private readonly Dictionary<uint, ulong> _statDevices = [];

    /// <summary>
    /// The device stat gives for the file <paramref name="inode"/> at <paramref name="path"/>, whose superblock's
    /// dev_t (12-bit major, 20-bit minor) the kernel side sent: the same number on most file systems, but btrfs gives
    /// stat a subvolume's own device, so a file's id from the kernel never matched its stat there (every file the
    /// recorder followed was read again by the final reconcile, one spurious version each). Learned from one lstat
    /// per device whose inode agrees; otherwise the dev_t as statx would split it (major in the high 32 bits). A
    /// second btrfs subvolume under the same superblock is given the first one's device (its files are read again by
    /// the reconcile, as before); taking each file's own lstat instead gave files gone before their event was
    /// handled the kernel's number, a spurious reconcile on file systems where stat's device is not the kernel's.
    /// </summary>
    private ulong StatDevice(uint dev, string? path, ulong inode)
    {
        if (_statDevices.TryGetValue(dev, out var known))
        {
            return known;
        }

        var split = ((ulong)(dev >> 20) << 32) | (dev & 0xFFFFF);
        if (path is not null && EntryStat.Lstat(path) is { } st && st.Inode == inode)
        {
            _statDevices[dev] = st.Device;
            return st.Device;
        }

        return split;
    }

    // The last path located, by reference: an open file's records all carry the one string remembered for its inode,
    // so a run of writes to one file takes its root-relative name (a new string each time) once.
    private string? _locatedAbs;
    private (int Root, string Rel)? _located;

    /// <summary>The root and root-relative path of an absolute path; null outside every root or excluded.</summary>
    private (int Root, string Rel)? Locate(string abs)
    {
        if (!ReferenceEquals(abs, _locatedAbs))
        {
            _located = LocateAnew(abs);
            _locatedAbs = abs;
        }

        return _located;
    }

    private (int Root, string Rel)? LocateAnew(string abs)
    {
        for (var i = 0; i < _roots.Count; i++)
        {
            var root = _roots[i];
            if (root == "/")
            {
                var rel = abs.TrimStart('/');
                return rel.Length == 0 || _filter.IsExcluded(i, rel) ? null : (i, rel);
            }

            if (abs.Length > root.Length && TracePath.IsAtOrBelow(abs, root))
            {
                var rel = abs[(root.Length + 1)..];
                return _filter.IsExcluded(i, rel) ? null : (i, rel);
            }
        }

        return null;
    }

    private void Remember((uint, ulong) inode, string abs)
    {
        if (_pathByInode.TryGetValue(inode, out var old) && old != abs)
        {
            _aliased.Add(inode); // another name of the file (a hard link), or a name it left unseen
        }

        _pathByInode[inode] = abs;
        _inodeByPath[abs] = inode;
    }

    private void Forget(string abs)
    {
        if (!_inodeByPath.Remove(abs, out var inode) || !_pathByInode.TryGetValue(inode, out var current) || current != abs)
        {
            return;
        }

        // An fd opened through another name of a hard-linked file still writes to it: keep that name.
        var other = _aliased.Contains(inode) ? _inodeByPath.FirstOrDefault(kv => kv.Value == inode).Key : null;
        if (other is not null)
        {
            _pathByInode[inode] = other;
            return;
        }

        _pathByInode.Remove(inode);
        _aliased.Remove(inode);
    }

    private void SwapRemembered(string x, string y)
    {
        var names = _inodeByPath.Keys.Where(k => TracePath.IsAtOrBelow(k, x) || TracePath.IsAtOrBelow(k, y)).ToList();
        var inodes = names.Select(n => _inodeByPath[n]).ToList();
        foreach (var n in names)
        {
            _inodeByPath.Remove(n);
        }

        for (var i = 0; i < names.Count; i++)
        {
            var swapped = TracePath.IsAtOrBelow(names[i], x) ? y + names[i][x.Length..] : x + names[i][y.Length..];
            _inodeByPath[swapped] = inodes[i];
            if (_pathByInode.TryGetValue(inodes[i], out var current) && current == names[i])
            {
                _pathByInode[inodes[i]] = swapped;
            }
        }
    }

    private void Move(string from, string to)
    {
        if (_inodeByPath.Remove(from, out var inode))
        {
            _inodeByPath[to] = inode;
            if (_pathByInode.TryGetValue(inode, out var current) && current == from)
            {
                _pathByInode[inode] = to;
            }
        }
    }

    private void MoveRemembered(string from, string to, bool isDirectory)
    {
        Forget(to); // replaced
        if (!isDirectory)
        {
            Move(from, to);
            return;
        }

        var prefix = from + "/";
        foreach (var path in _inodeByPath.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList())
        {
            Move(path, to + path[from.Length..]);
        }
    }

    // The last command name decoded, and its bytes: one process makes runs of records, each carrying its name. They
    // start as the name of all-zero bytes, "".
    private readonly byte[] _commBytes = new byte[EbpfRecord.CommBytes];
    private string _comm = "";

    private string CommOf(in EbpfRecord r)
    {
        var bytes = r.CommField;
        if (!bytes.SequenceEqual(_commBytes))
        {
            _comm = r.Comm;
            bytes.CopyTo(_commBytes);
        }

        return _comm;
    }

    /// <summary>The absolute path a record names: its kernel path, joined with its user path when that is relative.</summary>
    private static string? AbsolutePath(in EbpfRecord r)
    {
        var kernel = r.KernelPath;
        var user = r.UserPath;
        if (r.Flags.HasFlag(EbpfRecordFlags.PathTruncated))
        {
            return null;
        }

        if (user.IsEmpty)
        {
            return kernel.IsEmpty ? null : PathBytes.Decode(kernel);
        }

        var userPath = PathBytes.Decode(user);
        if (userPath.StartsWith('/'))
        {
            return Normalize(userPath);
        }

        return kernel.IsEmpty ? null : Normalize(PathBytes.Decode(kernel) + "/" + userPath);
    }

    /// <summary>Lexical normalization: no empty, "." or ".." components (symlinked directories are not resolved).</summary>
    private static string Normalize(string path)
    {
        if (IsNormal(path))
        {
            return path; // the common case (an absolute path a program built): no list, no split, no join per event
        }

        var parts = new List<string>();
        foreach (var part in path.Split('/'))
        {
            if (part.Length == 0 || part == ".")
            {
                continue;
            }

            if (part == "..")
            {
                if (parts.Count > 0)
                {
                    parts.RemoveAt(parts.Count - 1);
                }

                continue;
            }

            parts.Add(part);
        }

        return "/" + string.Join('/', parts);
    }

    /// <summary>Whether <paramref name="path"/> is absolute and has no empty, "." or ".." component, so Normalize would return it as it is.</summary>
    internal static bool IsNormal(string path)
    {
        if (path.Length == 0 || path[0] != '/')
        {
            return false;
        }

        if (path.Length == 1)
        {
            return true;
        }

        if (path[^1] == '/')
        {
            return false;
        }

        // A component that is empty, "." or "..": "//", "/./", "/../", or a last component "." or "..".
        for (var i = path.IndexOf('/'); i >= 0 && i < path.Length - 1; i = path.IndexOf('/', i + 1))
        {
            var next = path[i + 1];
            if (next == '/')
            {
                return false;
            }

            if (next == '.')
            {
                var end = i + 2 == path.Length || path[i + 2] == '/' || (path[i + 2] == '.' && (i + 3 == path.Length || path[i + 3] == '/'));
                if (end)
                {
                    return false;
                }
            }
        }

        return true;
    }

    // A write's bytes, copied out of the ring into memory the recorder reads later: cut from native 2 MiB slabs that
    // are used again once no event cut from them is reachable (PayloadSlabs). An array per payload (with ToArray's
    // zeroing) made an untar's 130 MB of payloads gen0 objects the collections copied; 1 MiB arrays on the GC's
    // large-object heap after that were fresh memory at every slab, a page fault per 4 KiB (~40 % of this thread's
    // samples in an untar). Only this thread (the ring's callback) cuts.
    private readonly PayloadSlabs _slabs = new();

    // Null when the write's bytes did not travel (larger than the limit, or read back). Never `cond ? memory : null`:
    // null converts to ReadOnlyMemory<byte> through byte[], so that expression is an empty payload, not none.
    private ReadOnlyMemory<byte>? PayloadOf(in EbpfRecord r)
    {
        if (!r.HasPayload)
        {
            return null;
        }

        return CopyPayload(r.Payload);
    }

    private ReadOnlyMemory<byte> CopyPayload(ReadOnlySpan<byte> payload)
    {
        if (_slabs.Copy(payload) is { } cut)
        {
            return cut;
        }

        // Larger than --max-payload allows today, or no slab could be mapped: an array of its own.
        var own = GC.AllocateUninitializedArray<byte>(payload.Length);
        payload.CopyTo(own);
        return own;
    }

    private static long ToStopwatch(ulong monotonicNs) =>
        Stopwatch.Frequency == 1_000_000_000 ? (long)monotonicNs : (long)(monotonicNs * (Stopwatch.Frequency / 1e9));

    private static bool HasTracingCapabilities(string[] status)
    {
        const int capSysAdmin = 21, capPerfmon = 38, capBpf = 39;
        var line = status.FirstOrDefault(l => l.StartsWith("CapEff:", StringComparison.Ordinal));
        if (line is null || !ulong.TryParse(line[7..].Trim(), System.Globalization.NumberStyles.HexNumber, null, out var caps))
        {
            return false;
        }

        bool Has(int cap) => (caps & (1UL << cap)) != 0;
        return Has(capSysAdmin) || (Has(capBpf) && Has(capPerfmon));
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Settings
    {
        public uint MaxPayload;
        public uint WakeBytes;
    }
}

/// <summary>Receives a raw eBPF ring buffer record (valid only during the call).</summary>
internal delegate void RawRecordTap(ReadOnlySpan<byte> record);
