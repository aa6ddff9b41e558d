import Crypto
import Foundation
import NIOConcurrencyHelpers

/// A document received into a file, hashed as it arrived: what an upload becomes before it is a job.
///
/// The file is removed when this object goes away, unless storage took it (`take()`), so no error path of a
/// submit leaves it behind. (A process killed mid-upload leaves it; `StorageSweeper` removes it later.)
public final class SpooledDocument: Sendable {
    public let path: String
    public let size: Int64
    public let sha256: [UInt8]
    /// The first bytes, for detecting the type.
    public let head: [UInt8]
    private let owned = NIOLockedValueBox(true)

    init(path: String, size: Int64, sha256: [UInt8], head: [UInt8]) {
        self.path = path
        self.size = size
        self.sha256 = sha256
        self.head = head
    }

    /// Hands the file over (storage renames it into a job folder); returns false if already taken.
    public func take() -> Bool {
        owned.withLockedValue { owned in
            defer { owned = false }
            return owned
        }
    }

    /// Removes the file now (a refused upload), unless storage took it.
    public func discard() {
        if take() { unlink(path) }
    }

    deinit {
        if owned.withLockedValue({ $0 }) { unlink(path) }
    }
}

/// Writes an incoming document into a spool file as it arrives, hashing it and keeping its first bytes.
///
/// Not thread-safe: one upload uses it, one chunk at a time (each write is awaited before the next). Its
/// methods block (write(2), fsync(2)), so they run on a thread pool, never on Swift's cooperative threads.
public final class DocumentSpoolWriter: @unchecked Sendable {
    public let path: String
    private var fd: Int32
    private var hasher = SHA256()
    private var head: [UInt8] = []
    public private(set) var size: Int64 = 0
    private var finished = false

    /// How many leading bytes are kept for type detection.
    static let headBytes = 64

    /// Creates `<directory>/<uuid>.upload` (the folder is created when missing).
    public init(directory: String) throws {
        if mkdir(directory, 0o755) != 0, errno != EEXIST {
            throw StorageError(errno: errno, doing: "create the upload folder")
        }
        path = directory + "/" + UUID().uuidString.lowercased() + ".upload"
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StorageError(errno: errno, doing: "create an upload file") }
    }

    /// Appends bytes to the file and the hash.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard !bytes.isEmpty, let base = bytes.baseAddress else { return }
        if head.count < Self.headBytes { head.append(contentsOf: bytes.prefix(Self.headBytes - head.count)) }
        hasher.update(bufferPointer: bytes)
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(fd, base + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw StorageError(errno: errno, doing: "write an upload")
            }
            offset += written
        }
        size += Int64(bytes.count)
    }

    /// Syncs and closes the file; the returned document owns it from now on.
    public func finish() throws -> SpooledDocument {
        guard fsync(fd) == 0 else { throw StorageError(errno: errno, doing: "sync an upload") }
        close(fd)
        fd = -1
        finished = true
        return SpooledDocument(path: path, size: size, sha256: Array(hasher.finalize()), head: head)
    }

    /// Closes and removes the file of an upload that will not be finished.
    public func abandon() {
        if fd >= 0 { close(fd) }
        fd = -1
        if !finished { unlink(path) }
        finished = true
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !finished { unlink(path) }
    }
}
