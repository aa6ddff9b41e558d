import Foundation
import LectorCore
import PostgresNIO
import Testing

@testable import LectorWorker

#if canImport(Glibc)
import Glibc
#endif

/// A socket that accepts connections (the kernel completes them) and never reads or answers: a store that hangs.
final class SilentListener: Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw -> Bool in
                bind(fd, raw, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, raw, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw TestFailure("bind/listen: errno \(errno)")
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func stop() { close(fd) }
}

/// The results' commit runs inside the end transaction, which holds the lease row locked (no renewal, no rescue):
/// a store that hangs must not hold it past the lease. With a real database and SeaweedFS behind a silent socket
/// for the first try: the end fails at the commit deadline, the transaction rolls back (the job still running,
/// its lease row free, nothing live), and the end tried again with the store answering finishes the job with its
/// results.
@Suite(.enabled(if: S3TestStore.isConfigured, "LECTOR_TEST_S3_ENDPOINT is not set (deploy/scripts/weed.sh start; eval \"$(deploy/scripts/weed.sh env)\")"))
struct CommitDeadlineTests {
    @Test func hungStoreCannotHoldTheLeaseRow() async throws {
        try await TestHarness.run { harness in
            try await S3TestStore.with { storage in
                let owner = try await harness.ownerID(ofUserWithKey: try await harness.newUser().keyID)
                let id = UUID()
                try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
                try await SweeperPagingTests.makeRow(harness, id: id, owner: owner)
                let claimed = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(30)))
                #expect(claimed.id == id)
                let lease = claimed.lease
                try await storage.stageResults(id: id, stage: lease.stage, files: [("result.txt", Data("done".utf8))])

                let silent = try SilentListener()
                defer { silent.stop() }
                let spool = FileManager.default.temporaryDirectory.appendingPathComponent("lector-spool-\(UUID().uuidString)")
                defer { try? FileManager.default.removeItem(at: spool) }
                // Its own timeout (60 s) is far beyond the commit deadline (1 s here; half the lease by default).
                let hung = try ObjectStorage(settings: S3TestStore.settings(
                    prefix: storage.prefix, spool: spool.path, endpoint: "http://127.0.0.1:\(silent.port)",
                    extra: ["LECTOR_S3_TIMEOUT": "60", "LECTOR_S3_MAX_ATTEMPTS": "1"]))
                let start = ContinuousClock.now
                await #expect(throws: StorageError.self) {
                    try await harness.jobs.end(lease, as: .finished) {
                        try await Worker.commit(["result.txt"], of: lease, to: hung, within: .seconds(1))
                    }
                }
                #expect(ContinuousClock.now - start < .seconds(10))
                #expect(try await harness.jobs.history(of: id).last?.status == .inProgress)
                // The lease row is not locked any more (NOWAIT fails at once on a locked row).
                try await harness.client.withTransaction(logger: TestDatabase.logger) { connection in
                    let rows = try await connection.query(
                        "SELECT attempt::int8 FROM job_leases WHERE job_id = \(id) FOR UPDATE NOWAIT", logger: TestDatabase.logger)
                    var attempts: [Int] = []
                    for try await attempt in rows.decode(Int.self) { attempts.append(attempt) }
                    #expect(attempts == [lease.attempt])
                }
                #expect(try await storage.readResult(id: id, fileName: "result.txt") == nil)

                // The end again, the store answering: FINISHED with the staged results.
                try await harness.jobs.end(lease, as: .finished) {
                    try await Worker.commit(["result.txt"], of: lease, to: storage, within: .seconds(15))
                }
                #expect(try await harness.jobs.history(of: id).last?.status == .finished)
                #expect(try await storage.readResult(id: id, fileName: "result.txt") == Data("done".utf8))
                await storage.discardResults(id: id, fileNames: ["result.txt"], stage: lease.stage)
                try await storage.removeJobFolder(id: id)
            }
        }
    }
}

/// A hand-back returns the attempt number, so the next claim runs the same number: each claim stages under its own
/// `attempts/<n>-<claim>/`, and the late discard of the claim that handed back leaves the next claim's staged
/// objects, which its end commits. With the real database and SeaweedFS.
@Suite(.enabled(if: S3TestStore.isConfigured, "LECTOR_TEST_S3_ENDPOINT is not set (deploy/scripts/weed.sh start; eval \"$(deploy/scripts/weed.sh env)\")"))
struct HandBackStagingTests {
    @Test func claimsAfterAHandBackStageApart() async throws {
        try await TestHarness.run { harness in
            try await S3TestStore.with { storage in
                let owner = try await harness.ownerID(ofUserWithKey: try await harness.newUser().keyID)
                let id = UUID()
                try await storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
                try await SweeperPagingTests.makeRow(harness, id: id, owner: owner)
                let first = try #require(try await harness.jobs.claimNext(worker: "w1", leaseDuration: .seconds(30))).lease
                try await storage.stageResults(id: id, stage: first.stage, files: [("result.txt", Data("first".utf8))])
                try await harness.jobs.requeue(first, reason: "worker shutdown", countAttempt: false)
                let second = try #require(try await harness.jobs.claimNext(worker: "w2", leaseDuration: .seconds(30))).lease
                #expect(second.attempt == first.attempt && second.stage != first.stage)
                try await storage.stageResults(id: id, stage: second.stage, files: [("result.txt", Data("second".utf8))])
                // The first claim's discard comes late (after its hand-back was recorded).
                await storage.discardResults(id: id, fileNames: Worker.resultFiles, stage: first.stage)
                let staged = try await storage.client.listObjects(prefix: id.uuidString.lowercased() + "/attempts/").map(\.key)
                #expect(staged == ["\(id.uuidString.lowercased())/attempts/\(second.stage)/result.txt"])
                try await harness.jobs.end(second, as: .finished) {
                    try await Worker.commit(["result.txt"], of: second, to: storage, within: .seconds(15))
                }
                #expect(try await storage.readResult(id: id, fileName: "result.txt") == Data("second".utf8))
                await storage.discardResults(id: id, fileNames: ["result.txt"], stage: second.stage)
                try await storage.removeJobFolder(id: id)
            }
        }
    }
}
