import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import LectorModel
import LectorOCR
import LectorWorker
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

@Suite("Leases, rescue, retries and shutdown")
struct ReliabilityTests {
    static let t0 = Date(timeIntervalSince1970: 1_900_000_000)

    static func queue(_ harness: TestHarness, count: Int = 1) async throws -> [UUID] {
        let owner = try await QueueTests.owner(harness)
        var ids: [UUID] = []
        for index in 0..<count {
            let job = QueueTests.makeJob(owner: owner, index: index)
            try await harness.jobs.create(job)
            ids.append(job.id)
        }
        return ids
    }

    @Test("an expired lease is requeued; a fresh one is untouched")
    func expiredLeaseRequeued() async throws {
        try await TestHarness.run { harness in
            let ids = try await Self.queue(harness, count: 2)
            let rescuer = Rescuer(jobs: harness.jobs, interval: .seconds(1), maxAttempts: 3, logger: TestDatabase.logger)
            let old = try #require(try await harness.jobs.claimNext(worker: "w1", leaseDuration: .seconds(60), now: Self.t0))
            let fresh = try #require(try await harness.jobs.claimNext(worker: "w2", leaseDuration: .seconds(60), now: Self.t0 + 50))
            #expect(old.id == ids[0] && old.lease.attempt == 1)

            #expect(await rescuer.runOnce(now: Self.t0 + 59) == RescueReport(requeued: 0, failed: 0))
            #expect(await rescuer.runOnce(now: Self.t0 + 61) == RescueReport(requeued: 1, failed: 0))
            let history = try await harness.jobs.history(of: old.id)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued])
            #expect(history.last?.reason?.hasPrefix("worker lost") == true)
            // The other job's lease is still live and its worker may finish it.
            #expect(try await harness.jobs.renew(fresh.lease, duration: .seconds(60), now: Self.t0 + 61))
            try await harness.jobs.end(fresh.lease, as: .finished)
            // The lost worker renews no more.
            #expect(try await harness.jobs.renew(old.lease, duration: .seconds(60)) == false)
            // The requeued job is claimed again, as attempt 2.
            let again = try #require(try await harness.jobs.claimNext(worker: "w3", leaseDuration: .seconds(60), now: Self.t0 + 62))
            #expect(again.id == old.id && again.lease.attempt == 2)
        }
    }

    @Test("a job that keeps losing its worker fails at the attempt limit")
    func attemptLimit() async throws {
        try await TestHarness.run { harness in
            let id = try #require(try await Self.queue(harness).first)
            let rescuer = Rescuer(jobs: harness.jobs, interval: .seconds(1), maxAttempts: 3, logger: TestDatabase.logger)
            var now = Self.t0
            for attempt in 1...3 {
                let job = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: now))
                #expect(job.lease.attempt == attempt)
                now += 11
                let report = await rescuer.runOnce(now: now)
                #expect(report == (attempt < 3 ? RescueReport(requeued: 1) : RescueReport(failed: 1)))
            }
            let history = try await harness.jobs.history(of: id)
            #expect(history.last?.status == .failure)
            #expect(history.last?.reason == "worker lost: gave up after 3 attempts")
            #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: now) == nil)
        }
    }

    @Test("a fenced worker can neither finish nor move its files into place")
    func fencing() async throws {
        try await TestHarness.run { harness in
            let id = try #require(try await Self.queue(harness).first)
            try await harness.storage.createJobFolder(id: id, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
            let stale = try #require(try await harness.jobs.claimNext(worker: "stale", leaseDuration: .seconds(10), now: Self.t0))
            _ = try await harness.jobs.rescueExpired(maxAttempts: 3, now: Self.t0 + 11)
            let current = try #require(try await harness.jobs.claimNext(worker: "current", leaseDuration: .seconds(10), now: Self.t0 + 12))
            #expect(current.lease.attempt == 2)

            try await harness.storage.stageResults(id: id, stage: 1, files: [("result.txt", Data("stale".utf8))])
            try await harness.storage.stageResults(id: id, stage: 2, files: [("result.txt", Data("current".utf8))])
            let staleMoved = NIOLockedBool()
            await #expect(throws: TransitionRefused.self) {
                try await harness.jobs.end(stale.lease, as: .finished) {
                    staleMoved.set()
                    try await harness.storage.commitResults(id: id, fileNames: ["result.txt"], stage: 1)
                }
            }
            #expect(!staleMoved.value)
            await #expect(throws: TransitionRefused.self) {
                try await harness.jobs.requeue(stale.lease, reason: "x")
            }
            #expect(try await harness.jobs.renew(stale.lease, duration: .seconds(10), now: Self.t0 + 12) == false)
            // The commit of the files can be repeated (a retry after a lost COMMIT), and the staged file stays
            // until it is discarded.
            try await harness.storage.commitResults(id: id, fileNames: ["result.txt"], stage: 2)
            try await harness.jobs.end(current.lease, as: .finished) {
                try await harness.storage.commitResults(id: id, fileNames: ["result.txt"], stage: 2)
            }
            await harness.storage.discardResults(id: id, fileNames: ["result.txt"], stage: 2)
            await harness.storage.discardResults(id: id, fileNames: ["result.txt"], stage: 1)
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: harness.storage.folder(of: id).path)
            #expect(leftovers.sorted() == ["document.png", "metadata.json", "result.txt"])
            #expect(try await harness.storage.readResult(id: id, fileName: "result.txt") == Data("current".utf8))
            let history = try await harness.jobs.history(of: id)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued, .inProgress, .finished])
            #expect(history.filter { $0.status == .finished }.count == 1)
        }
    }

    @Test("a lease is renewed while the job runs, and no longer past the attempt's time limit")
    func renewalAndTimeLimit() async throws {
        try await TestHarness.run { harness in
            _ = try await Self.queue(harness)
            let job = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: Self.t0))
            let rescuer = Rescuer(jobs: harness.jobs, interval: .seconds(1), maxAttempts: 3, logger: TestDatabase.logger)
            // Renewed at t0+8, the lease now runs to t0+18: a pass at t0+15 leaves it alone.
            #expect(try await harness.jobs.renew(job.lease, duration: .seconds(10), maxRuntime: .seconds(100), now: Self.t0 + 8))
            #expect(await rescuer.runOnce(now: Self.t0 + 15) == RescueReport())
            // Past the time limit the renewal is refused, and the lease runs out.
            #expect(try await harness.jobs.renew(job.lease, duration: .seconds(10), maxRuntime: .seconds(100), now: Self.t0 + 101) == false)
            #expect(await rescuer.runOnce(now: Self.t0 + 19) == RescueReport(requeued: 1))
        }
    }

    @Test("a renewal never waits for a locked lease row: the row counts as held")
    func renewSkipsLockedLease() async throws {
        try await TestHarness.run { harness in
            _ = try await Self.queue(harness)
            let job = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10)))
            // Another transaction holds the lease row, as an end moving its files into place does.
            let held = try await harness.client.withTransaction(logger: TestDatabase.logger) { connection in
                try await connection.query(
                    "SELECT 1 FROM job_leases WHERE job_id = \(job.id) FOR UPDATE", logger: TestDatabase.logger)
                // Waiting for the lock here would wait for this very transaction: the deadline turns that into a failure.
                return try await withDeadline(.seconds(5), "renew") { [jobs = harness.jobs] in
                    try await jobs.renew(job.lease, duration: .seconds(10))
                }
            }
            #expect(held)
            // Without the lock, the same call renews; a lease that is gone is reported gone.
            #expect(try await harness.jobs.renew(job.lease, duration: .seconds(10)))
            #expect(try await harness.jobs.renew(Lease(jobID: job.id, worker: "other", attempt: 1), duration: .seconds(10)) == false)
        }
    }

    @Test("after an outage, the rescuer gives live workers one heartbeat before it takes their jobs")
    func rescueGrace() async throws {
        try await TestHarness.run { harness in
            _ = try await Self.queue(harness)
            _ = try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: Self.t0)
            let rescuer = Rescuer(jobs: harness.jobs, interval: .seconds(1), maxAttempts: 3, grace: .seconds(5), logger: TestDatabase.logger)
            #expect(await rescuer.runOnce(now: Self.t0 + 14) == RescueReport())
            #expect(await rescuer.runOnce(now: Self.t0 + 16) == RescueReport(requeued: 1))
        }
    }

    @Test("a job requeued with backoff is not claimable before its time")
    func backoffHonoured() async throws {
        try await TestHarness.run { harness in
            let id = try #require(try await Self.queue(harness).first)
            let job = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60), now: Self.t0))
            try await harness.jobs.requeue(job.lease, reason: "retrying", delay: .seconds(10), now: Self.t0)
            #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60), now: Self.t0 + 9) == nil)
            let stats = try await harness.jobs.stats(now: Self.t0 + 9)
            #expect(stats.waitingForRetry == 1)
            let again = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60), now: Self.t0 + 10))
            #expect(again.id == id && again.lease.attempt == 2)
        }
    }

    @Test("the backoff grows exponentially, with jitter, up to its cap")
    func backoffShape() {
        var settings = Settings(environment: ["LECTOR_RETRY_BASE_SECONDS": "2", "LECTOR_RETRY_MAX_SECONDS": "30"])
        settings.workerConcurrency = 1
        let configuration = WorkerConfiguration(settings: settings, workerID: "w")
        #expect(configuration.retryDelay(afterAttempt: 1, jitter: 1) == 2)
        #expect(configuration.retryDelay(afterAttempt: 2, jitter: 1) == 4)
        #expect(configuration.retryDelay(afterAttempt: 3, jitter: 1) == 8)
        #expect(configuration.retryDelay(afterAttempt: 10, jitter: 1) == 30)
        #expect(configuration.retryDelay(afterAttempt: 2, jitter: 0.5) == 2)
        let random = configuration.retryDelay(afterAttempt: 2)
        #expect(random >= 2 && random < 6)
    }

    @Test("a transient engine error is retried; a permanent one fails at once")
    func transientAndPermanent() async throws {
        try await TestHarness.run(environment: ["LECTOR_RETRY_BASE_SECONDS": "0.05", "LECTOR_RETRY_MAX_SECONDS": "0.1"]) { harness in
            let owner = try await QueueTests.owner(harness)
            let engine = ScriptedEngineFactory(steps: [
                .fail(OCRError(.engineFailure, "out of memory")), .succeed("second-try"),
            ])
            let (transient, history) = try await Self.readToEnd(harness, owner: owner, engine: engine)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued, .inProgress, .finished])
            #expect(history[2].reason?.contains("out of memory") == true)
            #expect(try await harness.storage.readResult(id: transient, fileName: "result.txt") == Data("second-try".utf8))

            let broken = ScriptedEngineFactory(steps: [.fail(OCRError(.unreadableDocument, "not a readable PNG image"))])
            let (permanent, failed) = try await Self.readToEnd(harness, owner: owner, engine: broken)
            #expect(failed.map(\.status) == [.queued, .inProgress, .failure])
            #expect(failed.last?.reason == "not a readable PNG image")
            #expect(try await harness.storage.readResult(id: permanent, fileName: "result.txt") == nil)
        }
    }

    @Test("results the end cannot encode are retried as an internal error")
    func unencodableResults() async throws {
        try await TestHarness.run(environment: ["LECTOR_RETRY_BASE_SECONDS": "0.05", "LECTOR_RETRY_MAX_SECONDS": "0.1"]) { harness in
            let owner = try await QueueTests.owner(harness)
            let engine = ScriptedEngineFactory(steps: [.unencodable("first-try"), .succeed("second-try")])
            let (job, history) = try await Self.readToEnd(harness, owner: owner, engine: engine)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued, .inProgress, .finished])
            #expect(history[2].reason?.contains("internal error while processing the document") == true)
            #expect(try await harness.storage.readResult(id: job, fileName: "result.txt") == Data("second-try".utf8))
        }
    }

    @Test("transient errors stop at the attempt limit")
    func transientGivesUp() async throws {
        try await TestHarness.run(environment: ["LECTOR_RETRY_BASE_SECONDS": "0.01", "LECTOR_MAX_ATTEMPTS": "2"]) { harness in
            let owner = try await QueueTests.owner(harness)
            let engine = ScriptedEngineFactory(steps: [.fail(OCRError(.engineFailure, "engine crashed"))])
            let (_, history) = try await Self.readToEnd(harness, owner: owner, engine: engine)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued, .inProgress, .failure])
            #expect(history.last?.reason == "gave up after 2 attempts: engine crashed")
        }
    }

    @Test("the worker keeps the lease of a job that runs longer than the lease; a lost lease stops its OCR")
    func workerHeartbeat() async throws {
        try await TestHarness.run(environment: ["LECTOR_LEASE_SECONDS": "1"]) { harness in
            let owner = try await QueueTests.owner(harness)
            // 2.5 s of work under a 1 s lease, with the rescuer passing every 100 ms: only renewals keep it.
            let slow = try await Self.submit(harness, owner: owner)
            let engine = ScriptedEngineFactory(steps: [.slow(.milliseconds(2500), "kept"), .slow(.seconds(60), "never"), .succeed("again")])
            try await Self.runWorker(harness, engine: engine) {
                let deadline = ContinuousClock.now + .seconds(20)
                while try await harness.jobs.history(of: slow).last?.status.isTerminal != true {
                    guard ContinuousClock.now < deadline else { throw TestFailure("the slow job did not end") }
                    _ = try await harness.jobs.rescueExpired(maxAttempts: 3)
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(try await harness.jobs.history(of: slow).map(\.status) == [.queued, .inProgress, .finished])
            #expect(try await harness.storage.readResult(id: slow, fileName: "result.txt") == Data("kept".utf8))

            // The lease of a running job is taken away (as after a network partition): the next beat finds it
            // gone and stops the OCR at once instead of after its 60 s; the job runs again as attempt 2.
            let lost = try await Self.submit(harness, owner: owner)
            let started = ContinuousClock.now
            try await Self.runWorker(harness, engine: engine) {
                while try await harness.jobs.history(of: lost).last?.status != .inProgress {
                    try await Task.sleep(for: .milliseconds(20))
                }
                // A rescuer pass with its clock an hour ahead finds the lease expired.
                #expect(try await harness.jobs.rescueExpired(maxAttempts: 3, now: Date() + 3600) == RescueReport(requeued: 1))
                try await Self.waitForEnd(harness, lost)
            }
            #expect(ContinuousClock.now - started < .seconds(30))
            let history = try await harness.jobs.history(of: lost)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued, .inProgress, .finished])
            #expect(try await harness.storage.readResult(id: lost, fileName: "result.txt") == Data("again".utf8))
            #expect(engine.calls.withLockedValue { $0 } == 3)
        }
    }

    @Test("graceful shutdown: a job that ends within the grace period finishes")
    func shutdownFinishesInFlight() async throws {
        try await TestHarness.run(environment: ["LECTOR_SHUTDOWN_GRACE": "10"]) { harness in
            let owner = try await QueueTests.owner(harness)
            let id = try await Self.submit(harness, owner: owner)
            let engine = ScriptedEngineFactory(steps: [.slow(.milliseconds(500), "done")])
            try await Self.shutDownWhileRunning(harness, engine: engine, job: id)
            let history = try await harness.jobs.history(of: id)
            #expect(history.map(\.status) == [.queued, .inProgress, .finished])
        }
    }

    @Test("graceful shutdown: a job still running after the grace period is handed back")
    func shutdownHandsBack() async throws {
        try await TestHarness.run(environment: ["LECTOR_SHUTDOWN_GRACE": "0.3"]) { harness in
            let owner = try await QueueTests.owner(harness)
            let id = try await Self.submit(harness, owner: owner)
            let engine = ScriptedEngineFactory(steps: [.slow(.seconds(60), "never")])
            let started = ContinuousClock.now
            try await Self.shutDownWhileRunning(harness, engine: engine, job: id)
            #expect(ContinuousClock.now - started < .seconds(30))
            let history = try await harness.jobs.history(of: id)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued])
            #expect(history.last?.reason == "worker shutdown")
            // The hand-back returned the attempt: the next claim is attempt 1 again.
            let again = try #require(try await harness.jobs.claimNext(worker: "next", leaseDuration: .seconds(60)))
            #expect(again.lease.attempt == 1)
        }
    }

    @Test("the API answers 503 with a JSON error while the database is unreachable")
    func databaseDown() async throws {
        // A client for a port where nothing listens.
        let configuration = PostgresClient.Configuration(host: "127.0.0.1", port: 1, username: "x", password: nil, database: "x", tls: .disable)
        var quiet = Logger(label: "down")
        quiet.logLevel = .critical
        let client = PostgresClient(configuration: configuration, backgroundLogger: quiet)
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("lector-down-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let settings = Settings(environment: ["LECTOR_STORAGE_ROOT": root.path, "LECTOR_DATABASE_TIMEOUT": "1"])
        let dependencies = APIDependencies(
            jobs: JobStore(client: client, logger: quiet), keys: KeyStore(client: client, logger: quiet),
            storage: try FileStorage(root: root.path), signer: ResultLinkSigner(key: [1], ttl: 60),
            waiters: WaitRegistry(), settings: settings, supportedTypes: [.png], availableLanguages: ["eng"])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let app = Application(router: buildRouter(dependencies), logger: quiet)
            try await app.test(.router) { http in
                let started = ContinuousClock.now
                let response = try await http.execute(
                    uri: "/v1/jobs/\(UUID())", method: .get, headers: [.authorization: "Bearer \(APIKey.generate().token)"])
                #expect(response.status == .serviceUnavailable)
                #expect(response.errorCode == "database_unavailable")
                // Bounded, not hung: the deadline is 1 s, but the suite runs engine tests on the two cooperative
                // threads of this machine, which can delay any timer by seconds; 30 s still tells "answered" from
                // "waits for the database forever".
                #expect(ContinuousClock.now - started < .seconds(30))
                let ready = try await http.execute(uri: "/readyz", method: .get)
                #expect(ready.status == .serviceUnavailable)
                #expect(ready.json["database"] as? String == "unreachable")
            }
        }
    }

    @Test("stats show counts, the oldest queued age and expired leases")
    func stats() async throws {
        try await TestHarness.run { harness in
            _ = try await Self.queue(harness, count: 3)
            _ = try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: Date())
            let stats = try await harness.jobs.stats(now: Date() + 20)
            #expect(stats.counts[.queued] == 2)
            #expect(stats.counts[.inProgress] == 1)
            #expect(stats.expiredLeases == 1)
            #expect((stats.oldestQueuedAge ?? 0) >= 19)
        }
    }

    // MARK: helpers

    @Test("lector work's services (buildWorkerServices) run a job in one ServiceGroup, which the idle worker ends")
    func workerServiceGroup() async throws {
        try await TestHarness.run { harness in
            let id = try await Self.submit(harness, owner: try await QueueTests.owner(harness))
            let services = harness.workerServices(id: "group", engines: ScriptedEngineFactory(steps: [.succeed("grouped")])) {
                $0.concurrency = 1
                $0.exitWhenIdle = true
            }
            #expect(services.queuedListener != nil)
            let configurations = services.configurations()
            #expect(configurations.count == 7)
            let group = ServiceGroup(configuration: .init(services: configurations, logger: TestDatabase.logger))
            // The worker returns once the queue is empty, and the whole group shuts down with it.
            try await withDeadline(.seconds(60), "the worker's service group") { try await group.run() }
            #expect(try await harness.jobs.history(of: id).map(\.status) == [.queued, .inProgress, .finished])
            #expect(try await harness.storage.readResult(id: id, fileName: "result.txt") == Data("grouped".utf8))
        }
    }

    /// Submits a job, runs a worker with `engine` until the job ends, and answers the job and its history.
    static func readToEnd(_ harness: TestHarness, owner: Int64, engine: ScriptedEngineFactory) async throws -> (UUID, [JobTransition]) {
        let id = try await submit(harness, owner: owner)
        try await runWorker(harness, engine: engine) { try await waitForEnd(harness, id) }
        return (id, try await harness.jobs.history(of: id))
    }

    static func submit(_ harness: TestHarness, owner: Int64) async throws -> UUID {
        let job = QueueTests.makeJob(owner: owner)
        try await harness.storage.createJobFolder(
            id: job.id, documentFileName: DocumentType.png.storedFileName, document: Data([0x89, 0x50, 0x4E, 0x47]),
            metadataJSON: Data("{}".utf8))
        try await harness.jobs.create(job)
        return job.id
    }

    static func waitForEnd(_ harness: TestHarness, _ id: UUID, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = try await harness.jobs.history(of: id).last?.status, status.isTerminal { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("job \(id) did not end within \(timeout)")
    }

    static func worker(_ harness: TestHarness, engine: ScriptedEngineFactory) -> Worker {
        harness.workerServices(id: "scripted", engines: engine).worker
    }

    static func runWorker(_ harness: TestHarness, engine: ScriptedEngineFactory, _ body: @Sendable () async throws -> Void) async throws {
        let worker = worker(harness, engine: engine)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            defer { group.cancelAll() }
            try await body()
        }
    }

    /// Starts a worker, waits until it holds `job`, triggers a graceful shutdown and waits for the worker to return.
    static func shutDownWhileRunning(_ harness: TestHarness, engine: ScriptedEngineFactory, job: UUID) async throws {
        let worker = worker(harness, engine: engine)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await worker.run() }
                while try await harness.jobs.history(of: job).last?.status != .inProgress {
                    try await Task.sleep(for: .milliseconds(20))
                }
                try await Task.sleep(for: .milliseconds(100))
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
    }
}

/// A flag set from a `@Sendable` closure.
final class NIOLockedBool: Sendable {
    private let box = NIOLockedValueBox(false)
    func set() { box.withLockedValue { $0 = true } }
    var value: Bool { box.withLockedValue { $0 } }
}
