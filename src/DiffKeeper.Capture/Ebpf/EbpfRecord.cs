using System.Buffers.Binary;
using System.Text;

namespace DiffKeeper.Capture.Ebpf;

/// <summary>What one ring buffer record reports (the K_* constants of bpf/diffkeeper.bpf.c).</summary>
internal enum EbpfRecordKind : ushort
{
    Open = 1,
    Write = 2,
    Truncate = 3,
    Unlink = 4,
    Rmdir = 5,
    Mkdir = 6,
    RenameFrom = 7,
    RenameTo = 8,
    Link = 9,
    Symlink = 10,
    Chmod = 11,
    Changed = 12,
    SymlinkTarget = 13,
    LinkFrom = 14,
    /// <summary>copy_file_range, sendfile: the range written is another file's; the payload names it (<see cref="EbpfRecord.CopySource"/>).</summary>
    Copy = 15,
}

/// <summary>The F_* flags of bpf/diffkeeper.bpf.c.</summary>
[Flags]
internal enum EbpfRecordFlags : ushort
{
    None = 0,
    Created = 1,
    Truncated = 2,
    ReadBack = 4,
    Exchange = 8,
    PathTruncated = 16,
    /// <summary>A <see cref="EbpfRecordKind.Changed"/> from fallocate(2): its mode argument is the high byte of the flags.</summary>
    Fallocate = 32,
    /// <summary>A <see cref="EbpfRecordKind.Copy"/> whose length is the source's size at the syscall's exit (a clone to the source's end).</summary>
    Sized = 64,
}

/// <summary>
/// One ring buffer record decoded: the 80-byte header of struct dk_event (bpf/diffkeeper.bpf.c, little-endian,
/// offsets below), then the kernel path, the user path string and the payload, back to back.
/// </summary>
internal readonly ref struct EbpfRecord
{
    public const int HeaderSize = 80;

    private readonly ReadOnlySpan<byte> _data;

    private EbpfRecord(ReadOnlySpan<byte> data) => _data = data;

    public ulong TimeNs => BinaryPrimitives.ReadUInt64LittleEndian(_data);

    public ulong Inode => BinaryPrimitives.ReadUInt64LittleEndian(_data[8..]);

    public long Offset => BinaryPrimitives.ReadInt64LittleEndian(_data[16..]);

    public long Length => BinaryPrimitives.ReadInt64LittleEndian(_data[24..]);

    public uint Device => BinaryPrimitives.ReadUInt32LittleEndian(_data[32..]);

    public int ThreadId => BinaryPrimitives.ReadInt32LittleEndian(_data[36..]);

    public int ProcessId => BinaryPrimitives.ReadInt32LittleEndian(_data[40..]);

    public EbpfRecordKind Kind => (EbpfRecordKind)BinaryPrimitives.ReadUInt16LittleEndian(_data[44..]);

    public EbpfRecordFlags Flags => (EbpfRecordFlags)BinaryPrimitives.ReadUInt16LittleEndian(_data[46..]);

    private int PathLength => BinaryPrimitives.ReadUInt16LittleEndian(_data[48..]);

    private int StringLength => BinaryPrimitives.ReadUInt16LittleEndian(_data[50..]);

    private int PayloadLength => (int)BinaryPrimitives.ReadUInt32LittleEndian(_data[52..]);

    /// <summary>
    /// Fd-based records: the file's st_mode (type and permission bits) right after the syscall, read from the inode
    /// in the kernel; 0 for records made from a path string.
    /// </summary>
    public int Mode => (int)BinaryPrimitives.ReadUInt64LittleEndian(_data[72..]);

    public const int CommBytes = 16;

    /// <summary>The command name's field as the kernel filled it (NUL-padded).</summary>
    public ReadOnlySpan<byte> CommField => _data.Slice(56, CommBytes);

    public string Comm
    {
        get
        {
            var comm = CommField;
            var end = comm.IndexOf((byte)0);
            return Encoding.UTF8.GetString(end < 0 ? comm : comm[..end]);
        }
    }

    /// <summary>The absolute path the kernel walked (a file's path, or the base directory of a relative name); "" if none.</summary>
    public ReadOnlySpan<byte> KernelPath => _data.Slice(HeaderSize, PathLength);

    /// <summary>The path string the program passed to the syscall; "" if none.</summary>
    public ReadOnlySpan<byte> UserPath => _data.Slice(HeaderSize + PathLength, StringLength);

    public ReadOnlySpan<byte> Payload => _data.Slice(HeaderSize + PathLength + StringLength, PayloadLength);

    /// <summary>
    /// A <see cref="EbpfRecordKind.Copy"/>'s source (struct dk_copy_src: inode, offset, the kernel's dev_t, then the
    /// source's path to the payload's end, empty when too deep to walk); false when the record carries none (the kernel
    /// could not tell: read the file back).
    /// </summary>
    public bool TryCopySource(out uint device, out ulong inode, out long offset, out ReadOnlySpan<byte> path)
    {
        var p = Payload;
        path = default;
        if (Kind != EbpfRecordKind.Copy || p.Length < 24)
        {
            (device, inode, offset) = (0, 0, 0);
            return false;
        }

        (inode, offset, device) = (BinaryPrimitives.ReadUInt64LittleEndian(p), BinaryPrimitives.ReadInt64LittleEndian(p[8..]), BinaryPrimitives.ReadUInt32LittleEndian(p[16..]));
        path = p[24..];
        return true;
    }

    public bool HasPayload => PayloadLength > 0 || (Kind == EbpfRecordKind.Write && Length == 0 && !Flags.HasFlag(EbpfRecordFlags.ReadBack));

    /// <summary>Decodes a record; false when its lengths do not fit in it (never expected from our program).</summary>
    public static bool TryRead(ReadOnlySpan<byte> data, out EbpfRecord record)
    {
        record = new EbpfRecord(data);
        return data.Length >= HeaderSize &&
            (long)HeaderSize + record.PathLength + record.StringLength + record.PayloadLength <= data.Length;
    }
}
