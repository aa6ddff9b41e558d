import AsyncHTTPClient
import Crypto
import Foundation
import LectorModel
import NIOCore
import NIOPosix
import S3Kit

/// Job folders on an S3-compatible object store (`LECTOR_STORAGE=s3://bucket/prefix`): one key prefix per job.
///
///     <prefix>/<job id>/document.<ext>                 the document (streamed from the spool file, with checksums)
///     <prefix>/<job id>/metadata.json                  written after the document: its presence means "complete"
///     <prefix>/<job id>/attempts/<n>-<claim>/<file>   what attempt n staged (the claim: random, per claim)
///     <prefix>/<job id>/<result file>                  the live results (server-side copies of one attempt's)
///     <prefix>/.signing-key                            the result-link secret when LECTOR_SIGNING_KEY is unset
///
/// An object store has no rename, so the guarantees of `FileStorage` hold another way:
/// - a job's objects are all stored before its `QUEUED` row commits (the API calls `createJobFolder` first; a
///   failed upload throws and no row is written);
/// - an attempt writes only under `attempts/<n>-<claim>/` (`StagingID`); `commitResults` copies those objects to the live keys and is
///   called by the worker inside the ending transaction, while the job's lease row is locked and only after the
///   lease was checked: a fenced-off attempt never reaches it, so its objects are never live. Each copy is atomic
///   per object (readers see the old object or the new one). The staged objects stay until `discardResults`
///   (which the worker calls after the transaction in every case), so a commit retried after a failed database
///   commit is the same copy again.
///
/// Uploads are still received into a spool folder on local disk (`LECTOR_SPOOL_DIR`): no job folder exists on
/// the local filesystem. Every name is built here from a UUID and a fixed set of file names. Every failure is a
/// `StorageError`: a missing object (`NoSuchKey`) is `.missing`, anything else (store unreachable, 5xx after
/// retries, refused credentials, a missing bucket) is `.unavailable`.
public struct ObjectStorage: JobStorage {
    public let client: S3Client
    public let bucket: String
    /// The key prefix inside the bucket, without a trailing slash ("" for the bucket's root).
    public let prefix: String
    public let spoolDirectory: String
    /// The largest document read into memory (`readDocument`; 2 GiB by default, not `LECTOR_MAX_UPLOAD_BYTES`:
    /// a document accepted before that limit was lowered must stay readable).
    public let maxDocumentBytes: Int
    /// The largest result read into memory (`readResult`).
    public let maxResultBytes: Int
    /// Uploads and copies made at once by `stageResults` and `commitResults`.
    public let concurrency = 8

    /// `s3://bucket/prefix` → bucket and prefix (no leading or trailing slash). Nil for anything else, an empty
    /// prefix included: the sweeper removes what looks like an abandoned job folder under the prefix, so Lector
    /// keeps to a prefix of its own and never sweeps the root of a bucket that others may use.
    public static func parse(location: String) -> (bucket: String, prefix: String)? {
        guard location.hasPrefix("s3://") else { return nil }
        let rest = location.dropFirst("s3://".count)
        let parts = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first else { return nil }
        let bucket = String(first)
        // S3's rules: 3-63 characters, lower-case letters, digits, dots and hyphens, starting and ending with a
        // letter or digit.
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-")
        guard (3...63).contains(bucket.count), bucket.allSatisfy({ allowed.contains($0) }),
            let head = bucket.first, let tail = bucket.last, head.isLetter || head.isNumber, tail.isLetter || tail.isNumber
        else { return nil }
        var prefix = parts.count > 1 ? String(parts[1]) : ""
        while prefix.hasSuffix("/") { prefix.removeLast() }
        let segments = prefix.split(separator: "/", omittingEmptySubsequences: false)
        guard !prefix.isEmpty, segments.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }),
            prefix.utf8.count <= 512, !prefix.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else { return nil }
        return (bucket, prefix)
    }

    public init(
        bucket: String, prefix: String, endpoint: URL, region: String, accessKeyID: String, secretAccessKey: String,
        addressing: S3Configuration.Addressing = .path, spoolDirectory: String,
        requestTimeout: Duration = .seconds(60), retry: RetryPolicy = RetryPolicy(),
        maxDocumentBytes: Int = 1 << 31, maxResultBytes: Int = 1 << 30, httpClient: HTTPClient = .shared
    ) throws {
        let configuration = S3Configuration(
            endpoint: endpoint, region: region, bucket: bucket, keyPrefix: prefix.isEmpty ? "" : prefix + "/",
            accessKey: accessKeyID, secretKey: secretAccessKey, addressing: addressing, requestTimeout: requestTimeout,
            retry: retry)
        do {
            self.client = try S3Client(configuration: configuration, httpClient: httpClient)
        } catch {
            throw StorageError(description: "invalid object storage settings: \(error)")
        }
        self.bucket = bucket
        self.prefix = prefix
        self.spoolDirectory = spoolDirectory
        self.maxDocumentBytes = maxDocumentBytes
        self.maxResultBytes = maxResultBytes
        do {
            try FileManager.default.createDirectory(
                atPath: spoolDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw StorageError.from(error, doing: "create the spool folder \(spoolDirectory)")
        }
    }

    /// From `settings`: `LECTOR_STORAGE=s3://bucket/prefix` and the `LECTOR_S3_*` settings. Processes pass their
    /// own client (`makeHTTPClient`, shut down by `HTTPClientService`); `.shared` is for tests and tools.
    public init(settings: Settings, httpClient: HTTPClient = .shared) throws {
        guard let location = Self.parse(location: settings.storage) else {
            throw StorageError(description: "LECTOR_STORAGE must be s3://bucket/prefix (a valid bucket name), not '\(settings.storage)'")
        }
        guard let endpoint = URL(string: settings.s3Endpoint), let scheme = endpoint.scheme?.lowercased(),
            scheme == "http" || scheme == "https", endpoint.host != nil
        else {
            throw StorageError(description: "LECTOR_S3_ENDPOINT must be an http(s) URL, not '\(settings.s3Endpoint)'")
        }
        guard !settings.s3AccessKeyID.isEmpty, !settings.s3SecretAccessKey.isEmpty else {
            throw StorageError(description: "LECTOR_S3_ACCESS_KEY_ID and LECTOR_S3_SECRET_ACCESS_KEY are required with s3:// storage")
        }
        try self.init(
            bucket: location.bucket, prefix: location.prefix, endpoint: endpoint, region: settings.s3Region,
            accessKeyID: settings.s3AccessKeyID, secretAccessKey: settings.s3SecretAccessKey,
            addressing: settings.s3Addressing == "virtual" ? .virtualHost : .path, spoolDirectory: settings.spoolDirectory,
            requestTimeout: .milliseconds(Int64(settings.s3Timeout * 1000)),
            retry: RetryPolicy(maxAttempts: settings.s3MaxAttempts), httpClient: httpClient)
    }

    // MARK: keys

    private static func folder(_ id: UUID) -> String { id.uuidString.lowercased() + "/" }
    private static func key(_ id: UUID, _ name: String) -> String { folder(id) + name }
    private static func stagingFolder(_ id: UUID, _ stage: StagingID) -> String {
        folder(id) + "attempts/\(stage)/"
    }
    private static func stagedKey(_ id: UUID, _ name: String, stage: StagingID) -> String {
        stagingFolder(id, stage) + name
    }
    /// The signing key's object, beside the job prefixes (no job id starts with a dot).
    static let signingKeyObject = ".signing-key"

    private static func checkName(_ name: String) throws {
        guard !name.isEmpty, !name.hasPrefix("."), !name.contains("/"), !name.contains("\0"), name.utf8.count <= 255,
            !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else {
            throw StorageError(description: "invalid file name in storage")
        }
    }

    /// Any error of a store call as a `StorageError` (cancellation passes through).
    static func storageError(_ error: any Error, doing what: String) -> any Error {
        if error is CancellationError { return error }
        if let error = error as? StorageError { return error }
        if let error = error as? S3Error {
            let kind: StorageError.Kind = isMissing(error) ? .missing : isFull(error) ? .full : .unavailable
            return StorageError(description: "could not \(what): \(error)", kind: kind)
        }
        return StorageError.from(error, doing: what)
    }

    /// Whether the store said "no such object" (not "no such bucket", which is a configuration problem). Only
    /// the store's own code counts: a 404 without one (a proxy's page, a wrong endpoint path) is the system's
    /// trouble, and a missing document fails its job for good. (HEAD, which has no body, checks 404 itself.)
    static func isMissing(_ error: S3Error) -> Bool {
        error.kind == .http && error.code == "NoSuchKey"
    }

    /// Whether the store said it has no room: HTTP 507 (MinIO's `XMinioStorageFull`), or a quota (Ceph's
    /// `QuotaExceeded`). That is the system's condition, as a full disk is: workers wait instead of spending the
    /// job's attempts, and submits answer 507.
    static func isFull(_ error: S3Error) -> Bool {
        error.kind == .http && (error.statusCode == 507 || error.code == "XMinioStorageFull" || error.code == "QuotaExceeded")
    }

    /// How often a process probes the store (`StorageHealth`): a probe is a PUT and a DELETE, so not every
    /// second as on a local disk.
    public static let healthInterval: Duration = .seconds(15)

    @discardableResult
    private func call<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw Self.storageError(error, doing: what)
        }
    }

    /// Runs `body` for every item, `concurrency` at a time; the first error cancels the rest and is thrown.
    private func forEach<T: Sendable>(_ items: [T], _ body: @escaping @Sendable (T) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var pending = items.makeIterator()
            for _ in 0..<concurrency {
                guard let item = pending.next() else { break }
                group.addTask { try await body(item) }
            }
            while try await group.next() != nil {
                if let item = pending.next() { group.addTask { try await body(item) } }
            }
        }
    }

    // MARK: JobStorage

    public func createJobFolder(id: UUID, documentFileName: String, document: SpooledDocument, metadataJSON: Data) async throws {
        try Self.checkName(documentFileName)
        guard document.take() else { throw StorageError(description: "the upload was already stored") }
        // The spool file is this call's now: it goes whatever happens (the store has its own copy on success).
        defer { unlink(document.path) }
        let client = self.client
        let documentKey = Self.key(id, documentFileName)
        do {
            // The document first, metadata.json after it: the folder is complete once metadata.json exists, and
            // the API commits the QUEUED row only after this returns. Both carry SHA-256 and MD5 checksums.
            try await client.putObject(key: documentKey, filePath: document.path)
            try await client.putObject(
                key: Self.key(id, "metadata.json"), data: metadataJSON, contentType: "application/json")
        } catch {
            // Nothing of a failed folder should stay (the row will not be written); the store may be down, so
            // this is best effort.
            _ = try? await client.deleteObjects(keys: [documentKey, Self.key(id, "metadata.json")])
            throw Self.storageError(error, doing: "store a job's document")
        }
    }

    public func spoolDocument(of id: UUID, fileName: String, sha256: [UInt8]) async throws -> SpooledDocument {
        try Self.checkName(fileName)
        let spool = spoolDirectory
        if mkdir(spool, 0o700) != 0, errno != EEXIST { throw StorageError(errno: errno, doing: "create the spool folder") }
        let path = spool + "/" + UUID().uuidString.lowercased() + ".upload"
        let info = try await call("copy a document from storage") {
            try await client.getObject(key: Self.key(id, fileName), toFile: path)
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
        return SpooledDocument(path: path, size: info.size, sha256: sha256, head: head)
    }

    public func removeJobFolder(id: UUID) async throws {
        try await call("remove a job's objects") {
            // Listed again after each round: a listing is a snapshot, and an object may be written meanwhile.
            for _ in 0..<3 {
                let keys = try await client.listObjects(prefix: Self.folder(id)).map(\.key)
                guard !keys.isEmpty else { return }
                let failed = try await client.deleteObjects(keys: keys)
                if let first = failed.first {
                    throw StorageError(description: "the store kept \(failed.count) of a job's objects (\(first.code))")
                }
            }
        }
    }

    public func readDocument(id: UUID, fileName: String) async throws -> Data {
        try Self.checkName(fileName)
        do {
            return try await client.getObjectData(key: Self.key(id, fileName), maxBytes: maxDocumentBytes)
        } catch let error as S3Error where Self.isMissing(error) {
            throw StorageError(description: "the document is missing from storage", kind: .missing)
        } catch {
            throw Self.storageError(error, doing: "read a document")
        }
    }

    public var downloadsDocuments: Bool { true }

    /// Streams the document object into `path` (S3Kit writes a temporary file beside it, renamed once complete):
    /// a worker's memory holds one chunk of it at a time, whatever its size.
    public func downloadDocument(id: UUID, fileName: String, toFile path: String) async throws -> Bool {
        try Self.checkName(fileName)
        do {
            try await client.getObject(key: Self.key(id, fileName), toFile: path)
            return true
        } catch let error as S3Error where Self.isMissing(error) {
            throw StorageError(description: "the document is missing from storage", kind: .missing)
        } catch {
            throw Self.storageError(error, doing: "download a document")
        }
    }

    public func writeResult(id: UUID, fileName: String, contents: Data) async throws {
        try Self.checkName(fileName)
        try await call("write \(fileName)") {
            try await client.putObject(key: Self.key(id, fileName), data: contents)
        }
    }

    public func stageResults(id: UUID, stage: StagingID, files: [(name: String, contents: Data)]) async throws {
        try stage.check()
        for file in files { try Self.checkName(file.name) }
        let client = self.client
        let items = files.map { (Self.stagedKey(id, $0.name, stage: stage), $0.contents) }
        try await call("stage results") {
            try await forEach(items) { item in try await client.putObject(key: item.0, data: item.1) }
        }
    }

    public func commitResults(id: UUID, fileNames: [String], stage: StagingID) async throws {
        try stage.check()
        for name in fileNames { try Self.checkName(name) }
        let client = self.client
        let copies = fileNames.map { (Self.stagedKey(id, $0, stage: stage), Self.key(id, $0)) }
        try await call("commit results") {
            try await forEach(copies) { copy in try await client.copyObject(from: copy.0, to: copy.1) }
        }
    }

    public func discardResults(id: UUID, fileNames: [String], stage: StagingID) async {
        guard (try? stage.check()) != nil else { return }
        var keys = Set(fileNames.filter { (try? Self.checkName($0)) != nil }.map { Self.stagedKey(id, $0, stage: stage) })
        // Whatever else this claim staged (pages of a failed staging), so nothing of it is left behind; never
        // another claim's, even of the same attempt number (the listed prefix ends with its own "/").
        if let listed = try? await client.listObjects(prefix: Self.stagingFolder(id, stage)) {
            keys.formUnion(listed.map(\.key))
        }
        guard !keys.isEmpty else { return }
        _ = try? await client.deleteObjects(keys: keys.sorted())
    }

    public func removeResults(id: UUID, fileNames: [String]) async {
        let keys = fileNames.filter { (try? Self.checkName($0)) != nil }.map { Self.key(id, $0) }
        // A multi-object delete takes at most 1,000 keys.
        for start in stride(from: 0, to: keys.count, by: 1000) {
            _ = try? await client.deleteObjects(keys: Array(keys[start..<min(start + 1000, keys.count)]))
        }
    }

    public func readResult(id: UUID, fileName: String) async throws -> Data? {
        guard ResultFiles.isResultFile(fileName) || ResultFiles.isPagePart(fileName) else { return nil }
        do {
            return try await client.getObjectData(key: Self.key(id, fileName), maxBytes: maxResultBytes)
        } catch let error as S3Error where Self.isMissing(error) {
            return nil
        } catch {
            throw Self.storageError(error, doing: "read \(fileName)")
        }
    }

    public func hasResult(id: UUID, fileName: String) async throws -> Bool {
        guard ResultFiles.isResultFile(fileName) else { return false }
        return try await call("look for \(fileName)") { try await client.headObject(key: Self.key(id, fileName)) != nil }
    }

    /// A put and a delete of a probe object. (An object store has no free space to read.)
    public func checkWritable() async throws {
        let probe = ".probe-" + UUID().uuidString.lowercased()
        try await call("write to the object store") {
            try await client.putObject(key: probe, data: Data("ok".utf8))
            try await client.deleteObject(key: probe)
        }
    }

    // MARK: sweeping

    /// One batch of what the sweeper found in the listing of the prefix.
    public struct SweepScan: Sendable {
        /// Staged objects (`<id>/attempts/<stage>/…`) older than the abandoned age: their attempt ended long ago.
        public var staleAttemptKeys: [String] = []
        /// Jobs whose newest object is older than the orphan age (and, with `modifiedAfter`, newer than it):
        /// orphans unless the database knows them.
        public var quietJobs: [UUID] = []
        /// Direct uploads (`.direct-uploads/<owner>/<id>`) older than the upload age: their id can no longer make a job.
        public var staleUploadKeys: [String] = []

        public init(staleAttemptKeys: [String] = [], quietJobs: [UUID] = [], staleUploadKeys: [String] = []) {
            self.staleAttemptKeys = staleAttemptKeys
            self.quietJobs = quietJobs
            self.staleUploadKeys = staleUploadKeys
        }

        public var isEmpty: Bool { staleAttemptKeys.isEmpty && quietJobs.isEmpty && staleUploadKeys.isEmpty }
        var largest: Int { max(staleAttemptKeys.count, quietJobs.count, staleUploadKeys.count) }
    }

    /// Walks the listing of the whole prefix for `StorageSweeper`, one ListObjectsV2 page (`pageSize` keys) at a
    /// time, and hands `handle` what it found in batches: whenever one kind reaches `batchSize`, and at the end.
    /// Memory is one page and one batch, whatever the number of objects.
    ///
    /// A job's newest object decides whether it is quiet. Keys come in order (ListObjectsV2 lists in UTF-8 binary
    /// order), so a job's keys are contiguous: its newest object is known once the listing has passed its prefix,
    /// and only the job being walked is kept. A listing that goes backwards would break that, so it stops the
    /// pass (an error) rather than judge a job on part of its objects. `handle` may delete what it was given: the
    /// listing has passed those keys.
    public func scanForSweep(
        now: Date, abandonedAge: TimeInterval, orphanAge: TimeInterval, modifiedAfter: Date?, uploadAge: TimeInterval = .infinity,
        pageSize: Int = 1000, batchSize: Int = 1000, handle: (SweepScan) async throws -> Void
    ) async throws {
        var batch = SweepScan()
        var current: (id: UUID, newest: Date)?
        var previousKey: String?
        func finishJob() {
            guard let job = current else { return }
            current = nil
            if now.timeIntervalSince(job.newest) > orphanAge, modifiedAfter.map({ job.newest > $0 }) ?? true {
                batch.quietJobs.append(job.id)
            }
        }
        func flush(ifFull: Bool) async throws {
            guard !batch.isEmpty, !ifFull || batch.largest >= batchSize else { return }
            let full = batch
            batch = SweepScan()
            try await handle(full)
        }
        var token: String?
        repeat {
            let page = try await call("list the object store") {
                try await client.listObjectsPage(continuationToken: token, maxKeys: pageSize)
            }
            for object in page.objects {
                if let previousKey, object.key <= previousKey {
                    throw StorageError(description: "the object store's listing is not in key order; the sweep stopped")
                }
                previousKey = object.key
                // An object without a date counts as new: never removed on a guess.
                let modified = object.lastModified ?? now
                if object.key.hasPrefix(Self.uploadsFolder) {
                    if now.timeIntervalSince(modified) > uploadAge { batch.staleUploadKeys.append(object.key) }
                    try await flush(ifFull: true)
                    continue
                }
                let parts = object.key.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, let id = UUID(uuidString: String(parts[0])), parts[0] == id.uuidString.lowercased() else {
                    continue  // .signing-key, probes, anything not Lector's
                }
                if let job = current, job.id == id {
                    current = (id, max(job.newest, modified))
                } else {
                    finishJob()
                    current = (id, modified)
                }
                if parts[1].hasPrefix("attempts/"), now.timeIntervalSince(modified) > abandonedAge {
                    batch.staleAttemptKeys.append(object.key)
                }
                try await flush(ifFull: true)
            }
            if page.continuationToken != nil && page.continuationToken == token {
                throw StorageError(description: "the object store repeated a listing's continuation token; the sweep stopped")
            }
            token = page.continuationToken
        } while token != nil
        finishJob()
        try await flush(ifFull: false)
    }

    /// Deletes `keys` (relative to the prefix); returns how many the store removed.
    public func removeObjects(keys: [String]) async throws -> Int {
        guard !keys.isEmpty else { return 0 }
        let failed = try await call("remove objects") { try await client.deleteObjects(keys: keys) }
        return keys.count - failed.count
    }

    /// A presigned GET of a result file, valid for `expires`, answered with `contentType` and as `downloadName`.
    public func resultLink(id: UUID, fileName: String, contentType: String, downloadName: String, expires: Duration) throws -> String? {
        guard ResultFiles.isResultFile(fileName) else { return nil }
        let safeName = String(downloadName.unicodeScalars.filter { $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" && $0.value != 0x7F }.map(Character.init))
        do {
            return try client.presignedGET(
                key: Self.key(id, fileName), expires: expires, responseContentType: contentType,
                responseContentDisposition: "inline; filename=\"\(safeName)\""
            ).absoluteString
        } catch {
            throw StorageError(description: "could not sign a link to \(fileName): \(error)")
        }
    }

    /// The secret of result links shared by every process using this bucket: `<prefix>/.signing-key`, created
    /// once with 32 random bytes. The first writer wins: the object is written with `If-None-Match: *` (SeaweedFS
    /// and S3 answer 412 when it exists), and every process then reads back the one stored.
    public func sharedSigningKey() async throws -> [UInt8] {
        let client = self.client
        func stored() async throws -> [UInt8]? {
            do {
                return Array(try await client.getObjectData(key: Self.signingKeyObject, maxBytes: 4096))
            } catch let error as S3Error where Self.isMissing(error) {
                return nil
            }
        }
        return try await call("read the shared signing key") {
            if let key = try await stored(), key.count >= 32 { return key }
            var rng = SystemRandomNumberGenerator()
            let key = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
            do {
                try await client.putObject(key: Self.signingKeyObject, data: Data(key), onlyIfAbsent: true)
            } catch let error as S3Error where error.statusCode == 412 || error.statusCode == 409 {
                // Another process created it first: use theirs.
            }
            guard let winner = try await stored(), winner.count >= 32 else {
                throw StorageError(description: "the shared signing key in the object store is shorter than 32 bytes")
            }
            return winner
        }
    }
}

// MARK: direct uploads

/// Direct uploads (`POST /v1/uploads`): the client PUTs the document straight to the store with a presigned URL,
/// to `<prefix>/.direct-uploads/<owner id>/<upload id>` (beside the job prefixes, never under one: no job id starts
/// with a dot), and `POST /v1/jobs` with the upload id copies it to the job's prefix server-side.
extension ObjectStorage {
    /// The folder of direct uploads, relative to the prefix.
    public static let uploadsFolder = ".direct-uploads/"

    static func uploadKey(owner: Int64, upload: UUID) -> String {
        uploadsFolder + "\(owner)/" + upload.uuidString.lowercased()
    }

    /// A presigned PUT of the upload's object, valid for `expires`: `Content-Type` and `Content-Length` are
    /// signed, so the store refuses (403) a body of another length or type.
    public func uploadLink(owner: Int64, upload: UUID, contentType: String, size: Int64, expires: Duration, now: Date = Date()) throws -> String {
        do {
            return try client.presignedPUT(
                key: Self.uploadKey(owner: owner, upload: upload), expires: expires, contentType: contentType,
                contentLength: size, now: now
            ).absoluteString
        } catch {
            throw StorageError(description: "could not sign an upload link: \(error)")
        }
    }

    /// The uploaded object's size, or nil when nothing was uploaded (yet, or any more).
    public func uploadedSize(owner: Int64, upload: UUID) async throws -> Int64? {
        try await call("look for an upload") {
            try await client.headObject(key: Self.uploadKey(owner: owner, upload: upload))?.size
        }
    }

    /// The upload's first bytes (a ranged GET), for the document type's magic bytes.
    public func uploadHead(owner: Int64, upload: UUID) async throws -> [UInt8] {
        do {
            return try await client.getObjectPrefix(key: Self.uploadKey(owner: owner, upload: upload), count: DocumentSpoolWriter.headBytes)
        } catch let error as S3Error where Self.isMissing(error) {
            throw StorageError(description: "the upload is missing from storage", kind: .missing)
        } catch {
            throw Self.storageError(error, doing: "read an upload")
        }
    }

    /// What `copyUpload` stored as the job's document: measured on the job's own copy, not on the upload, which
    /// the client may still overwrite while its link is valid.
    public struct CopiedDocument: Sendable {
        public var size: Int64
        public var sha256: [UInt8]
        public var head: [UInt8]
    }

    /// Copies the upload to `<id>/<documentFileName>` (server-side CopyObject), then reads the copy once,
    /// streaming, for its SHA-256, size and first bytes (bounded memory whatever the size). The job's folder is
    /// not complete until `writeJobMetadata`; on any failure here the copy is removed (best effort) and the
    /// error thrown.
    public func copyUpload(owner: Int64, upload: UUID, toJob id: UUID, documentFileName: String) async throws -> CopiedDocument {
        try Self.checkName(documentFileName)
        let client = self.client
        let documentKey = Self.key(id, documentFileName)
        do {
            try await client.copyObject(from: Self.uploadKey(owner: owner, upload: upload), to: documentKey)
            let headBytes = DocumentSpoolWriter.headBytes
            let (info, state) = try await client.getObject(
                key: documentKey, initial: { (SHA256(), [UInt8]()) },
                consume: { state, chunk in
                    chunk.withUnsafeReadableBytes { state.0.update(bufferPointer: $0) }
                    if state.1.count < headBytes { state.1 += chunk.readableBytesView.prefix(headBytes - state.1.count) }
                })
            return CopiedDocument(size: info.size, sha256: Array(state.0.finalize()), head: state.1)
        } catch {
            _ = try? await client.deleteObject(key: documentKey)
            if let error = error as? S3Error, Self.isMissing(error) {
                throw StorageError(description: "the upload is missing from storage", kind: .missing)
            }
            throw Self.storageError(error, doing: "copy an upload to its job")
        }
    }

    /// Writes the job's `metadata.json` after `copyUpload`: the folder is complete once it exists. On failure the
    /// job's objects are removed (best effort) and the error thrown, as `createJobFolder` does.
    public func writeJobMetadata(id: UUID, documentFileName: String, metadataJSON: Data) async throws {
        try Self.checkName(documentFileName)
        do {
            try await client.putObject(key: Self.key(id, "metadata.json"), data: metadataJSON, contentType: "application/json")
        } catch {
            _ = try? await client.deleteObjects(keys: [Self.key(id, documentFileName), Self.key(id, "metadata.json")])
            throw Self.storageError(error, doing: "store a job's metadata")
        }
    }

    /// Deletes the upload's object (after its job was created).
    public func removeUpload(owner: Int64, upload: UUID) async throws {
        try await call("remove an upload") { try await client.deleteObject(key: Self.uploadKey(owner: owner, upload: upload)) }
    }
}
