namespace DiffKeeper.Capture.Tests;

/// <summary>
/// Minimal scripts of mismatches the conformance suite found (and the issue reported). Fixed ones run as
/// regressions; the others are skipped with the exact reason, and the generator leaves their feature out for that
/// backend (<see cref="Backend.KnownFailures"/>): remove both when the cause is fixed.
/// </summary>
public sealed class ScriptedHistoryTests
{
    private static Op O(string name, string[] paths, params string[] rest) => new(name, paths, rest);

    private static void AssertConforms(string backendName, History history)
    {
        var backend = Backend.Named(backendName);
        backend.SkipIfUnavailable();
        var problems = ConformanceRun.Run(backend, new Batch(0, [history]));
        Assert.True(problems.Count == 0, string.Join("\n", problems) + "\n" + history);
    }

    [Fact]
    public void Ebpf_a_directory_renamed_then_deleted_is_exported_under_its_new_name_at_the_rename() =>
        AssertConforms("ebpf", new History([], [
            [O("mkdirp", ["d/e"]), O("write", ["d/e/g"], "0", "2", "1")],
            [O("rename", ["d/e", "d/h"]), O("rmr", ["d"])],
        ]));

    [Fact]
    public void Ebpf_a_file_created_with_mode_0_has_mode_0_at_its_create() =>
        AssertConforms("ebpf", new History([], [[O("create", ["a"], "0"), O("unlink", ["a"])]]));

    [Fact]
    public void Ebpf_fchmod_right_after_a_write_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([], [[O("writechmod", ["g"], "0", "2", "1", "600"), O("chmod", ["g"], "755")]]));

    [Fact]
    public void Ebpf_a_write_to_a_file_of_a_renamed_directory_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([], [
            [O("mkdir", ["c"], "750"), O("write", ["c/a"], "2000", "69", "51"), O("rename", ["c", "b"]), O("write", ["b/a"], "210", "4673", "501"), O("unlink", ["b/a"])],
        ]));

    [Fact]
    public void Ebpf_a_symlink_whose_directory_is_renamed_at_once_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([], [
            [O("mkdir", ["n%0Al"], "700"), new Op("symlink", ["n%0Al/x%20y"], [], "x%20target/64"), O("rename", ["n%0Al", "%C3%A9t%C3%A9"])],
        ]));

    [Fact]
    public void Ebpf_tar_placeholder_is_an_empty_mode_0_file_until_it_becomes_a_symlink() =>
        AssertConforms("ebpf", new History([], [[O("create", ["g"], "0"), O("unlink", ["g"]), new Op("symlink", ["g"], [], "tar%20target")]]));

    [Fact]
    public void Inotify_RENAME_EXCHANGE_of_a_directory_and_a_file_keeps_both() =>
        AssertConforms("inotify", new History([O("mkdirp", ["g/sub/n%0Al"])], [
            [O("write", ["g/%C3%A9t%C3%A9"], "0", "2524", "330"), O("exchange", ["g/sub/n%0Al", "g/%C3%A9t%C3%A9"])],
        ]));

    [Fact]
    public void Fanotify_RENAME_EXCHANGE_of_a_directory_and_a_file_keeps_the_directory_mode() =>
        AssertConforms("fanotify", new History([O("mkdirp", ["a/g/a"])], [
            [O("write", ["%C3%A9t%C3%A9"], "0", "3", "151"), O("exchange", ["a", "%C3%A9t%C3%A9"])],
        ]));

    // The recorder seeds its copy of a baseline file from the version it stored, not from the path, which is gone
    // by the time it handles the write (it used to export the baseline bytes at the write's #seq).
    [Fact]
    public void Ebpf_the_first_write_to_a_baseline_file_renamed_at_once_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([O("mkdirp", ["d"]), O("write", ["n"], "0", "73", "743")], [
            [O("write", ["n"], "1564", "2867", "829"), O("rename", ["n", "d/n"])],
        ]));

    // Soak of 2026-12-06 (batch seed 1258848698): a baseline file truncated up, then exchanged.
    [Fact]
    public void Ebpf_a_baseline_file_truncated_up_then_exchanged_is_exact_at_every_seq() =>
        AssertConforms("ebpf", new History([O("write", ["g"], "0", "2140", "334"), O("write", ["-dash"], "0", "3204", "446")], [
            [O("trunc", ["-dash"], "32774"), O("exchange", ["-dash", "g"])],
        ]));

    // CI clone run of 2026-12-06 (batch seed 1396172810), shrunk: a chmod of a baseline directory while it waited to be
    // read (a file written in it just before) was dated to the next write below it.
    [Fact]
    public void Ebpf_a_chmod_of_a_directory_waiting_to_be_read_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([O("mkdirp", ["b/g/-dash"])], [
            [O("write", ["b/g/x%20y"], "0", "37845", "726"), O("chmod", ["b/g"], "750"), O("write", ["b/g/b"], "0", "3902", "646")],
        ]));

    // Soak of 2026-12-06 under load (batch seed 1406267029), shrunk: the directory, waiting to be read after its
    // children were made, was read after the chmod (which stored 0755 at its own event) and that read was stored at
    // the children's #seq, so the export between them showed the later mode.
    [Fact]
    public void Ebpf_a_chmod_of_a_directory_whose_children_were_just_made_is_not_seen_before_it() =>
        AssertConforms("ebpf", new History([], [
            [O("mkdir", ["%80lead"], "711")],
            [O("mkdirp", ["%80lead/g/s%20p%0A%FE%C3/c"]), O("chmod", ["%80lead"], "755")],
        ]));

    // Soak of 2026-12-06 at load 15 (h21 of a 50-history batch), shrunk by hand: a baseline directory read after a
    // child was made in it, when the chmod right after had run but its event was not handled yet.
    [Fact]
    public void Ebpf_a_chmod_right_after_a_mkdir_inside_is_not_seen_at_the_mkdir() =>
        AssertConforms("ebpf", new History([O("mkdirp", ["bad%FFbyte/%C3%A9t%C3%A9/bad%FFbyte"])], [
            [O("mkdir", ["bad%FFbyte/%C3%A9t%C3%A9/bad%FFbyte/c"], "755"), O("chmod", ["bad%FFbyte/%C3%A9t%C3%A9/bad%FFbyte"], "750")],
        ]));

    [Fact]
    public void Ebpf_an_append_after_a_punched_hole_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([], [
            [O("write", ["sub"], "619", "28430", "566"), O("punch", ["sub"], "61540", "4096"), O("append", ["sub"], "3955", "505"), O("append", ["sub"], "983", "814")],
        ]));

    [Fact]
    public void Ebpf_an_append_to_a_big_sparse_file_written_just_before_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([], [
            [O("write", ["x"], "2099104", "1137", "947"), O("append", ["x"], "29567", "626"), O("write", ["x"], "132731", "3", "976")],
        ]));

    [Fact]
    public void Ebpf_RENAME_EXCHANGE_of_a_directory_and_a_file_swaps_their_subtrees() =>
        AssertConforms("ebpf", new History([], [
            [O("write", ["sub"], "0", "4299", "23"), O("mkdirp", ["x%20y/b/e"])],
            [O("exchange", ["x%20y", "sub"]), O("append", ["x%20y"], "7", "964")],
        ]));

    // After the exchange, a names the baseline file, which has no followed copy: its copy comes from the stored
    // version (a read of a found nothing, a being unlinked before the recorder got to the append).
    [Fact]
    public void Ebpf_RENAME_EXCHANGE_of_two_files_then_writes_through_both_names_is_exact_at_every_seq() =>
        AssertConforms("ebpf", new History([O("write", ["b"], "0", "30", "8")], [
            [O("write", ["a"], "0", "20", "3"), O("exchange", ["a", "b"]), O("append", ["a"], "5", "9"), O("append", ["b"], "7", "1"), O("unlink", ["a"])],
        ]));

    // CI run of 2026-12-06, batch seed 837876292, shrunk. Both fanotify exchange scripts name a file \x80lead: the
    // exchange was recognised with Path.Exists, which cannot name a path that is not UTF-8 (and follows symlinks).
    [Fact]
    public void Fanotify_RENAME_EXCHANGE_of_a_directory_and_a_file_appended_just_before_keeps_the_directory() =>
        AssertConforms("fanotify", new History([O("mkdirp", ["e/%80lead/g"])], [
            [O("append", ["e/%80lead/x%20y"], "340", "5"), O("exchange", ["e/%80lead/g", "e/%80lead/x%20y"])],
        ]));

    // Batch seed 365369735, shrunk (see above).
    [Fact]
    public void Fanotify_RENAME_EXCHANGE_of_a_hard_link_and_a_symlink_keeps_the_link() =>
        AssertConforms("fanotify", new History([O("mkdir", ["%C3%A9t%C3%A9"], "750"), O("write", ["s%20p%0A%FE%C3"], "0", "77", "846")], [
            [new Op("symlink", ["%C3%A9t%C3%A9/b"], [], "../s%20p%0A%FE%C3"), O("link", ["s%20p%0A%FE%C3", "%80lead"]), O("exchange", ["%80lead", "%C3%A9t%C3%A9/b"])],
        ]));

    // CI run of 2026-12-06, batch seed 1703426392, shrunk: inotify reports the exchange as two opposite renames, paired
    // into an exchange only when both names were still there; one is renamed away at once here. Now the recorder
    // decides by inode (the remaining name holds the file the other one had).
    [Fact]
    public void Inotify_RENAME_EXCHANGE_then_a_rename_of_one_name_keeps_the_other() =>
        AssertConforms("inotify", new History([O("write", ["sub"], "0", "8828", "611")], [
            [O("write", ["%80lead"], "0", "30741", "68"), O("exchange", ["sub", "%80lead"]), O("mkdirp", ["%C3%A9t%C3%A9"]),
             O("rename", ["sub", "%C3%A9t%C3%A9/s%20p%0A%FE%C3"])],
        ]));

    // Seed 530062095 (full suite run after the merges of 2026-12-06), shrunk: the exchanged pair's new name is a symlink
    // made just before and not read yet, so no inode tells; the name the second rename left is there, which two renames
    // could not leave.
    [Fact]
    public void Inotify_RENAME_EXCHANGE_of_a_new_symlink_and_a_file_then_a_rename_keeps_both() =>
        AssertConforms("inotify", new History([O("mkdir", ["e"], "750")], [
            [O("write", ["e/s%20p%0A%FE%C3"], "0", "4843", "292"), new Op("symlink", ["b"], [], "tar%20target"), O("exchange", ["b", "e/s%20p%0A%FE%C3"]),
             O("rename", ["b", "e/b"])],
        ]));

    [Fact]
    public void Inotify_RENAME_EXCHANGE_of_two_directories_keeps_watching_both() =>
        AssertConforms("inotify", new History([O("mkdirp", ["p/q"]), O("mkdirp", ["r/s"])], [
            [O("exchange", ["p", "r"])],
            [O("write", ["p/s/f"], "0", "10", "2"), O("write", ["r/q/g"], "0", "12", "3")],
        ]));

    [Fact]
    public void Fanotify_RENAME_EXCHANGE_of_two_directories_keeps_both_subtrees() =>
        AssertConforms("fanotify", new History([O("mkdirp", ["p/q"]), O("mkdirp", ["r/s"])], [
            [O("exchange", ["p", "r"])],
            [O("write", ["p/s/f"], "0", "10", "2"), O("write", ["r/q/g"], "0", "12", "3")],
        ]));

    // Found by the 250-history run of 2026-12-06 (batch seed 1159183016): the parent of the new directory, waiting to be
    // read, moved to its new name with the seq of the mkdir, so the export at the mkdir showed the swapped tree.
    // Under load (1 run in 10 at load 10, 2026-12-06) the read of -dash/c waiting after its child's mkdir saw the file
    // exchanged onto its name and stored it at the mkdir's #seq: a read finding another kind now keeps what is known
    // (the exchange is its own event). The same shape as the soak's open "h7/x y/g below a file" failure.
    [Fact]
    public void Ebpf_RENAME_EXCHANGE_of_a_directory_made_in_the_same_burst_is_exported_after_it_only() =>
        AssertConforms("ebpf", new History([], [
            [O("write", ["%C3%A9t%C3%A9"], "454", "4087", "229"), O("mkdirp", ["-dash/c/sub/c"]), O("exchange", ["-dash/c", "%C3%A9t%C3%A9"])],
        ]));

    // Paths are byte strings (issue 10): names that are not UTF-8, in the baseline and made during the recording.
    [Theory]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void Names_that_are_not_UTF8_in_the_baseline_and_made_during_the_recording_are_recorded_and_exported(string backend) =>
        AssertConforms(backend, new History([O("write", ["base%FEline"], "0", "4", "3")], [
            [O("write", ["bad%FFbyte"], "0", "5", "1"), O("mkdir", ["d%80ir"], "755"), O("write", ["d%80ir/f"], "0", "3", "2")],
            [O("rename", ["bad%FFbyte", "d%80ir/n%0Al%FF"]), O("append", ["base%FEline"], "7", "4")],
        ]));

    // A path longer than PATH_MAX (25 nested 200-byte directories made with mkdirat, a file in the deepest) used to
    // stop eBPF and fanotify recordings ("recording stopped early: ... File name too long", no EXIT, the session left
    // "recording") and was left out by inotify and scan. ConformanceRun also checks that the session ends with EXIT.
    [Theory]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void Paths_longer_than_PATH_MAX_are_recorded_and_exported_and_the_recording_ends_with_EXIT(string backend)
    {
        var deep = string.Concat(Enumerable.Range(0, 25).Select(i => new string((char)('k' + i % 10), 200) + "/"));
        AssertConforms(backend, new History([O("mkdirp", ["b/" + deep.TrimEnd('/')]), O("write", ["b/" + deep + "base"], "0", "9", "4")], [
            [O("mkdirp", ["d/" + deep.TrimEnd('/')]), O("write", ["d/" + deep + "deep"], "0", "5", "1")],
            [O("append", ["d/" + deep + "deep"], "3", "2"), O("rename", ["d/" + deep + "deep", "d/" + deep + "n%FF"]), O("unlink", ["b/" + deep + "base"])],
        ]));
    }

    // writev, pwritev and fallocate, each followed at once by a plain write. Until the eBPF side gathered the vectors
    // (dk_emit_filev), a vectored write was read back, and the write after it was put on the version stored before
    // it (27c420f: "hello" + "!" at 11 instead of "hello world!") or, once read back, exported at the writev's seq
    // with the later write's bytes. A file read in the burst before has its next read put off (up to 10 times its
    // last read), which leaves the window open.
    [Theory]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void Writes_by_writev_pwritev_and_fallocate_then_a_plain_write_are_exact(string backend) =>
        AssertConforms(backend, new History([], [
            [O("write", ["v"], "0", "60000", "1"), O("write", ["p"], "0", "60000", "2"), O("write", ["f"], "0", "100", "4")],
            [O("writev", ["v"], "-1", "7", "5"), O("write", ["v"], "3", "2", "6"), O("writev", ["p"], "100", "4000", "7"), O("write", ["p"], "101", "3", "8")],
            [O("falloc", ["f"], "0", "20000"), O("write", ["f"], "50", "2", "12"), O("writev", ["n"], "-1", "0", "13"), O("write", ["n"], "0", "1", "14")],
            [O("writev", ["big"], "0", "140000", "15"), O("append", ["big"], "3", "16")],
        ]));

    // copy_file_range and sendfile from another file (by offset pointers and by the files' positions; one within a
    // file; from a file outside the watched tree, as `cp` does), each followed at once by a plain write. Until the
    // eBPF record named the source range (K_COPY) and the recorder took the bytes from its copy of the source (or
    // from the outside file, unchanged since), a copy was read back: the write after it landed on the version read
    // later, and `#seq` of the copy showed the file as it was before it. The hint backends read the file after the
    // burst, so their promises (quiet gaps, the end) hold.
    [Theory]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void Copied_ranges_then_a_plain_write_are_exact(string backend) => AssertConforms(backend, new History([O("write", ["src"], "0", "70000", "9")], [
        [O("write", ["c"], "0", "5000", "3")],
        [new Op("copyrange", ["src", "c"], ["4000", "9000"]), O("write", ["c"], "4500", "5", "10"), new Op("sendfile", ["src", "s"], ["10", "300"]), O("write", ["s"], "0", "4", "11")],
        [new Op("copyrange", ["src", "c"], ["100", "3000", "5000"]), O("write", ["c"], "101", "2", "12"), new Op("sendfile", ["src", "s"], ["20", "200", "60000"]), O("append", ["s"], "3", "13")],
        [new Op("copyrange", ["src", "src"], ["70000", "100", "10"]), O("write", ["src"], "70050", "4", "14"), new Op("copyrange", ["s", "c"], ["9000", "400"]), O("trunc", ["c"], "9100")],
        [O("write", [Op.Outside + "@-cs"], "0", "20000", "15")],
        [new Op("copyrange", [Op.Outside + "@-cs", "c"], ["50", "6000", "1000"]), O("write", ["c"], "60", "3", "16"),
         new Op("sendfile", [Op.Outside + "@-cs", "n"], ["0", "20000"]), O("append", ["n"], "2", "17")],
    ]));

    // Trees moved out of the watched tree, and made outside it (the command writes them there: those writes are not
    // the recording's) then moved in; changed in later bursts. eBPF and fanotify report the one rename: until the
    // recorder walked what arrived (MarkArrivedBelow), a moved-in directory's subdirectories and their files were
    // missing until the final scan, and a directory moved out and back had its children's directories exported 0700.
    [Theory]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void Trees_moved_out_of_and_into_the_watched_tree_are_exact(string backend) =>
        AssertConforms(backend, new History([O("mkdirp", ["d/e"]), O("write", ["d/e/f"], "0", "3000", "1"), O("write", ["g"], "0", "10", "2")], [
            [O("rename", ["d", Op.Outside + "@-o1"]), O("rename", ["g", Op.Outside + "@-o2"])],
            [O("mkdirp", [Op.Outside + "@-i1/sub"]), O("write", [Op.Outside + "@-i1/f"], "0", "5000", "3"), O("write", [Op.Outside + "@-i1/sub/g"], "0", "70", "4"),
             new Op("symlink", [Op.Outside + "@-i1/sub/l"], [], "../f"), O("rename", [Op.Outside + "@-i1", "m"])],
            [O("write", [Op.Outside + "@-i2"], "0", "900", "5"), O("rename", [Op.Outside + "@-i2", "n"])],
            [O("append", ["n"], "4", "6"), O("write", ["m/f"], "10", "3", "7"), O("rename", [Op.Outside + "@-o1", "d2"])],
            [O("append", ["d2/e/f"], "5", "8"), O("rename", ["m/sub", Op.Outside + "@-o3"])],
            [O("write", [Op.Outside + "@-x1"], "0", "30", "9"), O("exchange", [Op.Outside + "@-x1", "d2"])],
            [O("exchange", ["d2", Op.Outside + "@-x1"])],
        ]));

    // The same, changed in the burst of their arrival: a hint backend reads after the burst, so its quiet gaps hold.
    // (eBPF promises each operation's moment, and the bytes of what arrived were never in an event: a change before
    // the recorder read it would be seen at the move. The generator ends a burst with a move in.)
    [Theory]
    [InlineData("fanotify")]
    [InlineData("inotify")]
    [InlineData("scan")]
    public void Trees_moved_in_and_changed_at_once_are_exact_at_quiet_gaps(string backend) =>
        AssertConforms(backend, new History([O("mkdirp", ["d/e"]), O("write", ["d/e/f"], "0", "3000", "1")], [
            [O("mkdirp", [Op.Outside + "@-i1/sub"]), O("write", [Op.Outside + "@-i1/sub/g"], "0", "70", "4"), O("rename", [Op.Outside + "@-i1", "m"]),
             O("append", ["m/sub/g"], "3", "5"), O("rename", ["d", Op.Outside + "@-o1"]), O("rename", [Op.Outside + "@-o1", "m/sub/d"]), O("append", ["m/sub/d/e/f"], "2", "6")],
        ]));

    [Theory]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void Hard_links_are_exported_as_links(string backend) =>
        AssertConforms(backend, new History([], [[O("write", ["a"], "0", "5", "1"), O("link", ["a", "b"])], [O("write", ["a"], "0", "3", "7")]]));

    // Soak of 2026-12-06 (inotify): a hard link made, written through and removed in one burst. No event names a, and
    // the link is gone before it is read; the name gone unread makes the recorder sweep the known files by lstat.
    [Theory]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void A_write_through_a_hard_link_removed_at_once_reaches_the_other_name(string backend) =>
        AssertConforms(backend, new History([O("write", ["a"], "0", "40", "2")], [
            [O("link", ["a", "b"]), O("append", ["b"], "25", "9"), O("unlink", ["b"])],
            [O("write", ["m"], "0", "3", "1")],
        ]));

    // Second soak of 2026-12-06 (inotify, on b8332da), history h38 of a failing batch, not reproduced when shrunk: at
    // the last gap the renamed -dash was still there beside x y. The cause needed x y read between the rename and its
    // event (both names then showed one inode, taken for a rename between two links); RecordingCoreTests'
    // A_rename_over_a_name_read_after_the_rename_happened_still_removes_the_old_name forces that order.
    [Fact]
    public void Inotify_a_rename_over_a_file_truncated_up_in_the_same_burst_removes_the_old_name() =>
        AssertConforms("inotify", new History([O("mkdirp", ["n%0Al/-dash/%C3%A9t%C3%A9"]), O("write", ["n%0Al/-dash/%C3%A9t%C3%A9/x%20y"], "0", "2", "55"),
            O("punch", ["n%0Al/-dash/%C3%A9t%C3%A9/x%20y"], "20480", "24576")], [
            [O("write", ["n%0Al/-dash/%C3%A9t%C3%A9/-dash"], "0", "373", "938"), O("trunc", ["n%0Al/-dash/%C3%A9t%C3%A9/-dash"], "262227")],
            [O("trunc", ["n%0Al/-dash/%C3%A9t%C3%A9/x%20y"], "4194320"), O("rename", ["n%0Al/-dash/%C3%A9t%C3%A9/-dash", "n%0Al/-dash/%C3%A9t%C3%A9/x%20y"])],
        ]));

    // The kernel reports nothing of this rename to fanotify and inotify (it does nothing); eBPF sees the call.
    [Fact]
    public void Ebpf_a_rename_between_two_names_of_one_file_changes_nothing() =>
        AssertConforms("ebpf", new History([], [[O("write", ["b"], "0", "79", "873"), O("link", ["b", "n%0Al"]), O("rename", ["n%0Al", "b"])]]));

    [Theory]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void Hard_links_of_baseline_files_stay_links_through_writes_renames_and_unlinks(string backend) =>
        AssertConforms(backend, new History([O("mkdirp", ["d/e"]), O("write", ["a"], "0", "70", "2"), O("link", ["a", "d/b"])], [
            [O("link", ["d/b", "d/e/c"]), O("append", ["d/e/c"], "30", "4"), O("chmod", ["a"], "600")],
            [O("rename", ["d/b", "x%20y"]), O("write", ["x%20y"], "8192", "100", "5"), O("unlink", ["a"])],
            [O("write", ["d/e/c"], "0", "9", "6")],
        ]));

    // Soak of 2026-12-06 with directory renames (batch seed 358991733), shrunk; failed about once in four runs. The
    // directory rename x y -> c/a/\x80lead was held back by the inotify source (to see whether its reverse followed, an
    // exchange), so the exchange's next event, on the watch of x y, was named by x y's old path, and the exchange was
    // taken for two renames: at the quiet gap the directory exchanged into c/a/\x80lead/n\nl had no version of its own
    // and exported 0700. Events below a held directory rename are now named by its new path.
    [Fact]
    public void Inotify_RENAME_EXCHANGE_of_a_directory_with_a_file_of_a_directory_just_renamed_keeps_the_directory() =>
        AssertConforms("inotify", new History([O("mkdirp", ["c/-dash/n%0Al/bad%FFbyte/-dash/x%20y"])], [
            [O("mkdir", ["c/a"], "755"), O("write", ["c/-dash/n%0Al/bad%FFbyte/-dash/x%20y/n%0Al"], "0", "190", "611"),
             O("rename", ["c/-dash/n%0Al/bad%FFbyte/-dash/x%20y", "c/a/%80lead"]), O("exchange", ["c/-dash/n%0Al/bad%FFbyte", "c/a/%80lead/n%0Al"])],
        ]));

    // Soak of 2026-12-06 (inotify), shrunk: a directory renamed, then exchanged with a file, then removed at once. With
    // one name gone when the events were read, the two halves were taken for two renames (b left empty); a file one
    // way and a directory the other cannot be two renames of one object.
    [Theory]
    [InlineData("inotify")]
    [InlineData("fanotify")]
    public void A_directory_exchanged_with_a_file_then_removed_leaves_the_file(string backend) =>
        AssertConforms(backend, new History([O("mkdir", ["%80lead"], "755"), O("write", ["s%20p%0A%FE%C3"], "0", "7", "5")], [
            [O("rename", ["%80lead", "b"]), O("exchange", ["s%20p%0A%FE%C3", "b"]), O("rmr", ["s%20p%0A%FE%C3"])],
        ]));

    // Soak of 2026-12-06 (inotify, load 12-17), shrunk: a baseline directory exchanged with one made in the same burst,
    // before the new one's parent was watched. The exchange's move away from -dash/g was left pending (its partner was
    // missed) and applied after the move onto -dash/g, deleting what had arrived.
    [Fact]
    public void Inotify_a_baseline_directory_exchanged_with_a_new_one_keeps_both() =>
        AssertConforms("inotify", new History([O("mkdirp", ["-dash/g/x%20y"])], [
            [O("mkdirp", ["g/sub/c/a"]), O("exchange", ["-dash/g", "g/sub/c"])],
        ]));

    // The same soak, the other order: the new directory's move onto n\nl came first, then the baseline n\nl's move away
    // (both partners missed); the departure, applied last, deleted what had arrived.
    [Fact]
    public void Inotify_a_new_directory_exchanged_with_a_baseline_one_keeps_both() =>
        AssertConforms("inotify", new History([O("mkdirp", ["n%0Al"])], [
            [O("mkdirp", ["%80lead/%C3%A9t%C3%A9/b/x%20y/x%20y"]), O("exchange", ["%80lead/%C3%A9t%C3%A9/b/x%20y/x%20y", "n%0Al"])],
        ]));

    // inotify, rare (once in about 2,000 generated histories, batch seed 1890200526, h31, among 49 other histories; not
    // reproduced alone): a directory made in the same burst as the rename of its parent had its watch added by its old
    // name, which failed, and nothing watched it afterwards. Failed watches are now retried under the new name when the
    // rename (or exchange) is read (InotifySource.RewatchMissed).
    [Fact]
    public void Inotify_a_directory_renamed_right_after_it_was_made_keeps_watching_its_subdirectories() =>
        AssertConforms("inotify", new History([], [
            [O("mkdirp", ["e/e/c"]), O("chmod", ["e/e/c"], "755"), O("rename", ["e/e", "n%0Al"])],
            [O("mkdir", ["n%0Al/c/e"], "700"), O("write", ["n%0Al/c/e/e"], "524487", "2107", "802")],
        ]));

    // Soak of 2026-12-06 (inotify, final binary, quiet): two baseline directories exchanged, then one renamed away
    // before the events were read. With one name gone, the two opposite renames could have been two renames of one
    // directory (a to b over an empty b, then back); the watch of the directory now at the name still there tells:
    // the other's watch means an exchange.
    [Fact]
    public void Inotify_two_directories_exchanged_then_one_renamed_away_keeps_both() =>
        AssertConforms("inotify", new History([O("mkdirp", ["s%20p%0A%FE%C3/e"]), O("mkdirp", ["sub/a/bad%FFbyte/g"])], [
            [O("exchange", ["s%20p%0A%FE%C3", "sub/a/bad%FFbyte"]), O("rename", ["s%20p%0A%FE%C3", "sub/sub"])],
        ]));

    // Soak of 2026-12-06 (inotify, load 18), shrunk: a name moved into a directory made in the same burst (not
    // watched yet: its move away is left unpaired), then another file renamed onto that name. The unpaired departure
    // was applied when the queue drained, after the rename onto the name, and deleted what had arrived.
    [Fact]
    public void Inotify_a_name_moved_into_a_new_directory_then_renamed_onto_keeps_what_arrived() =>
        AssertConforms("inotify", new History([O("write", ["%C3%A9t%C3%A9"], "69632", "1116", "7"), O("write", ["n%0Al"], "0", "5", "3")], [
            [O("rename", ["%C3%A9t%C3%A9", "g"]), O("mkdirp", ["e"]), O("rename", ["n%0Al", "e/x%20y"]), O("rename", ["g", "n%0Al"])],
        ]));

    // The same soak (inotify, load 15-25), shrunk: the name moved into a new directory is then made again by a write.
    [Fact]
    public void Inotify_a_name_moved_into_a_new_directory_then_made_again_keeps_the_new_file() =>
        AssertConforms("inotify", new History([O("write", ["a"], "0", "5", "13")], [
            [O("link", ["a", "x%20y"]), O("mkdirp", ["g/b"]), O("rename", ["x%20y", "g/b/e"]), O("write", ["x%20y"], "0", "31", "643")],
        ]));

    // Soak of 2026-12-06 (inotify, load 6), shrunk: a new directory exchanged with a baseline one, then the other name
    // removed, in one burst. The new directory's watch, added when its create was read, was the baseline directory's
    // (already exchanged onto that name), so its old name had no watch left to tell the exchange from two renames.
    [Fact]
    public void Inotify_a_new_directory_exchanged_with_a_baseline_one_then_the_other_removed_keeps_the_baseline_tree() =>
        AssertConforms("inotify", new History([O("mkdirp", ["-dash/x%20y/%C3%A9t%C3%A9"])], [
            [O("mkdir", ["%80lead"], "755"), O("exchange", ["-dash/x%20y", "%80lead"]), O("rmr", ["-dash/x%20y"])],
        ]));

    // Soak of the final binary (inotify, quiet), shrunk: a new directory exchanged with a baseline one in the same
    // burst. Watching the new name found the baseline directory's watch (already there); the exchange, read next,
    // then swapped that watch back to the old name, and the new directory was never watched.
    [Fact]
    public void Inotify_a_new_directory_exchanged_with_a_baseline_one_watches_both_afterwards() =>
        AssertConforms("inotify", new History([O("mkdirp", ["bad%FFbyte/n%0Al/sub"])], [
            [O("mkdir", ["x%20y"], "750"), O("exchange", ["bad%FFbyte/n%0Al", "x%20y"])],
            [O("mkdirp", ["x%20y/c/c"]), O("mkdirp", ["bad%FFbyte/n%0Al/e"])],
        ]));
}
