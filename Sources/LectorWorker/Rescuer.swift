import Foundation
import LectorCore
import Logging
import ServiceLifecycle

/// Requeues the jobs of lost workers: every `interval`, jobs whose lease expired go back to `QUEUED`
/// ("worker lost"), or to `FAILURE` once they used up their attempts. Every worker process runs one; they
/// never handle the same job twice (see `WorkQueue.rescueExpired`; `JobStore.rescueExpired` in PostgreSQL).
public struct Rescuer: Service {
    /// The queue: `JobStore` in production, `MemoryQueue` in tests.
    public let jobs: any WorkQueue
    public let interval: Duration
    public let maxAttempts: Int
    /// Added to every lease's expiry: one heartbeat interval, so that after a database outage live workers
    /// renew before their jobs count as lost.
    public let grace: Duration
    public let logger: Logger
    public let metrics: LectorMetrics

    public init(
        jobs: any WorkQueue, interval: Duration, maxAttempts: Int, grace: Duration = .zero, metrics: LectorMetrics = LectorMetrics(),
        logger: Logger
    ) {
        self.metrics = metrics
        self.jobs = jobs
        self.interval = interval
        self.maxAttempts = maxAttempts
        self.grace = grace
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await runOnce()
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// One pass; errors (the database is down) are logged and the next pass tries again.
    @discardableResult
    public func runOnce(now: Date? = nil) async -> RescueReport {
        do {
            var total = RescueReport()
            while true {
                let report = try await jobs.rescueExpired(maxAttempts: maxAttempts, grace: grace, now: now, limit: 500)
                total.requeued += report.requeued
                total.failed += report.failed
                total.pagesRequeued += report.pagesRequeued
                total.pagesFailed += report.pagesFailed
                if max(report.requeued + report.failed, report.pagesRequeued + report.pagesFailed) < 500 { break }
            }
            try await jobs.purgeIdempotencyKeys(now: now)
            metrics.jobRescued(outcome: "requeued", count: total.requeued)
            metrics.jobRescued(outcome: "failed", count: total.failed)
            metrics.jobRescued(outcome: "page_requeued", count: total.pagesRequeued)
            metrics.jobRescued(outcome: "page_failed", count: total.pagesFailed)
            if total.requeued + total.failed + total.pagesRequeued + total.pagesFailed > 0 {
                logger.notice("rescued jobs and pages of lost workers", metadata: [
                    "requeued": "\(total.requeued)", "failed": "\(total.failed)",
                    "pagesRequeued": "\(total.pagesRequeued)", "pagesFailed": "\(total.pagesFailed)",
                ])
            }
            return total
        } catch {
            logger.warning("rescue pass failed", metadata: ["error": "\(String(reflecting: error))"])
            return RescueReport()
        }
    }
}
