import Crypto
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Blocking file work, run on NIO's shared thread pool so that it never blocks the cooperative pool.
enum FileIO {
    /// Chunk size for reading and hashing files.
    static let chunkSize = 1 << 20

    /// The digests and size of a file, computed in one streaming pass.
    struct Digest: Sendable {
        var size: Int64
        var sha256: SHA256.Digest
        var md5: Insecure.MD5.Digest
    }

    /// Reads `path` once, in chunks, and returns its size, SHA-256 and MD5.
    static func digest(path: String) async throws -> Digest {
        try await NIOThreadPool.singleton.runIfActive {
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            var sha = SHA256()
            var md5 = Insecure.MD5()
            var size: Int64 = 0
            while let chunk = try handle.read(upToCount: chunkSize), !chunk.isEmpty {
                sha.update(data: chunk)
                md5.update(data: chunk)
                size += Int64(chunk.count)
            }
            return Digest(size: size, sha256: sha.finalize(), md5: md5.finalize())
        }
    }

    /// A file's contents as an `AsyncSequence` of buffers of at most ``chunkSize`` bytes, read lazily:
    /// one chunk in memory at a time (plus what the HTTP client has in flight). Each iteration
    /// opens the file anew, so the same sequence can be sent again on a retry.
    struct Chunks: AsyncSequence, Sendable {
        typealias Element = ByteBuffer
        let path: String

        func makeAsyncIterator() -> Iterator {
            Iterator(path: path)
        }

        struct Iterator: AsyncIteratorProtocol {
            let path: String
            var handle: FileHandle?
            var finished = false

            init(path: String) {
                self.path = path
            }

            mutating func next() async throws -> ByteBuffer? {
                guard !finished else { return nil }
                let handle: FileHandle
                if let existing = self.handle {
                    handle = existing
                } else {
                    let path = self.path
                    handle = try await NIOThreadPool.singleton.runIfActive {
                        try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
                    }
                    self.handle = handle
                }
                let size = FileIO.chunkSize
                let data = try await NIOThreadPool.singleton.runIfActive { try handle.read(upToCount: size) }
                guard let data, !data.isEmpty else {
                    finished = true
                    try? handle.close()
                    self.handle = nil
                    return nil
                }
                return ByteBuffer(data: data)
            }
        }
    }

    /// A file being written: created next to its destination under a temporary name, renamed into
    /// place by ``commit()`` (atomic on one file system), removed by ``discard()``.
    struct AtomicWriter: Sendable {
        let destination: String
        let temporary: String
        let handle: FileHandle

        /// Creates (or truncates) the temporary file.
        static func create(destination: String) async throws -> AtomicWriter {
            let temporary = destination + ".s3kit-\(UUID().uuidString).partial"
            let handle = try await NIOThreadPool.singleton.runIfActive {
                guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
                    throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary])
                }
                return try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            }
            return AtomicWriter(destination: destination, temporary: temporary, handle: handle)
        }

        /// Appends `buffer`.
        func write(_ buffer: ByteBuffer) async throws {
            let data = Data(buffer: buffer, byteTransferStrategy: .noCopy)
            let handle = self.handle
            try await NIOThreadPool.singleton.runIfActive { try handle.write(contentsOf: data) }
        }

        /// Flushes, closes and renames the file into place, replacing any file there.
        func commit() async throws {
            let handle = self.handle
            let temporary = self.temporary
            let destination = self.destination
            try await NIOThreadPool.singleton.runIfActive {
                try handle.synchronize()
                try handle.close()
                guard rename(temporary, destination) == 0 else {
                    let code = errno
                    unlink(temporary)
                    throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
                }
            }
        }

        /// Closes and removes the temporary file.
        func discard() async {
            let handle = self.handle
            let temporary = self.temporary
            _ = try? await NIOThreadPool.singleton.runIfActive {
                try? handle.close()
                unlink(temporary)
            }
        }
    }
}
