using System.Diagnostics;

namespace DiffKeeper.Replay.Tests;

/// <summary>
/// A file system of <see cref="Type"/> (btrfs, xfs with reflink, ext4) made on a sparse image under /tmp, attached to a
/// loop device and mounted; <see cref="Dispose"/> unmounts it, detaches the device and deletes the image, also after
/// a failed test. Needs root and the mkfs tool; <see cref="TryCreate"/> says why it could not.
/// </summary>
public sealed class LoopMount : IDisposable
{
    private readonly string _image;
    private string? _device;
    private bool _mounted;

    private LoopMount(string type, string image, string path)
    {
        Type = type;
        _image = image;
        Path = path;
    }

    public string Type { get; }

    public string Path { get; }

    /// <summary>A mounted file system of <paramref name="type"/>, or the test is skipped with <see cref="TryCreate"/>'s reason.</summary>
    public static LoopMount CreateOrSkip(string type)
    {
        var mount = TryCreate(type, out var reason);
        if (mount is null)
        {
            Assert.Skip(reason);
        }

        return mount!;
    }

    public static LoopMount? TryCreate(string type, out string reason)
    {
        var (mkfs, args, size) = type switch
        {
            "btrfs" => ("mkfs.btrfs", "-q -f", 160L << 20),
            "xfs" => ("mkfs.xfs", "-q -f -m reflink=1", 320L << 20),
            "ext4" => ("mkfs.ext4", "-q -F", 64L << 20),
            _ => throw new ArgumentOutOfRangeException(nameof(type)),
        };
        if (Environment.UserName != "root" && Native.Interop.Libc.Geteuid() != 0)
        {
            reason = $"loop-mounting a {type} image needs root";
            return null;
        }

        if (Which(mkfs) is null)
        {
            reason = $"{mkfs} is not installed (scripts/deps.sh installs btrfs-progs and xfsprogs: ensure_apt_packages btrfs-progs xfsprogs)";
            return null;
        }

        var id = Guid.NewGuid().ToString("N")[..10];
        var mount = new LoopMount(type, $"/tmp/dk-{type}-{id}.img", $"/tmp/dk-{type}-{id}");
        try
        {
            using (var f = File.OpenHandle(mount._image, FileMode.CreateNew, FileAccess.Write))
            {
                RandomAccess.SetLength(f, size);
            }

            var (code, output) = Run("losetup", "--find", "--show", mount._image);
            if (code != 0)
            {
                reason = $"no loop device: losetup said {output.Trim()}";
                mount.Dispose();
                return null;
            }

            mount._device = output.Trim();
            (code, output) = Run(mkfs, [.. args.Split(' '), mount._device]);
            if (code != 0)
            {
                reason = $"{mkfs} failed: {output.Trim()}";
                mount.Dispose();
                return null;
            }

            Directory.CreateDirectory(mount.Path);
            (code, output) = Run("mount", "-t", type, mount._device, mount.Path);
            if (code != 0)
            {
                reason = $"mounting {type} failed: {output.Trim()}";
                mount.Dispose();
                return null;
            }

            mount._mounted = true;
            reason = "";
            return mount;
        }
        catch
        {
            mount.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (_mounted && Run("umount", Path).Code != 0)
        {
            Run("umount", "-l", Path);
        }

        _mounted = false;
        if (_device is not null)
        {
            Run("losetup", "-d", _device);
            _device = null;
        }

        try
        {
            File.Delete(_image);
            if (Directory.Exists(Path))
            {
                Directory.Delete(Path, recursive: false);
            }
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Whether `filefrag -v` marks at least one extent of <paramref name="file"/> shared (FIEMAP_EXTENT_SHARED).</summary>
    public static bool HasSharedExtents(string file) => Run("filefrag", "-v", file).Output.Contains("shared", StringComparison.Ordinal);

    public static (int Code, string Output) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr);
    }

    private static string? Which(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':').Append("/usr/sbin").Append("/sbin")
            .Select(d => System.IO.Path.Combine(d, tool)).FirstOrDefault(File.Exists);
}
