import Foundation
import LectorCore
import LectorOCR
import Logging
import ServiceLifecycle

/// A worker process's job loop: `concurrency` slots, each claiming and running one job at a time.
///
/// A slot claims in one short transaction (`JobStore.claimNext`), then reads the document, runs the engine on
/// its own thread, writes the results and appends `FINISHED` or `FAILURE`, all after the claim committed.
/// Idle slots sleep until a `NOTIFY` on `lector_job_queued` (delivered by `NotificationListener` through
/// `doorbell`) or the poll interval passes. On graceful shutdown slots stop claiming; jobs in flight finish.
public struct Worker: Service {
    public let jobs: JobStore
    public let storage: any JobStorage
    public let engines: any OCREngineFactory
    public let concurrency: Int
    public let pollInterval: Duration
    public let workerID: String
    public let doorbell: WaitRegistry<Int>
    public let logger: Logger

    /// The doorbell key every slot waits on.
    public static let queuedKey = 0

    public init(
        jobs: JobStore, storage: any JobStorage, engines: any OCREngineFactory, concurrency: Int,
        pollInterval: Duration, workerID: String, doorbell: WaitRegistry<Int>, logger: Logger
    ) {
        self.jobs = jobs
        self.storage = storage
        self.engines = engines
        self.concurrency = max(1, concurrency)
        self.pollInterval = pollInterval
        self.workerID = workerID
        self.doorbell = doorbell
        self.logger = logger
    }

    /// The listener that rings `doorbell` when a job is queued; run it beside the worker.
    public func queuedListener() -> NotificationListener {
        NotificationListener(
            client: jobs.client, channel: JobStore.queuedChannel, logger: logger,
            onListening: { [doorbell] in doorbell.signal(Self.queuedKey) },
            onNotification: { [doorbell] _ in doorbell.signal(Self.queuedKey) })
    }

    public func run() async throws {
        logger.info("worker started", metadata: ["worker": "\(workerID)", "slots": "\(concurrency)"])
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for index in 1...concurrency {
                    group.addTask { await runSlot(index) }
                }
            }
        } onGracefulShutdown: { [doorbell] in
            doorbell.signalAll()
        }
        logger.info("worker stopped", metadata: ["worker": "\(workerID)"])
    }

    /// Claims and runs jobs until shutdown.
    func runSlot(_ index: Int) async {
        let slotID = "\(workerID)/\(index)"
        let slot = EngineSlot(factory: engines)
        let ticket = doorbell.register(Self.queuedKey)
        defer { doorbell.unregister(ticket) }
        var failures = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let claimed: ClaimedJob?
            do {
                claimed = try await jobs.claimNext(worker: slotID)
                failures = 0
            } catch {
                failures += 1
                let delay = Duration.milliseconds(min(5000, 100 << min(failures, 6)))
                logger.warning("claim failed; retrying", metadata: [
                    "worker": "\(slotID)", "error": "\(String(reflecting: error))", "retryIn": "\(delay)",
                ])
                _ = await doorbell.wait(ticket, timeout: delay)
                continue
            }
            if let job = claimed {
                await process(job, slotID: slotID, slot: slot)
            } else {
                _ = await doorbell.wait(ticket, timeout: pollInterval)
            }
        }
        await slot.shutdown()
    }

    /// Runs one claimed job to its end transition.
    func process(_ job: ClaimedJob, slotID: String, slot: EngineSlot) async {
        var logger = self.logger
        logger[metadataKey: "job"] = "\(job.id.uuidString.lowercased())"
        logger[metadataKey: "worker"] = "\(slotID)"
        let started = ContinuousClock.now
        let outcome: (status: JobStatus, reason: String?)
        do {
            let result = try await recognize(job, slot: slot)
            let encoder = JSONEncoder.lector(pretty: true)
            try await storage.writeResult(id: job.id, fileName: "result.json", contents: try encoder.encode(result))
            try await storage.writeResult(id: job.id, fileName: "result.txt", contents: Data(result.text.utf8))
            outcome = (.finished, nil)
        } catch let error as OCRError {
            outcome = (.failure, error.message)
        } catch let error as StorageError {
            logger.error("storage error", metadata: ["error": "\(error)"])
            outcome = (.failure, "storage error: \(error.description)")
        } catch {
            logger.error("job failed with an unexpected error", metadata: ["error": "\(String(reflecting: error))"])
            outcome = (.failure, "internal error while processing the document")
        }
        await end(job.id, outcome.status, reason: outcome.reason, slotID: slotID, logger: logger)
        logger.info("job ended", metadata: [
            "status": "\(outcome.status.rawValue)", "seconds": "\((ContinuousClock.now - started).seconds)",
            "reason": "\(outcome.reason ?? "")",
        ])
    }

    private func recognize(_ job: ClaimedJob, slot: EngineSlot) async throws -> OCRResult {
        guard let type = DocumentType(mediaType: job.contentType) else {
            throw OCRError(.unreadableDocument, "unsupported document type \(job.contentType)")
        }
        guard let options = try? JSONDecoder().decode(OCROptions.self, from: Data(job.optionsJSON.utf8)) else {
            throw OCRError(.unsupportedOption, "the job's options could not be read")
        }
        let data = try await storage.readDocument(id: job.id, fileName: type.storedFileName)
        return try await slot.recognize(OCRDocument(data: data, type: type), options: options)
    }

    /// Appends the end transition, retrying while the database is unreachable (capped backoff, about a minute).
    private func end(_ id: UUID, _ status: JobStatus, reason: String?, slotID: String, logger: Logger) async {
        var delay = Duration.milliseconds(200)
        for attempt in 1...10 {
            do {
                try await jobs.end(id, as: status, worker: slotID, reason: reason)
                return
            } catch let error as TransitionRefused {
                logger.warning("end transition refused: the job is no longer ours", metadata: ["error": "\(error)"])
                return
            } catch {
                logger.warning("could not record the end of the job; retrying", metadata: [
                    "attempt": "\(attempt)", "error": "\(String(reflecting: error))",
                ])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
            }
        }
        logger.error("gave up recording the end of the job; it stays IN_PROGRESS")
    }
}

extension Duration {
    /// Seconds as a Double, for logs.
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
