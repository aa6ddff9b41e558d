import AsyncHTTPClient
import Crypto
import Foundation
import LectorCore
import LectorModel
import LectorOCR
import NIOCore
import S3Kit
import Testing

/// The contract of `JobStorage`, run against every backend: `FileStorage` always, and `ObjectStorage` on a real
/// S3-compatible store when `LECTOR_TEST_S3_ENDPOINT` is set (`eval "$(deploy/scripts/weed.sh env)"` after
/// `deploy/scripts/weed.sh start`; the suite is reported as skipped otherwise). Nothing is mocked.
enum StorageContract {
    static let document = Data("%PDF-1.4 not really a pdf, but bytes to keep\n".utf8) + Data((0..<4096).map { UInt8($0 % 251) })

    /// Create, read back (bytes, spool copy), remove; removing again is no error; a removed document is missing.
    static func createReadRemove(_ storage: any JobStorage) async throws {
        let id = UUID()
        try await storage.createJobFolder(id: id, documentFileName: "document.pdf", document: document, metadataJSON: Data("{\"job\":1}\n".utf8))
        #expect(try await storage.readDocument(id: id, fileName: "document.pdf") == document)
        // The spool was handed over: nothing of the upload is left in the spool folder.
        #expect(spooled(storage).isEmpty)

        let copy = try await storage.spoolDocument(of: id, fileName: "document.pdf", sha256: [1, 2, 3])
        #expect(copy.size == Int64(document.count))
        #expect(copy.head == Array(document.prefix(copy.head.count)) && !copy.head.isEmpty)
        #expect(try Data(contentsOf: URL(fileURLWithPath: copy.path)) == document)
        copy.discard()
        #expect(spooled(storage).isEmpty)

        try await storage.removeJobFolder(id: id)
        try await storage.removeJobFolder(id: id)
        await expectKind(.missing) { _ = try await storage.readDocument(id: id, fileName: "document.pdf") }
        await expectKind(.missing) { _ = try await storage.spoolDocument(of: id, fileName: "document.pdf", sha256: []) }
        #expect(spooled(storage).isEmpty)
    }

    /// Staged results are invisible until committed; a commit is idempotent; discarding after the commit keeps
    /// the live results.
    static func stagedInvisibleUntilCommit(_ storage: any JobStorage) async throws {
        let id = UUID()
        try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1, 2]), metadataJSON: Data("{}".utf8))
        let files: [(name: String, contents: Data)] = [
            ("result.txt", Data("hello".utf8)), ("result.json", Data("{}".utf8)),
            ("page-1.jpg", Data([0xFF, 0xD8, 1])), ("thumb-1.jpg", Data([0xFF, 0xD8, 2])),
        ]
        try await storage.stageResults(id: id, stage: 1, files: files)
        for file in files {
            #expect(try await storage.readResult(id: id, fileName: file.name) == nil)
            #expect(try await !storage.hasResult(id: id, fileName: file.name))
        }
        try await storage.commitResults(id: id, fileNames: files.map(\.name), stage: 1)
        try await storage.commitResults(id: id, fileNames: files.map(\.name), stage: 1)
        for file in files {
            #expect(try await storage.readResult(id: id, fileName: file.name) == file.contents)
            #expect(try await storage.hasResult(id: id, fileName: file.name))
        }
        // A job that did not list hOCR or the PDF in `formats` committed none: the result route's 404 rests on this.
        for name in ["result.hocr", "result.pdf"] {
            #expect(try await !storage.hasResult(id: id, fileName: name))
            #expect(try await storage.readResult(id: id, fileName: name) == nil)
        }
        await storage.discardResults(id: id, fileNames: files.map(\.name), stage: 1)
        for file in files {
            #expect(try await storage.readResult(id: id, fileName: file.name) == file.contents)
        }
        try await storage.removeJobFolder(id: id)
        #expect(try await storage.readResult(id: id, fileName: "result.txt") == nil)
    }

    /// A stale attempt's files never become live, and discarding them never touches the committed results.
    static func staleAttemptNeverTouchesCommitted(_ storage: any JobStorage) async throws {
        let id = UUID()
        try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
        try await storage.stageResults(id: id, stage: 1, files: [("result.txt", Data("stale".utf8)), ("page-1.jpg", Data([1]))])
        try await storage.stageResults(id: id, stage: 2, files: [("result.txt", Data("current".utf8))])
        try await storage.commitResults(id: id, fileNames: ["result.txt"], stage: 2)
        await storage.discardResults(id: id, fileNames: ["result.txt", "page-1.jpg"], stage: 1)
        #expect(try await storage.readResult(id: id, fileName: "result.txt") == Data("current".utf8))
        #expect(try await !storage.hasResult(id: id, fileName: "page-1.jpg"))
        // The discarded attempt cannot be committed any more (its staged files are gone).
        await expectStorageError { try await storage.commitResults(id: id, fileNames: ["result.txt"], stage: 1) }
        #expect(try await storage.readResult(id: id, fileName: "result.txt") == Data("current".utf8))
        await storage.discardResults(id: id, fileNames: ["result.txt"], stage: 2)
        #expect(try await storage.readResult(id: id, fileName: "result.txt") == Data("current".utf8))
        // A later attempt replaces the results whole.
        try await storage.stageResults(id: id, stage: 3, files: [("result.txt", Data("third".utf8))])
        try await storage.commitResults(id: id, fileNames: ["result.txt"], stage: 3)
        #expect(try await storage.readResult(id: id, fileName: "result.txt") == Data("third".utf8))
        try await storage.removeJobFolder(id: id)
    }

    /// Two claims of one attempt number (a hand-back returns the number) stage apart: the discard of the first
    /// never touches the second's staged files, which still commit; a claim token that cannot name a staging area
    /// is refused.
    static func claimsOfOneAttemptStageApart(_ storage: any JobStorage) async throws {
        let id = UUID()
        try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
        let first = StagingID(attempt: 2, claim: StagingID.newClaim()), second = StagingID(attempt: 2, claim: StagingID.newClaim())
        #expect(first != second)
        try await storage.stageResults(id: id, stage: first, files: [("result.txt", Data("handed back".utf8)), ("page-1.jpg", Data([1]))])
        try await storage.stageResults(id: id, stage: second, files: [("result.txt", Data("second".utf8)), ("page-1.jpg", Data([2]))])
        await storage.discardResults(id: id, fileNames: ["result.txt", "page-1.jpg"], stage: first)
        try await storage.commitResults(id: id, fileNames: ["result.txt", "page-1.jpg"], stage: second)
        #expect(try await storage.readResult(id: id, fileName: "result.txt") == Data("second".utf8))
        #expect(try await storage.readResult(id: id, fileName: "page-1.jpg") == Data([2]))
        await expectStorageError { try await storage.commitResults(id: id, fileNames: ["result.txt"], stage: first) }
        await storage.discardResults(id: id, fileNames: ["result.txt", "page-1.jpg"], stage: second)
        for bad in [StagingID(attempt: 1, claim: "../x"), StagingID(attempt: 1, claim: "ABC"), StagingID(attempt: -1, claim: "")] {
            await expectStorageError { try await storage.stageResults(id: id, stage: bad, files: [("result.txt", Data([1]))]) }
        }
        try await storage.removeJobFolder(id: id)
    }

    /// `readResult`/`hasResult` answer only for result file names; anything else is nil/false, never a read.
    static func readResultOnlyResultNames(_ storage: any JobStorage) async throws {
        let id = UUID()
        try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([7]), metadataJSON: Data("{}".utf8))
        for name in ["document.png", "metadata.json", "../document.png", "page-01.jpg", "page-0.jpg", ".signing-key", ""] {
            #expect(try await storage.readResult(id: id, fileName: name) == nil)
            #expect(try await !storage.hasResult(id: id, fileName: name))
        }
        #expect(try await storage.readResult(id: id, fileName: "result.pdf") == nil)
        #expect(try await storage.readResult(id: UUID(), fileName: "result.txt") == nil)
        #expect(try await !storage.hasResult(id: UUID(), fileName: "result.txt"))
        try await storage.removeJobFolder(id: id)
    }

    /// A page task's parts (`PagePart`) are written, read back and removed; they are never result files, and no
    /// other name is read through them.
    static func pageParts(_ storage: any JobStorage) async throws {
        let id = UUID()
        try await storage.createJobFolder(id: id, documentFileName: "document.tiff", document: Data([7]), metadataJSON: Data("{}".utf8))
        let json = PagePart.jsonName(page: 7), pdf = PagePart.pdfName(page: 7)
        #expect(json == "part-00007.json" && pdf == "part-00007.pdf")
        try await storage.writeResult(id: id, fileName: json, contents: Data("{}".utf8))
        try await storage.writeResult(id: id, fileName: pdf, contents: Data("%PDF-".utf8))
        #expect(try await storage.readResult(id: id, fileName: json) == Data("{}".utf8))
        #expect(try await storage.readResult(id: id, fileName: pdf) == Data("%PDF-".utf8))
        #expect(!ResultFiles.isResultFile(json) && ResultFiles.isPagePart(json) && ResultFiles.isPagePart(pdf))
        for name in ["part-7.json", "part-000007.json", "part-00007.txt", "part-00007.json.tmp", "part-0000a.pdf", "part-00007"] {
            #expect(!ResultFiles.isPagePart(name), "\(name)")
        }
        await storage.removeResults(id: id, fileNames: [json, pdf, PagePart.jsonName(page: 8)])
        #expect(try await storage.readResult(id: id, fileName: json) == nil)
        #expect(try await storage.readResult(id: id, fileName: pdf) == nil)
        try await storage.removeJobFolder(id: id)
    }

    /// Names that could leave the job's folder are refused with a `StorageError` before anything is written.
    static func hostileNamesRefused(_ storage: any JobStorage) async throws {
        let id = UUID()
        for name in ["../escape.png", "a/b.png", ".hidden", "", "..", "x\0y", "/etc/passwd"] {
            await expectStorageError {
                try await storage.createJobFolder(id: id, documentFileName: name, document: Data([1]), metadataJSON: Data("{}".utf8))
            }
            await expectStorageError { _ = try await storage.readDocument(id: id, fileName: name) }
            await expectStorageError { try await storage.stageResults(id: id, stage: 1, files: [(name, Data([1]))]) }
            await expectStorageError { try await storage.commitResults(id: id, fileNames: [name], stage: 1) }
            await expectStorageError { _ = try await storage.spoolDocument(of: id, fileName: name, sha256: []) }
        }
        #expect(spooled(storage).isEmpty)
        await expectKind(.missing) { _ = try await storage.readDocument(id: id, fileName: "document.png") }
    }

    /// A store that cannot be reached: every call is a `StorageError` of kind `.unavailable` (transient).
    static func storeDown(_ storage: any JobStorage) async throws {
        let id = UUID()
        await expectKind(.unavailable) { try await storage.checkWritable() }
        await expectKind(.unavailable) { _ = try await storage.readDocument(id: id, fileName: "document.png") }
        await expectKind(.unavailable) {
            try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
        }
        await expectKind(.unavailable) { try await storage.stageResults(id: id, stage: 1, files: [("result.txt", Data([1]))]) }
        await expectKind(.unavailable) { _ = try await storage.readResult(id: id, fileName: "result.txt") }
        await storage.discardResults(id: id, fileNames: ["result.txt"], stage: 1)  // never throws
    }

    static func spooled(_ storage: any JobStorage) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: storage.spoolDirectory)) ?? []).filter { $0.hasSuffix(".upload") }
    }

    static func expectStorageError(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async {
        do {
            try await body()
            Issue.record("expected a StorageError", sourceLocation: sourceLocation)
        } catch {
            #expect(error is StorageError, "\(error)", sourceLocation: sourceLocation)
        }
    }

    static func expectKind(_ kind: StorageError.Kind, _ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async {
        do {
            try await body()
            Issue.record("expected a StorageError of kind \(kind)", sourceLocation: sourceLocation)
        } catch let error as StorageError {
            #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected a StorageError of kind \(kind), got \(String(reflecting: error))", sourceLocation: sourceLocation)
        }
    }
}

// MARK: - FileStorage

@Suite struct FileStorageConformance {
    /// A FileStorage in a fresh temporary folder, removed afterwards.
    static func with(_ body: (FileStorage) async throws -> Void) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("lector-conformance-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try await body(try FileStorage(root: root.path))
    }

    @Test func createReadRemove() async throws { try await Self.with { try await StorageContract.createReadRemove($0) } }
    @Test func claimsOfOneAttemptStageApart() async throws {
        try await Self.with { try await StorageContract.claimsOfOneAttemptStageApart($0) }
    }
    /// Documents are local files already: the worker reads them in place, no download.
    @Test func noDownload() async throws {
        try await Self.with { storage in
            let path = storage.root.appendingPathComponent("not-written").path
            let downloaded = try await storage.downloadDocument(id: UUID(), fileName: "document.png", toFile: path)
            #expect(!downloaded)
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }
    @Test func stagedInvisibleUntilCommit() async throws { try await Self.with { try await StorageContract.stagedInvisibleUntilCommit($0) } }
    @Test func staleAttemptNeverTouchesCommitted() async throws {
        try await Self.with { try await StorageContract.staleAttemptNeverTouchesCommitted($0) }
    }
    @Test func readResultOnlyResultNames() async throws { try await Self.with { try await StorageContract.readResultOnlyResultNames($0) } }
    @Test func pageParts() async throws { try await Self.with { try await StorageContract.pageParts($0) } }
    @Test func hostileNamesRefused() async throws { try await Self.with { try await StorageContract.hostileNamesRefused($0) } }

    /// "Down" for a filesystem: the root is no longer a folder (a regular file took its place).
    @Test func storeDown() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("lector-conformance-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let storage = try FileStorage(root: root.path)
        try FileManager.default.removeItem(at: root)
        try Data("not a folder".utf8).write(to: root)
        try await StorageContract.storeDown(storage)
    }
}

// MARK: - ObjectStorage on a real store

/// The store of the S3 tests, from `deploy/scripts/weed.sh env`.
enum S3TestStore {
    static let environment = ProcessInfo.processInfo.environment
    static var isConfigured: Bool { !(environment["LECTOR_TEST_S3_ENDPOINT"] ?? "").isEmpty }

    /// Settings for an `ObjectStorage` under a fresh prefix of the test bucket, spooling into `spool`.
    static func settings(prefix: String, spool: String, endpoint: String? = nil, extra: [String: String] = [:]) -> Settings {
        var env: [String: String] = [
            "LECTOR_STORAGE": "s3://\(environment["LECTOR_TEST_S3_BUCKET"] ?? "lector-test")/\(prefix)",
            "LECTOR_S3_ENDPOINT": endpoint ?? environment["LECTOR_TEST_S3_ENDPOINT"] ?? "",
            "LECTOR_S3_REGION": environment["LECTOR_TEST_S3_REGION"] ?? "us-east-1",
            "LECTOR_S3_ACCESS_KEY_ID": environment["LECTOR_TEST_S3_ACCESS_KEY"] ?? "",
            "LECTOR_S3_SECRET_ACCESS_KEY": environment["LECTOR_TEST_S3_SECRET_KEY"] ?? "",
            "LECTOR_SPOOL_DIR": spool,
            "LECTOR_S3_TIMEOUT": "10",
        ]
        env.merge(extra) { $1 }
        return Settings(environment: env)
    }

    /// An ObjectStorage under a fresh prefix; afterwards every object under it is removed (and checked gone).
    static func with(_ body: (ObjectStorage) async throws -> Void) async throws {
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent("lector-spool-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: spool) }
        let storage = try ObjectStorage(settings: settings(prefix: "conformance/\(UUID().uuidString.lowercased())", spool: spool.path))
        do {
            try await body(storage)
        } catch {
            _ = try? await storage.client.deleteObjects(keys: (try? await storage.client.listObjects().map(\.key)) ?? [])
            throw error
        }
        // Every test removes its jobs: nothing may be left under the prefix but the probe-free bucket.
        let left = try await storage.client.listObjects().map(\.key)
        #expect(left.isEmpty, "objects left: \(left)")
        try await storage.client.deleteObjects(keys: left)
    }
}

@Suite(.enabled(if: S3TestStore.isConfigured, "LECTOR_TEST_S3_ENDPOINT is not set (deploy/scripts/weed.sh start; eval \"$(deploy/scripts/weed.sh env)\")"))
struct ObjectStorageConformance {
    @Test func createReadRemove() async throws { try await S3TestStore.with { try await StorageContract.createReadRemove($0) } }
    @Test func claimsOfOneAttemptStageApart() async throws {
        try await S3TestStore.with { try await StorageContract.claimsOfOneAttemptStageApart($0) }
    }
    @Test func stagedInvisibleUntilCommit() async throws {
        try await S3TestStore.with { try await StorageContract.stagedInvisibleUntilCommit($0) }
    }
    @Test func staleAttemptNeverTouchesCommitted() async throws {
        try await S3TestStore.with { try await StorageContract.staleAttemptNeverTouchesCommitted($0) }
    }
    @Test func readResultOnlyResultNames() async throws { try await S3TestStore.with { try await StorageContract.readResultOnlyResultNames($0) } }
    @Test func pageParts() async throws { try await S3TestStore.with { try await StorageContract.pageParts($0) } }
    @Test func hostileNamesRefused() async throws { try await S3TestStore.with { try await StorageContract.hostileNamesRefused($0) } }

    /// Nothing listens on the endpoint: one 1 s attempt per call.
    @Test func storeDown() async throws {
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent("lector-spool-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: spool) }
        let storage = try ObjectStorage(settings: S3TestStore.settings(
            prefix: "down", spool: spool.path, endpoint: "http://127.0.0.1:1",
            extra: ["LECTOR_S3_TIMEOUT": "1", "LECTOR_S3_MAX_ATTEMPTS": "1"]))
        try await StorageContract.storeDown(storage)
        #expect(StorageContract.spooled(storage).isEmpty)
    }

    /// The layout on the store: one prefix per job; staged results under attempts/<n>/ until discarded.
    @Test func keyLayout() async throws {
        try await S3TestStore.with { storage in
            let id = UUID()
            let folder = id.uuidString.lowercased()
            try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1, 2, 3]), metadataJSON: Data("{\"a\":1}".utf8))
            #expect(try await storage.client.listObjects().map(\.key).sorted() == ["\(folder)/document.png", "\(folder)/metadata.json"])
            #expect(try await storage.client.getObjectData(key: "\(folder)/metadata.json", maxBytes: 100) == Data("{\"a\":1}".utf8))
            try await storage.stageResults(id: id, stage: 4, files: [("result.txt", Data("x".utf8))])
            #expect(try await storage.client.headObject(key: "\(folder)/attempts/4/result.txt") != nil)
            try await storage.commitResults(id: id, fileNames: ["result.txt"], stage: 4)
            await storage.discardResults(id: id, fileNames: ["result.txt"], stage: 4)
            #expect(try await storage.client.listObjects().map(\.key).sorted() == [
                "\(folder)/document.png", "\(folder)/metadata.json", "\(folder)/result.txt",
            ])
            try await storage.checkWritable()
            try await storage.removeJobFolder(id: id)
            #expect(try await storage.client.listObjects(prefix: folder + "/").isEmpty)
        }
    }

    /// The shared signing key: created once (If-None-Match: * is honoured), the same for every process.
    @Test func sharedSigningKey() async throws {
        try await S3TestStore.with { storage in
            let keys = try await withThrowingTaskGroup(of: [UInt8].self) { group in
                for _ in 0..<4 { group.addTask { try await storage.sharedSigningKey() } }
                return try await group.reduce(into: [[UInt8]]()) { $0.append($1) }
            }
            #expect(keys.count == 4 && Set(keys).count == 1 && keys[0].count == 32)
            // A second write with If-None-Match: * is refused by the store.
            await #expect(throws: S3Error.self) {
                try await storage.client.putObject(key: ".signing-key", data: Data(repeating: 0, count: 32), onlyIfAbsent: true)
            }
            #expect(try await storage.sharedSigningKey() == keys[0])
            try await storage.client.deleteObject(key: ".signing-key")
        }
    }

    /// A direct upload: the presigned PUT takes exactly the signed length and type (the store refuses others),
    /// the object is under .direct-uploads/<owner>/, its first bytes are read with a ranged GET, and the job's copy is
    /// measured (size, SHA-256, head) in one streaming read; a missing upload copies nothing.
    @Test func directUpload() async throws {
        try await S3TestStore.with { storage in
            let document = Data([0x89, 0x50, 0x4E, 0x47]) + Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let upload = UUID(), job = UUID()
            let link = try storage.uploadLink(owner: 7, upload: upload, contentType: "image/png", size: Int64(document.count), expires: .seconds(60))
            func put(_ body: Data, type: String) async throws -> Int {
                var request = HTTPClientRequest(url: link)
                request.method = .PUT
                request.headers.add(name: "content-type", value: type)
                request.body = .bytes(ByteBuffer(data: body))
                return Int(try await HTTPClient.shared.execute(request, timeout: .seconds(30)).status.code)
            }
            #expect(try await storage.uploadedSize(owner: 7, upload: upload) == nil)
            #expect(try await put(document.prefix(100), type: "image/png") == 403)
            #expect(try await put(document, type: "image/jpeg") == 403)
            #expect(try await put(document, type: "image/png") == 200)
            #expect(try await storage.client.listObjects().map(\.key) == [".direct-uploads/7/\(upload.uuidString.lowercased())"])
            #expect(try await storage.uploadedSize(owner: 7, upload: upload) == Int64(document.count))
            #expect(try await storage.uploadedSize(owner: 8, upload: upload) == nil)
            #expect(try await storage.uploadHead(owner: 7, upload: upload) == Array(document.prefix(64)))

            let copied = try await storage.copyUpload(owner: 7, upload: upload, toJob: job, documentFileName: "document.png")
            #expect(copied.size == Int64(document.count))
            #expect(copied.sha256 == Array(SHA256.hash(data: document)))
            #expect(copied.head == Array(document.prefix(64)))
            try await storage.writeJobMetadata(id: job, documentFileName: "document.png", metadataJSON: Data("{}".utf8))
            #expect(try await storage.readDocument(id: job, fileName: "document.png") == document)
            try await storage.removeUpload(owner: 7, upload: upload)
            let folder = job.uuidString.lowercased()
            #expect(try await storage.client.listObjects().map(\.key).sorted() == ["\(folder)/document.png", "\(folder)/metadata.json"])

            // Gone (used, or swept): nothing is copied, and the error says missing.
            let other = UUID()
            await StorageContract.expectKind(.missing) {
                _ = try await storage.copyUpload(owner: 7, upload: upload, toJob: other, documentFileName: "document.png")
            }
            await StorageContract.expectKind(.missing) { _ = try await storage.uploadHead(owner: 7, upload: upload) }
            #expect(try await storage.client.listObjects(prefix: other.uuidString.lowercased() + "/").isEmpty)
            try await storage.removeJobFolder(id: job)
        }
    }

    /// A worker's download: the document streamed into a local file, byte for byte; a missing one is `.missing`
    /// and leaves no file.
    @Test func downloadDocument() async throws {
        try await S3TestStore.with { storage in
            let id = UUID()
            try await storage.createJobFolder(id: id, documentFileName: "document.pdf", document: StorageContract.document, metadataJSON: Data("{}".utf8))
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lector-download-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false)
            defer { try? FileManager.default.removeItem(at: folder) }
            let path = folder.appendingPathComponent("document.pdf").path
            // Workers make scratch files only for a storage that says it downloads (the file storage does not).
            #expect(storage.downloadsDocuments)
            #expect(!(try FileStorage(root: folder.path)).downloadsDocuments)
            #expect(try await storage.downloadDocument(id: id, fileName: "document.pdf", toFile: path))
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == StorageContract.document)
            try await storage.removeJobFolder(id: id)
            try FileManager.default.removeItem(atPath: path)
            await StorageContract.expectKind(.missing) { _ = try await storage.downloadDocument(id: id, fileName: "document.pdf", toFile: path) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
        }
    }

    /// A presigned result link serves the bytes with the given type and name; a tampered one is refused.
    @Test func resultLink() async throws {
        try await S3TestStore.with { storage in
            let id = UUID()
            try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
            try await storage.stageResults(id: id, stage: 1, files: [("result.txt", Data("héllo".utf8))])
            try await storage.commitResults(id: id, fileNames: ["result.txt"], stage: 1)
            #expect(try storage.resultLink(id: id, fileName: "document.png", contentType: "x/y", downloadName: "d", expires: .seconds(60)) == nil)
            let link = try #require(try storage.resultLink(
                id: id, fileName: "result.txt", contentType: "text/plain; charset=utf-8", downloadName: "job-result.txt",
                expires: .seconds(60)))
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: link), timeout: .seconds(10))
            #expect(response.status == .ok)
            #expect(response.headers.first(name: "content-type") == "text/plain; charset=utf-8")
            #expect(response.headers.first(name: "content-disposition") == "inline; filename=\"job-result.txt\"")
            let body = try await response.body.collect(upTo: 1 << 20)
            #expect(String(buffer: body) == "héllo")
            let tampered = link.replacingOccurrences(of: "result.txt", with: "result.json")
            let refused = try await HTTPClient.shared.execute(HTTPClientRequest(url: tampered), timeout: .seconds(10))
            #expect(refused.status == .forbidden)
            await storage.discardResults(id: id, fileNames: ["result.txt"], stage: 1)
            try await storage.removeJobFolder(id: id)
        }
    }
}

/// `LECTOR_STORAGE=s3://…` parsing and settings (no store needed).
@Suite struct ObjectStorageSettingsTests {
    @Test func locationParsing() {
        #expect(ObjectStorage.parse(location: "s3://my-bucket/a/b/")! == ("my-bucket", "a/b"))
        for bad in ["s3://my-bucket", "s3://my-bucket/", "s3://", "s3://UPPER/x", "s3://ab/x", "s3://b..b/../x", "s3://bucket/a/../b", "s3://bucket//x", "file:///x", "s3://-bucket/x"] {
            #expect(ObjectStorage.parse(location: bad) == nil, "\(bad)")
        }
    }
}

extension ObjectStorageSettingsTests {
    @Test func settingsAreChecked() {
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent("lector-spool-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: spool) }
        let good: [String: String] = [
            "LECTOR_STORAGE": "s3://bucket/p", "LECTOR_S3_ENDPOINT": "http://127.0.0.1:1", "LECTOR_S3_ACCESS_KEY_ID": "a",
            "LECTOR_S3_SECRET_ACCESS_KEY": "b", "LECTOR_SPOOL_DIR": spool,
        ]
        #expect(Settings(environment: good).usesObjectStorage)
        #expect(!Settings(environment: [:]).usesObjectStorage)
        #expect(throws: Never.self) { _ = try ObjectStorage(settings: Settings(environment: good)) }
        for (name, value) in [
            ("LECTOR_STORAGE", "s3://Bad_Bucket/p"), ("LECTOR_S3_ENDPOINT", "ftp://x"), ("LECTOR_S3_ENDPOINT", "not a url"),
            ("LECTOR_S3_ACCESS_KEY_ID", ""), ("LECTOR_S3_SECRET_ACCESS_KEY", ""),
        ] {
            var env = good
            env[name] = value
            if value.isEmpty { env[name] = nil }
            #expect(throws: StorageError.self, "\(name)=\(value)") { _ = try ObjectStorage(settings: Settings(environment: env)) }
        }
    }

    /// A service holding the storage is named by its description, which swift-service-lifecycle logs.
    @Test func credentialsNeverDescribed() throws {
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent("lector-spool-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: spool) }
        let secret = "s3cr3t-VALUE-\(UUID().uuidString)"
        let storage = try ObjectStorage(settings: Settings(environment: [
            "LECTOR_STORAGE": "s3://bucket/p", "LECTOR_S3_ENDPOINT": "http://127.0.0.1:1", "LECTOR_S3_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "LECTOR_S3_SECRET_ACCESS_KEY": secret, "LECTOR_SPOOL_DIR": spool,
        ]))
        struct Service { let storage: any JobStorage }
        var dumped = ""
        dump(Service(storage: storage), to: &dumped)
        for text in ["\(Service(storage: storage))", String(reflecting: Service(storage: storage)), "\(storage)", dumped] {
            #expect(!text.contains(secret))
            #expect(!text.contains("s3cr3t"))
        }
        #expect("\(storage)".contains("AKIDEXAMPLE"))
    }
}

/// `StorageSweeper` on object storage (a real store and the real database): orphans (no row, or a deleted row)
/// and stale attempts go, everything of a known job and anything young stays. Time is moved by `sweep(now:)`, not waited for.
@Suite(.enabled(if: S3TestStore.isConfigured, "LECTOR_TEST_S3_ENDPOINT is not set (deploy/scripts/weed.sh start; eval \"$(deploy/scripts/weed.sh env)\")"))
struct ObjectStorageSweeperTests {
    @Test func sweepsOrphansAndStaleAttempts() async throws {
        try await TestHarness.run { harness in
            try await S3TestStore.with { storage in
                // orphan: objects, no row; gone: a job deleted while the store could not remove its objects.
                let orphan = UUID(), real = UUID(), gone = UUID()
                for id in [orphan, real, gone] {
                    try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
                }
                let user = try await harness.newUser()
                let owner = try await harness.ownerID(ofUserWithKey: user.keyID)
                for id in [real, gone] {
                    _ = try await harness.jobs.create(NewJob(
                        id: id, ownerID: owner, documentName: "a", contentType: "image/png", sizeBytes: 1,
                        sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}"))
                }
                #expect(try await harness.jobs.delete(gone, ownerID: owner) == .deleted)
                // The real job: attempt 1 left staged objects behind (its worker died); attempt 2 is committed.
                try await storage.stageResults(id: real, stage: 1, files: [("result.txt", Data("lost".utf8)), ("page-1.jpg", Data([1]))])
                try await storage.stageResults(id: real, stage: 2, files: [("result.txt", Data("live".utf8))])
                try await storage.commitResults(id: real, fileNames: ["result.txt"], stage: 2)
                await storage.discardResults(id: real, fileNames: ["result.txt"], stage: 2)
                #expect(try await storage.sharedSigningKey().count == 32)

                let sweeper = StorageSweeper(
                    storage: storage, jobs: harness.jobs, abandonedAge: 3600, orphanAge: 3600, logger: TestDatabase.logger)
                // Now: everything is young, nothing goes.
                #expect(try await sweeper.sweep() == StorageSweeper.Removed())
                // Two hours later: the orphan's objects and the dead attempt's go, the deleted job's by its removal
                // mark (db/012); the real job and the key stay.
                let later = Date(timeIntervalSinceNow: 7200)
                #expect(try await sweeper.sweep(now: later) == StorageSweeper.Removed(uploads: 0, staging: 2, orphans: 1, removals: 1))
                let folder = real.uuidString.lowercased()
                #expect(try await storage.client.listObjects().map(\.key).sorted() == [
                    ".signing-key", "\(folder)/document.png", "\(folder)/metadata.json", "\(folder)/result.txt",
                ])
                #expect(try await storage.readResult(id: real, fileName: "result.txt") == Data("live".utf8))
                #expect(try await sweeper.sweep(now: later).total == 0)
                try await storage.removeJobFolder(id: real)
                try await storage.client.deleteObject(key: ".signing-key")
            }
        }
    }

    /// Direct uploads are removed past the upload age, and only then; nothing else is touched by it.
    @Test func sweepsExpiredUploads() async throws {
        try await TestHarness.run { harness in
            try await S3TestStore.with { storage in
                let key = ".direct-uploads/3/\(UUID().uuidString.lowercased())"
                try await storage.client.putObject(key: key, data: Data([1, 2, 3]))
                let sweeper = StorageSweeper(
                    storage: storage, jobs: harness.jobs, abandonedAge: 3600, orphanAge: 3600, uploadAge: 2400, logger: TestDatabase.logger)
                #expect(try await sweeper.sweep() == StorageSweeper.Removed())
                #expect(try await sweeper.sweep(now: Date(timeIntervalSinceNow: 2000)) == StorageSweeper.Removed())
                #expect(try await sweeper.sweep(now: Date(timeIntervalSinceNow: 2500)) == StorageSweeper.Removed(uploads: 1))
                #expect(try await storage.client.listObjects().isEmpty)
            }
        }
    }
}
