import Foundation
import LectorModel
import NIOConcurrencyHelpers
import Prometheus

/// Lector's Prometheus metrics, one registry per process, every family created with help text (so
/// `promtool check metrics` passes; families made through swift-metrics' factory carry no HELP).
///
/// Labels are closed sets chosen by the code (route templates, methods, status codes, pipeline modes, job
/// states), never ids or user input. The meaning of each family is in README.md, "Metrics".
public final class LectorMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    /// Reads the queue's depth from the database; set by processes that report it.
    private let queueReader: NIOLockedValueBox<(@Sendable () async throws -> QueueDepth)?> = .init(nil)
    private let queueCache = NIOLockedValueBox<(at: ContinuousClock.Instant, depth: QueueDepth)?>(nil)

    public init() {}

    /// `lector_<name>`, with its help text (the unit is part of `name`: `_total`, `_seconds`, `_bytes`).
    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "lector", metricName: name, unitName: "", helpText: help)
    }

    static let durationBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        .seconds(30), .seconds(60), .seconds(120), .seconds(300),
    ]
    /// From a tenth of a millisecond (`read`, `slot`) to minutes (`recognize` of a long document).
    static let stageBuckets: [Duration] = [
        .microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(10),
        .seconds(60), .seconds(300),
    ]
    static let ocrBuckets: [Duration] = [
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2),
        .seconds(5), .seconds(10), .seconds(20), .seconds(60), .seconds(120), .seconds(300), .seconds(600),
    ]

    // MARK: HTTP (API)

    /// One request: its route template (`/v1/jobs/{id}`, or `unmatched`), method and status.
    public func httpRequest(route: String, method: String, status: Int, duration: Duration) {
        registry.makeDurationHistogram(descriptor: Self.descriptor("http_request_duration_seconds", "HTTP requests answered by the API, by route template, method and status"), labels: [("route", route), ("method", method), ("status", String(status))],
            buckets: Self.durationBuckets).record(duration)
    }

    /// Document bytes received by accepted uploads.
    public func uploaded(bytes: Int64) {
        registry.makeCounter(descriptor: Self.descriptor("uploaded_bytes_total", "Bytes of documents accepted by submits"))
            .increment(by: bytes)
    }

    // MARK: jobs

    public func jobSubmitted(mode: String) {
        registry.makeCounter(descriptor: Self.descriptor("jobs_submitted_total", "Jobs accepted by submits, by requested pipeline mode"), labels: [("mode", mode)])
            .increment()
    }

    /// A submitted job finished at once with the results of an identical finished job (no worker ran it).
    public func jobReused() {
        registry.makeCounter(descriptor: Self.descriptor("jobs_reused_total", "Jobs finished at submit with a copy of an identical finished job's results"))
            .increment()
    }

    public func jobFinished(mode: String) {
        registry.makeCounter(descriptor: Self.descriptor("jobs_finished_total", "Jobs that ended FINISHED, by requested pipeline mode"), labels: [("mode", mode)])
            .increment()
    }

    public func jobFailed(mode: String) {
        registry.makeCounter(descriptor: Self.descriptor("jobs_failed_total", "Jobs that ended FAILURE, by requested pipeline mode"), labels: [("mode", mode)])
            .increment()
    }

    /// A job put back in the queue by its worker: `reason` is `retry` (a transient error), `storage` (storage
    /// full) or `shutdown` (handed back on SIGTERM).
    public func jobRequeued(reason: String) {
        registry.makeCounter(descriptor: Self.descriptor("jobs_requeued_total", "Jobs requeued by their worker, by reason"), labels: [("reason", reason)])
            .increment()
    }

    /// A job taken from a lost worker by the rescuer: `outcome` is `requeued` or `failed` (attempt limit).
    public func jobRescued(outcome: String, count: Int) {
        guard count > 0 else { return }
        registry.makeCounter(descriptor: Self.descriptor("jobs_rescued_total", "Jobs and pages whose lease expired, taken back by a rescuer, by outcome (requeued, failed, page_requeued, page_failed)"), labels: [("outcome", outcome)])
            .increment(by: Int64(count))
    }

    // MARK: the engine (workers)

    public func ocrPage(mode: String, duration: Duration) {
        registry.makeDurationHistogram(descriptor: Self.descriptor("ocr_page_seconds", "Time to read one page (preprocessing, pipeline, recognition), by the pipeline that read it"), labels: [("mode", mode)], buckets: Self.ocrBuckets).record(duration)
        registry.makeCounter(descriptor: Self.descriptor("pages_processed_total", "Pages read by the engine, by pipeline"), labels: [("mode", mode)])
            .increment()
    }

    public func ocrJob(mode: String, duration: Duration) {
        registry.makeDurationHistogram(descriptor: Self.descriptor("ocr_job_seconds", "Time from a job's claim to its recorded outcome, by requested pipeline mode"), labels: [("mode", mode)], buckets: Self.ocrBuckets).record(duration)
    }

    /// One attempt's stage times (`StageTimes`: the worker logs the same with each attempt), and the engine
    /// thread's CPU time for it. Only the stages of `StageTimes.order`: a closed set of labels.
    public func attemptStages(_ stages: StageTimes) {
        for stage in StageTimes.order {
            guard let seconds = stages.seconds[stage] else { continue }
            registry.makeDurationHistogram(descriptor: Self.descriptor("job_stage_seconds", "Time of one stage of a job or page attempt, by stage (claim, read, slot, decode, preprocess, preview, classify, recognize, scene, hocr, pdf, engine, return, encode, stage, end)"),
                labels: [("stage", stage)], buckets: Self.stageBuckets).record(.nanoseconds(Int64((seconds * 1e9).rounded())))
        }
        registry.makeCounter(descriptor: Self.descriptor("engine_cpu_seconds_total", "CPU seconds the engines' threads spent reading documents and pages"))
            .increment(by: stages.engineCPU)
    }

    // MARK: the queue (workers)

    public func claim(duration: Duration, found: Bool) {
        registry.makeDurationHistogram(descriptor: Self.descriptor("claim_duration_seconds", "Time of one claim transaction, by whether it found a job"), labels: [("result", found ? "job" : "empty")],
            buckets: Self.durationBuckets).record(duration)
    }

    public func slots(total: Int) {
        registry.makeGauge(descriptor: Self.descriptor("worker_slots", "Worker slots (jobs one worker process runs at once)")).set(to: Double(total))
        registry.makeGauge(descriptor: Self.descriptor("worker_slots_busy", "Worker slots running a job now")).set(to: 0)
    }

    public func slotBusy(_ delta: Double) {
        registry.makeGauge(descriptor: Self.descriptor("worker_slots_busy", "Worker slots running a job now")).increment(by: delta)
    }

    public func leaseRenewalFailed() {
        registry.makeCounter(descriptor: Self.descriptor("lease_renewals_failed_total", "Lease renewals that failed (database unreachable) or found the lease gone"))
            .increment()
    }

    /// One webhook delivery attempt. `result`: `delivered` (a 2xx), `http_error` (another status), `refused`
    /// (the address is not allowed), `timeout`, `error` (no answer).
    public func webhookAttempt(result: String) {
        registry.makeCounter(descriptor: Self.descriptor("webhook_attempts_total", "Webhook delivery attempts, by result"), labels: [("result", result)])
            .increment()
    }

    // MARK: queue depth, read from the database

    /// Jobs queued and running, and the oldest queued job's age, as the database has them.
    public struct QueueDepth: Sendable {
        public var queued: Int
        public var running: Int
        public var oldestQueuedAge: Double?
        /// Queued jobs waiting for their dependencies (not counted in `queued`: no worker can take them yet).
        public var blocked: Int
        /// Page tasks of split jobs (db/014) queued and being read.
        public var pagesQueued = 0
        public var pagesRunning = 0

        public init(queued: Int, running: Int, oldestQueuedAge: Double?, blocked: Int = 0) {
            self.blocked = blocked
            self.queued = queued
            self.running = running
            self.oldestQueuedAge = oldestQueuedAge
        }
    }

    /// Makes `/metrics` report the queue's depth, read with `reader` at most once a second however often it
    /// is scraped.
    public func reportQueueDepth(_ reader: @escaping @Sendable () async throws -> QueueDepth) {
        queueReader.withLockedValue { $0 = reader }
        registry.makeGauge(descriptor: Self.descriptor("queue_jobs", "Jobs in the queue by status, read from the database"), labels: [("status", "QUEUED")]).set(to: 0)
        registry.makeGauge(descriptor: Self.descriptor("queue_jobs", "Jobs in the queue by status, read from the database"), labels: [("status", "IN_PROGRESS")]).set(to: 0)
        registry.makeGauge(descriptor: Self.descriptor("queue_oldest_age_seconds", "Age of the oldest queued job (0 when none), read from the database")).set(to: 0)
        registry.makeGauge(descriptor: Self.descriptor("queue_blocked_jobs", "Queued jobs waiting for their dependencies, read from the database")).set(to: 0)
        for state in ["queued", "running"] {
            registry.makeGauge(descriptor: Self.descriptor("queue_pages", Self.pagesHelp), labels: [("state", state)]).set(to: 0)
        }
    }

    static let pagesHelp = "Page tasks of documents split across the fleet, by state, read from the database"

    /// The exposition text; refreshes the queue's depth first when it is older than a second.
    public func exposition(now: ContinuousClock.Instant = .now) async -> [UInt8] {
        if let reader = queueReader.withLockedValue({ $0 }) {
            let fresh = queueCache.withLockedValue { cache -> Bool in
                guard let cache, now - cache.at < .seconds(1) else { return false }
                return true
            }
            if !fresh, let depth = try? await reader() {
                queueCache.withLockedValue { $0 = (now, depth) }
                let help = "Jobs in the queue by status, read from the database"
                registry.makeGauge(descriptor: Self.descriptor("queue_jobs", help), labels: [("status", "QUEUED")]).set(to: Double(depth.queued))
                registry.makeGauge(descriptor: Self.descriptor("queue_jobs", help), labels: [("status", "IN_PROGRESS")]).set(to: Double(depth.running))
                registry.makeGauge(descriptor: Self.descriptor("queue_oldest_age_seconds", "Age of the oldest queued job (0 when none), read from the database"))
                    .set(to: depth.oldestQueuedAge ?? 0)
                registry.makeGauge(descriptor: Self.descriptor("queue_blocked_jobs", "Queued jobs waiting for their dependencies, read from the database"))
                    .set(to: Double(depth.blocked))
                registry.makeGauge(descriptor: Self.descriptor("queue_pages", Self.pagesHelp), labels: [("state", "queued")]).set(to: Double(depth.pagesQueued))
                registry.makeGauge(descriptor: Self.descriptor("queue_pages", Self.pagesHelp), labels: [("state", "running")]).set(to: Double(depth.pagesRunning))
            }
        }
        return registry.emitToBuffer()
    }
}
