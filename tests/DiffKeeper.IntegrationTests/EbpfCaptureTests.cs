using System.Diagnostics;
using System.Text.Json;
using DiffKeeper.Replay.Tests;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// The eBPF backend on the real kernel: exact per-write payloads with pid and program, the process-tree filter,
/// --watch /, bursts without losses, and the fallback chain without privileges. Skipped, with the reason, where
/// the kernel or the user cannot run eBPF.
/// </summary>
public sealed class EbpfCaptureTests : IDisposable
{
    private readonly TempDir _dir = new();

    public EbpfCaptureTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    [Fact]
    public void Three_overwrites_within_a_millisecond_are_three_writes_each_with_its_own_content_pid_and_program()
    {
        SkipUnlessEbpf();
        var script = Path.Combine(_dir.Path, "three.py");
        File.WriteAllText(script, """
            import os, sys
            for text in [b"first version\n", b"second, longer version\n", b"third\n"]:
                with open("f.txt", "wb") as f:
                    f.write(text)
            print(os.getpid())
            os.unlink("f.txt")
            """);
        var r = Cli.Run(Work, "record", "--capture", "ebpf", "--trace", Trace, "--", "python3", script);
        Assert.True(r.ExitCode == 0, r.ToString());
        var pid = int.Parse(r.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);

        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        var writes = events.Where(e => Op(e) == "WRITE").ToList();
        Assert.Equal(3, writes.Count);
        Assert.All(writes, w =>
        {
            Assert.Equal("f.txt", w.GetProperty("path").GetString());
            Assert.Equal(pid, w.GetProperty("pid").GetInt32());
            Assert.Equal("python3", w.GetProperty("comm").GetString());
        });
        Assert.Contains(events, e => Op(e) == "DELETE" && e.GetProperty("path").GetString() == "f.txt");

        string[] expected = ["first version\n", "second, longer version\n", "third\n"];
        for (var i = 0; i < 3; i++)
        {
            var at = "#" + writes[i].GetProperty("seq").GetInt64();
            Assert.Equal(expected[i], Cli.Ok(Work, "show", "--trace", Trace, "f.txt", "--time", at).Stdout);
            var outDir = _dir.Sub("out" + i);
            Cli.Ok(Work, "export", "--trace", Trace, "--time", at, "--out", outDir);
            Assert.Equal(expected[i], File.ReadAllText(Path.Combine(outDir, "f.txt")));
        }

        Assert.Contains("ebpf", Cli.Ok(Work, "timeline", "--trace", Trace).Lines[0], StringComparison.Ordinal);
    }

    [Fact]
    public void A_full_ring_buffer_is_a_LOST_event_followed_by_a_rescan_and_the_end_state_is_exact()
    {
        SkipUnlessEbpf();
        // 64 MiB of 256 KiB writes (each carried whole) into a 1 MiB ring while the recorder is stopped (SIGSTOP to
        // diffkeeper, the command's parent; the kernel side runs in the writer): the ring fills, the kernel side drops
        // records and counts them. Without the stop a quiet machine's reader kept up (one CI run saw no LOST).
        var script = Path.Combine(_dir.Path, "flood.py");
        File.WriteAllText(script, """
            import os, signal
            block = bytes(range(256)) * 1024
            os.kill(os.getppid(), signal.SIGSTOP)
            try:
                for name in ["a.bin", "b.bin"]:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    for i in range(128):
                        os.write(fd, block[i:] + block[:i])
                    os.close(fd)
            finally:
                os.kill(os.getppid(), signal.SIGCONT)
            os.unlink("a.bin")
            with open("last.txt", "w") as f:
                f.write("written after the flood\n")
            """);
        var r = Cli.Run(Work, "record", "--capture", "ebpf", "--ring-buffer", "1", "--trace", Trace, "--", "python3", script);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("LOST", r.Stderr, StringComparison.Ordinal);

        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        Assert.Contains(events, e => Op(e) == "LOST" && e.GetProperty("detail").GetString()!.Contains("ring buffer full", StringComparison.Ordinal));
        var session = Cli.JsonLines(Cli.Ok(Work, "sessions", "--trace", Trace, "--json")).Single();
        Assert.True(session.GetProperty("lost_events").GetInt64() > 0);

        var outDir = _dir.Sub("out");
        Cli.Ok(Work, "export", "--trace", Trace, "--out", outDir);
        TreeSnapshot.AssertSame(TreeSnapshot.Take(Work), TreeSnapshot.Take(outDir), "export after eBPF ring buffer drops");
        Cli.Ok(Work, "verify", "--trace", Trace, "--read-data");
    }

    [Fact]
    public void The_light_skeleton_and_libbpf_loaders_record_the_same_events_and_verbose_names_the_fallback_once()
    {
        SkipUnlessEbpf();
        // Writes, a truncate, a rename and a delete: the kinds of record the kernel side reads through CO-RE-relocated
        // fields (file position, inode, mode, dentry walk), so a relocation resolved wrongly by either loader shows.
        var script = Path.Combine(_dir.Path, "both.py");
        File.WriteAllText(script, """
            import os
            os.makedirs("d", exist_ok=True)
            fd = os.open("d/a.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            os.write(fd, b"one\n")
            os.pwrite(fd, b"TWO", 10)
            os.ftruncate(fd, 6)
            os.close(fd)
            os.rename("d/a.txt", "d/b.txt")
            with open("c.txt", "w") as f:
                f.write("gone")
            os.unlink("c.txt")
            """);
        var seen = new List<string>[2];
        string[] loaders = ["skeleton", "libbpf"];
        for (var i = 0; i < 2; i++)
        {
            Directory.Delete(Work, recursive: true);
            Directory.CreateDirectory(Work);
            var trace = _dir.Sub("trace-" + loaders[i]);
            var environment = i == 1 ? new Dictionary<string, string> { ["DIFFKEEPER_EBPF_LOADER"] = "libbpf" } : null;
            var r = Cli.Run(environment, Work, "record", "--verbose", "--quiet", "--capture", "ebpf", "--trace", trace, "--", "python3", script);
            Assert.True(r.ExitCode == 0, r.ToString());
            var notes = r.Stderr.Split('\n').Where(l => l.Contains("light-skeleton", StringComparison.Ordinal)).ToList();
            if (i == 0)
            {
                Assert.Empty(notes); // this kernel and build load through the skeleton
            }
            else
            {
                Assert.Equal(["diffkeeper: capture: ebpf: not using the light-skeleton loader (DIFFKEEPER_EBPF_LOADER=libbpf); loading with libbpf"], notes);
            }

            seen[i] = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", trace, "--json"))
                .Where(e => Op(e) is not "EXIT")
                .Select(e => $"{Op(e)} {e.GetProperty("path").GetString()} {e.GetProperty("comm").GetString()}")
                .ToList();
            Assert.Equal("one\n\0\0", Cli.Ok(Work, "show", "--trace", trace, "d/b.txt").Stdout);
        }

        Assert.Equal(seen[1], seen[0]);
        Assert.Contains("RENAME d/a.txt python3", seen[0]);
    }

    [Fact]
    public void A_write_larger_than_the_payload_limit_is_read_back_and_marked_so()
    {
        SkipUnlessEbpf();
        var writes = WritesOfRecordedPython("big.py", """
            import os
            fd = os.open("big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"small")
            os.write(fd, b"B" * 5000)
            os.close(fd)
            """, "--max-payload", "1000");
        Assert.Equal(2, writes.Count);
        Assert.Equal(JsonValueKind.Null, writes[0].GetProperty("detail").ValueKind);
        Assert.Equal("read back", writes[1].GetProperty("detail").GetString());
        Assert.Equal("small", Cli.Ok(Work, "show", "--trace", Trace, "big.bin", "--time", "#" + writes[0].GetProperty("seq").GetInt64()).Stdout);
        Assert.Equal("small" + new string('B', 5000), Cli.Ok(Work, "show", "--trace", Trace, "big.bin").Stdout);
    }

    // copy_file_range and sendfile, as `cp` and Python's shutil use them: the kernel copies, so no buffer held the
    // bytes. They were read back, and `show --time #seq` of a copy followed at once by a write showed the file as
    // before the copy (`cp /etc/services x; echo >> x`: empty at the copy's seq). The record names the source range;
    // the recorder takes it from its copy of a file in the tree, or reads a file outside it unchanged since the copy.
    [Fact]
    public void Copied_ranges_from_outside_and_inside_the_tree_are_exact_at_each_seq()
    {
        SkipUnlessEbpf();
        var outside = Path.Combine(_dir.Path, "outside.bin");
        var o = string.Concat(Enumerable.Range(0, 2000).Select(i => (i % 97).ToString("D2", System.Globalization.CultureInfo.InvariantCulture) + "abcdefgh"));
        File.WriteAllText(outside, o);
        File.WriteAllText(outside + "2", o);
        var writes = WritesOfRecordedPython("copies.py", $$"""
            import os
            src = os.open("{{outside}}", os.O_RDONLY)
            c = os.open("c.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            os.copy_file_range(src, c, 5000)
            os.write(c, b"!")
            os.sendfile(c, src, 10, 20)
            os.write(c, b"?")
            os.close(c)
            r = os.open("c.bin", os.O_RDONLY)
            d = os.open("d.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            os.copy_file_range(r, d, 12, 4995, 0)
            os.write(d, b"#")
            src2 = os.open("{{outside}}2", os.O_RDWR)
            e = os.open("e.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            os.copy_file_range(src2, e, 100, 0)
            os.pwrite(src2, b"X" * 100, 0)
            """);
        // A source changed right after the copy: never the changed bytes (its ctime refuses the read of it then).
        var e = writes.Single(w => w.GetProperty("path").GetString() == "e.bin");
        Assert.Equal(o[..100], Cli.Ok(Work, "show", "--trace", Trace, "e.bin", "--time", "#" + e.GetProperty("seq").GetInt64()).Stdout);
        writes.Remove(e);
        Assert.Equal(6, writes.Count);
        Assert.All(writes, w => Assert.Equal(JsonValueKind.Null, w.GetProperty("detail").ValueKind));
        string At(int i) => Cli.Ok(Work, "show", "--trace", Trace, writes[i].GetProperty("path").GetString()!, "--time", "#" + writes[i].GetProperty("seq").GetInt64()).Stdout;
        var c = o[..5000] + "!" + o[10..30] + "?";
        Assert.Equal(o[..5000], At(0));
        Assert.Equal(o[..5000] + "!", At(1));
        Assert.Equal(o[..5000] + "!" + o[10..30], At(2));
        Assert.Equal(c, At(3));
        Assert.Equal(c[4995..5007], At(4));
        Assert.Equal("#" + c[4996..5007], At(5));
    }

    // FICLONE and FICLONERANGE (`cp` clones first on btrfs and xfs): a clone reads as a copy of the source's range
    // and is sent as one; they were read back, like copy_file_range, so `#seq` of a clone followed by a write was wrong.
    [Theory]
    [InlineData("btrfs")]
    [InlineData("xfs")]
    public void Cloned_ranges_are_exact_at_each_seq(string fileSystem)
    {
        SkipUnlessEbpf();
        using var mount = LoopMount.CreateOrSkip(fileSystem);
        var work = Path.Combine(mount.Path, "work");
        var trace = Path.Combine(mount.Path, "trace");
        Directory.CreateDirectory(work);
        var outside = Path.Combine(mount.Path, "outside.bin");
        var o = new string('S', 4096) + new string('T', 4096) + new string('u', 100);
        File.WriteAllText(outside, o);
        var script = Path.Combine(_dir.Path, "clones.py");
        File.WriteAllText(script, $$"""
            import os, fcntl, struct, subprocess
            src = os.open("{{outside}}", os.O_RDONLY)
            a = os.open("a.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            fcntl.ioctl(a, 0x40049409, src)
            os.write(a, b"!")
            b = os.open("b.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(b, b"D" * 20000)
            fcntl.ioctl(b, 0x4020940d, struct.pack("qQQQ", src, 4096, 4096, 8192))
            os.pwrite(b, b"?", 8191)
            fcntl.ioctl(b, 0x4020940d, struct.pack("qQQQ", src, 4096, 0, 16384))
            os.pwrite(b, b"#", 16384)
            subprocess.run(["cp", "--reflink=always", "{{outside}}", "c.bin"], check=True)
            with open("c.bin", "ab") as c:
                c.write(b"+")
            """);
        var r = Cli.Run(work, ["record", "--capture", "ebpf", "--trace", trace, "--", "python3", script]);
        Assert.True(r.ExitCode == 0, r.ToString());
        var writes = Cli.JsonLines(Cli.Ok(work, "timeline", "--trace", trace, "--json")).Where(e => Op(e) == "WRITE").ToList();
        Assert.All(writes, w => Assert.Equal(JsonValueKind.Null, w.GetProperty("detail").ValueKind));
        List<string> Versions(string path) => [.. writes.Where(w => w.GetProperty("path").GetString() == path)
            .Select(w => Cli.Ok(work, "show", "--trace", trace, path, "--time", "#" + w.GetProperty("seq").GetInt64()).Stdout)];
        Assert.Equal([o, "!" + o[1..]], Versions("a.bin"));
        var b1 = new string('D', 8192) + o[4096..8192] + new string('D', 20000 - 12288);
        var b2 = b1[..8191] + "?" + b1[8192..];
        var b3 = b2[..16384] + o[4096..];
        Assert.Equal([new string('D', 20000), b1, b2, b3, b3[..16384] + "#" + b3[16385..]], Versions("b.bin"));
        Assert.Equal([o, o + "+"], Versions("c.bin"));
    }

    [Fact]
    public void Vectored_writes_carry_their_bytes_so_each_seq_is_exact_and_more_than_16_vectors_are_read_back()
    {
        SkipUnlessEbpf();
        var writes = WritesOfRecordedPython("vec.py", """
            import os
            fd = os.open("v.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            os.writev(fd, [b"hel", b"", b"lo ", b"world"])
            os.write(fd, b"!")
            os.pwritev(fd, [b"W", b"O"], 6)
            os.pwrite(fd, b"x", 0)
            os.writev(fd, [b"A" * 40000, b"B" * 30000, b"C" * 70000])
            os.writev(fd, [b"%d" % i for i in range(17)])
            os.close(fd)
            fd = os.open("a.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, b"one ")
            os.pwritev(fd, [b"tw", b"o "], 0)
            os.pwrite(fd, b"three", 1)
            os.close(fd)
            """);
        var appended = writes.Where(w => w.GetProperty("path").GetString() == "a.log").ToList();
        writes = writes.Where(w => w.GetProperty("path").GetString() == "v.bin").ToList();
        Assert.Equal(6, writes.Count);
        string At(int i) => Cli.Ok(Work, "show", "--trace", Trace, "v.bin", "--time", "#" + writes[i].GetProperty("seq").GetInt64()).Stdout;
        Assert.Equal("hello world", At(0));
        Assert.Equal("hello world!", At(1));
        Assert.Equal("hello WOrld!", At(2));
        Assert.Equal("xello WOrld!", At(3));
        Assert.Equal("xello WOrld!" + new string('A', 40000) + new string('B', 30000) + new string('C', 70000), At(4));
        Assert.All(writes.Take(5), w => Assert.Equal(JsonValueKind.Null, w.GetProperty("detail").ValueKind));
        Assert.Equal("read back", writes[5].GetProperty("detail").GetString());
        Assert.Equal(6, writes[2].GetProperty("offset").GetInt64());
        Assert.Equal(12, writes[4].GetProperty("offset").GetInt64());
        Assert.Equal(At(4) + string.Concat(Enumerable.Range(0, 17)), Cli.Ok(Work, "show", "--trace", Trace, "v.bin").Stdout);

        // On an O_APPEND file pwrite and pwritev write at the end whatever their offset says: read back, not put at it.
        Assert.Equal(3, appended.Count);
        Assert.Equal([null, "read back", "read back"], appended.Select(w => w.GetProperty("detail").GetString()));
        Assert.Equal("one two three", Cli.Ok(Work, "show", "--trace", Trace, "a.log").Stdout);
    }

    [Fact]
    public async Task Another_process_writing_into_the_watched_tree_is_not_recorded_but_a_double_forked_child_of_the_command_is()
    {
        SkipUnlessEbpf();
        var control = _dir.Sub("control");
        Directory.CreateDirectory(control);
        // The daemon's parent (a subshell) exits at once: the daemon is reparented away from the command.
        var script = $"echo parent > parent.txt; ( sh -c 'echo daemon > daemon.txt; touch {control}/daemon' & ); " +
            $"while [ ! -e {control}/done ]; do sleep 0.02; done";
        using var record = Cli.Start(Work, "record", "--capture", "ebpf", "--trace", Trace, "--", "sh", "-c", script);
        WaitFor(Path.Combine(control, "daemon"), record);
        // This test process is outside the recorded tree: its file comes and goes while the command runs.
        var outside = Path.Combine(Work, "outside.txt");
        File.WriteAllText(outside, "not recorded");
        File.AppendAllText(outside, " either");
        File.Delete(outside);
        var events = await FinishedTimeline(record, control);
        Assert.DoesNotContain(events, e => e.GetProperty("path").GetString() == "outside.txt");
        Assert.Contains(events, e => Op(e) == "CREATE" && e.GetProperty("path").GetString() == "daemon.txt" && e.GetProperty("pid").ValueKind == JsonValueKind.Number);
        Assert.Contains(events, e => Op(e) == "CREATE" && e.GetProperty("path").GetString() == "parent.txt");
        Assert.Equal("daemon\n", Cli.Ok(Work, "show", "--trace", Trace, "daemon.txt").Stdout);
    }

    [Fact]
    public async Task A_process_that_gets_the_pid_of_an_exited_recorded_process_on_its_cpu_is_not_recorded()
    {
        SkipUnlessEbpf();
        if (Environment.ProcessorCount < 2)
        {
            Assert.Skip("needs two CPUs: the recorded shell waits on one while the pid is reused on the other");
        }

        // The kernel side remembers, per CPU, the last process it found recorded. Here a recorded process runs last
        // on CPU 0 and exits; then a process outside the tree is given its pid (ns_last_pid) on CPU 0 and writes
        // into the watched tree. The exit must make that memory stale, or the stranger is recorded.
        var control = _dir.Sub("control");
        Directory.CreateDirectory(control);
        var child = Path.Combine(_dir.Path, "child.py");
        File.WriteAllText(child, $$"""
            import os
            with open("recorded.txt", "w") as f:
                f.write("recorded")
            with open("{{control}}/pid.tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename("{{control}}/pid.tmp", "{{control}}/pid")
            """);
        // The shell and its sleeps stay on CPU 1 (affinity is inherited); only the child runs on CPU 0.
        var script = $"taskset -c 0 python3 {child}; touch {control}/exited; " +
            $"while [ ! -e {control}/done ]; do sleep 0.02; done";
        using var record = Cli.Start(Work, "record", "--capture", "ebpf", "--trace", Trace, "--", "taskset", "-c", "1", "sh", "-c", script);
        WaitFor(Path.Combine(control, "exited"), record);
        var pid = File.ReadAllText(Path.Combine(control, "pid"));

        var stranger = Path.Combine(_dir.Path, "stranger.py");
        File.WriteAllText(stranger, """
            import os, sys
            target, path = int(sys.argv[1]), sys.argv[2]
            os.sched_setaffinity(0, {0})
            for attempt in range(5000):
                with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                    f.write(str(target - 1))
                pid = os.fork()
                if pid == 0:
                    if os.getpid() == target:
                        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                        os.write(fd, b"not recorded")
                        os.close(fd)
                    os._exit(0)
                os.waitpid(pid, 0)
                if pid == target:
                    print("reused")
                    sys.exit(0)
            print("not reused")
            """);
        var psi = new ProcessStartInfo("python3", [stranger, pid, Path.Combine(Work, "stranger.txt")]) { RedirectStandardOutput = true };
        string reused;
        using (var p = Process.Start(psi)!)
        {
            reused = (await p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken)).Trim();
            await p.WaitForExitAsync(TestContext.Current.CancellationToken);
        }

        Assert.Equal("reused", reused);
        // Gone before the end, so the reconcile scan does not see it either: any event naming it is the stranger's.
        File.Delete(Path.Combine(Work, "stranger.txt"));
        var events = await FinishedTimeline(record, control);
        Assert.Contains(events, e => Op(e) == "CREATE" && e.GetProperty("path").GetString() == "recorded.txt");
        Assert.DoesNotContain(events, e => e.GetProperty("path").GetString() == "stranger.txt");
    }

    [Fact]
    public void With_watch_root_a_write_under_tmp_is_recorded_and_exported_under_its_absolute_path()
    {
        SkipUnlessEbpf();
        var target = Path.Combine(Path.GetTempPath(), "dk-abs-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            var r = Cli.Run(Work, "record", "--capture", "ebpf", "--watch", "/", "--trace", Trace, "--", "sh", "-c",
                $"mkdir {target}; echo hello > {target}/f.txt; echo world >> {target}/f.txt");
            Assert.True(r.ExitCode == 0, r.ToString());
            var rel = target.TrimStart('/') + "/f.txt";
            var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
            Assert.Equal(2, events.Count(e => Op(e) == "WRITE" && e.GetProperty("path").GetString()!.EndsWith(rel, StringComparison.Ordinal)));
            var outDir = _dir.Sub("out");
            Cli.Ok(Work, "export", "--trace", Trace, "--out", outDir);
            Assert.Equal("hello\nworld\n", File.ReadAllText(Path.Combine(outDir, rel)));
            // Only what the command touched: not the rest of the file system, not the trace itself.
            Assert.DoesNotContain(events, e => e.GetProperty("path").GetString() is { } p && p.Contains("catalog.db", StringComparison.Ordinal));
        }
        finally
        {
            if (Directory.Exists(target))
            {
                Directory.Delete(target, true);
            }
        }
    }

    [Theory]
    [InlineData("tmpfs")]
    [InlineData("ext4")]
    public void A_burst_of_120000_creates_in_new_directories_is_recorded_in_full_without_loss(string fileSystem)
    {
        SkipUnlessEbpf();
        var root = Work;
        var mounted = false;
        if (fileSystem == "tmpfs")
        {
            root = _dir.Sub("tmpfs");
            Directory.CreateDirectory(root);
            var mount = Process.Start("mount", ["-t", "tmpfs", "-o", "size=512m", "dk-test", root])!;
            mount.WaitForExit();
            Assert.Equal(0, mount.ExitCode);
            mounted = true;
        }
        else if (!IsFileSystem(root, "ext4"))
        {
            Assert.Skip($"{root} is not on ext4 here");
        }

        try
        {
            var script = Path.Combine(_dir.Path, "creates.py");
            File.WriteAllText(script, """
                import os
                for d in range(120):
                    os.mkdir(f"d{d:03}")
                    for i in range(1000):
                        os.close(os.open(f"d{d:03}/f{i:04}", os.O_WRONLY | os.O_CREAT, 0o644))
                """);
            var r = Cli.Run(root, "record", "--capture", "ebpf", "--trace", Trace, "--", "python3", script);
            Assert.True(r.ExitCode == 0, r.ToString());
            var events = Cli.JsonLines(Cli.Ok(root, "timeline", "--trace", Trace, "--json"));
            Assert.Equal(0, events.Count(e => Op(e) == "LOST"));
            Assert.Equal(120_000, events.Count(e => Op(e) == "CREATE" && e.GetProperty("detail").ValueKind == JsonValueKind.Null));
            Assert.Equal(120, events.Count(e => Op(e) == "MKDIR" && e.GetProperty("detail").ValueKind == JsonValueKind.Null));
            var session = Cli.JsonLines(Cli.Ok(root, "sessions", "--trace", Trace, "--json")).Single();
            Assert.Equal(0, session.GetProperty("lost_events").GetInt64());
        }
        finally
        {
            if (mounted)
            {
                Process.Start("umount", ["-l", root])!.WaitForExit();
            }
        }
    }

    [Fact]
    public async Task Without_privileges_auto_falls_back_saying_why_and_still_records()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("needs root to drop privileges with setpriv");
        }

        foreach (var d in new[] { _dir.Path, Work })
        {
            File.SetUnixFileMode(d, (UnixFileMode)0x1FF);
        }

        var bundle = _dir.Sub("bundle");
        Directory.CreateDirectory(bundle);
        File.SetUnixFileMode(bundle, (UnixFileMode)0x1FF);
        var psi = new ProcessStartInfo("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Cli.Executable,
            "record", "--capture", "auto", "--trace", Trace, "--", "sh", "-c", "echo recorded > f.txt"])
        {
            WorkingDirectory = Work,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        psi.Environment["DOTNET_BUNDLE_EXTRACT_BASE_DIR"] = bundle;
        psi.Environment["HOME"] = bundle;
        using var p = Process.Start(psi)!;
        var ct = TestContext.Current.CancellationToken;
        var stderr = p.StandardError.ReadToEndAsync(ct);
        await p.StandardOutput.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        var err = await stderr;
        Assert.True(p.ExitCode == 0, err);
        Assert.Contains("diffkeeper: capture: not using ebpf: eBPF capture is not available: not root", err, StringComparison.Ordinal);
        Assert.Contains("diffkeeper: capture: not using fanotify: ", err, StringComparison.Ordinal);
        Assert.Equal("recorded\n", Cli.Ok(Work, "show", "--trace", Trace, "f.txt").Stdout);
        var session = Cli.JsonLines(Cli.Ok(Work, "sessions", "--trace", Trace, "--json")).Single();
        Assert.Equal("inotify", session.GetProperty("capture").GetString());
    }

    [Fact]
    public void Asking_for_ebpf_where_it_cannot_run_fails_with_one_line_and_exit_code_10()
    {
        if (Environment.UserName != "root")
        {
            var r = Cli.Run(Work, "record", "--capture", "ebpf", "--trace", Trace, "--", "true");
            Assert.Equal(10, r.ExitCode);
            Assert.StartsWith("diffkeeper: eBPF capture is not available:", r.Stderr, StringComparison.Ordinal);
            return;
        }

        Assert.Skip("runs only without root (as root, eBPF can run)");
    }

    [Fact]
    public void The_scan_backend_records_the_before_and_after_states()
    {
        File.WriteAllText(Path.Combine(Work, "old.txt"), "old");
        var r = Cli.Run(Work, "record", "--capture", "scan", "--trace", Trace, "--", "sh", "-c", "echo a > a.txt; echo b > a.txt; rm old.txt");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("b\n", Cli.Ok(Work, "show", "--trace", Trace, "a.txt").Stdout);
        Assert.Equal("old", Cli.Ok(Work, "show", "--trace", Trace, "old.txt", "--time", "start").Stdout);
        var session = Cli.JsonLines(Cli.Ok(Work, "sessions", "--trace", Trace, "--json")).Single();
        Assert.Equal("scan", session.GetProperty("capture").GetString());
    }

    private static string? Op(JsonElement e) => e.GetProperty("op").GetString();

    /// <summary>Tells the recorded command it may end (control/done, stdin closed), waits for `record` and returns the timeline.</summary>
    private async Task<List<JsonElement>> FinishedTimeline(Process record, string control)
    {
        File.WriteAllText(Path.Combine(control, "done"), "");
        record.StandardInput.Close();
        var ct = TestContext.Current.CancellationToken;
        var stderr = record.StandardError.ReadToEndAsync(ct);
        await record.StandardOutput.ReadToEndAsync(ct);
        await record.WaitForExitAsync(ct);
        Assert.True(record.ExitCode == 0, await stderr);
        return Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
    }

    /// <summary>Records a python3 script (in the work directory) with eBPF and returns its WRITE events.</summary>
    private List<JsonElement> WritesOfRecordedPython(string name, string source, params string[] options)
    {
        var script = Path.Combine(_dir.Path, name);
        File.WriteAllText(script, source);
        var r = Cli.Run(Work, ["record", "--capture", "ebpf", .. options, "--trace", Trace, "--", "python3", script]);
        Assert.True(r.ExitCode == 0, r.ToString());
        return Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json")).Where(e => Op(e) == "WRITE").ToList();
    }

    private static void SkipUnlessEbpf() => EbpfSupport.SkipUnlessAvailable();

    private static bool IsFileSystem(string path, string type)
    {
        var psi = new ProcessStartInfo("stat", ["-f", "-c", "%T", path]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return output.Contains(type == "ext4" ? "ext2/ext3" : type, StringComparison.Ordinal);
    }

    private static void WaitFor(string path, Process record)
    {
        var sw = Stopwatch.StartNew();
        while (!File.Exists(path))
        {
            if (record.HasExited)
            {
                throw new InvalidOperationException($"record exited early with {record.ExitCode}: {record.StandardError.ReadToEnd()}");
            }

            if (sw.Elapsed > TimeSpan.FromMinutes(2))
            {
                throw new TimeoutException($"{path} did not appear");
            }

            Thread.Sleep(10);
        }
    }
}
