namespace DiffKeeper.IntegrationTests;

/// <summary>Whether the eBPF backend can run here, and why not.</summary>
internal static class EbpfSupport
{
    /// <summary>What the eBPF backend lacks here, or null when it can run.</summary>
    public static string? Problem =>
        Environment.UserName != "root" ? "the eBPF backend needs root (CAP_BPF and CAP_PERFMON); this test runs as " + Environment.UserName
        : !File.Exists("/sys/kernel/btf/vmlinux") ? "this kernel has no BTF (/sys/kernel/btf/vmlinux), which the eBPF backend needs"
        : null;

    /// <summary>Skips the test, naming what is missing, where the eBPF backend cannot run.</summary>
    public static void SkipUnlessAvailable()
    {
        if (Problem is { } problem)
        {
            Assert.Skip(problem);
        }
    }
}
