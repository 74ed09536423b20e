using DiffKeeper.Core;

namespace DiffKeeper.Report;

/// <summary>
/// How a recorded path appears in what this project writes (the report's data, trace-event names and arguments):
/// the escaped display form of <see cref="PathBytes"/> (a name that is not UTF-8 shows its bytes as \xNN), so the
/// JSON inside the report is always valid text.
/// </summary>
public static class PathText
{
    public static string Of(string path) => PathBytes.Display(path);
}
