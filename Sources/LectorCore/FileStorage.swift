import Foundation
import NIOPosix

/// Where job folders live. The local filesystem implementation is `FileStorage`; object storage comes later
/// behind the same protocol.
public protocol JobStorage: Sendable {
    /// Creates the job's folder holding the document and `metadata.json`, complete or not at all.
    func createJobFolder(id: UUID, documentFileName: String, document: Data, metadataJSON: Data) async throws
    /// Removes a job's folder and everything in it (used when the database refuses a job).
    func removeJobFolder(id: UUID) async throws
    /// The document's bytes.
    func readDocument(id: UUID, fileName: String) async throws -> Data
    /// Writes one result file atomically (temporary name, then rename).
    func writeResult(id: UUID, fileName: String, contents: Data) async throws
    /// Writes the result files of one attempt under hidden names, synced; `commitResults` moves them into place.
    func stageResults(id: UUID, attempt: Int, files: [(name: String, contents: Data)]) async throws
    /// Puts an attempt's staged result files in place (called while the attempt's lease row is locked).
    /// Idempotent: the staged files stay until `discardResults`, so a retry after a failed commit redoes it.
    func commitResults(id: UUID, fileNames: [String], attempt: Int) async throws
    /// Removes an attempt's staged files (the attempt lost its lease, or failed).
    func discardResults(id: UUID, fileNames: [String], attempt: Int) async
    /// A result file's bytes, or nil when it does not exist.
    func readResult(id: UUID, fileName: String) async throws -> Data?
    /// Whether a finished job has this result file (not every job has every format).
    func hasResult(id: UUID, fileName: String) async throws -> Bool
    /// Whether the storage accepts writes now.
    func checkWritable() async throws
}

public struct StorageError: Error, CustomStringConvertible {
    public let description: String
    /// Whether trying again later may succeed (an I/O error) rather than not (a missing file).
    public var isTransient: Bool = true

    public init(description: String, isTransient: Bool = true) {
        self.description = description
        self.isTransient = isTransient
    }
}

/// Job folders on the local filesystem: `<root>/<uuid>/`.
///
/// Every name that reaches the filesystem is built here from a UUID and a fixed set of file names, never from
/// client input, so no request can name a path outside its job's folder. Blocking file calls run on NIO's
/// thread pool, off Swift's cooperative threads.
public struct FileStorage: JobStorage {
    public let root: URL
    private let threadPool: NIOThreadPool

    /// Files a job folder may contain; anything else is refused.
    public static let resultFileNames: Set<String> = ["result.json", "result.txt", "result.hocr", "result.pdf"]

    public init(root: String, threadPool: NIOThreadPool = .singleton) throws {
        let url = URL(fileURLWithPath: root, isDirectory: true).standardizedFileURL
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        self.root = url
        self.threadPool = threadPool
    }

    public func folder(of id: UUID) -> URL {
        root.appendingPathComponent(id.uuidString.lowercased(), isDirectory: true)
    }

    public func createJobFolder(id: UUID, documentFileName: String, document: Data, metadataJSON: Data) async throws {
        try Self.checkName(documentFileName)
        let final = folder(of: id)
        let staging = root.appendingPathComponent(".staging-\(id.uuidString.lowercased())", isDirectory: true)
        try await threadPool.runIfActive {
            let fm = FileManager.default
            do {
                try fm.createDirectory(at: staging, withIntermediateDirectories: false)
                try Self.writeSynced(document, to: staging.appendingPathComponent(documentFileName, isDirectory: false))
                try Self.writeSynced(metadataJSON, to: staging.appendingPathComponent("metadata.json", isDirectory: false))
                try Self.syncDirectory(staging)
                // rename(2) of a directory is atomic: the job folder appears whole or not at all. The root is
                // synced after it, so the folder survives a power loss before the QUEUED row commits.
                guard rename(staging.path, final.path) == 0 else {
                    throw StorageError(description: "rename to \(final.lastPathComponent) failed: errno \(errno)")
                }
                try Self.syncDirectory(self.root)
            } catch {
                try? fm.removeItem(at: staging)
                throw error
            }
        }
    }

    public func removeJobFolder(id: UUID) async throws {
        let folder = folder(of: id)
        try await threadPool.runIfActive {
            if FileManager.default.fileExists(atPath: folder.path) {
                try FileManager.default.removeItem(at: folder)
            }
        }
    }

    public func readDocument(id: UUID, fileName: String) async throws -> Data {
        try Self.checkName(fileName)
        let url = folder(of: id).appendingPathComponent(fileName, isDirectory: false)
        return try await threadPool.runIfActive {
            // Only "no such file" is permanent; any other failure (EIO, ESTALE, EACCES) may pass.
            var info = stat()
            if stat(url.path, &info) != 0 {
                let code = errno
                throw StorageError(
                    description: code == ENOENT
                        ? "the document is missing from storage"
                        : "the document could not be read from storage: errno \(code)",
                    isTransient: code != ENOENT)
            }
            do {
                return try Data(contentsOf: url)
            } catch {
                throw StorageError(description: "the document could not be read from storage: \(error.localizedDescription)", isTransient: true)
            }
        }
    }

    public func writeResult(id: UUID, fileName: String, contents: Data) async throws {
        try Self.checkName(fileName)
        let target = folder(of: id).appendingPathComponent(fileName, isDirectory: false)
        let temporary = folder(of: id).appendingPathComponent(".\(fileName).\(UUID().uuidString.lowercased()).tmp", isDirectory: false)
        try await threadPool.runIfActive {
            do {
                try Self.writeSynced(contents, to: temporary)
                guard rename(temporary.path, target.path) == 0 else {
                    throw StorageError(description: "rename to \(fileName) failed: errno \(errno)")
                }
                try Self.syncDirectory(target.deletingLastPathComponent())
            } catch {
                try? FileManager.default.removeItem(at: temporary)
                throw error
            }
        }
    }

    private func stagedURL(_ id: UUID, _ fileName: String, attempt: Int) -> URL {
        folder(of: id).appendingPathComponent(".\(fileName).attempt-\(attempt)", isDirectory: false)
    }

    public func stageResults(id: UUID, attempt: Int, files: [(name: String, contents: Data)]) async throws {
        for file in files { try Self.checkName(file.name) }
        let staged = files.map { (stagedURL(id, $0.name, attempt: attempt), $0.contents) }
        // One trip to the thread pool for all of them: these calls are the worker's whole per-job cost with the
        // no-op engine (BENCHMARKS.md, P3).
        try await threadPool.runIfActive {
            for (url, contents) in staged {
                unlink(url.path)  // a leftover of this attempt from a failed try
                try Self.writeSynced(contents, to: url)
            }
        }
    }

    public func commitResults(id: UUID, fileNames: [String], attempt: Int) async throws {
        for name in fileNames { try Self.checkName(name) }
        let folder = folder(of: id)
        let moves = fileNames.map { (stagedURL(id, $0, attempt: attempt), folder.appendingPathComponent($0, isDirectory: false)) }
        try await threadPool.runIfActive {
            for (staged, target) in moves {
                // A hard link, renamed over the target: the staged file survives for a retry, and readers
                // see the old file or the new one, never a partial one.
                let temporary = folder.appendingPathComponent(".\(target.lastPathComponent).\(UUID().uuidString.lowercased()).tmp", isDirectory: false)
                guard link(staged.path, temporary.path) == 0 else {
                    throw StorageError(description: "staged \(target.lastPathComponent) is missing: errno \(errno)")
                }
                let renamed = rename(temporary.path, target.path) == 0
                let code = errno
                // rename(2) does nothing when both names are links to one file (a repeated commit): drop the
                // temporary name in every case.
                unlink(temporary.path)
                guard renamed else {
                    throw StorageError(description: "rename to \(target.lastPathComponent) failed: errno \(code)")
                }
            }
            try Self.syncDirectory(folder)
        }
    }

    public func discardResults(id: UUID, fileNames: [String], attempt: Int) async {
        let staged = fileNames.map { stagedURL(id, $0, attempt: attempt) }
        _ = try? await threadPool.runIfActive {
            for url in staged { unlink(url.path) }
        }
    }

    public func readResult(id: UUID, fileName: String) async throws -> Data? {
        guard Self.resultFileNames.contains(fileName) else { return nil }
        let url = folder(of: id).appendingPathComponent(fileName, isDirectory: false)
        return try await threadPool.runIfActive {
            FileManager.default.fileExists(atPath: url.path) ? try Data(contentsOf: url) : nil
        }
    }

    public func hasResult(id: UUID, fileName: String) async throws -> Bool {
        guard Self.resultFileNames.contains(fileName) else { return false }
        let path = folder(of: id).appendingPathComponent(fileName, isDirectory: false).path
        return try await threadPool.runIfActive { FileManager.default.fileExists(atPath: path) }
    }

    public func checkWritable() async throws {
        let probe = root.appendingPathComponent(".probe-\(UUID().uuidString.lowercased())", isDirectory: false)
        try await threadPool.runIfActive {
            try Data("ok".utf8).write(to: probe)
            try FileManager.default.removeItem(at: probe)
        }
    }

    /// Reads `<root>/.signing-key`, creating it with 32 random bytes (mode 0600) when missing, so that every
    /// process sharing this storage signs result links with the same secret.
    public func sharedSigningKey() throws -> [UInt8] {
        let url = root.appendingPathComponent(".signing-key", isDirectory: false)
        if let data = try? Data(contentsOf: url), data.count >= 32 { return Array(data) }
        var rng = SystemRandomNumberGenerator()
        let key = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        let temporary = root.appendingPathComponent(".signing-key.\(UUID().uuidString).tmp", isDirectory: false)
        try Self.writeSynced(Data(key), to: temporary, mode: 0o600)
        // link(2) fails if another process created the key first; then use theirs.
        if link(temporary.path, url.path) != 0 {
            try? FileManager.default.removeItem(at: temporary)
            guard let data = try? Data(contentsOf: url), data.count >= 32 else {
                throw StorageError(description: "cannot read \(url.path)")
            }
            return Array(data)
        }
        try? FileManager.default.removeItem(at: temporary)
        return key
    }

    private static func checkName(_ name: String) throws {
        guard !name.isEmpty, !name.hasPrefix("."), !name.contains("/"), name != "..", !name.contains("\0") else {
            throw StorageError(description: "invalid file name in storage")
        }
    }

    private static func syncDirectory(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StorageError(description: "cannot open folder \(url.lastPathComponent): errno \(errno)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StorageError(description: "fsync of a folder failed: errno \(errno)") }
    }

    private static func writeSynced(_ data: Data, to url: URL, mode: mode_t = 0o644) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StorageError(description: "cannot create \(url.lastPathComponent): errno \(errno)") }
        defer { close(fd) }
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw StorageError(description: "write to \(url.lastPathComponent) failed: errno \(errno)")
                }
                offset += written
            }
        }
        guard fsync(fd) == 0 else { throw StorageError(description: "fsync failed: errno \(errno)") }
    }
}
