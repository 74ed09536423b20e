using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>`restore` on its own: modes, deletions, the policies for a non-empty directory, bad input.</summary>
[Collection(KeepCollection.Name)]
public sealed class RestoreCommandTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private (string State, string Store) Kept()
    {
        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        Directory.CreateDirectory(state);
        File.WriteAllText(Path.Combine(state, "doomed.txt"), "deleted by the app");
        var script = """
            mkdir -p secret/deeper && chmod 700 secret && echo s3cret > secret/key && chmod 600 secret/key
            echo one > a.txt; echo two >> a.txt; ln -s a.txt link; rm doomed.txt
            mkdir gone && echo x > gone/y && rm -r gone
            """;
        var r = Cli.Run(state, "run", "--state-dir", state, "--store", store, "--metrics-addr", "none", "--", "sh", "-c", script);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("nothing to restore", r.Stderr);
        return (state, store);
    }

    [Fact]
    public void Restore_brings_back_contents_modes_and_symlinks_and_leaves_deleted_paths_absent()
    {
        var (state, store) = Kept();
        var before = TreeSnapshot.Take(state);
        Directory.Delete(state, recursive: true);
        var r = Cli.Ok(_dir.Path, "restore", "--state-dir", state, "--store", store);
        Assert.Matches(@"restored session 1 into .*: 2 files \(15 B\), 2 directories, 1 symlinks in [0-9.]+ ms; 2 versions verified", r.Stderr);
        TreeSnapshot.AssertSame(before, TreeSnapshot.Take(state), "restored");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(state, "secret")));
        Assert.False(File.Exists(Path.Combine(state, "doomed.txt")));
        Assert.False(Directory.Exists(Path.Combine(state, "gone")));
        Assert.Empty(Directory.GetDirectories(state, ".diffkeeper-restore-*"));
    }

    [Fact]
    public void A_non_empty_directory_is_kept_by_default_replaced_with_overwrite_and_refused_with_fail()
    {
        var (state, store) = Kept();
        File.WriteAllText(Path.Combine(state, "a.txt"), "newer than the store");
        File.WriteAllText(Path.Combine(state, "extra.txt"), "not recorded");

        Assert.Contains("kept as it is", Cli.Ok(_dir.Path, "restore", "--state-dir", state, "--store", store).Stderr);
        Assert.Equal("newer than the store", File.ReadAllText(Path.Combine(state, "a.txt")));

        var fail = Cli.Run(_dir.Path, "restore", "--state-dir", state, "--store", store, "--on-existing", "fail");
        Assert.Equal(6, fail.ExitCode);
        Assert.StartsWith("diffkeeper: ", fail.Stderr);
        Assert.Single(fail.Stderr.Trim().Split('\n'));

        Cli.Ok(_dir.Path, "restore", "--state-dir", state, "--store", store, "--on-existing", "overwrite");
        Assert.Equal("one\ntwo\n", File.ReadAllText(Path.Combine(state, "a.txt")));
        Assert.False(File.Exists(Path.Combine(state, "extra.txt")));
        Assert.Equal("s3cret\n", File.ReadAllText(Path.Combine(state, "secret", "key")));
    }

    [Fact]
    public void An_empty_store_is_nothing_to_restore_and_bad_input_is_one_line_with_its_exit_code()
    {
        var state = _dir.Sub("data");
        var none = Cli.Ok(_dir.Path, "restore", "--state-dir", state, "--store", _dir.Sub("no-store"));
        Assert.Contains("nothing to restore", none.Stderr);

        foreach (var (args, code) in new (string[], int)[]
        {
            (["restore", "--state-dir", state], 2),
            (["restore", "--state-dir", state, "--store", Path.Combine(state, "inside")], 2),
            (["restore", "--state-dir", state, "--store", _dir.Sub("s"), "--on-existing", "merge"], 2),
            (["run", "--state-dir", state, "--store", _dir.Sub("s"), "--flush-interval", "soon", "--", "true"], 2),
            (["run", "--state-dir", state, "--store", _dir.Sub("s"), "--metrics-addr", "nowhere", "--", "true"], 2),
        })
        {
            var r = Cli.Run(_dir.Path, args);
            Assert.True(r.ExitCode == code, $"{string.Join(' ', args)}: {r}");
            Assert.StartsWith("diffkeeper: ", r.Stderr);
            Assert.Single(r.Stderr.Trim().Split('\n'));
        }

        // The seed's form is `run` without its name, and `run` exits with the app's code.
        var seed = Cli.Run(_dir.Path, $"--state-dir={state}", $"--store={_dir.Sub("seed-store")}", "--metrics-addr=none", "--", "sh", "-c", $"echo hi > '{state}/greeting'; exit 7");
        Assert.True(seed.ExitCode == 7, seed.ToString());
        Assert.Equal("hi\n", File.ReadAllText(Path.Combine(state, "greeting")));
        Assert.Equal(127, Cli.Run(_dir.Path, "run", "--state-dir", state, "--store", _dir.Sub("seed-store"), "--metrics-addr", "none", "--", "/nonexistent/app").ExitCode);
    }
}
