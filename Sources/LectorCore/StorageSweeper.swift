import Foundation
import Logging
import NIOPosix
import ServiceLifecycle

/// Removes what killed processes leave behind, by age, in every API and worker process (`StorageSweeper` is a
/// `Service`): uploads that were being received (`.uploads/*.upload`), job folders being assembled
/// (`.staging-<id>`), job folders whose job row never committed (orphans: the submit's outcome was unknown),
/// and, through `extra`, the engine's scratch folders of dead workers. With object storage: uploads in the spool
/// folder, staged objects of attempts that ended long ago (`<id>/attempts/<n>/`, counted as `staging`), and the
/// objects of jobs whose row never committed (orphans), found by listing the whole prefix each pass, and direct
/// uploads (`.direct-uploads/`) past `uploadAge` (counted as `uploads`).
///
/// Safe with several processes sweeping one storage at once: every removal is of something old enough that no
/// live request can still use it, and removing what another sweeper removed first is not an error. An orphan
/// is removed only when the database answered that no job has its id, and only past `orphanAge`, long after
/// any submit could still commit.
public struct StorageSweeper: Service {
    public let storage: any JobStorage
    public let jobs: JobStore
    public let interval: Duration
    /// Uploads and staging folders older than this are abandoned.
    public let abandonedAge: TimeInterval
    /// Job folders without a row older than this are orphans.
    public let orphanAge: TimeInterval
    /// Direct uploads (object storage, `.direct-uploads/`) older than this are removed: past it their upload id can no
    /// longer make a job (`Settings.uploadMaxAge`).
    public let uploadAge: TimeInterval
    /// Run after each pass (e.g. `ScratchFolder.sweep`).
    public let extra: @Sendable () -> Void
    public let logger: Logger

    public init(
        storage: any JobStorage, jobs: JobStore, interval: Duration = .seconds(600), abandonedAge: TimeInterval = 3600,
        orphanAge: TimeInterval = 3600, uploadAge: TimeInterval = 2 * 900 + 600, extra: @escaping @Sendable () -> Void = {},
        logger: Logger
    ) {
        self.uploadAge = uploadAge
        self.storage = storage
        self.jobs = jobs
        self.interval = interval
        self.abandonedAge = abandonedAge
        self.orphanAge = orphanAge
        self.extra = extra
        self.logger = logger
    }

    public func run() async throws {
        // The first pass looks at every job folder; later ones only at folders that passed `orphanAge` since
        // the pass before (with a margin), so a large storage is not listed against the database each time.
        var since: Date?
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let now = Date()
            do {
                let removed = try await sweep(now: now, orphansSince: since)
                since = now.addingTimeInterval(-orphanAge - 2 * Double(interval.components.seconds))
                if removed.total > 0 { logger.notice("storage swept", metadata: removed.metadata) }
            } catch {
                logger.warning("storage sweep failed", metadata: ["error": "\(String(reflecting: error))"])
            }
            guard (try? await cancelWhenGracefulShutdown({ try await Task.sleep(for: interval) })) != nil else { return }
        }
    }

    public struct Removed: Sendable, Equatable {
        public var uploads = 0
        public var staging = 0
        public var orphans = 0
        public var total: Int { uploads + staging + orphans }

        public init(uploads: Int = 0, staging: Int = 0, orphans: Int = 0) {
            self.uploads = uploads
            self.staging = staging
            self.orphans = orphans
        }
        var metadata: Logger.Metadata {
            ["uploads": "\(uploads)", "staging": "\(staging)", "orphans": "\(orphans)"]
        }
    }

    /// One pass. `now` is a parameter so tests need not wait; with `orphansSince`, only job folders last
    /// modified after that time are checked for a row (orphans never change after they are made).
    public func sweep(now: Date = Date(), orphansSince: Date? = nil) async throws -> Removed {
        // Job folders, staging folders and orphans exist only on a filesystem; uploads are spooled by both.
        let root = (storage as? FileStorage)?.root
        let spool = URL(fileURLWithPath: storage.spoolDirectory, isDirectory: true)
        let (abandonedAge, orphanAge) = (self.abandonedAge, self.orphanAge)
        var removed = Removed()
        // Uploads and staging folders: by age alone.
        let (uploads, staging, listed) = try await NIOThreadPool.singleton.runIfActive { () -> (Int, Int, [UUID]) in
            let fm = FileManager.default
            func modified(_ url: URL) -> Date? {
                (try? fm.attributesOfItem(atPath: url.path))?[.modificationDate] as? Date
            }
            func age(_ url: URL) -> TimeInterval? { modified(url).map { now.timeIntervalSince($0) } }
            var uploads = 0, staging = 0
            for name in (try? fm.contentsOfDirectory(atPath: spool.path)) ?? [] where name.hasSuffix(".upload") {
                let url = spool.appendingPathComponent(name, isDirectory: false)
                if let age = age(url), age > abandonedAge, unlink(url.path) == 0 { uploads += 1 }
            }
            var candidates: [UUID] = []
            guard let root else { return (uploads, staging, candidates) }
            for name in (try? fm.contentsOfDirectory(atPath: root.path)) ?? [] {
                let url = root.appendingPathComponent(name, isDirectory: true)
                if name.hasPrefix(".staging-") {
                    if let age = age(url), age > abandonedAge, (try? fm.removeItem(at: url)) != nil { staging += 1 }
                } else if let id = UUID(uuidString: name), name == id.uuidString.lowercased(),
                    let modified = modified(url), now.timeIntervalSince(modified) > orphanAge,
                    orphansSince.map({ modified > $0 }) ?? true
                {
                    candidates.append(id)
                }
            }
            return (uploads, staging, candidates)
        }
        removed.uploads = uploads
        removed.staging = staging
        var candidates = listed
        if let objects = storage as? ObjectStorage {
            // A staged object older than `abandonedAge` (≥ an hour) belongs to an attempt that ended: the worker
            // discards it right after the end transaction.
            let scan = try await objects.scanForSweep(
                now: now, abandonedAge: abandonedAge, orphanAge: orphanAge, modifiedAfter: orphansSince, uploadAge: uploadAge)
            removed.staging += try await objects.removeObjects(keys: scan.staleAttemptKeys)
            removed.uploads += try await objects.removeObjects(keys: scan.staleUploadKeys)
            candidates += scan.quietJobs
        }
        // Orphans: old folders whose id the database does not know, asked in batches.
        var start = 0
        while start < candidates.count {
            let batch = Array(candidates[start..<min(start + 1000, candidates.count)])
            start += batch.count
            let known = try await jobs.existingJobIDs(batch)
            for id in batch where !known.contains(id) {
                try await storage.removeJobFolder(id: id)
                removed.orphans += 1
                logger.notice("removed an orphan job folder", metadata: ["job": "\(id.uuidString.lowercased())"])
            }
        }
        extra()
        return removed
    }
}
