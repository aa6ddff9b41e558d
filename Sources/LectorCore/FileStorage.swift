import Foundation
import LectorModel
import NIOPosix

/// Where job folders live: `FileStorage` (a local or shared filesystem, the default) or `ObjectStorage` (an
/// S3-compatible store, `LECTOR_STORAGE=s3://bucket/prefix`).
public protocol JobStorage: Sendable {
    /// Where uploads are received before they become jobs (files: on the same filesystem as the job folders, so
    /// that `createJobFolder` renames rather than copies; objects: `LECTOR_SPOOL_DIR` on local disk).
    var spoolDirectory: String { get }
    /// Creates the job's folder holding the spooled document and `metadata.json`, complete or not at all. The
    /// folder takes the spool file over.
    func createJobFolder(id: UUID, documentFileName: String, document: SpooledDocument, metadataJSON: Data) async throws
    /// A spool file holding a job's document (a hard link of it; a copy where links fail), for a new job made
    /// from it (re-OCR): `createJobFolder` takes it over as it takes an upload. `sha256` is the document's, as
    /// recorded. A missing document is a permanent `StorageError`.
    func spoolDocument(of id: UUID, fileName: String, sha256: [UInt8]) async throws -> SpooledDocument
    /// Removes a job's folder and everything in it (used when the database refuses a job).
    func removeJobFolder(id: UUID) async throws
    /// The document's bytes.
    func readDocument(id: UUID, fileName: String) async throws -> Data
    /// Streams the document into the local file at `path` (created; the caller removes it) and answers true, or
    /// answers false when this storage keeps documents on a local filesystem already (read them with
    /// `readDocument`). Object storage streams the object to the file, never whole in memory.
    func downloadDocument(id: UUID, fileName: String, toFile path: String) async throws -> Bool
    /// Whether `downloadDocument` may stream documents to local files (object storage), so that a worker makes a
    /// scratch file for them; false (the default) when documents are on a local filesystem already.
    var downloadsDocuments: Bool { get }
    /// Writes one result file atomically (temporary name, then rename).
    func writeResult(id: UUID, fileName: String, contents: Data) async throws
    /// Writes the result files of one claim's attempt (`stage`) under hidden names, synced; `commitResults` moves
    /// them into place.
    func stageResults(id: UUID, stage: StagingID, files: [(name: String, contents: Data)]) async throws
    /// Puts an attempt's staged result files in place (called while the attempt's lease row is locked).
    /// Idempotent: the staged files stay until `discardResults`, so a retry after a failed commit redoes it.
    func commitResults(id: UUID, fileNames: [String], stage: StagingID) async throws
    /// Removes an attempt's staged files (the attempt lost its lease, or failed).
    func discardResults(id: UUID, fileNames: [String], stage: StagingID) async
    /// A result file's bytes (or a page task's part, `ResultFiles.isPagePart`), or nil when it does not exist.
    func readResult(id: UUID, fileName: String) async throws -> Data?
    /// Removes files written with `writeResult` (a split job's page parts, once it ended); best effort: what
    /// stays is removed with the job.
    func removeResults(id: UUID, fileNames: [String]) async
    /// Whether a finished job has this result file (not every job has every format).
    func hasResult(id: UUID, fileName: String) async throws -> Bool
    /// Whether the storage accepts writes now: a write probe, and free space and inodes above the minimum.
    /// Throws a `StorageError` of kind `.full` when either is below it.
    func checkWritable() async throws
    /// A link that serves a result file straight from the store (an object store's presigned GET), valid for
    /// `expires`, answered with `contentType` and named `downloadName`; nil when the store has none (files: the
    /// API serves its own signed `/files` links).
    func resultLink(id: UUID, fileName: String, contentType: String, downloadName: String, expires: Duration) throws -> String?
}

extension JobStorage {
    public func downloadDocument(id: UUID, fileName: String, toFile path: String) async throws -> Bool { false }

    public var downloadsDocuments: Bool { false }

    public func resultLink(id: UUID, fileName: String, contentType: String, downloadName: String, expires: Duration) throws -> String? {
        nil
    }

    /// Spools `document` and creates the job folder from it (for tests and tools; the API streams uploads).
    public func createJobFolder(id: UUID, documentFileName: String, document: Data, metadataJSON: Data) async throws {
        let writer = try DocumentSpoolWriter(directory: spoolDirectory)
        try document.withUnsafeBytes { bytes in try writer.write(bytes) }
        try await createJobFolder(id: id, documentFileName: documentFileName, document: try writer.finish(), metadataJSON: metadataJSON)
    }
}

/// The least free space and free inodes under which storage counts as full: submits answer 507, `/readyz`
/// says so, and workers stop claiming (a job must not fail for the system's condition).
public struct StorageReserve: Sendable, Equatable {
    public var bytes: Int64
    public var inodes: Int64

    public init(bytes: Int64, inodes: Int64) {
        self.bytes = bytes
        self.inodes = inodes
    }

    public static let none = StorageReserve(bytes: 0, inodes: 0)
}

public struct StorageError: Error, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Out of space or inodes (ENOSPC, EDQUOT): the system's condition, not the job's.
        case full
        /// The object is missing: trying again cannot help.
        case missing
        /// Anything else (EIO, ESTALE, EACCES, an unreachable store): it may pass.
        case unavailable
    }

    public let description: String
    public let kind: Kind
    /// Whether trying again later may succeed (an I/O error, a full disk) rather than not (a missing file).
    public var isTransient: Bool { kind != .missing }

    public init(description: String, kind: Kind = .unavailable) {
        self.description = description
        self.kind = kind
    }

    public init(description: String, isTransient: Bool) {
        self.init(description: description, kind: isTransient ? .unavailable : .missing)
    }

    /// From a failed system call: `errno` decides the kind.
    public init(errno code: Int32, doing what: String) {
        let kind: Kind =
            switch code {
            case ENOSPC, EDQUOT: .full
            case ENOENT: .missing
            default: .unavailable
            }
        self.init(description: "could not \(what): \(String(cString: strerror(code))) (errno \(code))", kind: kind)
    }

    /// Any error of a storage call as a `StorageError` (Foundation's file errors carry the errno underneath).
    public static func from(_ error: any Error, doing what: String) -> StorageError {
        if let error = error as? StorageError { return error }
        let underlying = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
        if let posix = underlying, posix.domain == NSPOSIXErrorDomain { return StorageError(errno: Int32(posix.code), doing: what) }
        if (error as NSError).domain == NSPOSIXErrorDomain { return StorageError(errno: Int32((error as NSError).code), doing: what) }
        return StorageError(description: "could not \(what): \(error.localizedDescription)")
    }
}

/// Job folders on the local filesystem: `<root>/<uuid>/`.
///
/// Every name that reaches the filesystem is built here from a UUID and a fixed set of file names, never from
/// client input, so no request can name a path outside its job's folder. Blocking file calls run on NIO's
/// thread pool, off Swift's cooperative threads.
public struct FileStorage: JobStorage {
    public let root: URL
    public let reserve: StorageReserve
    private let threadPool: NIOThreadPool

    /// The folder of uploads in progress, under the root.
    public static let spoolFolderName = ".uploads"

    public init(root: String, reserve: StorageReserve = .none, threadPool: NIOThreadPool = .singleton) throws {
        let url = URL(fileURLWithPath: root, isDirectory: true).standardizedFileURL
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw StorageError.from(error, doing: "create the storage folder")
        }
        self.root = url
        self.reserve = reserve
        self.threadPool = threadPool
    }

    /// The storage `settings` name: `LECTOR_STORAGE_ROOT`, with its reserve.
    public init(settings: Settings) throws {
        try self.init(
            root: settings.storageRoot,
            reserve: StorageReserve(bytes: settings.storageReserveBytes, inodes: settings.storageReserveInodes))
    }

    public var spoolDirectory: String { root.appendingPathComponent(Self.spoolFolderName, isDirectory: true).path }

    public func folder(of id: UUID) -> URL {
        root.appendingPathComponent(id.uuidString.lowercased(), isDirectory: true)
    }

    public func createJobFolder(id: UUID, documentFileName: String, document: SpooledDocument, metadataJSON: Data) async throws {
        try Self.checkName(documentFileName)
        let final = folder(of: id)
        let staging = root.appendingPathComponent(".staging-\(id.uuidString.lowercased())", isDirectory: true)
        guard document.take() else { throw StorageError(description: "the upload was already stored") }
        try await threadPool.runIfActive {
            do {
                guard mkdir(staging.path, 0o755) == 0 else { throw StorageError(errno: errno, doing: "create a job folder") }
                // The spool file is on this filesystem and already synced: a rename moves it in.
                guard rename(document.path, staging.appendingPathComponent(documentFileName, isDirectory: false).path) == 0 else {
                    throw StorageError(errno: errno, doing: "move the upload into its job folder")
                }
                try Self.writeSynced(metadataJSON, to: staging.appendingPathComponent("metadata.json", isDirectory: false))
                try Self.syncDirectory(staging)
                // rename(2) of a directory is atomic: the job folder appears whole or not at all. The root is
                // synced after it, so the folder survives a power loss before the QUEUED row commits.
                guard rename(staging.path, final.path) == 0 else {
                    throw StorageError(errno: errno, doing: "publish a job folder")
                }
                try Self.syncDirectory(self.root)
            } catch {
                unlink(document.path)
                try? FileManager.default.removeItem(at: staging)
                throw StorageError.from(error, doing: "create a job folder")
            }
        }
    }

    public func spoolDocument(of id: UUID, fileName: String, sha256: [UInt8]) async throws -> SpooledDocument {
        try Self.checkName(fileName)
        let source = folder(of: id).appendingPathComponent(fileName, isDirectory: false).path
        let spool = spoolDirectory
        return try await threadPool.runIfActive {
            if mkdir(spool, 0o755) != 0, errno != EEXIST { throw StorageError(errno: errno, doing: "create the upload folder") }
            let path = spool + "/" + UUID().uuidString.lowercased() + ".upload"
            // The document never changes once stored, so both jobs may share its inode.
            if link(source, path) != 0 {
                let code = errno
                if code == ENOENT {
                    throw StorageError(description: "the document is missing from storage", isTransient: false)
                }
                do {
                    try FileManager.default.copyItem(atPath: source, toPath: path)
                } catch {
                    unlink(path)
                    throw StorageError.from(error, doing: "copy a document")
                }
            }
            var info = stat()
            guard stat(path, &info) == 0 else {
                let code = errno
                unlink(path)
                throw StorageError(errno: code, doing: "read a document's size")
            }
            var head = [UInt8](repeating: 0, count: DocumentSpoolWriter.headBytes)
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                let count = head.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                close(fd)
                head = Array(head.prefix(max(0, count)))
            } else {
                head = []
            }
            return SpooledDocument(path: path, size: Int64(info.st_size), sha256: sha256, head: head)
        }
    }

    public func removeJobFolder(id: UUID) async throws {
        let folder = folder(of: id)
        try await threadPool.runIfActive {
            do {
                if FileManager.default.fileExists(atPath: folder.path) {
                    try FileManager.default.removeItem(at: folder)
                }
            } catch {
                throw StorageError.from(error, doing: "remove a job folder")
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
                    throw StorageError(errno: errno, doing: "rename \(fileName) into place")
                }
                try Self.syncDirectory(target.deletingLastPathComponent())
            } catch {
                try? FileManager.default.removeItem(at: temporary)
                throw error
            }
        }
    }

    private func stagedURL(_ id: UUID, _ fileName: String, stage: StagingID) -> URL {
        folder(of: id).appendingPathComponent(".\(fileName).attempt-\(stage)", isDirectory: false)
    }

    public func stageResults(id: UUID, stage: StagingID, files: [(name: String, contents: Data)]) async throws {
        for file in files { try Self.checkName(file.name) }
        try stage.check()
        let staged = files.map { (stagedURL(id, $0.name, stage: stage), $0.contents) }
        // One trip to the thread pool for all of them: these calls are the worker's whole per-job cost with the
        // no-op engine (BENCHMARKS.md, P3).
        try await threadPool.runIfActive {
            for (url, contents) in staged {
                unlink(url.path)  // a leftover of this attempt from a failed try
                try Self.writeSynced(contents, to: url)
            }
        }
    }

    public func commitResults(id: UUID, fileNames: [String], stage: StagingID) async throws {
        for name in fileNames { try Self.checkName(name) }
        try stage.check()
        let folder = folder(of: id)
        let moves = fileNames.map { (stagedURL(id, $0, stage: stage), folder.appendingPathComponent($0, isDirectory: false)) }
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
                    throw StorageError(errno: code, doing: "rename \(target.lastPathComponent) into place")
                }
            }
            try Self.syncDirectory(folder)
        }
    }

    public func discardResults(id: UUID, fileNames: [String], stage: StagingID) async {
        guard (try? stage.check()) != nil else { return }
        let staged = fileNames.filter { (try? Self.checkName($0)) != nil }.map { stagedURL(id, $0, stage: stage) }
        _ = try? await threadPool.runIfActive {
            for url in staged { unlink(url.path) }
        }
    }

    public func removeResults(id: UUID, fileNames: [String]) async {
        let urls = fileNames.filter { (try? Self.checkName($0)) != nil }.map {
            folder(of: id).appendingPathComponent($0, isDirectory: false)
        }
        _ = try? await threadPool.runIfActive {
            for url in urls { unlink(url.path) }
        }
    }

    public func readResult(id: UUID, fileName: String) async throws -> Data? {
        guard ResultFiles.isResultFile(fileName) || ResultFiles.isPagePart(fileName) else { return nil }
        let url = folder(of: id).appendingPathComponent(fileName, isDirectory: false)
        return try await threadPool.runIfActive {
            // Only "no such file" means no result; any other failure (ENOTDIR, EIO, EACCES) is the storage's.
            var info = stat()
            if stat(url.path, &info) != 0 {
                if errno == ENOENT { return nil }
                throw StorageError(errno: errno, doing: "read \(fileName)")
            }
            do {
                return try Data(contentsOf: url)
            } catch {
                throw StorageError.from(error, doing: "read \(fileName)")
            }
        }
    }

    public func hasResult(id: UUID, fileName: String) async throws -> Bool {
        guard ResultFiles.isResultFile(fileName) else { return false }
        let path = folder(of: id).appendingPathComponent(fileName, isDirectory: false).path
        return try await threadPool.runIfActive {
            var info = stat()
            if stat(path, &info) == 0 { return true }
            if errno == ENOENT { return false }
            throw StorageError(errno: errno, doing: "look for \(fileName)")
        }
    }

    public func checkWritable() async throws {
        let probe = root.appendingPathComponent(".probe-\(UUID().uuidString.lowercased())", isDirectory: false)
        let root = self.root
        let reserve = self.reserve
        try await threadPool.runIfActive {
            var info = statvfs()
            guard statvfs(root.path, &info) == 0 else { throw StorageError(errno: errno, doing: "read the storage's free space") }
            let freeBytes = Int64(info.f_bavail) * Int64(info.f_frsize)
            // Filesystems without an inode limit (f_files == 0) report no free inodes: nothing to check there.
            let freeInodes = info.f_files == 0 ? Int64.max : Int64(info.f_favail)
            if freeBytes < reserve.bytes {
                throw StorageError(description: "storage is full: \(freeBytes) bytes free, below the reserve of \(reserve.bytes)", kind: .full)
            }
            if freeInodes < reserve.inodes {
                throw StorageError(description: "storage is full: \(freeInodes) inodes free, below the reserve of \(reserve.inodes)", kind: .full)
            }
            try Self.writeSynced(Data("ok".utf8), to: probe)
            unlink(probe.path)
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
        guard fd >= 0 else { throw StorageError(errno: errno, doing: "open folder \(url.lastPathComponent)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StorageError(errno: errno, doing: "sync a folder") }
    }

    private static func writeSynced(_ data: Data, to url: URL, mode: mode_t = 0o644) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StorageError(errno: errno, doing: "create \(url.lastPathComponent)") }
        defer { close(fd) }
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw StorageError(errno: errno, doing: "write \(url.lastPathComponent)")
                }
                offset += written
            }
        }
        guard fsync(fd) == 0 else { throw StorageError(errno: errno, doing: "sync \(url.lastPathComponent)") }
    }
}
