namespace DiffKeeper.Core;

/// <summary>Operation of one timeline event. Stored as its number in the catalog: never renumber.</summary>
public enum ChangeOp
{
    Create = 1,
    Write = 2,
    Truncate = 3,
    Rename = 4,
    Delete = 5,
    Chmod = 6,
    Mkdir = 7,
    Rmdir = 8,
    Symlink = 9,
    Lost = 10,
    Exit = 11,
}

public static class ChangeOpNames
{
    public static string Name(this ChangeOp op) => op switch
    {
        ChangeOp.Create => "CREATE",
        ChangeOp.Write => "WRITE",
        ChangeOp.Truncate => "TRUNCATE",
        ChangeOp.Rename => "RENAME",
        ChangeOp.Delete => "DELETE",
        ChangeOp.Chmod => "CHMOD",
        ChangeOp.Mkdir => "MKDIR",
        ChangeOp.Rmdir => "RMDIR",
        ChangeOp.Symlink => "SYMLINK",
        ChangeOp.Lost => "LOST",
        ChangeOp.Exit => "EXIT",
        _ => op.ToString().ToUpperInvariant(),
    };
}
