import Foundation
import LectorModel
import Logging
import ServiceLifecycle

/// The worker's side of the queue: claim, renew, end, requeue, rescue, and the two notifications a worker
/// listens for. `JobStore` implements it in PostgreSQL (every rule in `db/*.sql`), `MemoryQueue` in memory for
/// tests of the worker's logic. `QueueConformanceTests` holds both to one contract.
///
/// Every write about a running job names its `Lease` and is refused (`TransitionRefused`, or `false`) when that
/// attempt no longer holds the job: that is the fencing (docs/design/queue.md, "Workers that never lose a job").
/// `now`, where a method takes it, is the queue's own clock unless a test passes one.
public protocol WorkQueue: Sendable {
    /// Records `identity` as the fleet's current engine (db/011, reuse of identical work).
    func announceEngine(_ identity: String) async throws

    /// Claims the next claimable job for `worker` and gives it a lease, or returns nil. Owners take turns, and
    /// within an owner the highest priority, then the oldest, goes first; a job waiting for its retry time or
    /// for unfinished dependencies is not claimable. Each job is claimed by one claimer at a time.
    func claimNext(worker: String, leaseDuration: Duration, strategy: ClaimStrategy, now: Date?) async throws -> ClaimedJob?

    /// Claims for several slots at once, in one transaction: the first claimable job for `workers[0]`, the next
    /// for `workers[1]`, and so on, each by `claimNext`'s rules and with its own lease; fewer when fewer jobs are
    /// claimable (the jobs go to the first workers). At most `JobStore.maxClaimBatch` workers. A queue with page
    /// tasks (`PageTaskQueue`) gives the workers that find no job a page each, while there are pages to read: a
    /// claim whose `lease.page` is set.
    func claimBatch(workers: [String], leaseDuration: Duration, strategy: ClaimStrategy, now: Date?) async throws -> [ClaimedJob]

    /// Extends a lease by `duration` from `now`; false when the attempt no longer holds it, or has held it longer
    /// than `maxRuntime`.
    func renew(_ lease: Lease, duration: Duration, maxRuntime: Duration, now: Date?) async throws -> Bool

    /// Ends the job `lease` holds as `FINISHED` or `FAILURE`; `TransitionRefused` when the attempt no longer holds
    /// it. `beforeCommit` (the worker puts its staged files in place there) runs while the lease is held and
    /// cannot be taken by a rescue; when it throws, nothing is recorded and the job stays `IN_PROGRESS`.
    func end(
        _ lease: Lease, as status: JobStatus, reason: String?, pages: Int?, engineVersion: String?,
        beforeCommit: (@Sendable () async throws -> Void)?
    ) async throws

    /// Ends several jobs in one transaction, each as `end` would (its lease held, its `beforeCommit` run; the
    /// closures run side by side): one result per request, in order. A request whose lease is gone, or whose
    /// closure throws, fails alone; the others end. A failure of the transaction itself fails them all.
    func endBatch(_ requests: [EndRequest]) async -> [Result<Void, any Error>]

    /// Gives the job back: `QUEUED` with `reason`, claimable `delay` after `now` (a job whose cancel was requested
    /// ends `FAILURE` "cancelled" instead). `countAttempt: false` returns the attempt. `TransitionRefused` when
    /// the attempt no longer holds the job.
    func requeue(_ lease: Lease, reason: String, delay: Duration, countAttempt: Bool, now: Date?) async throws

    /// Records page progress for the attempt that holds the lease; false when the lease is gone.
    @discardableResult
    func reportProgress(_ lease: Lease, done: Int, total: Int) async throws -> Bool

    /// Which of `ids` are running jobs whose cancel was requested.
    func cancelRequested(_ ids: [UUID]) async throws -> Set<UUID>

    /// Requeues up to `limit` jobs whose lease expired more than `grace` before `now` ("worker lost"), or fails
    /// those that used `maxAttempts`. A lease whose `end` is in progress is skipped.
    func rescueExpired(maxAttempts: Int, grace: Duration, now: Date?, limit: Int) async throws -> RescueReport

    /// Deletes idempotency keys older than 24 hours; returns how many.
    @discardableResult
    func purgeIdempotencyKeys(now: Date?) async throws -> Int

    /// A `Service` that calls `onQueued` whenever a job becomes claimable, and whenever it starts (or starts
    /// again) listening, so that waiters recheck what they may have missed.
    func queuedListener(logger: Logger, onQueued: @escaping @Sendable () -> Void) -> any Service

    /// A `Service` that calls `onCancel` with a running job's id when its cancel is requested, and `onListening`
    /// whenever it starts (or starts again) listening.
    func cancelListener(
        logger: Logger, onListening: @escaping @Sendable () -> Void, onCancel: @escaping @Sendable (UUID) -> Void
    ) -> any Service
}

extension WorkQueue {
    /// `claimNext` with the table-lock strategy and the queue's clock.
    public func claimNext(worker: String, leaseDuration: Duration) async throws -> ClaimedJob? {
        try await claimNext(worker: worker, leaseDuration: leaseDuration, strategy: .tableLock, now: nil)
    }

    /// `renew` with the queue's clock and a day's runtime.
    public func renew(_ lease: Lease, duration: Duration) async throws -> Bool {
        try await renew(lease, duration: duration, maxRuntime: .seconds(86_400), now: nil)
    }

    /// `end` with a reason only.
    public func end(_ lease: Lease, as status: JobStatus, reason: String? = nil) async throws {
        try await end(lease, as: status, reason: reason, pages: nil, engineVersion: nil, beforeCommit: nil)
    }

    /// `requeue`, claimable at once, the attempt counted.
    public func requeue(_ lease: Lease, reason: String) async throws {
        try await requeue(lease, reason: reason, delay: .zero, countAttempt: true, now: nil)
    }

    /// `cancelListener` without a start callback.
    public func cancelListener(logger: Logger, onCancel: @escaping @Sendable (UUID) -> Void) -> any Service {
        cancelListener(logger: logger, onListening: {}, onCancel: onCancel)
    }
}

/// The submit and read side of the queue: what the API writes and reads about one job.
public protocol JobQueue: Sendable {
    /// Creates a `QUEUED` job (with unfinished dependencies it waits; with a failed one it fails at once) and
    /// returns its creation time. With an idempotency key that the owner already used less than 24 hours ago,
    /// nothing is created and `IdempotencyKeyTaken` is thrown (look the original up with `idempotentJob`).
    /// `UnknownDependency` when a dependency is no job of the owner.
    @discardableResult
    func create(_ job: NewJob, idempotencyKey: (key: String, fingerprint: [UInt8])?) async throws -> Date

    /// The job a live idempotency key of `ownerID` points to, and whether it was made with this fingerprint.
    func idempotentJob(key: String, ownerID: Int64, fingerprint: [UInt8]) async throws
        -> (id: UUID, status: JobStatus, createdAt: Date, sameDocument: Bool)?

    /// The job and its history, if it exists and belongs to `ownerID`.
    func job(_ id: UUID, ownerID: Int64) async throws -> (JobRecord, [JobTransition])?

    /// Every transition of a job, oldest first.
    func history(of id: UUID) async throws -> [JobTransition]

    /// The latest transition of a job of `ownerID`.
    func state(of id: UUID, ownerID: Int64) async throws -> JobState?

    /// Cancels a job of `ownerID`: a queued one ends `FAILURE` "cancelled" (`JobStore.cancelledReason`), a
    /// running one gets a cancel request for its worker; nil when there is no such job of this owner.
    func cancel(_ id: UUID, ownerID: Int64) async throws -> JobStore.CancelOutcome?

    /// Counts of jobs by current status.
    func countsByStatus() async throws -> [JobStatus: Int]
}

extension JobQueue {
    /// `create` without an idempotency key.
    @discardableResult
    public func create(_ job: NewJob) async throws -> Date {
        try await create(job, idempotencyKey: nil)
    }
}

/// One `end` of `WorkQueue.endBatch`.
public struct EndRequest: Sendable {
    public var lease: Lease
    public var status: JobStatus
    public var reason: String?
    public var pages: Int?
    public var engineVersion: String?
    public var beforeCommit: (@Sendable () async throws -> Void)?

    public init(
        _ lease: Lease, as status: JobStatus, reason: String? = nil, pages: Int? = nil, engineVersion: String? = nil,
        beforeCommit: (@Sendable () async throws -> Void)? = nil
    ) {
        precondition(status.isTerminal, "an end is FINISHED or FAILURE")
        precondition(lease.page == nil, "a page ends with PageTaskQueue.endPage")
        self.lease = lease
        self.status = status
        self.reason = reason
        self.pages = pages
        self.engineVersion = engineVersion
        self.beforeCommit = beforeCommit
    }
}
