using System.IO.Compression;

namespace SvgDiffusion.Checkpoints;

/// <summary>
/// Reads zip entries (PyTorch checkpoints, numpy .npz) with their CRC-32 checked: System.IO.Compression
/// does not verify it, so a damaged stored entry would otherwise load as different numbers.
/// </summary>
public static class ZipEntries
{
    static readonly uint[] Table = MakeTable();

    static uint[] MakeTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }

    /// <summary>Continues a CRC-32 (zip / PNG polynomial); start with 0.</summary>
    public static uint Crc32(uint crc, ReadOnlySpan<byte> data)
    {
        uint c = ~crc;
        foreach (byte b in data) c = Table[(c ^ b) & 0xff] ^ (c >> 8);
        return ~c;
    }

    /// <summary>Opens an entry as a stream that fails with one line naming <paramref name="source"/> and the entry
    /// when the data turns out longer or shorter than declared or its CRC-32 does not match.</summary>
    public static Stream Open(ZipArchiveEntry entry, string source)
    {
        try { return new CheckedStream(entry.Open(), entry, source); }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or IOException)
        { throw new SvgdException($"{source}: zip entry '{entry.FullName}' cannot be read ({FirstLine(e.Message)})"); }
    }

    /// <summary>The whole entry, checked.</summary>
    public static byte[] ReadAll(ZipArchiveEntry entry, string source)
    {
        if (entry.Length < 0 || entry.Length > Array.MaxLength)
            throw new SvgdException($"{source}: zip entry '{entry.FullName}' declares {entry.Length} bytes (corrupt archive, or over 2 GB)");
        // Grown as data arrives rather than sized from the header: a damaged size field must not allocate gigabytes.
        var ms = new MemoryStream((int)Math.Min(entry.Length, 1 << 26));
        using (var s = Open(entry, source)) s.CopyTo(ms);
        if (ms.Length != entry.Length)
            throw new SvgdException($"{source}: zip entry '{entry.FullName}' holds {ms.Length} bytes, its header says {entry.Length} (truncated or corrupt archive)");
        return ms.Length == ms.Capacity ? ms.GetBuffer() : ms.ToArray();
    }

    /// <summary>
    /// Reads what is left of a stream from <see cref="Open"/> and checks the entry held exactly its declared
    /// length: a reader that stops at the end of its own structure would otherwise never reach the CRC.
    /// </summary>
    public static void ReadToEnd(Stream s)
    {
        if (s is not CheckedStream c) throw new ArgumentException("not a stream from ZipEntries.Open", nameof(s));
        c.Finish();
    }

    static string FirstLine(string s) => s.Split('\n')[0].Trim();

    sealed class CheckedStream(Stream inner, ZipArchiveEntry entry, string source) : Stream
    {
        uint _crc;
        long _read;
        bool _checked;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n;
            try { n = inner.Read(buffer); }
            catch (Exception e) when (e is InvalidDataException or NotSupportedException or IOException)
            { throw new SvgdException($"{source}: zip entry '{entry.FullName}' is corrupt ({FirstLine(e.Message)})"); }
            _crc = Crc32(_crc, buffer[..n]);
            _read += n;
            if (_read > entry.Length)
                throw new SvgdException($"{source}: zip entry '{entry.FullName}' holds more than the {entry.Length} bytes its header declares (corrupt archive)");
            // Checked as soon as the declared length is reached: readers that stop exactly at the end
            // (an .npy whose data fills its entry) never ask for the end-of-stream read.
            if (_read == entry.Length && !_checked)
            {
                _checked = true;
                if (_crc != entry.Crc32)
                    throw new SvgdException($"{source}: zip entry '{entry.FullName}' fails its CRC-32 check (stored {entry.Crc32:x8}, data {_crc:x8}): the file is damaged");
            }
            return n;
        }

        public void Finish()
        {
            var buffer = new byte[1 << 16];
            while (Read(buffer, 0, buffer.Length) > 0) { }
            if (_read != entry.Length)
                throw new SvgdException($"{source}: zip entry '{entry.FullName}' holds {_read} bytes, its header says {entry.Length} (truncated or corrupt archive)");
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => entry.Length;
        public override long Position { get => _read; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
