import Foundation
import Logging
import NIOPosix
import ServiceLifecycle

/// Removes what killed processes leave behind, by age, in every API and worker process (`StorageSweeper` is a
/// `Service`): uploads that were being received (`.uploads/*.upload`), job folders being assembled
/// (`.staging-<id>`), job folders whose job row never committed (orphans: the submit's outcome was unknown),
/// and, through `extra`, the engine's scratch folders of dead workers. With object storage: uploads in the spool
/// folder, staged objects of attempts that ended long ago (`<id>/attempts/<stage>/`, counted as `staging`), the
/// objects of jobs whose row never committed (orphans), and direct uploads (`.direct-uploads/`) past `uploadAge`
/// (counted as `uploads`), found by walking the prefix's listing one page at a time.
///
/// The shared part of a pass (the object store's listing, and the folders of deleted jobs whose removal is still
/// marked in `storage_removals`, counted as `removals`) runs in one process at a time: the process that gets
/// PostgreSQL's advisory lock `JobStore.sweepLockKey` runs it, the others skip it for that pass.
///
/// Safe with several processes sweeping one storage at once anyway: every removal is of something old enough that
/// no live request can still use it, and removing what another sweeper removed first is not an error. An orphan
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
    /// A deleted job's removal mark is retried once it is this old (the API and retention remove the folder
    /// right after the delete commits; the sweeper is for those that failed).
    public let removalDelay: TimeInterval
    /// Run after each pass (e.g. `ScratchFolder.sweep`).
    public let extra: @Sendable () -> Void
    public let logger: Logger
    /// Keys per ListObjectsV2 page (at most 1,000); smaller in tests, to walk many pages with few objects.
    var listPageSize = 1000

    public init(
        storage: any JobStorage, jobs: JobStore, interval: Duration = .seconds(600), abandonedAge: TimeInterval = 3600,
        orphanAge: TimeInterval = 3600, uploadAge: TimeInterval = 2 * 900 + 600, removalDelay: TimeInterval = 300,
        extra: @escaping @Sendable () -> Void = {}, logger: Logger
    ) {
        self.uploadAge = uploadAge
        self.removalDelay = removalDelay
        self.storage = storage
        self.jobs = jobs
        self.interval = interval
        self.abandonedAge = abandonedAge
        self.orphanAge = orphanAge
        self.extra = extra
        self.logger = logger
    }

    /// The sweeper as the settings have it: every `LECTOR_SWEEP_INTERVAL`, abandoned uploads, staging folders and
    /// orphans past `LECTOR_ABANDONED_AGE`, direct uploads past `Settings.uploadMaxAge`.
    public init(
        settings: Settings, storage: any JobStorage, jobs: JobStore, extra: @escaping @Sendable () -> Void = {}, logger: Logger
    ) {
        self.init(
            storage: storage, jobs: jobs, interval: .milliseconds(Int64(settings.sweepInterval * 1000)),
            abandonedAge: settings.abandonedAge, orphanAge: settings.abandonedAge, uploadAge: settings.uploadMaxAge, extra: extra,
            logger: logger)
    }

    public func run() async throws {
        // The first pass looks at every job folder; later ones only at folders that passed `orphanAge` since
        // the pass before (with a margin), so a large storage is not listed against the database each time. The
        // shared part's window starts at this process's last shared pass: passes where another process held the
        // lock were that process's to check.
        var since: Date?
        var sharedSince: Date?
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let now = Date()
            do {
                let (removed, shared) = try await pass(now: now, orphansSince: since, sharedSince: sharedSince)
                since = now.addingTimeInterval(-orphanAge - 2 * Double(interval.components.seconds))
                if shared { sharedSince = since }
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
        /// Folders of deleted jobs removed from their durable marks (`storage_removals`).
        public var removals = 0
        public var total: Int { uploads + staging + orphans + removals }

        public init(uploads: Int = 0, staging: Int = 0, orphans: Int = 0, removals: Int = 0) {
            self.uploads = uploads
            self.staging = staging
            self.orphans = orphans
            self.removals = removals
        }
        var metadata: Logger.Metadata {
            ["uploads": "\(uploads)", "staging": "\(staging)", "orphans": "\(orphans)", "removals": "\(removals)"]
        }
    }

    /// One pass. `now` is a parameter so tests need not wait; with `orphansSince`, only job folders last
    /// modified after that time are checked for a row (orphans never change after they are made).
    public func sweep(now: Date = Date(), orphansSince: Date? = nil) async throws -> Removed {
        try await pass(now: now, orphansSince: orphansSince, sharedSince: orphansSince).removed
    }

    /// One pass; `shared` says whether this process held the lock and ran the shared part.
    func pass(now: Date, orphansSince: Date?, sharedSince: Date?) async throws -> (removed: Removed, shared: Bool) {
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
        // Orphan folders on a filesystem: old folders whose id the database does not know, asked in batches.
        var start = 0
        while start < listed.count {
            let batch = Array(listed[start..<min(start + 1000, listed.count)])
            start += batch.count
            removed.orphans += try await removeOrphans(batch)
        }
        // The shared part, in one process at a time.
        let shared = try await jobs.withTryLock(JobStore.sweepLockKey) { () -> Removed in
            var shared = Removed()
            // Deleted jobs first: their folders go by their marks, not as orphans.
            shared.removals = try await retryRemovals(now: now)
            if let objects = storage as? ObjectStorage {
                try await objects.scanForSweep(
                    now: now, abandonedAge: abandonedAge, orphanAge: orphanAge, modifiedAfter: sharedSince, uploadAge: uploadAge,
                    pageSize: listPageSize
                ) { found in
                    // A staged object older than `abandonedAge` (≥ an hour) belongs to an attempt that ended: the
                    // worker discards it right after the end transaction.
                    shared.staging += try await objects.removeObjects(keys: found.staleAttemptKeys)
                    shared.uploads += try await objects.removeObjects(keys: found.staleUploadKeys)
                    shared.orphans += try await removeOrphans(found.quietJobs)
                }
            }
            return shared
        }
        if let shared {
            removed.uploads += shared.uploads
            removed.staging += shared.staging
            removed.orphans += shared.orphans
            removed.removals += shared.removals
        }
        extra()
        return (removed, shared != nil)
    }

    /// Removes the folders of `candidates` whose id the database does not know (deleted jobs count as unknown).
    private func removeOrphans(_ candidates: [UUID]) async throws -> Int {
        guard !candidates.isEmpty else { return 0 }
        let known = try await jobs.existingJobIDs(candidates)
        var count = 0
        for id in candidates where !known.contains(id) {
            try await storage.removeJobFolder(id: id)
            count += 1
            logger.notice("removed an orphan job folder", metadata: ["job": "\(id.uuidString.lowercased())"])
        }
        return count
    }

    /// Removes the folders of deleted jobs still marked in `storage_removals` (older than `removalDelay`), and
    /// clears each mark once the storage confirmed. The first failure ends the retries of this pass (the store is
    /// likely down): that mark is tried again after the others. Returns how many marks were cleared.
    func retryRemovals(now: Date) async throws -> Int {
        let batchSize = 100
        var cleared = 0
        while !Task.isCancelled {
            let due = try await jobs.pendingStorageRemovals(olderThan: removalDelay, now: now, limit: batchSize)
            var done: [UUID] = []
            var failed = false
            for id in due {
                do {
                    try await storage.removeJobFolder(id: id)
                    done.append(id)
                } catch {
                    logger.warning("could not remove a deleted job's folder; retrying later", metadata: [
                        "job": "\(id.uuidString.lowercased())", "error": "\(String(reflecting: error))",
                    ])
                    try await jobs.storageRemovalFailed(id, now: now)
                    failed = true
                    break
                }
            }
            try await jobs.storageRemoved(done)
            cleared += done.count
            if failed || due.count < batchSize { break }
        }
        return cleared
    }
}
