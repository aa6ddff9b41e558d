import Foundation
import LectorCore
import Logging
import ServiceLifecycle

/// Deletes ended jobs older than `LECTOR_RETENTION_DAYS`, as `DELETE /v1/jobs/{id}` does: each batch marks up to
/// `batchSize` jobs deleted in one statement (`JobStore.expireEnded`, `FOR UPDATE SKIP LOCKED`, so every worker
/// process may run one), then removes their folders and clears their removal marks (`storage_removals`, db/012,
/// written by the same commit that deletes them). A failed removal, or a crash between the two, leaves the mark,
/// which `StorageSweeper` retries until the storage confirms; a crash before the commit leaves the jobs for the
/// next pass. So it resumes where it stopped, whatever stopped it.
public struct Retention: Service {
    public let jobs: JobStore
    public let storage: any JobStorage
    /// Jobs older than this many days are deleted; 0 keeps everything (the service then returns at once).
    public let days: Int
    public let interval: Duration
    public let batchSize: Int
    public let logger: Logger

    public init(
        jobs: JobStore, storage: any JobStorage, days: Int, interval: Duration = .seconds(60), batchSize: Int = 100,
        logger: Logger
    ) {
        self.jobs = jobs
        self.storage = storage
        self.days = days
        self.interval = interval
        self.batchSize = batchSize
        self.logger = logger
    }

    public func run() async throws {
        // Off (0 days): wait for shutdown like a service with nothing to do. Returning early would end the
        // process's ServiceGroup, which treats a service that finishes as a failure.
        guard days > 0 else {
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await runOnce()
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// One pass, batch after batch until a batch comes back short; returns how many jobs it deleted. Errors
    /// (the database is down) are logged and the next pass tries again.
    @discardableResult
    public func runOnce(now: Date? = nil) async -> Int {
        guard days > 0 else { return 0 }
        var total = 0
        do {
            while !Task.isCancelled {
                let ids = try await jobs.expireEnded(olderThanDays: days, now: now, limit: batchSize)
                var removed: [UUID] = []
                for id in ids {
                    do {
                        try await storage.removeJobFolder(id: id)
                        removed.append(id)
                    } catch {
                        logger.warning("an expired job's folder could not be removed; the sweeper will", metadata: [
                            "job_id": "\(id.uuidString.lowercased())", "error": "\(String(reflecting: error))",
                        ])
                    }
                }
                // Best effort: a mark left here only costs the sweeper one more removal of nothing.
                do {
                    try await jobs.storageRemoved(removed)
                } catch {
                    logger.warning("could not clear removal marks; the sweeper will", metadata: ["error": "\(String(reflecting: error))"])
                }
                total += ids.count
                if ids.count < batchSize { break }
            }
        } catch {
            logger.warning("retention pass failed", metadata: ["error": "\(String(reflecting: error))"])
        }
        if total > 0 { logger.notice("deleted jobs past retention", metadata: ["jobs": "\(total)", "days": "\(days)"]) }
        return total
    }
}
