import Foundation
import LectorCore
import LectorModel
import LectorOCR
import LectorWorker
import Testing

/// The real `Worker`, with a real `FileStorage` in a temporary folder, on the in-memory queue: the worker's
/// logic without PostgreSQL. The queue's own rules are `QueueConformanceTests`; the worker against the database
/// (leases under load, outages, shutdown) stays in `ReliabilityTests` and the chaos run.
@Suite("The worker on the in-memory queue")
struct WorkerTwinTests {
    struct Fixture: Sendable {
        let queue: MemoryQueue
        let storage: FileStorage
        let owner: Int64 = 1

        /// A queued job with a (tiny) PNG document in storage.
        func submit() async throws -> UUID {
            let job = QueueTests.makeJob(owner: owner)
            try await storage.createJobFolder(
                id: job.id, documentFileName: DocumentType.png.storedFileName, document: Data([0x89, 0x50, 0x4E, 0x47]),
                metadataJSON: Data("{}".utf8))
            try await queue.create(job)
            return job.id
        }

        /// Waits until job `id` has ended; returns its history.
        func ended(_ id: UUID) async throws -> [JobTransition] {
            try await QueueConformanceTests.eventually(timeout: .seconds(20)) {
                try await queue.history(of: id).last?.status.isTerminal == true
            }
            return try await queue.history(of: id)
        }
    }

    /// Runs a worker (one slot, fast polls and retries) and its two listeners while `body` runs.
    static func withWorker(engine: any OCREngineFactory, _ body: @Sendable (Fixture) async throws -> Void) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("lector-twin-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let fixture = Fixture(queue: MemoryQueue(), storage: try FileStorage(root: root.path))
        var configuration = WorkerConfiguration(settings: Settings(environment: [:]), workerID: "twin")
        configuration.concurrency = 1
        configuration.pollInterval = .milliseconds(50)
        configuration.heartbeatInterval = .milliseconds(100)
        configuration.retryBase = 0.05
        configuration.retryMax = 0.1
        configuration.warmLanguage = nil
        let worker = Worker(
            jobs: fixture.queue, storage: fixture.storage, engines: engine, configuration: configuration, logger: TestDatabase.logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.queuedListener().run() }
            group.addTask { try await worker.cancelListener().run() }
            group.addTask { try await worker.run() }
            defer { group.cancelAll() }
            try await body(fixture)
        }
    }

    @Test("jobs end FINISHED with their result files published in the job's folder")
    func finishes() async throws {
        try await Self.withWorker(engine: NoopEngineFactory()) { fixture in
            var ids: [UUID] = []
            for _ in 0..<3 { ids.append(try await fixture.submit()) }
            for id in ids {
                let history = try await fixture.ended(id)
                #expect(history.map(\.status) == [.queued, .inProgress, .finished])
                #expect(history.last?.worker == "twin/1")
                let json = try #require(try await fixture.storage.readResult(id: id, fileName: "result.json"))
                let result = try JSONDecoder().decode(OCRResult.self, from: json)
                #expect(result.engine == "noop")
                #expect(result.attempt == 1)
                #expect(try await fixture.storage.readResult(id: id, fileName: "result.txt") == Data())
            }
            #expect(try await fixture.queue.countsByStatus() == [.finished: 3])
            #expect(await fixture.queue.announcedEngines.count == 1)
        }
    }

    @Test("a transient engine error requeues the job with backoff; the retry finishes it")
    func transientErrorRetries() async throws {
        let engine = ScriptedEngineFactory(steps: [.fail(OCRError(.engineFailure, "the engine crashed")), .succeed("hello")])
        try await Self.withWorker(engine: engine) { fixture in
            let id = try await fixture.submit()
            let history = try await fixture.ended(id)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued, .inProgress, .finished])
            #expect(history[2].reason == "retrying in 1 s: the engine crashed")
            let text = try #require(try await fixture.storage.readResult(id: id, fileName: "result.txt"))
            #expect(String(decoding: text, as: UTF8.self) == "hello")
            let json = try #require(try await fixture.storage.readResult(id: id, fileName: "result.json"))
            #expect(try JSONDecoder().decode(OCRResult.self, from: json).attempt == 2)
        }
    }

    @Test("a document the engine cannot read ends FAILURE with the engine's reason, at once, without results")
    func badDocumentFails() async throws {
        let engine = ScriptedEngineFactory(steps: [.fail(OCRError(.unreadableDocument, "the image could not be decoded"))])
        try await Self.withWorker(engine: engine) { fixture in
            let id = try await fixture.submit()
            let history = try await fixture.ended(id)
            #expect(history.map(\.status) == [.queued, .inProgress, .failure])
            #expect(history.last?.reason == "the image could not be decoded")
            #expect(try await fixture.storage.readResult(id: id, fileName: "result.json") == nil)
            #expect(engine.calls.withLockedValue { $0 } == 1)
        }
    }

    @Test("cancelling a running job stops its OCR and ends it FAILURE cancelled")
    func cancelRunning() async throws {
        let engine = ScriptedEngineFactory(steps: [.slow(.seconds(30), "never")])
        try await Self.withWorker(engine: engine) { fixture in
            let id = try await fixture.submit()
            try await QueueConformanceTests.eventually { try await fixture.queue.history(of: id).last?.status == .inProgress }
            #expect(try await fixture.queue.cancel(id, ownerID: fixture.owner) == .requested)
            let started = ContinuousClock.now
            let history = try await fixture.ended(id)
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(history.map(\.status) == [.queued, .inProgress, .failure])
            #expect(history.last?.reason == JobStore.cancelledReason)
        }
    }
}
