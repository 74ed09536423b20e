using System.Diagnostics;
using System.Text;
using System.Threading.Channels;
using DiffKeeper.Capture;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Recording.Tests;

/// <summary>
/// The recording core that `record` and `run` share, driven in process by a scripted capture source: a real trace
/// (SQLite catalog, packs) and a real directory, no kernel backend, so each case runs in milliseconds. What the
/// source promises (exact names or not) is its capability, as a real backend's would be.
/// </summary>
public sealed class RecordingCoreTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _root;
    private readonly string _trace;

    public RecordingCoreTests()
    {
        _root = _dir.Sub("root");
        _trace = _dir.Sub("trace");
        Directory.CreateDirectory(_root);
    }

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Exact_changes_are_stored_from_their_payloads_in_order_whatever_the_file_holds_when_handled()
    {
        // What the disk holds when the events are handled is not what each event left: every moment must be the
        // payloads' state, not a read.
        using (var session = new ScriptedSession(_root, _trace, exactNames: true))
        {
            session.BeforeEvents = () => File.WriteAllText(Path.Combine(_root, "b"), "on disk later");
            session.Run(
                Event(CaptureKind.Created, "a", knownEmpty: true),
                Event(CaptureKind.Written, "a", offset: 0, payload: "hello"),
                Event(CaptureKind.Written, "a", offset: 5, payload: " world"),
                Event(CaptureKind.Truncated, "a", offset: 5),
                Event(CaptureKind.Renamed, "a", path2: "b"));
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        var events = reader.Events(s).ToList();
        Assert.Equal([ChangeOp.Create, ChangeOp.Write, ChangeOp.Write, ChangeOp.Truncate, ChangeOp.Rename, ChangeOp.Exit],
            events.Select(e => e.Op));
        Assert.Equal([1L, 2, 3, 4, 5, 6], events.Select(e => e.Seq));
        Assert.Equal([0L, 5, 11, 5], events.Take(4).Select(e => e.Size ?? -1));
        Assert.Equal(1234, events[0].Pid);
        Assert.Equal("scripted", events[0].Comm);
        AssertState(reader, s, 1, ("a", ""));
        AssertState(reader, s, 2, ("a", "hello"));
        AssertState(reader, s, 3, ("a", "hello world"));
        AssertState(reader, s, 4, ("a", "hello"));
        AssertState(reader, s, 5, ("b", "hello"));
    }

    [Fact]
    public void A_copy_untouched_for_a_commit_interval_is_dropped_and_seeded_again_from_its_committed_version()
    {
        // The recorder gives back the copy of a file no change reached since the commit before last (an untar's ~8,000
        // finished files); a later write seeds it again from the trace. The disk holds other bytes all along, so a
        // state taken from the file instead of the stored version would show.
        using (var writer = TraceWriter.Open(_trace))
        using (var stored = new StoredContent(writer.TraceDir))
        {
            var core = new RecordingCore(writer, new ScriptedSource(exactNames: true, []), [_root], new PathFilter([_root], writer.TraceDir, []),
                TimeSpan.FromMilliseconds(2), TimeSpan.FromHours(1), TextWriter.Null);
            core.Begin("scripted", _root, RecordingCore.WallNs(), BigFileVersions.DefaultThreshold, stored);
            core.Baseline(commit: true);
            core.Start();
            File.WriteAllText(Path.Combine(_root, "a"), "on disk, never written by the recorded events");
            var (Handle, Commit) = Drive(core, writer);

            Make(Handle, "a", 42, "hello");
            Handle(Event(CaptureKind.Created, "b", knownEmpty: true)); // mode and file unknown: its copy is not the version's, kept
            Handle(Event(CaptureKind.Written, "b", offset: 0, payload: "bee"));
            Handle(Event(CaptureKind.Created, "c", knownEmpty: true) with { Mode = 0x180, FileId = (1UL, 43UL) });
            Handle(Event(CaptureKind.Written, "c", offset: 0, payload: "sea"));
            Commit();
            Assert.Equal(0, core.AfterCommit()); // all written in the interval just committed
            Commit();
            Assert.Equal(2, core.AfterCommit()); // untouched for a whole interval: a's and c's copies go, b's stays
            Assert.Null(core.Versioner.FollowedSize(0, "a"));
            Assert.Null(core.Versioner.FollowedSize(0, "c"));
            Assert.Equal(3, core.Versioner.FollowedSize(0, "b"));
            Handle(Event(CaptureKind.Written, "a", offset: 5, payload: " world"));
            Handle(Event(CaptureKind.Written, "a", offset: 0, payload: "J"));
            // Opened with O_TRUNC: a new empty copy of the same file, as when its copy was still held (the disk's "c" is
            // another file, so its stat would name another inode).
            File.WriteAllText(Path.Combine(_root, "c"), "xyz");
            Handle(Event(CaptureKind.Truncated, "c", offset: 0));
            Handle(Event(CaptureKind.Written, "c", offset: 0, payload: "new"));
            Assert.Equal((1UL, 43UL), core.Versioner.Known(0, "c") is { } c ? (c.Device, c.Inode) : default);
            Commit();
            Assert.Equal(0, core.AfterCommit());
            core.Finish(ChildExit.Exited(0));
            writer.Commit();
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        AssertState(reader, s, 2, ("a", "hello"));
        AssertState(reader, s, 4, ("a", "hello"), ("b", "bee"));
        AssertState(reader, s, 6, ("a", "hello"), ("b", "bee"), ("c", "sea"));
        AssertState(reader, s, 7, ("a", "hello world"), ("b", "bee"), ("c", "sea"));
        AssertState(reader, s, 8, ("a", "Jello world"), ("b", "bee"), ("c", "sea"));
        AssertState(reader, s, 9, ("a", "Jello world"), ("b", "bee"), ("c", ""));
        AssertState(reader, s, 10, ("a", "Jello world"), ("b", "bee"), ("c", "new"));
    }

    [Fact]
    public void A_copy_that_goes_over_the_memory_budget_as_it_is_made_is_not_taken_as_exact()
    {
        // The first write to a file not followed starts its copy from the file; that copy alone goes over the budget,
        // so every copy is dropped, this one too: the write is read back, though the write itself grew nothing.
        File.WriteAllText(Path.Combine(_root, "f"), new string('x', 100));
        using var writer = TraceWriter.Open(_trace);
        var session = writer.BeginSession("scripted", _root, "scripted", RecordingCore.WallNs(), [_root], out var rootIds);
        var versioner = new Versioner(writer, session, [_root], rootIds, TextWriter.Null) { ShadowBudget = 10 };
        Assert.False(versioner.ApplyWrite(0, "f", 0, "y"u8));
        Assert.Null(versioner.FollowedSize(0, "f"));
    }

    [Fact]
    public void A_copy_given_back_whose_version_cannot_be_read_back_is_read_from_the_file_and_no_copy_is_given_back_after()
    {
        // The trace cannot be read back (here its reader finds no catalog, as a damaged pack or catalog fails it). A
        // write to a file whose copy was given back must not start from the file as it is now and call that exact
        // (it would be the disk's bytes with the write on top, a state that never was): the write is read back. After
        // the failed read no copy is given back any more.
        using (var writer = TraceWriter.Open(_trace))
        using (var stored = new StoredContent(_dir.Sub("not-a-trace")))
        {
            var core = StartedCore(writer, stored);
            File.WriteAllText(Path.Combine(_root, "a"), "on disk, never written by the recorded events");
            var (Handle, Commit) = Drive(core, writer);

            Make(Handle, "a", 42, "hello");
            Commit();
            Assert.Equal(0, core.AfterCommit());
            Commit();
            Assert.Equal(1, core.AfterCommit());
            Assert.True(stored.Available);
            Handle(Event(CaptureKind.Written, "a", offset: 5, payload: " world"));
            Assert.False(stored.Available);
            Assert.Null(core.Versioner.FollowedSize(0, "a"));
            core.VersionReady(long.MaxValue);
            Make(Handle, "d", 44, "dee");
            Commit();
            Assert.Equal(0, core.AfterCommit());
            Commit();
            Assert.Equal(0, core.AfterCommit()); // untouched for an interval, but it could not be made again
            Assert.Equal(3, core.Versioner.FollowedSize(0, "d"));
            core.Finish(ChildExit.Exited(0));
            writer.Commit();
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        Assert.Equal("read back", reader.Events(s).Single(e => e.Seq == 3).Detail);
        AssertState(reader, s, 2, ("a", "hello"));
        AssertState(reader, s, 3, ("a", "on disk, never written by the recorded events"));
        AssertState(reader, s, 5, ("a", "on disk, never written by the recorded events"), ("d", "dee"));
    }

    [Fact]
    public void A_carried_write_after_one_whose_bytes_did_not_travel_is_not_put_on_the_stored_version()
    {
        // writev's bytes do not travel (the event says "read back" and a read of the file is due); a write() to the
        // same file comes before that read. Its bytes must not be put on the version stored before the writev (the
        // copy was dropped at the writev): that would be "hello" + "!" at 11, a state that never was, called exact.
        using (var writer = TraceWriter.Open(_trace))
        using (var stored = new StoredContent(writer.TraceDir))
        {
            var core = StartedCore(writer, stored);
            var (Handle, Commit) = Drive(core, writer);
            Make(Handle, "a", 42, "hello");
            Commit();
            File.WriteAllText(Path.Combine(_root, "a"), "hello world!"); // what the writev and the write() left
            Handle(Event(CaptureKind.Written, "a", offset: 5) with { Length = 6 }); // the writev: no payload
            Handle(Event(CaptureKind.Written, "a", offset: 11, payload: "!"));
            Assert.Null(core.Versioner.FollowedSize(0, "a")); // not followed: read back too, not "hello" + "!" at 11
            core.VersionReady(long.MaxValue);
            core.Finish(ChildExit.Exited(0));
            writer.Commit();
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        Assert.Equal("read back", reader.Events(s).Single(e => e.Seq == 3).Detail);
        Assert.Equal("read back", reader.Events(s).Single(e => e.Seq == 4).Detail);
        AssertState(reader, s, 2, ("a", "hello"));
        AssertState(reader, s, 4, ("a", "hello world!"));
        AssertState(reader, s, 5, ("a", "hello world!"));
    }

    [Fact]
    public void A_copy_whose_path_waits_to_be_read_is_not_given_back()
    {
        // The writer closed d (a read is due) and a commit comes before the read: the read takes the copy, so the copy
        // stays; given back, the read would take the disk's bytes, which the recorded events never wrote.
        using (var writer = TraceWriter.Open(_trace))
        using (var stored = new StoredContent(writer.TraceDir))
        {
            var core = StartedCore(writer, stored);
            File.WriteAllText(Path.Combine(_root, "d"), "on disk, never written by the recorded events");
            var (Handle, Commit) = Drive(core, writer);

            Make(Handle, "d", 44, "dee");
            Commit();
            Assert.Equal(0, core.AfterCommit());
            Handle(Event(CaptureKind.ClosedWrite, "d"));
            Commit();
            Assert.Equal(0, core.AfterCommit());
            Assert.Equal(3, core.Versioner.FollowedSize(0, "d"));
            core.VersionReady(long.MaxValue);
            Commit();
            Assert.Equal(1, core.AfterCommit()); // read: now it may go
            core.Finish(ChildExit.Exited(0));
            writer.Commit();
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        AssertState(reader, s, 2, ("d", "dee"));
        Assert.Equal(2, reader.VersionsIn(s).Count(v => v.Rel == "d")); // the read found the copy's state: no version
    }

    [Fact]
    public void A_copy_given_back_keeps_its_file_across_a_rename_and_an_exchange()
    {
        // After the drop, a is renamed to b and c exchanged with e; each new name then opened with O_TRUNC is the same
        // file as before (device and inode), not whatever the path holds on disk by the time it is handled.
        using (var writer = TraceWriter.Open(_trace))
        using (var stored = new StoredContent(writer.TraceDir))
        {
            var core = StartedCore(writer, stored);
            var (Handle, Commit) = Drive(core, writer);

            Make(Handle, "a", 42, "hello");
            Make(Handle, "c", 43, "sea");
            Make(Handle, "e", 44, "eel");
            Commit();
            Assert.Equal(0, core.AfterCommit());
            Commit();
            Assert.Equal(3, core.AfterCommit());
            foreach (var name in new[] { "b", "c", "e" })
            {
                File.WriteAllText(Path.Combine(_root, name), "xyz"); // other files, of the size written below
            }

            Handle(Event(CaptureKind.Renamed, "a", path2: "b"));
            Handle(Event(CaptureKind.Exchanged, "c", path2: "e"));
            foreach (var name in new[] { "b", "c", "e" })
            {
                Handle(Event(CaptureKind.Truncated, name, offset: 0));
                Handle(Event(CaptureKind.Written, name, offset: 0, payload: "new"));
            }

            (ulong, ulong) FileOf(string name) => core.Versioner.Known(0, name) is { } st ? (st.Device, st.Inode) : default;
            Assert.Equal((1UL, 42UL), FileOf("b"));
            Assert.Equal((1UL, 44UL), FileOf("c"));
            Assert.Equal((1UL, 43UL), FileOf("e"));
            core.Finish(ChildExit.Exited(0));
            writer.Commit();
        }
    }

    /// <summary>Hands an event to the core stamped now, and commits as the recorder does (the held write first).</summary>
    /// <summary>A file made with O_CREAT (mode 0644, device 1 and <paramref name="inode"/>) and written <paramref name="payload"/> from 0, as eBPF reports it.</summary>
    private static void Make(Action<CaptureEvent> handle, string path, ulong inode, string payload)
    {
        handle(Event(CaptureKind.Created, path, knownEmpty: true) with { Mode = 0x1A4, FileId = (1UL, inode) });
        handle(Event(CaptureKind.Written, path, offset: 0, payload: payload));
    }

    private static (Action<CaptureEvent> Handle, Action Commit) Drive(RecordingCore core, TraceWriter writer) =>
        (e => core.Handle(e with { Timestamp = Stopwatch.GetTimestamp() }), () =>
        {
            core.FlushWrite();
            writer.Commit();
        });

    private RecordingCore StartedCore(TraceWriter writer, StoredContent stored)
    {
        var core = new RecordingCore(writer, new ScriptedSource(exactNames: true, []), [_root], new PathFilter([_root], writer.TraceDir, []),
            TimeSpan.FromMilliseconds(2), TimeSpan.FromHours(1), TextWriter.Null);
        core.Begin("scripted", _root, RecordingCore.WallNs(), BigFileVersions.DefaultThreshold, stored);
        core.Baseline(commit: true);
        core.Start();
        return core;
    }

    [Fact]
    public void Exact_versions_of_one_name_are_bounded_per_hot_window_also_across_its_deletion()
    {
        // 256 exact versions per name and window, then coalesced: a file written 100,000 times a second costs
        // bounded CPU. The count belongs to the name: deleted and made again within the window, it stays coalesced.
        // One window spans the whole script (an hour), so nothing here depends on how fast it runs.
        var script = new List<CaptureEvent> { Event(CaptureKind.Created, "a", knownEmpty: true) };
        script.AddRange(Enumerable.Range(0, 300).Select(i => Event(CaptureKind.Written, "a", offset: i, payload: "x")));
        script.Add(Event(CaptureKind.Deleted, "a"));
        script.Add(Event(CaptureKind.Created, "a", knownEmpty: true));
        script.Add(Event(CaptureKind.Written, "a", offset: 0, payload: "y"));
        using (var session = new ScriptedSession(_root, _trace, exactNames: true) { HotWindow = TimeSpan.FromHours(1) })
        {
            session.Run([.. script]);
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        var versions = reader.VersionsIn(s).Where(v => v.Rel == "a").ToList();
        // The CREATE and 255 writes stored exactly (#1-#256); the 45 writes after them coalesced into the state the
        // deletion found in the followed copy (#301); the deletion (#302); the new file's CREATE and WRITE (#303,
        // #304) coalesced too, into one version from its copy at the end, dated at its creation.
        Assert.Equal(Enumerable.Range(1, 256).Select(i => (long)i), versions.Where(v => v.Seq <= 256).Select(v => v.Seq));
        Assert.Equal([301L, 302, 303], versions.Where(v => v.Seq > 256).Select(v => v.Seq));
        Assert.Equal(300, versions.Single(v => v.Seq == 301).Size);
        Assert.Equal(EntryKind.Absent, versions.Single(v => v.Seq == 302).Kind);
        Assert.Equal(1, versions.Single(v => v.Seq == 303).Size);
    }

    [Fact]
    public void An_overflow_is_a_LOST_event_then_one_rescan_that_records_what_changed()
    {
        File.WriteAllText(Path.Combine(_root, "old"), "baseline");
        File.WriteAllText(Path.Combine(_root, "kept"), "same");
        using (var session = new ScriptedSession(_root, _trace, exactNames: false))
        {
            session.BeforeEvents = () =>
            {
                // Changed while the queue overflowed: no event says so.
                File.Delete(Path.Combine(_root, "old"));
                File.WriteAllText(Path.Combine(_root, "new"), "abc");
            };
            session.Run(
                new CaptureEvent(CaptureKind.Overflow, 0, "", null, false, Stopwatch.GetTimestamp(), Detail: "scripted overflow"),
                new CaptureEvent(CaptureKind.Overflow, 0, "", null, false, Stopwatch.GetTimestamp(), Detail: "scripted overflow"));
            Assert.Equal(2, session.Core.Lost);
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        var events = reader.Events(s).ToList();
        // Two overflows cost one rescan, after both.
        Assert.Equal([ChangeOp.Lost, ChangeOp.Lost, ChangeOp.Delete, ChangeOp.Create, ChangeOp.Exit], events.Select(e => e.Op));
        Assert.Equal("scripted overflow", events[0].Detail);
        Assert.EndsWith("old", events[2].Path);
        Assert.Equal("rescan", events[2].Detail);
        Assert.EndsWith("new", events[3].Path);
        Assert.Equal("rescan", events[3].Detail);
        AssertState(reader, s, 2, ("kept", "same"), ("old", "baseline"));
        AssertState(reader, s, 4, ("kept", "same"), ("new", "abc"));
        Assert.Equal(2, s.LostEvents);
    }

    [Fact]
    public void After_a_loss_a_file_stored_from_its_followed_copy_is_read_again_even_when_its_stat_is_unchanged()
    {
        // The middle write of each file is lost (a full eBPF ring): the followed copies hold a hole there, and the
        // versions stored from them take the files' stat, which is already the final one. The rescan the loss asks
        // for must read them, under the name they have now (b was renamed to c after its writes; on disk c is a
        // hard link of b, so b is also found again, as new), not skip them for an unchanged stat.
        using (var session = new ScriptedSession(_root, _trace, exactNames: true))
        {
            session.BeforeEvents = () =>
            {
                File.WriteAllText(Path.Combine(_root, "a"), "AAAABBBBCCCC");
                File.WriteAllText(Path.Combine(_root, "b"), "aaaabbbbcccc");
                Assert.Equal(0, Libc.LinkAt(Libc.AT_FDCWD, Path.Combine(_root, "b"), Libc.AT_FDCWD, Path.Combine(_root, "c"), 0));
            };
            session.Run(
                Event(CaptureKind.Created, "a", knownEmpty: true),
                Event(CaptureKind.Written, "a", offset: 0, payload: "AAAA"),
                Event(CaptureKind.Written, "a", offset: 8, payload: "CCCC"),
                Event(CaptureKind.Created, "b", knownEmpty: true),
                Event(CaptureKind.Written, "b", offset: 0, payload: "aaaa"),
                Event(CaptureKind.Written, "b", offset: 8, payload: "cccc"),
                Event(CaptureKind.Renamed, "b", path2: "c"),
                new CaptureEvent(CaptureKind.Overflow, 0, "", null, false, Stopwatch.GetTimestamp(), Detail: "scripted ring buffer full"));
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        var end = reader.Events(s).Last().Seq;
        AssertState(reader, s, end, ("a", "AAAABBBBCCCC"), ("b", "aaaabbbbcccc"), ("c", "aaaabbbbcccc"));
    }

    [Fact]
    public void Hints_of_one_burst_merge_into_one_entry_whose_version_is_read_once_the_burst_is_over()
    {
        using (var session = new ScriptedSession(_root, _trace, exactNames: false))
        {
            session.BeforeEvents = () =>
            {
                File.WriteAllText(Path.Combine(_root, "x"), "12345");
                Directory.CreateDirectory(Path.Combine(_root, "d"));
            };
            session.Run(
                Event(CaptureKind.Created, "x"),
                Event(CaptureKind.Modified, "x"),
                Event(CaptureKind.Modified, "x"),
                Event(CaptureKind.ClosedWrite, "x"),
                Event(CaptureKind.Created, "d", isDirectory: true));
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        var events = reader.Events(s).ToList();
        Assert.Equal([ChangeOp.Create, ChangeOp.Mkdir, ChangeOp.Exit], events.Select(e => e.Op));
        Assert.Equal(5, events[0].Size); // from the read that stored the version, not an lstat per write
        AssertState(reader, s, 1, ("x", "12345"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_rename_over_a_name_read_after_the_rename_happened_still_removes_the_old_name(bool exactNames)
    {
        // Soak of 2026-12-06 (inotify, twice, timing-dependent): "x y" was read for its earlier change after the
        // rename had already put -dash's file there, so both names had the same inode when the rename was handled,
        // and the recorder took it for a rename between two names of one file (which does nothing): -dash stayed.
        // inotify and fanotify never see such a rename (the kernel reports nothing for it); only eBPF may skip one,
        // and it reads a name too, for a write whose bytes did not travel with it.
        File.WriteAllText(Path.Combine(_root, "x y"), "old x y");
        File.WriteAllText(Path.Combine(_root, "-dash"), "dash");
        using (var session = new ScriptedSession(_root, _trace, exactNames) { ReadBetweenEvents = true })
        {
            session.BeforeEvents = () => File.Move(Path.Combine(_root, "-dash"), Path.Combine(_root, "x y"), overwrite: true);
            session.Run(
                exactNames ? Event(CaptureKind.Written, "x y", offset: 0) with { Length = 7 } : Event(CaptureKind.Modified, "x y"),
                Event(CaptureKind.Renamed, "-dash", path2: "x y"));
        }

        using var reader = TraceReader.Open(_trace);
        var s = reader.Session(null);
        var events = reader.Events(s).ToList();
        var rename = events.Single(e => e.Op == ChangeOp.Rename);
        AssertState(reader, s, rename.Seq, ("x y", "dash"));
        Assert.DoesNotContain(events, e => e.Detail == "reconcile");
    }

    private static CaptureEvent Event(CaptureKind kind, string path, string? path2 = null, long offset = 0, string? payload = null,
        bool knownEmpty = false, bool isDirectory = false)
    {
        ReadOnlyMemory<byte>? bytes = null; // not `payload is null ? null : …`: a null byte[] converts to an empty payload
        if (payload is not null)
        {
            bytes = Encoding.UTF8.GetBytes(payload);
        }

        return new CaptureEvent(kind, 0, path, path2, isDirectory, Stopwatch.GetTimestamp(), 1234, "scripted", offset,
            bytes?.Length ?? 0, bytes, knownEmpty);
    }

    /// <summary>The files present after event <paramref name="seq"/> and their bytes, compared by content id.</summary>
    private void AssertState(TraceReader reader, SessionInfo session, long seq, params (string Rel, string Text)[] expected)
    {
        var state = reader.StateAt(session, seq).Where(v => v.Rel.Length > 0).ToList();
        Assert.Equal(expected.Select(e => e.Rel), state.Select(v => v.Rel));
        using var scratch = TraceWriter.Open(_dir.Sub("scratch-" + Guid.NewGuid().ToString("N")[..8]));
        foreach (var ((rel, text), version) in expected.Zip(state))
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            var content = FileShadow.Of(bytes, [(0L, (long)bytes.Length)]).Store(scratch);
            Assert.True(content.ContentId.AsSpan().SequenceEqual(version.ContentId), $"{rel} at #{seq}: not \"{text}\"");
            Assert.Equal(bytes.Length, version.Size);
        }
    }

    /// <summary>A capture source that delivers a script: what a backend would have observed, in its order.</summary>
    private sealed class ScriptedSource(bool exactNames, IReadOnlyList<CaptureEvent> script) : ICaptureSource
    {
        public string Name => "scripted";

        public bool ReportsExactNames => exactNames;

        public bool FollowsProcessTree => false;

        public bool DrainsToNow => true; // the script is written whole at Start

        public Task DrainToNowAsync() => Task.CompletedTask;

        public void Start(ChannelWriter<CaptureEvent> sink)
        {
            foreach (var e in script)
            {
                Assert.True(sink.TryWrite(e));
            }
        }

        public Task StopAsync() => Task.CompletedTask;

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>One session of the core over one root, run the way `record` runs it: baseline, events, reads, EXIT.</summary>
    private sealed class ScriptedSession(string root, string trace, bool exactNames) : IDisposable
    {
        private readonly TraceWriter _writer = TraceWriter.Open(trace);

        public RecordingCore Core { get; private set; } = null!;

        public Action? BeforeEvents { get; set; }

        /// <summary>How long a path's exact versions are counted against their bound (and a read path waits).</summary>
        public TimeSpan HotWindow { get; init; } = TimeSpan.FromMilliseconds(100);

        /// <summary>Reads what is waiting after each event, as a recorder falling behind a burst would.</summary>
        public bool ReadBetweenEvents { get; init; }

        public void Run(params CaptureEvent[] script)
        {
            var scripted = new List<CaptureEvent>();
            var source = new ScriptedSource(exactNames, scripted);
            var filter = new PathFilter([root], _writer.TraceDir, []);
            Core = new RecordingCore(_writer, source, [root], filter, TimeSpan.FromMilliseconds(2), HotWindow, TextWriter.Null);
            Core.Begin("scripted", root, RecordingCore.WallNs(), BigFileVersions.DefaultThreshold, stored: null);
            Core.Baseline(commit: true);
            Core.Start();
            BeforeEvents?.Invoke();
            // Timestamps after the clock started, as a real source's would be.
            scripted.AddRange(script.Select(e => e with { Timestamp = Stopwatch.GetTimestamp() }));
            var channel = Channel.CreateUnbounded<CaptureEvent>();
            source.Start(channel.Writer);
            while (channel.Reader.TryRead(out var e))
            {
                Core.Handle(e);
                if (ReadBetweenEvents)
                {
                    Core.VersionReady(long.MaxValue);
                }
            }

            Core.RescanIfPending();
            Core.VersionReady(long.MaxValue);
            Core.FlushWrite();
            _writer.Commit();
            Core.Finish(ChildExit.Exited(0));
        }

        public void Dispose() => _writer.Dispose();
    }
}
