using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

public sealed class TraceStoreTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Records one session whose files are the given contents, one version each, committed.</summary>
    /// <summary>A trace <paramref name="name"/> under <paramref name="dir"/> with one session (and writer) per content, file f{i}.txt each.</summary>
    internal static string Written(TempDir dir, string name, params string[] contents)
    {
        var trace = dir.Sub(name);
        for (var i = 0; i < contents.Length; i++)
        {
            using var w = TraceWriter.Open(trace);
            WriteSession(w, dir.Path, ($"f{i}.txt", System.Text.Encoding.UTF8.GetBytes(contents[i])));
        }

        return trace;
    }

    internal static long WriteSession(TraceWriter w, string workDir, params (string Rel, byte[] Content)[] files)
    {
        var sid = w.BeginSession("test", workDir, "test", 1_000_000_000, [workDir], out var roots);
        long seq = 0;
        foreach (var (rel, content) in files)
        {
            AddFile(w, sid, roots[0], workDir, rel, content, ++seq);
        }

        w.Commit();
        return sid;
    }

    internal static void AddFile(TraceWriter w, long sid, long rootId, string workDir, string rel, byte[] content, long seq)
    {
        var size = AddVersion(w, sid, rootId, workDir, rel, content, seq);
        w.AddEvent(sid, new NewEvent(seq, seq, ChangeOp.Write, w.PathId(rootId, rel), null, size, null, null, null));
    }

    /// <summary>Stores a version of <paramref name="rel"/> holding <paramref name="content"/>, without its event; returns its size.</summary>
    private static long AddVersion(TraceWriter w, long sid, long rootId, string workDir, string rel, byte[] content, long seq, long? mtimeNs = null)
    {
        var path = Path.Combine(workDir, "src-" + Guid.NewGuid().ToString("N"));
        File.WriteAllBytes(path, content);
        using var h = File.OpenHandle(path);
        var c = FileIngest.Ingest(w, h, content.Length);
        w.AddVersion(sid, new NewVersion(w.PathId(rootId, rel), seq, seq, EntryKind.File, 0x1A4, 0, 0, mtimeNs ?? 123, c.Size, c.ContentId, null, c.Extents));
        return c.Size;
    }

    internal static byte[] ReadBack(TraceReader r, VersionRecord v)
    {
        var bytes = new byte[v.Size];
        Assert.True(ExtentMap.TryDecode(v.Extents, v.Size, out var extents));
        foreach (var e in extents)
        {
            var loc = r.Blob(e.BlobRowId);
            r.Blobs.Read(loc, bytes.AsSpan((int)e.Offset, e.Length));
        }

        return bytes;
    }

    /// <summary>
    /// Regression (issue 13, found by the fault layer): the recorder commits an event before the read that stores its
    /// content; when that version's commit failed, the event stayed with the content of before, so `export` after it
    /// was wrong without a LOST to say so. The writer now reports the least seq of the versions it gave up, and
    /// <see cref="TraceWriter.RetractFrom"/> takes the events and versions from there back with the closing rows.
    /// </summary>
    /// <summary>
    /// A reader leaves the trace as it found it: its read-only connection cannot remove the catalog's -wal and
    /// -shm (32 KiB), so the last reader to close has them removed; beside a writer (or another reader) they stay.
    /// </summary>
    [Fact]
    public void The_last_reader_leaves_no_wal_or_shm_beside_the_catalog()
    {
        var trace = _dir.Sub("t");
        var catalog = Path.Combine(trace, "catalog.db");
        using (var w = TraceWriter.Open(trace))
        {
            WriteSession(w, _dir.Path, ("a.txt", "hello"u8.ToArray()));
        }

        Assert.False(File.Exists(catalog + "-shm"));
        using (var r = TraceReader.Open(trace))
        {
            Assert.Single(r.Sessions());
            using (var other = TraceReader.Open(trace))
            {
                Assert.Single(other.Sessions());
            }

            Assert.True(File.Exists(catalog + "-shm")); // the first reader still reads
        }

        Assert.False(File.Exists(catalog + "-shm"));
        Assert.False(File.Exists(catalog + "-wal"));

        using (var w = TraceWriter.Open(trace))
        {
            WriteSession(w, _dir.Path, ("b.txt", "again"u8.ToArray()));
            using (var r = TraceReader.Open(trace))
            {
                Assert.Equal(2, r.Sessions().Count);
            }

            WriteSession(w, _dir.Path, ("c.txt", "and on"u8.ToArray())); // the writer's connection is unharmed
        }

        using (var r = TraceReader.Open(trace))
        {
            Assert.Equal(3, r.Sessions().Count);
        }

        Assert.False(File.Exists(catalog + "-shm"));
    }

    /// <summary>
    /// A reader opened to tidy (materialize's) removes the -wal and -shm at its own close, with no second connection:
    /// even while another process holds LOCK.readers without a connection open (here the test's own shared lock), which
    /// keeps <see cref="TraceReader"/>'s second connection from trying. It writes nothing to the catalog, leaves the
    /// files to a reader still open, and beside a writer of this process reads read-only (the writer is unharmed).
    /// </summary>
    [Fact]
    public void A_tidy_reader_removes_the_wal_and_shm_at_its_own_close_and_writes_nothing()
    {
        var trace = _dir.Sub("t");
        var catalog = Path.Combine(trace, "catalog.db");
        using (var w = TraceWriter.Open(trace))
        {
            WriteSession(w, _dir.Path, ("a.txt", "hello"u8.ToArray()));
        }

        var before = File.ReadAllBytes(catalog);
        using (ReaderLock.Acquire(trace))
        {
            using (var r = TraceReader.Open(trace))
            {
                Assert.Single(r.Sessions());
            }

            Assert.True(File.Exists(catalog + "-shm")); // the read-only reader's second connection stood back

            using (var r = TraceReader.Open(trace, tidy: true))
            {
                Assert.Single(r.Sessions());
                using (var other = TraceReader.Open(trace))
                {
                    Assert.Single(other.Sessions());
                }

                Assert.True(File.Exists(catalog + "-shm"));
            }

            Assert.False(File.Exists(catalog + "-shm"));
            Assert.False(File.Exists(catalog + "-wal"));

            using (var other = TraceReader.Open(trace))
            {
                Assert.Single(other.Sessions());
                using (var r = TraceReader.Open(trace, tidy: true))
                {
                    Assert.Single(r.Sessions());
                }

                Assert.True(File.Exists(catalog + "-shm")); // another connection still reads: they stay
            }
        }

        Assert.Equal(before, File.ReadAllBytes(catalog));

        // What keeps it from writing is query_only: a statement that would write fails (SQLITE_READONLY).
        using (var tidy = SqliteDatabase.OpenToReadAndTidy(catalog))
        {
            Assert.ThrowsAny<Exception>(() => tidy.Execute("UPDATE meta SET value = value"));
        }

        Assert.Equal(before, File.ReadAllBytes(catalog));
        using (var w = TraceWriter.Open(trace))
        {
            WriteSession(w, _dir.Path, ("b.txt", "again"u8.ToArray()));
            using (var r = TraceReader.Open(trace, tidy: true))
            {
                Assert.Equal(2, r.Sessions().Count);
            }

            WriteSession(w, _dir.Path, ("c.txt", "and on"u8.ToArray()));
        }

        using (var r = TraceReader.Open(trace, tidy: true))
        {
            Assert.Equal(3, r.Sessions().Count);
        }

        Assert.False(File.Exists(catalog + "-shm"));
        Assert.False(File.Exists(catalog + "-wal"));
    }

    /// <summary>
    /// A session read by its key (materialize) is the one <see cref="TraceReader.Sessions"/> lists, with its roots and the
    /// chain its baseline inherits through; a damaged row on that chain is refused as the whole table's reading refuses it.
    /// </summary>
    [Fact]
    public void A_session_read_by_its_key_is_the_one_the_table_lists_chain_included()
    {
        var t = _dir.Sub("t");
        using (var w = TraceWriter.Open(t))
        {
            WriteSession(w, _dir.Path, ("a", "one"u8.ToArray()));
            for (var k = 0; k < 2; k++)
            {
                var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
                Assert.Equal(sid - 1, w.InheritBaseline(sid));
                AddVersion(w, sid, roots[0], _dir.Path, "b", [(byte)k], 0);
                w.EndBaseline(sid);
                w.Commit();
            }
        }

        using (var r = TraceReader.Open(t))
        {
            var all = r.Sessions();
            Assert.Equal([2L, 1L], all[2].BaselineChain);
            foreach (var s in all)
            {
                var k = r.SessionByKey(s.Id)!;
                Assert.Equal((s.Id, s.Command, s.Cwd, s.Capture, s.StartedWallNs, s.EndedNs, s.ExitCode, s.LostEvents, s.State, s.KilledBy, s.ContentsNotKept),
                    (k.Id, k.Command, k.Cwd, k.Capture, k.StartedWallNs, k.EndedNs, k.ExitCode, k.LostEvents, k.State, k.KilledBy, k.ContentsNotKept));
                Assert.Equal(s.Roots.Select(x => (x.Id, x.Path, x.PathsRoot)), k.Roots.Select(x => (x.Id, x.Path, x.PathsRoot)));
                Assert.Equal(s.BaselineChain, k.BaselineChain);
                Assert.Equal(r.StateAt(s, long.MaxValue).Select(v => v.Id), r.StateAt(k, long.MaxValue).Select(v => v.Id));
            }

            Assert.Null(r.SessionByKey(4));
        }

        using (var db = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: false))
        {
            db.Execute("UPDATE sessions SET state = 'bogus' WHERE id = 1");
        }

        using (var r = TraceReader.Open(t))
        {
            var e = Assert.Throws<DiffKeeperException>(() => r.SessionByKey(3));
            Assert.Equal(ExitCode.Corrupt, e.Code);
            Assert.Contains("state is not", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Abandoning_reports_the_versions_given_up_and_retracting_takes_back_their_events()
    {
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
            AddFile(w, sid, roots[0], _dir.Path, "a", "one"u8.ToArray(), 1);
            w.AddEvent(sid, new NewEvent(2, 2, ChangeOp.Write, w.PathId(roots[0], "a"), null, 3, null, null, null));
            w.AddEvent(sid, new NewEvent(3, 3, ChangeOp.Create, w.PathId(roots[0], "b"), null, 0, null, null, null));
            w.Commit(); // events 2 and 3 without their versions yet, as the recorder commits them
            AddVersion(w, sid, roots[0], _dir.Path, "a", "two"u8.ToArray(), 2);
            Assert.Equal(long.MaxValue, w.AbandonedVersionsFrom);
            Assert.Equal(3, w.AbandonPending(sid)); // the version of event 2 is given up with its transaction
            Assert.Equal(2, w.AbandonedVersionsFrom);
            w.RetractFrom(sid, w.AbandonedVersionsFrom);
            w.AddEvent(sid, new NewEvent(2, 4, ChangeOp.Lost, null, null, null, null, null, "storage failed"));
            w.FinishSession(sid, 5, 0, 1);
        }

        using var r = TraceReader.Open(_dir.Sub("t"));
        var s = r.Session(null);
        Assert.Equal([ChangeOp.Write, ChangeOp.Lost], r.Events(s).Select(e => e.Op));
        Assert.Equal("one"u8.ToArray(), ReadBack(r, Assert.Single(r.StateAt(s, long.MaxValue))));
        Assert.True(TraceVerifier.Verify(r).Ok);
    }

    /// <summary>
    /// BlobHashes into the caller's memory (materialize's populated block) gives the ids BlobHashes' array gives, in the
    /// callers' order whatever the order, repeats and gaps, leaves the row ids sorted, and fails on a missing row as it does.
    /// </summary>
    [Fact]
    public void BlobHashes_into_spans_equal_the_array_form()
    {
        var t = _dir.Sub("t");
        var random = new Random(161);
        var rows = new List<long>();
        using (var w = TraceWriter.Open(t))
        {
            for (var i = 0; i < 300; i++)
            {
                var data = new byte[1 + random.Next(3000)];
                random.NextBytes(data);
                rows.Add(w.PutBlob(data, out _));
            }

            w.Commit();
        }

        var wanted = Enumerable.Range(0, 700).Select(_ => rows[random.Next(rows.Count)]).ToList();
        wanted.AddRange([rows[0], rows[^1], rows[0], rows[150]]);
        using var r = TraceReader.Open(t);
        var expected = r.BlobHashes(wanted);
        for (var i = 0; i < wanted.Count; i++)
        {
            Assert.Equal(r.Blob(wanted[i]).Id.Bytes.ToArray(), expected.AsSpan(i * BlobId.Size, BlobId.Size).ToArray());
        }

        var keys = wanted.ToArray();
        var ids = new byte[keys.Length * BlobId.Size];
        r.BlobHashes(keys, new int[keys.Length], ids);
        Assert.Equal(expected, ids);
        Assert.Equal(wanted.Order(), keys);

        long[] missing = [rows[3], rows.Max() + 500, rows[4]];
        Assert.Equal(rows.Max() + 500, Assert.Throws<BlobMissingException>(() => r.BlobHashes(missing, new int[3], new byte[3 * BlobId.Size])).RowId);
        Assert.Throws<ArgumentException>(() => r.BlobHashes(new long[2], new int[1], new byte[2 * BlobId.Size]));
    }

    /// <summary>
    /// BlobRows reads many rows by ranges of row ids (materialize's changed blocks): each result must be what Blob
    /// gives for that id, whatever the order, repeats and gaps (several ranges), and a missing or damaged row must fail
    /// as Blob fails for it.
    /// </summary>
    [Fact]
    public void BlobRows_equal_Blob_of_each_and_fail_as_it_does()
    {
        var t = _dir.Sub("t");
        var random = new Random(15);
        var rows = new List<long>();
        using (var w = TraceWriter.Open(t))
        {
            for (var i = 0; i < 300; i++)
            {
                var data = new byte[1 + random.Next(5000)];
                random.NextBytes(data);
                rows.Add(w.PutBlob(data, out _));
            }

            w.Commit();
        }

        var wanted = Enumerable.Range(0, 500).Select(_ => rows[random.Next(rows.Count)]).ToList();
        wanted.AddRange([rows[0], rows[^1], rows[0]]);
        using (var r = TraceReader.Open(t))
        {
            var got = r.BlobRows(wanted);
            Assert.Equal(wanted.Count, got.Length);
            for (var i = 0; i < wanted.Count; i++)
            {
                var one = r.Blob(wanted[i]);
                Assert.Equal(one with { Bases = [] }, got[i] with { Bases = [] });
                Assert.Equal(one.Bases, got[i].Bases);
            }

            Assert.Empty(r.BlobRows([]));
            var missing = rows.Max() + 1000;
            Assert.Equal(missing, Assert.Throws<BlobMissingException>(() => r.BlobRows([rows[3], missing, rows[4]])).RowId);
        }

        using (var db = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: false))
        {
            db.Execute($"UPDATE blobs SET codec = 77 WHERE id = {rows[7]}");
        }

        using (var r = TraceReader.Open(t))
        {
            var one = Assert.ThrowsAny<Exception>(() => r.Blob(rows[7]));
            var many = Assert.ThrowsAny<Exception>(() => r.BlobRows([rows[6], rows[7], rows[8]]));
            Assert.Equal(one.GetType(), many.GetType());
            Assert.Equal(one.Message, many.Message);
        }

        // A row missing inside a range of ids (what gc and prune leave), and ids far apart (ranges of their own).
        using (var db = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: false))
        {
            db.Execute($"DELETE FROM blobs WHERE id = {rows[5]}");
        }

        using (var r = TraceReader.Open(t))
        {
            Assert.Equal(rows[5], Assert.Throws<BlobMissingException>(() => r.BlobRows([rows[4], rows[5], rows[6]])).RowId);
            long[] apart = [rows[0], rows[150], rows[299], rows[1]];
            var got = r.BlobRows(apart);
            for (var i = 0; i < apart.Length; i++)
            {
                Assert.Equal(r.Blob(apart[i]) with { Bases = [] }, got[i] with { Bases = [] });
            }
        }
    }

    /// <summary>
    /// Store format 5 (issue 12, a smaller catalog): sessions of one directory share its path rows. Ten sessions over
    /// a 1,000-file tree used to store 10,000 path rows; each session now adds rows only for the paths it is the
    /// first to see, and every session still reads exactly its own paths under its own root.
    /// </summary>
    [Fact]
    public void Sessions_of_one_directory_share_its_path_rows_and_each_reads_its_own_paths()
    {
        var t = _dir.Sub("t");
        using (var w = TraceWriter.Open(t))
        {
            WriteSession(w, _dir.Path, ("a", "one"u8.ToArray()), ("b", "two"u8.ToArray()));
            WriteSession(w, _dir.Path, ("b", "three"u8.ToArray()), ("c", "four"u8.ToArray()));
            var other = Directory.CreateDirectory(_dir.Sub("other")).FullName;
            WriteSession(w, other, ("a", "five"u8.ToArray())); // another directory owns its own rows
        }

        using (var db = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: true))
        {
            using var paths = db.Prepare("SELECT count(*) FROM paths");
            Assert.Equal(4, paths.ScalarInt64()); // a, b, c under the first root; a under the other
            using var roots = db.Prepare("SELECT paths_root FROM roots ORDER BY id");
            var owners = new List<long?>();
            while (roots.Step())
            {
                owners.Add(roots.Int64OrNull(0));
            }

            Assert.Equal([null, 1, null], owners);
        }

        using var r = TraceReader.Open(t);
        var sessions = r.Sessions();
        foreach (var (s, expected) in sessions.Zip(new[] { new[] { "a", "b" }, ["b", "c"], ["a"] }))
        {
            var state = r.StateAt(s, long.MaxValue);
            Assert.Equal(expected, state.Select(v => v.Rel));
            Assert.All(state, v => Assert.Equal(s.Roots[0].Id, v.RootId)); // reported under the session's own root
            Assert.All(r.Events(s), e => Assert.NotNull(e.Path));
        }

        Assert.Equal("three"u8.ToArray(), ReadBack(r, r.StateAt(sessions[1], long.MaxValue)[0]));
        Assert.Equal("five"u8.ToArray(), ReadBack(r, r.StateAt(sessions[2], long.MaxValue)[0]));
        // A path of the directory that a session never touched is not that session's path, though its row is shared.
        Assert.Null(r.FindPath(sessions[0], "c"));
        Assert.Null(r.FindPath(sessions[1], "a"));
        Assert.Equal(sessions[1].Roots[0].Id, r.FindPath(sessions[1], "b")!.Value.RootId);
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    /// <summary>
    /// A format-4 trace (every root owns its paths) reads as is; the first writer migrates it (to format 7), and a
    /// session it then records shares the path rows of the first root of its directory.
    /// </summary>
    [Fact]
    public void A_format_4_trace_reads_as_is_and_later_sessions_share_its_first_roots_paths()
    {
        var t = _dir.Sub("t");
        using (var w = TraceWriter.Open(t))
        {
            WriteSession(w, _dir.Path, ("a", "one"u8.ToArray()));
        }

        using (var db = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: false))
        {
            // What the format-4 code wrote: a second session of the directory with its own root and path rows.
            db.Execute("""
                DROP INDEX roots_by_session;
                ALTER TABLE roots DROP COLUMN paths_root;
                ALTER TABLE sessions DROP COLUMN baseline_from;
                ALTER TABLE events DROP COLUMN run;
                INSERT INTO sessions(command, cwd, capture, started_wall_ns, host, state) SELECT command, cwd, capture, started_wall_ns, host, state FROM sessions WHERE id = 1;
                INSERT INTO roots(session_id, path) SELECT 2, path FROM roots WHERE id = 1;
                INSERT INTO paths(root_id, rel) VALUES (2, 'a');
                INSERT INTO versions(session_id, path_id, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content, target, extents)
                    SELECT 2, 2, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content, target, extents FROM versions WHERE session_id = 1;
                UPDATE meta SET value = '4' WHERE key = 'format_version';
                """);
        }

        void Check(int sessions)
        {
            using var r = TraceReader.Open(t);
            var all = r.Sessions();
            Assert.Equal(sessions, all.Count);
            Assert.All(all.Take(2), s => Assert.Equal("one"u8.ToArray(), ReadBack(r, Assert.Single(r.StateAt(s, long.MaxValue)))));
            Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        }

        Check(2);
        using (var w = TraceWriter.Open(t))
        {
            var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
            // Session 2 names its paths with rows of its own: only session 1 shares this session's path rows.
            Assert.Equal(1, w.InheritBaseline(sid));
            AddVersion(w, sid, roots[0], _dir.Path, "a", "two"u8.ToArray(), 0);
            AddVersion(w, sid, roots[0], _dir.Path, "b", "three"u8.ToArray(), 0);
            w.EndBaseline(sid);
            w.Commit();
        }

        Check(3);
        using var db2 = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: true);
        using var rows = db2.Prepare("SELECT (SELECT value FROM meta WHERE key = 'format_version'), (SELECT paths_root FROM roots WHERE session_id = 3), (SELECT count(*) FROM paths)");
        Assert.True(rows.Step());
        Assert.Equal("7", rows.String(0)); // 4 -> 5 -> 6 -> 7 in the first writer's transaction
        Assert.Equal(1, rows.Int64(1)); // the first root of the directory, not the format-4 second one
        Assert.Equal(3, rows.Int64(2)); // a (root 1), a (root 2, format 4), b (root 1)
        using var r3 = TraceReader.Open(t);
        var third = r3.Sessions()[2];
        Assert.Equal([1L], third.BaselineChain);
        Assert.Equal(["a=two", "b=three"], r3.StateAt(third, 0).Select(v => v.Rel + "=" + System.Text.Encoding.ASCII.GetString(ReadBack(r3, v))));
    }

    /// <summary>
    /// Store format 5 (issue 12): a baseline inherits the end state of the last session of the same roots and stores
    /// only what differs: a changed file, an absent version for a file gone since, a new file. Every moment of both
    /// sessions reads as before; a path's history in the later session starts with the inherited version at event 0.
    /// </summary>
    [Fact]
    public void A_baseline_stores_only_what_differs_from_the_state_it_inherits()
    {
        var t = _dir.Sub("t");
        using (var w = TraceWriter.Open(t))
        {
            WriteSession(w, _dir.Path, ("a", "same"u8.ToArray()), ("b", "old"u8.ToArray()), ("c", "gone"u8.ToArray()));
            var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
            Assert.Equal(1, w.InheritBaseline(sid));
            AddVersion(w, sid, roots[0], _dir.Path, "a", "same"u8.ToArray(), 0, 123); // the same version: not stored
            AddVersion(w, sid, roots[0], _dir.Path, "b", "new"u8.ToArray(), 0, 123);
            AddVersion(w, sid, roots[0], _dir.Path, "d", "added"u8.ToArray(), 0, 123);
            AddVersion(w, sid, roots[0], _dir.Path, "a", "same"u8.ToArray(), 0, 456); // another mtime: stored
            w.EndBaseline(sid);
            AddFile(w, sid, roots[0], _dir.Path, "b", "later"u8.ToArray(), 1);
            w.Commit();
        }

        using (var db = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: true))
        using (var rows = db.Prepare("SELECT group_concat(p.rel || ':' || v.seq || ':' || v.kind, ' ') FROM (SELECT * FROM versions WHERE session_id = 2 ORDER BY id) v JOIN paths p ON p.id = v.path_id"))
        {
            Assert.True(rows.Step());
            Assert.Equal("b:0:1 d:0:1 a:0:1 c:0:0 b:1:1", rows.String(0));
        }

        using var r = TraceReader.Open(t);
        var (first, second) = (r.Sessions()[0], r.Sessions()[1]);
        Assert.Equal([1L], second.BaselineChain);
        string Text(VersionRecord v) => System.Text.Encoding.ASCII.GetString(ReadBack(r, v));
        Assert.Equal(["a=same", "b=old", "c=gone"], r.StateAt(first, long.MaxValue).Select(v => v.Rel + "=" + Text(v)));
        Assert.Equal(["a=same", "b=new", "d=added"], r.StateAt(second, 0).Select(v => v.Rel + "=" + Text(v)));
        Assert.Equal(["a=same", "b=later", "d=added"], r.StateAt(second, 1).Select(v => v.Rel + "=" + Text(v)));
        Assert.All(r.StateAt(second, 1), v => Assert.Equal(second.Id, v.SessionId));

        var pathA = r.FindPath(second, "a")!.Value.PathId;
        Assert.Equal([456L], r.VersionsOf(second, pathA).Select(v => v.MtimeNs)); // its own baseline version, not the inherited one
        Assert.Equal([0L, 1L], r.VersionsOf(second, r.FindPath(second, "b")!.Value.PathId).Select(v => v.Seq));
        Assert.Null(r.FindPath(second, "c")); // gone before the session began: not its path
        Assert.Equal(["b", "d", "a", "b"], r.VersionsIn(second).Select(v => v.Rel));
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    [Fact]
    public void Versions_round_trip_and_identical_chunks_are_stored_once()
    {
        var big = CodecTests.RandomBytes(1 << 20, 3);
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            WriteSession(w, _dir.Path, ("a.bin", big), ("b.bin", big), ("empty", []), ("small", "hello"u8.ToArray()));
        }

        using var r = TraceReader.Open(_dir.Sub("t"));
        var s = r.Session(null);
        var state = r.StateAt(s, long.MaxValue);
        Assert.Equal(["a.bin", "b.bin", "empty", "small"], state.Select(v => v.Rel));
        Assert.Equal(big, ReadBack(r, state[0]));
        Assert.Equal(big, ReadBack(r, state[1]));
        Assert.Empty(ReadBack(r, state[2]));
        Assert.Equal("hello"u8.ToArray(), ReadBack(r, state[3]));
        Assert.Equal(state[0].ContentId, state[1].ContentId);
        var packBytes = new FileInfo(Path.Combine(_dir.Sub("t"), PackFormat.RelativePath(1))).Length;
        Assert.InRange(packBytes, big.Length, big.Length + 64 * 1024);
        Assert.True(TraceVerifier.Verify(r).Ok);
    }

    [Fact]
    public void A_second_writer_is_refused_while_readers_are_welcome()
    {
        using var w = TraceWriter.Open(_dir.Sub("t"));
        WriteSession(w, _dir.Path, ("a", "one"u8.ToArray()));
        var e = Assert.Throws<DiffKeeperException>(() => TraceWriter.Open(_dir.Sub("t")));
        Assert.Equal(ExitCode.Locked, e.Code);
        Assert.Contains($"pid {Environment.ProcessId}", e.Message);
        using var r = TraceReader.Open(_dir.Sub("t"));
        Assert.Single(r.StateAt(r.Session(null), long.MaxValue));
    }

    [Fact]
    public void Readers_see_only_committed_work()
    {
        using var w = TraceWriter.Open(_dir.Sub("t"));
        var sid = WriteSession(w, _dir.Path, ("a", "one"u8.ToArray()));
        using var r = TraceReader.Open(_dir.Sub("t"));
        var s = r.Session(null);
        AddFile(w, sid, s.Roots[0].Id, _dir.Path, "b", "two"u8.ToArray(), 2);
        Assert.Single(r.StateAt(s, long.MaxValue));
        w.Commit();
        Assert.Equal(2, r.StateAt(s, long.MaxValue).Count);
    }

    [Fact]
    public void A_crash_image_opens_cuts_the_torn_tail_and_keeps_every_commit()
    {
        // Script of STYLE rule 7: write, stop without cleanup, damage the tail, recover, check, write more, recover again.
        var contents = Enumerable.Range(0, 20).Select(i => CodecTests.RandomBytes(20_000 + i * 1000, 100 + i)).ToArray();
        var image = _dir.Sub("image");
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            var sid = WriteSession(w, _dir.Path, contents.Take(10).Select((c, i) => ($"f{i}", c)).ToArray());
            var root = TraceReader.Open(_dir.Sub("t"));
            var rootId = root.Session(null).Roots[0].Id;
            root.Dispose();
            for (var i = 10; i < 20; i++)
            {
                AddFile(w, sid, rootId, _dir.Path, $"f{i}", contents[i], i + 1); // never committed
            }

            CopyTree(_dir.Sub("t"), image); // what a kill -9 leaves: committed catalog, pack with an uncommitted tail
        }

        var pack = Path.Combine(image, PackFormat.RelativePath(1));
        File.AppendAllText(pack, "half a record"); // and a torn write on top
        var committed = ReadCommitted(image);
        Assert.True(new FileInfo(pack).Length > committed);

        using (var w = TraceWriter.Open(image))
        {
            Assert.Equal(committed, new FileInfo(pack).Length);
            using var r = TraceReader.Open(image);
            var s = r.Session(null);
            Assert.Equal("interrupted", s.State);
            var state = r.StateAt(s, long.MaxValue);
            Assert.Equal(10, state.Count);
            for (var i = 0; i < 10; i++)
            {
                Assert.Equal(contents[i], ReadBack(r, state.Single(v => v.Rel == $"f{i}")));
            }

            Assert.True(TraceVerifier.Verify(r).Ok);
            WriteSession(w, _dir.Path, ("later", contents[15]));
        }

        using (TraceWriter.Open(image))
        {
        }

        using var again = TraceReader.Open(image);
        Assert.True(TraceVerifier.Verify(again).Ok);
        Assert.Equal(contents[15], ReadBack(again, again.StateAt(again.Session(null), long.MaxValue).Single()));
    }

    [Fact]
    public void Verify_names_the_path_for_a_flipped_byte_a_truncated_pack_and_a_missing_pack()
    {
        var data = CodecTests.RandomBytes(300_000, 5);
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            WriteSession(w, _dir.Path, ("victim.bin", data));
        }

        var pack = Path.Combine(_dir.Sub("t"), PackFormat.RelativePath(1));
        var original = File.ReadAllBytes(pack);

        var flipped = (byte[])original.Clone();
        flipped[PackFormat.HeaderSize + PackFormat.RecordHeaderSize + 10] ^= 0x01;
        File.WriteAllBytes(pack, flipped);
        AssertDamaged("checksum mismatch");

        File.WriteAllBytes(pack, original[..(original.Length - 100)]);
        AssertDamaged("truncated");

        File.Delete(pack);
        AssertDamaged("missing");

        File.WriteAllBytes(pack, original);
        using var ok = TraceReader.Open(_dir.Sub("t"));
        Assert.True(TraceVerifier.Verify(ok).Ok);
    }

    [Fact]
    public void A_raw_blob_read_in_place_is_checked_by_its_hash_its_header_and_its_length()
    {
        var data = CodecTests.RandomBytes(100_000, 9); // incompressible: stored raw, read straight into the destination
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            WriteSession(w, _dir.Path, ("raw.bin", data));
        }

        var pack = Path.Combine(_dir.Sub("t"), PackFormat.RelativePath(1));
        var original = File.ReadAllBytes(pack);
        string ReadFirst()
        {
            using var r = TraceReader.Open(_dir.Sub("t"));
            var loc = r.AllBlobs().OrderBy(b => b.Offset).First();
            Assert.Equal(BlobCodec.Raw, loc.Codec);
            var into = new byte[loc.RawLength];
            try
            {
                r.Packs.Read(loc, into);
                Assert.Equal(data.AsSpan(0, into.Length).ToArray(), into);
                return "ok";
            }
            catch (BlobDamagedException e)
            {
                return e.Message;
            }
        }

        Assert.Equal("ok", ReadFirst());
        var damaged = (byte[])original.Clone();
        damaged[PackFormat.HeaderSize + PackFormat.RecordHeaderSize + 500] ^= 0x08;
        File.WriteAllBytes(pack, damaged);
        Assert.Contains("SHA-256 mismatch", ReadFirst());

        damaged = (byte[])original.Clone();
        damaged[PackFormat.HeaderSize + 6] = 1; // a reserved header byte
        File.WriteAllBytes(pack, damaged);
        Assert.Contains("must be zero", ReadFirst());

        File.WriteAllBytes(pack, original[..(PackFormat.HeaderSize + PackFormat.RecordHeaderSize + 10)]);
        Assert.Contains("truncated", ReadFirst());
    }

    [Fact]
    public void A_damaged_blob_that_no_version_uses_still_fails_verify()
    {
        var orphan = CodecTests.RandomBytes(50_000, 8);
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            var path = Path.Combine(_dir.Path, "orphan-src");
            File.WriteAllBytes(path, orphan);
            using (var h = File.OpenHandle(path))
            {
                FileIngest.Ingest(w, h, orphan.Length); // stored, then never named by a version (a superseded read)
            }

            WriteSession(w, _dir.Path, ("kept.txt", "kept"u8.ToArray()));
        }

        var pack = Path.Combine(_dir.Sub("t"), PackFormat.RelativePath(1));
        var original = File.ReadAllBytes(pack);
        var bytes = (byte[])original.Clone();
        bytes[PackFormat.HeaderSize + PackFormat.RecordHeaderSize + 1000] ^= 0x01;
        File.WriteAllBytes(pack, bytes);

        AssertOnlyProblem("no version uses it");

        // The same record with no blob row at all (what a superseded write leaves between named records).
        using (var db = SqliteDatabase.Open(Path.Combine(_dir.Sub("t"), "catalog.db"), readOnly: false))
        {
            db.Execute($"DELETE FROM blobs WHERE offset = {PackFormat.HeaderSize}");
        }

        AssertOnlyProblem("no blob row names");
        File.WriteAllBytes(pack, original);
        using var ok = TraceReader.Open(_dir.Sub("t"));
        Assert.True(TraceVerifier.Verify(ok, readData: false).Ok);
    }

    private void AssertOnlyProblem(string reason)
    {
        using var r = TraceReader.Open(_dir.Sub("t"));
        var report = TraceVerifier.Verify(r, readData: false);
        Assert.False(report.Ok);
        Assert.Empty(report.Damages);
        var problem = Assert.Single(report.Problems);
        Assert.Contains(reason, problem);
        Assert.StartsWith(PackFormat.RelativePath(1), problem);
    }

    private void AssertDamaged(string reason)
    {
        using var r = TraceReader.Open(_dir.Sub("t"));
        var report = TraceVerifier.Verify(r);
        Assert.False(report.Ok);
        var damage = Assert.Single(report.Damages.Select(d => d.Path).Distinct());
        Assert.Equal("victim.bin", damage);
        Assert.Contains(report.Damages, d => d.Reason.Contains(reason, StringComparison.Ordinal));
        Assert.All(report.Damages, d => Assert.NotNull(d.BlobId));
    }

    [Fact]
    public void A_newer_format_is_refused_with_exit_code_9()
    {
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            WriteSession(w, _dir.Path, ("a", "x"u8.ToArray()));
        }

        using (var db = SqliteDatabase.Open(Path.Combine(_dir.Sub("t"), "catalog.db"), readOnly: false))
        {
            db.Execute("UPDATE meta SET value = '99' WHERE key = 'format_version'");
        }

        var e = Assert.Throws<DiffKeeperException>(() => TraceReader.Open(_dir.Sub("t")));
        Assert.Equal(ExitCode.UnsupportedFormat, e.Code);
        Assert.Contains("99", e.Message);
        Assert.Equal(ExitCode.UnsupportedFormat, Assert.Throws<DiffKeeperException>(() => TraceWriter.Open(_dir.Sub("t"))).Code);
    }

    [Fact]
    public void A_missing_trace_is_exit_code_3()
    {
        var e = Assert.Throws<DiffKeeperException>(() => TraceReader.Open(_dir.Sub("nothing")));
        Assert.Equal(ExitCode.NoTrace, e.Code);
    }

    [Fact]
    public void Sparse_files_store_only_their_data()
    {
        var path = _dir.Sub("sparse");
        using (var h = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write))
        {
            RandomAccess.Write(h, CodecTests.RandomBytes(4096, 9), 64L << 20);
            RandomAccess.SetLength(h, 128L << 20);
        }

        using var w = TraceWriter.Open(_dir.Sub("t"));
        using var f = File.OpenHandle(path);
        var c = FileIngest.Ingest(w, f, 128L << 20);
        Assert.Equal(128L << 20, c.Size);
        Assert.True(c.StoredBytes < 64 * 1024, $"stored {c.StoredBytes} bytes for 4 KiB of data");
        Assert.True(ExtentMap.TryDecode(c.Extents, c.Size, out var extents));
        Assert.All(extents, e => Assert.InRange(e.Offset, 64L << 20, (64L << 20) + 4096));
    }

    [Fact]
    public void Parallel_and_sequential_ingest_store_the_same_chunks()
    {
        // 13 MiB: several 4 MiB buffers, so the parallel path's two buffers take turns and carry tails over.
        var data = CodecTests.RandomBytes(13 << 20, 21);
        Array.Copy(data, 0, data, 3 << 20, 1 << 20); // a repeated MiB: deduplicated within one file
        Array.Copy(data, 0, data, 9 << 20, 1 << 20); // and again, two buffers later
        var path = _dir.Sub("f");
        File.WriteAllBytes(path, data);
        IngestedContent Ingest(string trace, bool parallel)
        {
            using var w = TraceWriter.Open(_dir.Sub(trace));
            using var f = File.OpenHandle(path);
            return FileIngest.Ingest(w, f, data.Length, parallel);
        }

        var a = Ingest("seq", parallel: false);
        var b = Ingest("par", parallel: true);
        Assert.Equal(a.ContentId, b.ContentId);
        Assert.Equal(a.Extents, b.Extents);
        Assert.Equal(a.StoredBytes, b.StoredBytes);
        Assert.True(a.StoredBytes < data.Length - (1536 << 10), $"a repeated MiB was stored twice ({a.StoredBytes} bytes)");
    }

    private static long ReadCommitted(string trace)
    {
        using var r = TraceReader.Open(trace);
        return r.PacksCommitted().Single().CommittedSize;
    }

    private static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories).Where(f => Path.GetFileName(f) != "LOCK"))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }
}
