import Foundation
import NIOCore

/// Writes a ZIP archive entry by entry, in the "stored" method (no compression), for streaming: each entry's
/// local header, its bytes, and at the end the central directory. An entry is held in memory only while it is
/// written, so an archive of a thousand jobs costs the largest result file, not the archive.
///
/// Stored rather than deflated: results are read from storage one file at a time and sent on at once, and the
/// service takes no zlib dependency for it (a client's transport compression applies). An archive past 4 GiB
/// (or 65,535 entries) takes the ZIP64 records its readers expect; one file must stay under 4 GiB (results are
/// bounded far below that).
struct ZipArchive {
    struct Overflow: Error, CustomStringConvertible {
        var description: String { "a file of 4 GiB or more cannot be stored in the archive" }
    }

    private struct Entry {
        let name: [UInt8]
        let crc: UInt32
        let size: UInt32
        let offset: UInt64
    }

    private var entries: [Entry] = []
    private var offset: UInt64 = 0
    private let dosTime: UInt16
    private let dosDate: UInt16
    /// Offsets and sizes from here on take ZIP64 records (0xFFFFFFFF; lower in tests, to exercise them).
    private let limit32: UInt64

    /// Entries are stamped with `date` (UTC).
    init(date: Date = Date(), zip64Threshold: UInt64 = 0xFFFF_FFFF) {
        limit32 = min(zip64Threshold, 0xFFFF_FFFF)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        let year = max(0, min(127, (parts.year ?? 1980) - 1980))
        dosDate = UInt16(year << 9 | (parts.month ?? 1) << 5 | (parts.day ?? 1))
        dosTime = UInt16((parts.hour ?? 0) << 11 | (parts.minute ?? 0) << 5 | (parts.second ?? 0) / 2)
    }

    /// The local header and bytes of one file. `name` is a relative path with `/` separators (the caller makes it
    /// safe: no `..`, no leading `/`).
    mutating func entry(name: String, contents: Data) throws -> ByteBuffer {
        let nameBytes = Array(name.utf8)
        let size = UInt64(contents.count)
        guard size < 0xFFFF_FFFF else { throw Overflow() }
        let crc = CRC32.checksum(contents)
        var buffer = ByteBuffer()
        buffer.reserveCapacity(30 + nameBytes.count + contents.count)
        buffer.writeInteger(UInt32(0x0403_4b50), endianness: .little)  // local file header
        buffer.writeInteger(UInt16(20), endianness: .little)  // version needed: 2.0
        buffer.writeInteger(UInt16(0x0800), endianness: .little)  // flags: names in UTF-8
        buffer.writeInteger(UInt16(0), endianness: .little)  // method: stored
        buffer.writeInteger(dosTime, endianness: .little)
        buffer.writeInteger(dosDate, endianness: .little)
        buffer.writeInteger(crc, endianness: .little)
        buffer.writeInteger(UInt32(size), endianness: .little)  // compressed size
        buffer.writeInteger(UInt32(size), endianness: .little)  // uncompressed size
        buffer.writeInteger(UInt16(nameBytes.count), endianness: .little)
        buffer.writeInteger(UInt16(0), endianness: .little)  // extra field length
        buffer.writeBytes(nameBytes)
        buffer.writeBytes(contents)
        entries.append(Entry(name: nameBytes, crc: crc, size: UInt32(size), offset: offset))
        offset += UInt64(buffer.readableBytes)
        return buffer
    }

    /// The central directory and its end record (with the ZIP64 end records when an offset, the directory's size or
    /// the count of entries needs them): the archive's last bytes.
    func finish() -> ByteBuffer {
        var buffer = ByteBuffer()
        let start = offset
        for entry in entries {
            let far = entry.offset >= limit32
            buffer.writeInteger(UInt32(0x0201_4b50), endianness: .little)  // central directory header
            buffer.writeInteger(UInt16(0x032D), endianness: .little)  // made by: Unix, 4.5
            buffer.writeInteger(UInt16(far ? 45 : 20), endianness: .little)
            buffer.writeInteger(UInt16(0x0800), endianness: .little)
            buffer.writeInteger(UInt16(0), endianness: .little)
            buffer.writeInteger(dosTime, endianness: .little)
            buffer.writeInteger(dosDate, endianness: .little)
            buffer.writeInteger(entry.crc, endianness: .little)
            buffer.writeInteger(entry.size, endianness: .little)
            buffer.writeInteger(entry.size, endianness: .little)
            buffer.writeInteger(UInt16(entry.name.count), endianness: .little)
            buffer.writeInteger(UInt16(far ? 12 : 0), endianness: .little)  // extra: the ZIP64 offset
            buffer.writeInteger(UInt16(0), endianness: .little)  // comment
            buffer.writeInteger(UInt16(0), endianness: .little)  // disk
            buffer.writeInteger(UInt16(0), endianness: .little)  // internal attributes
            buffer.writeInteger(UInt32(0o100644) << 16, endianness: .little)  // external: a regular file, rw-r--r--
            buffer.writeInteger(far ? UInt32(0xFFFF_FFFF) : UInt32(entry.offset), endianness: .little)
            buffer.writeBytes(entry.name)
            if far {
                buffer.writeInteger(UInt16(0x0001), endianness: .little)  // ZIP64 extended information
                buffer.writeInteger(UInt16(8), endianness: .little)
                buffer.writeInteger(entry.offset, endianness: .little)
            }
        }
        let size = UInt64(buffer.readableBytes)
        let zip64 = start >= limit32 || size >= limit32 || entries.count >= 0xFFFF
        if zip64 {
            let record = start + size
            buffer.writeInteger(UInt32(0x0606_4b50), endianness: .little)  // ZIP64 end of central directory
            buffer.writeInteger(UInt64(44), endianness: .little)  // the size of the rest of this record
            buffer.writeInteger(UInt16(0x032D), endianness: .little)
            buffer.writeInteger(UInt16(45), endianness: .little)
            buffer.writeInteger(UInt32(0), endianness: .little)
            buffer.writeInteger(UInt32(0), endianness: .little)
            buffer.writeInteger(UInt64(entries.count), endianness: .little)
            buffer.writeInteger(UInt64(entries.count), endianness: .little)
            buffer.writeInteger(size, endianness: .little)
            buffer.writeInteger(start, endianness: .little)
            buffer.writeInteger(UInt32(0x0706_4b50), endianness: .little)  // its locator
            buffer.writeInteger(UInt32(0), endianness: .little)
            buffer.writeInteger(record, endianness: .little)
            buffer.writeInteger(UInt32(1), endianness: .little)
        }
        let count = UInt16(min(entries.count, 0xFFFF))
        buffer.writeInteger(UInt32(0x0605_4b50), endianness: .little)  // end of central directory
        buffer.writeInteger(UInt16(0), endianness: .little)
        buffer.writeInteger(UInt16(0), endianness: .little)
        buffer.writeInteger(zip64 ? 0xFFFF : count, endianness: .little)
        buffer.writeInteger(zip64 ? 0xFFFF : count, endianness: .little)
        buffer.writeInteger(zip64 ? 0xFFFF_FFFF : UInt32(size), endianness: .little)
        buffer.writeInteger(zip64 ? 0xFFFF_FFFF : UInt32(start), endianness: .little)
        buffer.writeInteger(UInt16(0), endianness: .little)  // comment length
        return buffer
    }
}

/// CRC-32 (IEEE 802.3, the polynomial of ZIP and gzip), by table.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    static func checksum(_ data: Data) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        data.withUnsafeBytes { bytes in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return crc ^ 0xFFFF_FFFF
    }
}
