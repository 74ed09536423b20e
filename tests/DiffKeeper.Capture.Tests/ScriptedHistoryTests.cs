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

    [Fact(Skip = "inotify: renameat2(RENAME_EXCHANGE) of a directory and a file loses the directory: at the next quiet " +
        "gap (and at the end) the export lacks g/été (the two IN_MOVED_FROM/IN_MOVED_TO pairs share names)")]
    public void Inotify_RENAME_EXCHANGE_of_a_directory_and_a_file_keeps_both() =>
        AssertConforms("inotify", new History([O("mkdirp", ["g/sub/n%0Al"])], [
            [O("write", ["g/%C3%A9t%C3%A9"], "0", "2524", "330"), O("exchange", ["g/sub/n%0Al", "g/%C3%A9t%C3%A9"])],
        ]));

    [Fact(Skip = "fanotify: renameat2(RENAME_EXCHANGE) of a directory a (holding g/a) and a file été: at the next quiet gap " +
        "été is exported as a directory with mode 0700 instead of 0755 (its children arrive under the new name, the " +
        "directory's own version does not)")]
    public void Fanotify_RENAME_EXCHANGE_of_a_directory_and_a_file_keeps_the_directory_mode() =>
        AssertConforms("fanotify", new History([O("mkdirp", ["a/g/a"])], [
            [O("write", ["%C3%A9t%C3%A9"], "0", "3", "151"), O("exchange", ["a", "%C3%A9t%C3%A9"])],
        ]));

    [Fact(Skip = "eBPF: the first write to a file that existed before the recording, renamed in the same burst, is " +
        "missing at the write's #seq (the export shows the baseline bytes): the recorder seeds its copy of the file by " +
        "reading the path when it handles the write, and the path is gone by then (Versioner.Follow); seeding from " +
        "the stored baseline version needs a blob read on the writer side")]
    public void Ebpf_the_first_write_to_a_baseline_file_renamed_at_once_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([O("mkdirp", ["d"]), O("write", ["n"], "0", "73", "743")], [
            [O("write", ["n"], "1564", "2867", "829"), O("rename", ["n", "d/n"])],
        ]));

    [Fact(Skip = "eBPF: after fallocate(PUNCH_HOLE) (a change without a payload, so the recorder drops its copy of the " +
        "file), the next append is exported at its #seq with the bytes of the append after it: the copy is seeded again " +
        "by reading the file when the event is handled (Versioner.Follow), which may already hold later writes; " +
        "carrying fallocate's mode, offset and length in the record would keep the copy exact")]
    public void Ebpf_an_append_after_a_punched_hole_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([], [
            [O("write", ["sub"], "619", "28430", "566"), O("punch", ["sub"], "61540", "4096"), O("append", ["sub"], "3955", "505"), O("append", ["sub"], "983", "814")],
        ]));

    [Fact(Skip = "eBPF, by design today: more than 1 MiB of exact versions (counted as the file's whole size, holes " +
        "included) or 256 of them of one file within the 100 ms hot window are coalesced, so the append of this 2 MiB " +
        "sparse file has no version at its #seq (the export shows the state before it). Counting the bytes a store " +
        "re-cuts instead of the size, or rebuilding a state from the last version plus the payloads after it in the " +
        "state-at-T query (ARCHITECTURE.md §6), would make it exact; the lead decides")]
    public void Ebpf_an_append_to_a_big_sparse_file_written_just_before_is_exported_at_its_seq() =>
        AssertConforms("ebpf", new History([], [
            [O("write", ["x"], "2099104", "1137", "947"), O("append", ["x"], "29567", "626"), O("write", ["x"], "132731", "3", "976")],
        ]));

    [Fact(Skip = "eBPF: renameat2(RENAME_EXCHANGE) of a directory (holding b/e) and a file: every later export is " +
        "refused ('the trace puts x y/b below x y, which is a file at that moment'): EbpfSource reports an exchange as " +
        "two creations to re-read, so the directory's recorded children stay under the name that is now a file; the " +
        "recorder needs an exchange event that swaps the two subtrees' versions, as a rename carries them")]
    public void Ebpf_RENAME_EXCHANGE_of_a_directory_and_a_file_swaps_their_subtrees() =>
        AssertConforms("ebpf", new History([], [
            [O("write", ["sub"], "0", "4299", "23"), O("mkdirp", ["x%20y/b/e"])],
            [O("exchange", ["x%20y", "sub"]), O("append", ["x%20y"], "7", "964")],
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

    [Theory(Skip = "hard links are not supported: on every backend a and b (one inode) export as two separate files " +
        "with the same bytes; a later write through one name shows under the other only once it is read again")]
    [MemberData(nameof(ConformanceTests.Backends), MemberType = typeof(ConformanceTests))]
    public void Hard_links_are_exported_as_links(string backend) =>
        AssertConforms(backend, new History([], [[O("write", ["a"], "0", "5", "1"), O("link", ["a", "b"])], [O("write", ["a"], "0", "3", "7")]]));

    [Fact(Skip = "inotify, rare (once in about 2,000 generated histories, batch seed 1890200526, history h31, with 49 other " +
        "histories running; not reproduced alone in 15 runs nor as 50 copies in 5): after mkdir -p e/e/c and a rename of " +
        "e/e in the same burst, a directory and file made later in the renamed c were missing from every quiet-gap export " +
        "(present at the end, from the reconcile scan), as if c had no watch: a watch added by name after the rename " +
        "misses it. Directory renames are left out of inotify's generated histories until this is understood " +
        "(DIFFKEEPER_CONFORM_FEATURES=DirectoryRenames puts them back)")]
    public void Inotify_a_directory_renamed_right_after_it_was_made_keeps_watching_its_subdirectories() =>
        AssertConforms("inotify", new History([], [
            [O("mkdirp", ["e/e/c"]), O("chmod", ["e/e/c"], "755"), O("rename", ["e/e", "n%0Al"])],
            [O("mkdir", ["n%0Al/c/e"], "700"), O("write", ["n%0Al/c/e/e"], "524487", "2107", "802")],
        ]));
}
