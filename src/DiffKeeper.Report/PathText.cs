namespace DiffKeeper.Report;

/// <summary>
/// How a recorded path appears in what this project writes (the report's data, trace-event names and arguments).
/// The one place that turns a path into text, so that when paths become byte strings (names that are not UTF-8)
/// only this changes.
/// </summary>
public static class PathText
{
    public static string Of(string path) => path;
}
