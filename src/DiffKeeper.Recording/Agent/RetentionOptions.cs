namespace DiffKeeper.Recording.Agent;

/// <summary>
/// Keep mode's retention (<c>run --max-versions N --retain DURATION</c>): two limits on each path's versions,
/// applied every <see cref="Interval"/>. A version is kept only while both keep it (each limit that is set): it is
/// among the path's newest <see cref="MaxVersions"/>, and it is younger than <see cref="Retain"/>. The newest version
/// of every path is always kept, so the latest state always restores.
/// </summary>
public sealed record RetentionOptions(int? MaxVersions, TimeSpan? Retain, TimeSpan Interval);
