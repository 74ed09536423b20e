namespace DiffKeeper.Recording.Tests;

/// <summary>
/// The files a rescan after a loss must read again (<see cref="CopiedFiles"/>): noted as a list, taken as a set. It must
/// give every file noted since the last take, each once, however often and in whatever order it was noted, and give
/// up (every file) only when more distinct files than its limit were noted.
/// </summary>
public sealed class CopiedFilesTests
{
    [Fact]
    public void The_files_noted_since_the_last_take_are_given_once_each_and_forgotten()
    {
        var copied = new CopiedFiles(limit: 8);
        foreach (var inode in new ulong[] { 1, 1, 2, 1, 3, 3, 2 })
        {
            copied.Note(5, inode);
        }

        var (files, all) = copied.Take(wanted: true);
        Assert.False(all);
        Assert.Equal([(5UL, 1UL), (5UL, 2UL), (5UL, 3UL)], files.Order());
        Assert.Empty(copied.Take(wanted: true).Files);

        copied.Note(5, 4);
        Assert.Empty(copied.Take(wanted: false).Files); // not wanted (no loss): nothing made, and forgotten all the same
        Assert.Empty(copied.Take(wanted: true).Files);
    }

    [Fact]
    public void A_few_files_noted_again_and_again_stay_named_past_the_limit_of_notes()
    {
        // A log and a database written in every interval: thousands of notes of two files, alternating, so no
        // repeat is the note before it. Folded at the limit, they stay two files, not "every file".
        var copied = new CopiedFiles(limit: 8);
        for (var i = 0; i < 1000; i++)
        {
            copied.Note(5, (ulong)(1 + (i % 2)));
        }

        var (files, all) = copied.Take(wanted: true);
        Assert.False(all);
        Assert.Equal([(5UL, 1UL), (5UL, 2UL)], files.Order());
    }

    [Fact]
    public void More_distinct_files_than_the_limit_are_every_file_until_the_next_take()
    {
        var copied = new CopiedFiles(limit: 8);
        for (ulong inode = 1; inode <= 20; inode++)
        {
            copied.Note(5, inode);
        }

        Assert.True(copied.Take(wanted: true).All);
        copied.Note(5, 21);
        var (files, all) = copied.Take(wanted: true);
        Assert.False(all);
        Assert.Equal([(5UL, 21UL)], files);
    }
}
