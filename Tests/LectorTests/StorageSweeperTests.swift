import AsyncHTTPClient
import Foundation
import PostgresNIO
import S3Kit
import ServiceLifecycleTestKit
import Testing

@testable import LectorCore

/// `StorageSweeper`'s shared pass on object storage, against a real store and the real database: the listing is
/// walked page by page (a page size of 2 here, so every job's objects straddle pages), it runs in one process at
/// a time (PostgreSQL's advisory lock), and deleted jobs' folders are removed by their durable marks (db/012)
/// once the store answers.
@Suite(.enabled(if: S3TestStore.isConfigured, "LECTOR_TEST_S3_ENDPOINT is not set (deploy/scripts/weed.sh start; eval \"$(deploy/scripts/weed.sh env)\")"))
struct SweeperPagingTests {
    static func makeRow(_ harness: TestHarness, id: UUID, owner: Int64) async throws {
        _ = try await harness.jobs.create(NewJob(
            id: id, ownerID: owner, documentName: "a", contentType: "image/png", sizeBytes: 1,
            sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}"))
    }

    /// Five orphans and three live jobs (each with a dead attempt's staged objects and committed results), listed
    /// two keys a page: every orphan and every stale staged object goes, every live job's objects and the signing
    /// key stay.
    @Test func sweepsAcrossPages() async throws {
        try await TestHarness.run { harness in
            try await S3TestStore.with { storage in
                let owner = try await harness.ownerID(ofUserWithKey: try await harness.newUser().keyID)
                let orphans = (0..<5).map { _ in UUID() }
                let live = (0..<3).map { _ in UUID() }
                for id in orphans + live {
                    try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
                }
                for id in live {
                    try await Self.makeRow(harness, id: id, owner: owner)
                    try await storage.stageResults(id: id, stage: 1, files: [("result.txt", Data("lost".utf8)), ("page-1.jpg", Data([1]))])
                    try await storage.stageResults(id: id, stage: 2, files: [("result.txt", Data("live".utf8))])
                    try await storage.commitResults(id: id, fileNames: ["result.txt"], stage: 2)
                    await storage.discardResults(id: id, fileNames: ["result.txt"], stage: 2)
                }
                _ = try await storage.sharedSigningKey()
                #expect(try await storage.client.listObjects().count == 5 * 2 + 3 * 5 + 1)

                var sweeper = StorageSweeper(storage: storage, jobs: harness.jobs, logger: TestDatabase.logger)
                sweeper.listPageSize = 2
                #expect(try await sweeper.sweep() == StorageSweeper.Removed())
                let later = Date(timeIntervalSinceNow: 7200)
                #expect(try await sweeper.sweep(now: later) == StorageSweeper.Removed(staging: 6, orphans: 5))
                let expected = live.flatMap { id in
                    ["document.png", "metadata.json", "result.txt"].map { "\(id.uuidString.lowercased())/\($0)" }
                } + [".signing-key"]
                #expect(try await storage.client.listObjects().map(\.key).sorted() == expected.sorted())
                #expect(try await sweeper.sweep(now: later).total == 0)
                for id in live { try await storage.removeJobFolder(id: id) }
                try await storage.client.deleteObject(key: ".signing-key")
            }
        }
    }

    /// The scan itself, one key a page and batches of two: each quiet job is reported once (its keys span several
    /// pages), no batch holds more than two of a kind, and together they hold everything.
    @Test func scanBatchesAcrossPages() async throws {
        try await S3TestStore.with { storage in
            let jobs = (0..<5).map { _ in UUID() }
            for id in jobs {
                try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
                try await storage.stageResults(id: id, stage: 1, files: [("result.txt", Data([1]))])
            }
            let upload = ".direct-uploads/7/\(UUID().uuidString.lowercased())"
            try await storage.client.putObject(key: upload, data: Data([1]))
            var batches: [ObjectStorage.SweepScan] = []
            try await storage.scanForSweep(
                now: Date(timeIntervalSinceNow: 7200), abandonedAge: 3600, orphanAge: 3600, modifiedAfter: nil, uploadAge: 3600,
                pageSize: 1, batchSize: 2
            ) { batches.append($0) }
            #expect(batches.count > 1)
            for batch in batches {
                #expect(batch.staleAttemptKeys.count <= 2 && batch.quietJobs.count <= 2 && batch.staleUploadKeys.count <= 2)
            }
            let quiet = batches.flatMap(\.quietJobs)
            #expect(quiet.count == 5 && Set(quiet) == Set(jobs))
            #expect(Set(batches.flatMap(\.staleAttemptKeys)) == Set(jobs.map { "\($0.uuidString.lowercased())/attempts/1/result.txt" }))
            #expect(batches.flatMap(\.staleUploadKeys) == [upload])
            // Young: nothing is reported.
            var young = 0
            try await storage.scanForSweep(
                now: Date(), abandonedAge: 3600, orphanAge: 3600, modifiedAfter: nil, uploadAge: 3600, pageSize: 1, batchSize: 2
            ) { young += $0.staleAttemptKeys.count + $0.quietJobs.count + $0.staleUploadKeys.count }
            #expect(young == 0)
            for id in jobs { try await storage.removeJobFolder(id: id) }
            try await storage.client.deleteObject(key: upload)
        }
    }

    /// While another session holds the sweep lock, a pass skips the shared part (nothing is removed); once it is
    /// released, the next pass removes the orphan.
    @Test func sharedPassRunsInOneProcessAtATime() async throws {
        try await TestHarness.run { harness in
            try await S3TestStore.with { storage in
                let orphan = UUID()
                try await storage.createJobFolder(id: orphan, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
                let sweeper = StorageSweeper(storage: storage, jobs: harness.jobs, logger: TestDatabase.logger)
                let later = Date(timeIntervalSinceNow: 7200)
                let key = JobStore.sweepLockKey
                try await harness.client.withConnection { connection in
                    try await connection.query("SELECT pg_advisory_lock(\(key))", logger: TestDatabase.logger)
                    let skipped = try await sweeper.pass(now: later, orphansSince: nil, sharedSince: nil)
                    #expect(skipped.removed == StorageSweeper.Removed() && !skipped.shared)
                    try await connection.query("SELECT pg_advisory_unlock(\(key))", logger: TestDatabase.logger)
                }
                #expect(try await storage.client.listObjects().count == 2)
                let ran = try await sweeper.pass(now: later, orphansSince: nil, sharedSince: nil)
                #expect(ran.removed == StorageSweeper.Removed(orphans: 1) && ran.shared)
                #expect(try await storage.client.listObjects().isEmpty)
                // The lock was released on its own connection: another session can take it now.
                try await harness.client.withConnection { connection in
                    let rows = try await connection.query("SELECT pg_try_advisory_lock(\(key))", logger: TestDatabase.logger)
                    for try await locked in rows.decode(Bool.self) { #expect(locked) }
                    try await connection.query("SELECT pg_advisory_unlock(\(key))", logger: TestDatabase.logger)
                }
            }
        }
    }

    /// A job deleted while the store is unreachable keeps its durable mark (db/012): the sweeper's first try fails
    /// (the mark records it and goes to the back of the line), a pass before the retry delay leaves it, and a
    /// pass once the store answers removes the objects and clears the mark, long before the listing would have
    /// called them orphans.
    @Test func deletedJobRemovedOnceTheStoreAnswers() async throws {
        try await TestHarness.run { harness in
            try await S3TestStore.with { storage in
                let owner = try await harness.ownerID(ofUserWithKey: try await harness.newUser().keyID)
                let id = UUID(), kept = UUID()
                for job in [id, kept] {
                    try await storage.createJobFolder(id: job, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
                    try await Self.makeRow(harness, id: job, owner: owner)
                }
                #expect(try await harness.jobs.delete(id, ownerID: owner) == .deleted)
                func marks() async throws -> [(UUID, Int)] {
                    let rows = try await harness.client.query("SELECT job_id, tries::int8 FROM storage_removals", logger: TestDatabase.logger)
                    var found: [(UUID, Int)] = []
                    for try await row in rows.decode((UUID, Int).self) { found.append(row) }
                    return found
                }
                #expect(try await marks().map(\.0) == [id])

                // The same bucket and prefix behind an endpoint where nothing listens: the store is down.
                let spool = FileManager.default.temporaryDirectory.appendingPathComponent("lector-spool-\(UUID().uuidString)")
                defer { try? FileManager.default.removeItem(at: spool) }
                let down = try ObjectStorage(settings: S3TestStore.settings(
                    prefix: storage.prefix, spool: spool.path, endpoint: "http://127.0.0.1:1",
                    extra: ["LECTOR_S3_TIMEOUT": "1", "LECTOR_S3_MAX_ATTEMPTS": "1"]))
                let first = Date(timeIntervalSinceNow: 400)
                await #expect(throws: StorageError.self) {
                    _ = try await StorageSweeper(storage: down, jobs: harness.jobs, logger: TestDatabase.logger).sweep(now: first)
                }
                #expect(try await marks().map(\.1) == [1])
                #expect(try await storage.client.listObjects(prefix: id.uuidString.lowercased() + "/").count == 2)

                let sweeper = StorageSweeper(storage: storage, jobs: harness.jobs, logger: TestDatabase.logger)
                // Tried a minute ago: not due yet.
                #expect(try await sweeper.sweep(now: first.addingTimeInterval(60)) == StorageSweeper.Removed())
                #expect(try await sweeper.sweep(now: first.addingTimeInterval(400)) == StorageSweeper.Removed(removals: 1))
                #expect(try await marks().isEmpty)
                #expect(try await storage.client.listObjects(prefix: id.uuidString.lowercased() + "/").isEmpty)
                #expect(try await storage.client.listObjects(prefix: kept.uuidString.lowercased() + "/").count == 2)
                #expect(try await sweeper.sweep(now: first.addingTimeInterval(800)).total == 0)
                try await storage.removeJobFolder(id: kept)
            }
        }
    }
}

/// The object store's own HTTP client: sized to the process, and shut down by its service at the end.
@Suite struct StorageHTTPClientTests {
    @Test func connectionsSizedToTheSlots() {
        #expect(ObjectStorage.connections(settings: Settings(environment: [:]), slots: 2) == 18)
        #expect(ObjectStorage.connections(settings: Settings(environment: [:]), slots: nil) == 32)
        let set = Settings(environment: ["LECTOR_S3_CONNECTIONS": "5"])
        #expect(set.s3Connections == 5)
        #expect(ObjectStorage.connections(settings: set, slots: 2) == 5)
        for bad in ["0", "-1", "x", ""] {
            #expect(Settings(environment: ["LECTOR_S3_CONNECTIONS": bad]).s3Connections == nil)
        }
    }

    /// `HTTPClientService` runs until the graceful shutdown, then shuts its client down (a request after it is
    /// refused as `alreadyShutdown`); it never shuts it down before.
    @Test func serviceShutsTheClientDownAtTheEnd() async throws {
        let http = ObjectStorage.makeHTTPClient(settings: Settings(environment: [:]), slots: 1)
        let service = HTTPClientService(client: http, logger: TestDatabase.logger)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                try await Task.sleep(for: .milliseconds(100))
                // Still running: a request is attempted (and refused by nothing listening), not refused as shut down.
                let before = await Self.requestError(http)
                #expect(before != .alreadyShutdown)
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        #expect(await Self.requestError(http) == .alreadyShutdown)
    }

    static func requestError(_ http: HTTPClient) async -> HTTPClientError? {
        do {
            _ = try await http.execute(HTTPClientRequest(url: "http://127.0.0.1:1/"), timeout: .seconds(2))
            return nil
        } catch {
            return error as? HTTPClientError
        }
    }
}
