using System.ComponentModel;
using System.Runtime.InteropServices;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Cli.Rendering;

/// <summary>
/// A write-only stream over an inherited file descriptor that writes with write(2) at the descriptor's own offset.
/// Not a FileStream: on a regular file (`diffkeeper timeline > log`) FileStream keeps its own position and writes
/// with pwrite, so the shell's offset never moves: `{ diffkeeper timeline; echo done; } > log` overwrote the
/// timeline, and two streams over fd 1 overwrote each other. Never closes the descriptor; a descriptor that is not
/// open discards what is written.
/// </summary>
public sealed class FileDescriptorStream(int fd) : Stream
{
    private const int EINTR = 4;
    private const int EBADF = 9;

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override unsafe void Write(ReadOnlySpan<byte> buffer)
    {
        fixed (byte* start = buffer)
        {
            var done = 0;
            while (done < buffer.Length)
            {
                var n = Libc.Write(fd, start + done, buffer.Length - done);
                if (n >= 0)
                {
                    done += (int)n;
                    continue;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno == EINTR)
                {
                    continue;
                }

                if (errno == EBADF)
                {
                    return; // started with the descriptor closed (`2>&-`): the output goes nowhere, as with Stream.Null
                }

                throw new IOException(new Win32Exception(errno).Message, errno);
            }
        }
    }
}
