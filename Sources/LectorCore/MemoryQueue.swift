import Foundation
import LectorModel
import Logging
import ServiceLifecycle

/// The queue in memory: an actor with the rules of the SQL in `db/*.sql`, for tests of the worker's logic
/// without PostgreSQL. `QueueConformanceTests` runs one contract against it and against `JobStore`.
///
/// Modelled as the database does it: the transition rules (`∅→QUEUED`, `QUEUED→IN_PROGRESS|FAILURE`,
/// `IN_PROGRESS→FINISHED|FAILURE|QUEUED`); the claim (owners take turns as in db/006 and db/010, then priority,
/// then the oldest; retry times; at most one claimer at a time, since the actor serialises them); leases with
/// expiry, the attempt count, `maxRuntime`; fencing by (job, worker, attempt), like `job_leases` (the lease's
/// `claim` is not stored by the database either); an `end` holds its lease while `beforeCommit` runs, so a
/// rescue skips it and a renewal counts it as held, and records nothing when `beforeCommit` throws; requeue with
/// backoff and the returned attempt; rescue of expired leases (requeue, or `FAILURE` at the attempt limit);
/// cancel (a queued job ends "cancelled"; a running one gets a request, announced to `cancelListener`, and its
/// requeue or rescue ends it "cancelled", as db/009's trigger does); dependencies (db/010: a job waits for its
/// unfinished dependencies, and fails with a failed one, transitively); idempotency keys for 24 hours; page
/// progress, cleared when a job is queued again or claimed.
///
/// Not modelled: deletion, re-OCR, batches, reuse, webhooks, live events, the job list and stats, the
/// skip-locked claim (both strategies claim the same way here), and anything about connections (the database
/// being away, a commit lost). Creation times come from the clock with an insertion counter as the tie-break,
/// where the database breaks ties by id.
public actor MemoryQueue: WorkQueue, JobQueue {
    private struct Job {
        let id: UUID
        let ownerID: Int64
        let documentName: String
        let contentType: String
        let sizeBytes: Int64
        let sha256Hex: String
        let optionsJSON: String
        let metadataJSON: String
        let createdAt: Date
        /// Insertion order: the tie-break between equal creation times.
        let sequence: Int
        let priority: Int
        var status: JobStatus?
        var history: [JobTransition] = []
        var attempts = 0
        var notBefore: Date?
        var lease: HeldLease?
        var cancelRequestedAt: Date?
        var pagesDone: Int?
        var pagesTotal: Int?
        var engineVersion: String?
        /// The dependencies that had not finished when the job was created (`job_dependencies`).
        var dependsOn: [UUID] = []
        /// How many of them have not finished yet (`blocked_by`).
        var blockedBy = 0
    }

    private struct HeldLease {
        let worker: String
        let attempt: Int
        let claimedAt: Date
        var expiresAt: Date
        /// An `end` or `requeue` holds it (the lease row's lock in the database).
        var locked = false
    }

    private struct IdempotencyKey {
        let jobID: UUID
        let fingerprint: [UInt8]
        let createdAt: Date
    }

    private let clock: @Sendable () -> Date
    private var jobs: [UUID: Job] = [:]
    private var sequence = 0
    /// Who waits for whom: a job's dependents.
    private var dependents: [UUID: [UUID]] = [:]
    /// The owners' line (`queue_owners`): turn and joining order.
    private var line: [Int64: (turn: Int, joined: Int)] = [:]
    private var turns = 0
    private var keys: [String: IdempotencyKey] = [:]
    private var lockWaiters: [UUID: [CheckedContinuation<Void, Never>]] = [:]
    private var queuedSubscribers: [UUID: AsyncStream<Void>.Continuation] = [:]
    private var cancelSubscribers: [UUID: AsyncStream<UUID>.Continuation] = [:]
    /// The engine identities announced, latest last.
    public private(set) var announcedEngines: [String] = []

    /// `clock` is the queue's `now()`; pass one to move time in tests (methods that take `now` use it instead).
    public init(clock: @escaping @Sendable () -> Date = { Date() }) {
        self.clock = clock
    }

    // MARK: the submit and read side

    public func create(_ job: NewJob, idempotencyKey: (key: String, fingerprint: [UInt8])?) async throws -> Date {
        let now = clock()
        guard jobs[job.id] == nil else { throw TransitionRefused(jobID: job.id, status: .queued) }
        var failed: UUID?
        var blocking: [UUID] = []
        if !job.dependsOn.isEmpty {
            for dependency in job.dependsOn where jobs[dependency]?.ownerID != job.ownerID {
                throw UnknownDependency(message: "no job \(dependency.uuidString.lowercased()) of this user to depend on")
            }
            let distinct = Set(job.dependsOn).sorted(by: Self.idOrder)
            failed = distinct.first { jobs[$0]?.status == .failure }
            blocking = distinct.filter { jobs[$0]?.status != .finished }
        }
        let keyName = idempotencyKey.map { Self.keyName(owner: job.ownerID, key: $0.key) }
        if let keyName, let held = keys[keyName], held.createdAt >= now - 86_400 { throw IdempotencyKeyTaken() }
        sequence += 1
        jobs[job.id] = Job(
            id: job.id, ownerID: job.ownerID, documentName: job.documentName, contentType: job.contentType,
            sizeBytes: job.sizeBytes, sha256Hex: job.sha256.map { String(format: "%02x", $0) }.joined(),
            optionsJSON: job.optionsJSON, metadataJSON: job.metadataJSON, createdAt: now, sequence: sequence,
            priority: job.priority, dependsOn: failed == nil ? blocking : [], blockedBy: failed == nil ? blocking.count : 0)
        if failed == nil {
            for dependency in blocking { dependents[dependency, default: []].append(job.id) }
        }
        append(job.id, .queued, now: now)
        if let failed {
            append(job.id, .failure, reason: "dependency \(failed.uuidString.lowercased()) failed", now: now)
        }
        if let keyName, let idempotencyKey {
            keys[keyName] = IdempotencyKey(jobID: job.id, fingerprint: idempotencyKey.fingerprint, createdAt: now)
        }
        return now
    }

    public func idempotentJob(key: String, ownerID: Int64, fingerprint: [UInt8]) async throws
        -> (id: UUID, status: JobStatus, createdAt: Date, sameDocument: Bool)?
    {
        guard let held = keys[Self.keyName(owner: ownerID, key: key)], held.createdAt >= clock() - 86_400,
            let job = jobs[held.jobID]
        else { return nil }
        return (job.id, job.status ?? .queued, job.createdAt, held.fingerprint == fingerprint)
    }

    public func job(_ id: UUID, ownerID: Int64) async throws -> (JobRecord, [JobTransition])? {
        guard let job = jobs[id], job.ownerID == ownerID else { return nil }
        var record = JobRecord(
            id: job.id, ownerID: job.ownerID, documentName: job.documentName, contentType: job.contentType,
            sizeBytes: job.sizeBytes, sha256Hex: job.sha256Hex, optionsJSON: job.optionsJSON,
            metadataJSON: job.metadataJSON, createdAt: job.createdAt, status: job.status ?? .queued,
            pagesDone: job.pagesDone, pagesTotal: job.pagesTotal)
        record.priority = job.priority
        if job.status == .queued, job.blockedBy > 0 {
            record.waitingFor = job.dependsOn.filter { jobs[$0]?.status != .finished }.sorted(by: Self.idOrder)
        }
        return (record, job.history)
    }

    public func history(of id: UUID) async throws -> [JobTransition] {
        jobs[id]?.history ?? []
    }

    public func state(of id: UUID, ownerID: Int64) async throws -> JobState? {
        guard let job = jobs[id], job.ownerID == ownerID, let last = job.history.last else { return nil }
        return JobState(status: last.status, reason: last.reason)
    }

    public func cancel(_ id: UUID, ownerID: Int64) async throws -> JobStore.CancelOutcome? {
        guard let job = jobs[id], job.ownerID == ownerID else { return nil }
        let now = clock()
        switch job.status {
        case .queued:
            jobs[id]?.cancelRequestedAt = now
            append(id, .failure, reason: JobStore.cancelledReason, now: now)
            return .cancelled
        case .inProgress:
            if job.cancelRequestedAt == nil { jobs[id]?.cancelRequestedAt = now }
            for subscriber in cancelSubscribers.values { subscriber.yield(id) }
            return .requested
        case .finished, .failure, nil:
            return .ended
        }
    }

    public func countsByStatus() async throws -> [JobStatus: Int] {
        var counts: [JobStatus: Int] = [:]
        for job in jobs.values { if let status = job.status { counts[status, default: 0] += 1 } }
        return counts
    }

    // MARK: the worker's side

    public func announceEngine(_ identity: String) async throws {
        announcedEngines.removeAll { $0 == identity }
        announcedEngines.append(identity)
    }

    public func claimNext(
        worker: String, leaseDuration: Duration, strategy: ClaimStrategy = .tableLock, now: Date? = nil
    ) async throws -> ClaimedJob? {
        let now = now ?? clock()
        // The global head (db/010): the highest priority, then the oldest, of every claimable job.
        guard let head = jobs.values.filter({ claimable($0, now: now) }).min(by: Self.claimOrder) else { return nil }
        if line[head.ownerID] == nil { line[head.ownerID] = (0, 0) }
        // The first 8 of the owners' line, as the claim's cursor reads them.
        let candidates = line.sorted { ($0.value.turn, $0.value.joined) < ($1.value.turn, $1.value.joined) }.prefix(8).map(\.key)
        var picked: Job?
        for candidate in candidates {
            if let job = jobs.values.filter({ $0.ownerID == candidate && claimable($0, now: now) }).min(by: Self.claimOrder) {
                picked = job
                break
            }
            // Nothing claimable: leave the line when nothing of the owner waits for its turn, else go to the back.
            if jobs.values.contains(where: { $0.ownerID == candidate && $0.status == .queued && $0.blockedBy == 0 }) {
                turns += 1
                line[candidate]?.turn = turns
            } else {
                line[candidate] = nil
            }
        }
        let job = picked ?? head
        turns += 1
        line[job.ownerID]?.turn = turns
        append(job.id, .inProgress, worker: worker, now: now)
        jobs[job.id]?.attempts += 1
        jobs[job.id]?.notBefore = nil
        let attempt = jobs[job.id]?.attempts ?? 1
        jobs[job.id]?.lease = HeldLease(
            worker: worker, attempt: attempt, claimedAt: now, expiresAt: now + leaseDuration.secondsValue)
        return ClaimedJob(
            lease: Lease(jobID: job.id, worker: worker, attempt: attempt), contentType: job.contentType,
            optionsJSON: job.optionsJSON)
    }

    public func claimBatch(
        workers: [String], leaseDuration: Duration, strategy: ClaimStrategy = .tableLock, now: Date? = nil
    ) async throws -> [ClaimedJob] {
        precondition(workers.count <= JobStore.maxClaimBatch, "claimBatch takes at most \(JobStore.maxClaimBatch) workers")
        // The actor runs the claims back to back with no suspension between them: one batch, as under the lock.
        var claimed: [ClaimedJob] = []
        for worker in workers {
            guard let job = try await claimNext(worker: worker, leaseDuration: leaseDuration, strategy: strategy, now: now) else { break }
            claimed.append(job)
        }
        return claimed
    }

    public func renew(
        _ lease: Lease, duration: Duration, maxRuntime: Duration = .seconds(86_400), now: Date? = nil
    ) async throws -> Bool {
        let now = now ?? clock()
        guard let held = holder(of: lease), held.claimedAt + maxRuntime.secondsValue > now else { return false }
        // A lease being ended counts as held, unrenewed (the database skips its locked row).
        if !held.locked { jobs[lease.jobID]?.lease?.expiresAt = now + duration.secondsValue }
        return true
    }

    public func end(
        _ lease: Lease, as status: JobStatus, reason: String? = nil, pages: Int? = nil, engineVersion: String? = nil,
        beforeCommit: (@Sendable () async throws -> Void)? = nil
    ) async throws {
        precondition(status.isTerminal, "end(_:as:) takes FINISHED or FAILURE")
        try await lockLease(lease, status: status)
        defer { unlockLease(lease) }
        // The actor is re-entrant across this await: the lock keeps rescues and other ends off the lease.
        try await beforeCommit?()
        if pages != nil || engineVersion != nil {
            if let pages {
                jobs[lease.jobID]?.pagesDone = pages
                jobs[lease.jobID]?.pagesTotal = pages
            }
            if let engineVersion { jobs[lease.jobID]?.engineVersion = engineVersion }
        }
        append(lease.jobID, status, worker: lease.worker, reason: reason, now: clock())
    }

    public func endBatch(_ requests: [EndRequest]) async -> [Result<Void, any Error>] {
        // One by one: each request's outcome is what the database's batch gives it (the twin has no transaction
        // to share).
        var results: [Result<Void, any Error>] = []
        for request in requests {
            do {
                try await end(
                    request.lease, as: request.status, reason: request.reason, pages: request.pages,
                    engineVersion: request.engineVersion, beforeCommit: request.beforeCommit)
                results.append(.success(()))
            } catch {
                results.append(.failure(error))
            }
        }
        return results
    }

    public func requeue(
        _ lease: Lease, reason: String, delay: Duration = .zero, countAttempt: Bool = true, now: Date? = nil
    ) async throws {
        try await lockLease(lease, status: .queued)
        defer { unlockLease(lease) }
        let now = now ?? clock()
        append(lease.jobID, .queued, worker: lease.worker, reason: reason, now: now)
        jobs[lease.jobID]?.notBefore = now + delay.secondsValue
        if !countAttempt, let attempts = jobs[lease.jobID]?.attempts { jobs[lease.jobID]?.attempts = max(attempts - 1, 0) }
    }

    @discardableResult
    public func reportProgress(_ lease: Lease, done: Int, total: Int) async throws -> Bool {
        // Waits for an end in progress (FOR SHARE in the database): after it, the lease is gone.
        while holder(of: lease)?.locked == true { await waitForUnlock(lease.jobID) }
        guard holder(of: lease) != nil else { return false }
        jobs[lease.jobID]?.pagesDone = done
        jobs[lease.jobID]?.pagesTotal = total
        return true
    }

    public func cancelRequested(_ ids: [UUID]) async throws -> Set<UUID> {
        Set(ids.filter { jobs[$0]?.cancelRequestedAt != nil && jobs[$0]?.status == .inProgress })
    }

    public func rescueExpired(
        maxAttempts: Int, grace: Duration = .zero, now: Date? = nil, limit: Int = 500
    ) async throws -> RescueReport {
        let now = now ?? clock()
        let expired = jobs.values.compactMap { job -> (UUID, HeldLease)? in
            guard let lease = job.lease, !lease.locked, lease.expiresAt + grace.secondsValue < now else { return nil }
            return (job.id, lease)
        }.sorted { $0.1.expiresAt < $1.1.expiresAt }.prefix(limit)
        var report = RescueReport()
        for (id, lease) in expired {
            let status: JobStatus = lease.attempt >= maxAttempts ? .failure : .queued
            let reason = lease.attempt >= maxAttempts
                ? "worker lost: gave up after \(lease.attempt) attempts"
                : "worker lost: its lease expired during attempt \(lease.attempt)"
            // As recorded: a job whose cancel was requested ends FAILURE instead of going back.
            if append(id, status, reason: reason, now: now) == .queued { report.requeued += 1 } else { report.failed += 1 }
        }
        return report
    }

    @discardableResult
    public func purgeIdempotencyKeys(now: Date? = nil) async throws -> Int {
        let cutoff = (now ?? clock()) - 86_400
        let old = keys.filter { $0.value.createdAt < cutoff }.prefix(10_000).map(\.key)
        for key in old { keys[key] = nil }
        return old.count
    }

    // MARK: notifications

    public nonisolated func queuedListener(logger: Logger, onQueued: @escaping @Sendable () -> Void) -> any Service {
        Listener(queue: self, onListening: onQueued, subscribe: { queue, id in
            let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            await queue.subscribeQueued(id, continuation)
            return { for await _ in stream { onQueued() } }
        })
    }

    public nonisolated func cancelListener(
        logger: Logger, onListening: @escaping @Sendable () -> Void, onCancel: @escaping @Sendable (UUID) -> Void
    ) -> any Service {
        Listener(queue: self, onListening: onListening, subscribe: { queue, id in
            let (stream, continuation) = AsyncStream<UUID>.makeStream()
            await queue.subscribeCancel(id, continuation)
            return { for await job in stream { onCancel(job) } }
        })
    }

    private func subscribeQueued(_ id: UUID, _ continuation: AsyncStream<Void>.Continuation) {
        queuedSubscribers[id] = continuation
    }

    private func subscribeCancel(_ id: UUID, _ continuation: AsyncStream<UUID>.Continuation) {
        cancelSubscribers[id] = continuation
    }

    private func unsubscribe(_ id: UUID) {
        queuedSubscribers.removeValue(forKey: id)?.finish()
        cancelSubscribers.removeValue(forKey: id)?.finish()
    }

    /// A subscription as a `Service`: it subscribes, says it listens, and hands each notification to its
    /// callback until it is cancelled or the graceful shutdown starts.
    private struct Listener: Service {
        let queue: MemoryQueue
        let onListening: @Sendable () -> Void
        let subscribe: @Sendable (MemoryQueue, UUID) async -> @Sendable () async -> Void

        func run() async throws {
            let id = UUID()
            let deliver = await subscribe(queue, id)
            onListening()
            await cancelWhenGracefulShutdown { await deliver() }
            await queue.unsubscribe(id)
        }
    }

    // MARK: the rules

    /// Appends a transition as `job_transitions`' triggers do, and returns the status recorded: a requeue of a
    /// job whose cancel was requested becomes `FAILURE` "cancelled" (db/009); any other move outside the legal
    /// ones is a bug of this type's callers, which check first.
    @discardableResult
    private func append(_ id: UUID, _ status: JobStatus, worker: String? = nil, reason: String? = nil, now: Date) -> JobStatus {
        guard var job = jobs[id] else { preconditionFailure("no job \(id)") }
        var status = status, reason = reason
        if status == .queued, job.status == .inProgress, job.cancelRequestedAt != nil {
            status = .failure
            reason = JobStore.cancelledReason
        }
        let legal: Bool = switch (job.status, status) {
        case (nil, .queued), (.queued, .inProgress), (.queued, .failure): true
        case (.inProgress, .finished), (.inProgress, .failure), (.inProgress, .queued): true
        default: false
        }
        precondition(legal, "illegal transition of job \(id) from \(job.status?.rawValue ?? "nothing") to \(status.rawValue)")
        job.status = status
        job.history.append(JobTransition(status: status, at: now, worker: worker, reason: reason))
        if status != .inProgress { job.lease = nil }
        if status == .queued || status == .inProgress {
            job.pagesDone = nil
            job.pagesTotal = nil
        }
        jobs[id] = job
        if status == .queued, job.blockedBy == 0 { joinLine(job.ownerID) }
        if status == .finished {
            for dependent in dependents[id] ?? [] where jobs[dependent]?.status == .queued && (jobs[dependent]?.blockedBy ?? 0) > 0 {
                jobs[dependent]?.blockedBy -= 1
                if let waiting = jobs[dependent], waiting.blockedBy == 0 { joinLine(waiting.ownerID) }
            }
        } else if status == .failure {
            failDependents(of: id, now: now)
        }
        return status
    }

    /// Every queued job that waits for `id`, directly or through others, ends `FAILURE` naming the first
    /// dependency of its own that failed with it (db/010's `job_dependency_resolve`).
    private func failDependents(of id: UUID, now: Date) {
        var waiting: Set<UUID> = []
        var next = dependents[id] ?? []
        while let job = next.popLast() {
            guard waiting.insert(job).inserted else { continue }
            next += dependents[job] ?? []
        }
        for job in waiting.sorted(by: Self.idOrder) where jobs[job]?.status == .queued {
            let failed = (jobs[job]?.dependsOn ?? []).filter { $0 == id || waiting.contains($0) }.min(by: Self.idOrder)
            guard var record = jobs[job], let failed else { continue }
            record.status = .failure
            record.history.append(JobTransition(
                status: .failure, at: now, worker: nil, reason: "dependency \(failed.uuidString.lowercased()) failed"))
            jobs[job] = record
        }
    }

    /// Puts an owner in line (`queue_owner_join`) and rings the queued notification.
    private func joinLine(_ owner: Int64) {
        if line[owner] == nil {
            turns += 1
            line[owner] = (0, turns)
        }
        for subscriber in queuedSubscribers.values { subscriber.yield() }
    }

    private func claimable(_ job: Job, now: Date) -> Bool {
        job.status == .queued && job.blockedBy == 0 && (job.notBefore.map { $0 <= now } ?? true)
    }

    /// The lease `lease` names, if that attempt still holds it.
    private func holder(of lease: Lease) -> HeldLease? {
        guard let held = jobs[lease.jobID]?.lease, held.worker == lease.worker, held.attempt == lease.attempt else { return nil }
        return held
    }

    /// Takes the lease for an end or a requeue (waiting for one in progress), or throws `TransitionRefused`.
    private func lockLease(_ lease: Lease, status: JobStatus) async throws {
        while holder(of: lease)?.locked == true { await waitForUnlock(lease.jobID) }
        guard holder(of: lease) != nil else { throw TransitionRefused(jobID: lease.jobID, status: status) }
        jobs[lease.jobID]?.lease?.locked = true
    }

    private func unlockLease(_ lease: Lease) {
        if holder(of: lease) != nil { jobs[lease.jobID]?.lease?.locked = false }
        for waiter in lockWaiters.removeValue(forKey: lease.jobID) ?? [] { waiter.resume() }
    }

    private func waitForUnlock(_ id: UUID) async {
        await withCheckedContinuation { lockWaiters[id, default: []].append($0) }
    }

    private static func claimOrder(_ a: Job, _ b: Job) -> Bool {
        (-a.priority, a.createdAt, a.sequence) < (-b.priority, b.createdAt, b.sequence)
    }

    /// PostgreSQL's order of uuids: their bytes, which is the order of their lowercase text.
    private static func idOrder(_ a: UUID, _ b: UUID) -> Bool {
        a.uuidString.lowercased() < b.uuidString.lowercased()
    }

    private static func keyName(owner: Int64, key: String) -> String { "\(owner) \(key)" }
}
