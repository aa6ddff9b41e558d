import Foundation
import LectorModel
import PostgresNIO

/// The pages of one document as tasks that any slot of any worker can read (db/014; docs/design/queue.md, "Page
/// tasks"). The slot that claims a job of several pages splits it under the job's lease, and the job's lease
/// passes to its pages. Each page is claimed (`claimBatch` gives pages to the slots that find no new job, and
/// `claimPage` the splitting slot its own job's pages),
/// renewed, requeued and rescued like a job, through the same `WorkQueue` calls with a `Lease` that names the
/// page, and ended by `endPage`; the end of the last page gives the job's lease to the slot that read it, which
/// assembles the results and ends the job as any job ends.
public protocol PageTaskQueue: WorkQueue {
    /// Splits the job `lease` holds (the job's own lease) into pages 1...`pages`, keeping the pages that exist (a
    /// job rescued after its split keeps the pages read), and records the page count. `.split`: the job's lease
    /// passed to its pages, and the caller is done with the job; `.complete`: every page was read already, and
    /// the caller keeps the lease to assemble and end the job; `.cancelled`: its cancel was requested, and the
    /// caller ends it "cancelled" (nothing is split); `.lost`: the attempt no longer holds the job.
    func split(_ lease: Lease, pages: Int) async throws -> SplitOutcome

    /// Claims the first queued page of `jobID` whose retry time has come, for `worker`, with a lease; nil when
    /// none (the slot that split a job reads its pages this way until none is left).
    func claimPage(of jobID: UUID, worker: String, leaseDuration: Duration, now: Date?) async throws -> ClaimedJob?

    /// Ends the page `lease` holds: read (`failure` nil), or failed, which fails the job ("page N: <failure>").
    /// When it was the job's last page, returns the job's lease, now the caller's for `leaseDuration`: assemble
    /// the pages' results and end the job with it. `TransitionRefused` when the attempt no longer holds the page.
    func endPage(_ lease: Lease, failure: String?, leaseDuration: Duration) async throws -> Lease?

    /// Where the pages of a job stand.
    func pageTasks(of jobID: UUID) async throws -> PageTasks
}

/// What `PageTaskQueue.split` did.
public enum SplitOutcome: String, Sendable {
    case split, complete, cancelled, lost
}

/// Where the pages of a split job stand.
public struct PageTasks: Sendable, Equatable {
    public var total = 0
    public var done = 0
    public var running = 0
    public var queued = 0
    /// The first page that failed, and why.
    public var failure: (page: Int, reason: String)?

    public init() {}

    public static func == (a: PageTasks, b: PageTasks) -> Bool {
        (a.total, a.done, a.running, a.queued) == (b.total, b.done, b.running, b.queued)
            && a.failure?.page == b.failure?.page && a.failure?.reason == b.failure?.reason
    }
}

extension JobStore: PageTaskQueue {
    public func split(_ lease: Lease, pages: Int) async throws -> SplitOutcome {
        precondition(lease.page == nil, "a job is split under its own lease")
        let rows = try await client.query(
            "SELECT split_job(\(lease.jobID), \(lease.worker), \(lease.attempt)::int, \(pages)::int)", logger: logger)
        for try await outcome in rows.decode(String.self) { return SplitOutcome(rawValue: outcome) ?? .lost }
        return .lost
    }

    public func claimPage(of jobID: UUID, worker: String, leaseDuration: Duration, now: Date? = nil) async throws -> ClaimedJob? {
        let rows = try await client.query(
            """
            SELECT job_id, page, attempt, content_type, options
            FROM claim_page(\(jobID), \(worker), \(leaseDuration.secondsValue)::float8, \(now)::timestamptz, NULL)
            """,
            logger: logger)
        var claimed: ClaimedJob?
        for try await (id, page, attempt, contentType, options) in rows.decode((UUID, Int, Int, String, String).self) {
            claimed = ClaimedJob(
                lease: Lease(jobID: id, worker: worker, attempt: attempt, page: page), contentType: contentType, optionsJSON: options)
        }
        return claimed
    }

    public func endPage(_ lease: Lease, failure: String?, leaseDuration: Duration) async throws -> Lease? {
        guard let page = lease.page else { preconditionFailure("endPage takes a page's lease") }
        let rows = try await client.query(
            """
            SELECT end_page(\(lease.jobID), \(page)::int, \(lease.worker), \(lease.attempt)::int, \(failure.map(Self.storable)),
                            \(leaseDuration.secondsValue)::float8)
            """,
            logger: logger)
        var outcome = -1
        for try await row in rows.decode(Int.self) { outcome = row }
        guard outcome >= 0 else { throw TransitionRefused(jobID: lease.jobID, status: .inProgress) }
        return outcome > 0 ? Lease(jobID: lease.jobID, worker: lease.worker, attempt: outcome) : nil
    }

    public func pageTasks(of jobID: UUID) async throws -> PageTasks {
        let rows = try await client.query(
            """
            SELECT count(*)::int8, count(*) FILTER (WHERE state = 'done')::int8, count(*) FILTER (WHERE state = 'running')::int8,
                   count(*) FILTER (WHERE state = 'queued')::int8,
                   (array_agg(page ORDER BY page) FILTER (WHERE state = 'failed'))[1],
                   (array_agg(reason ORDER BY page) FILTER (WHERE state = 'failed'))[1]
            FROM page_tasks WHERE job_id = \(jobID)
            """,
            logger: logger)
        var tasks = PageTasks()
        for try await (total, done, running, queued, failedPage, reason) in rows.decode((Int, Int, Int, Int, Int?, String?).self) {
            tasks.total = total
            tasks.done = done
            tasks.running = running
            tasks.queued = queued
            if let failedPage { tasks.failure = (failedPage, reason ?? "the page failed") }
        }
        return tasks
    }

    /// `renew` for a page's lease: as a job's, on its row of `page_tasks`.
    func renewPage(_ lease: Lease, page: Int, duration: Duration, maxRuntime: Duration, now: Date?) async throws -> Bool {
        let rows = try await client.query(
            """
            WITH mine AS (
                SELECT job_id, page FROM page_tasks
                WHERE job_id = \(lease.jobID) AND page = \(page) AND worker = \(lease.worker) AND attempts = \(lease.attempt)
                  AND state = 'running'
                  AND claimed_at + make_interval(secs => \(maxRuntime.secondsValue)) > coalesce(\(now)::timestamptz, now())
            ), unlocked AS (
                SELECT t.job_id, t.page FROM page_tasks t JOIN mine USING (job_id, page) FOR UPDATE OF t SKIP LOCKED
            ), renewed AS (
                UPDATE page_tasks t SET expires_at = coalesce(\(now)::timestamptz, now()) + make_interval(secs => \(duration.secondsValue))
                FROM unlocked WHERE t.job_id = unlocked.job_id AND t.page = unlocked.page
                RETURNING 1
            )
            SELECT EXISTS (SELECT 1 FROM mine)
            """,
            logger: logger)
        var held = false
        for try await exists in rows.decode(Bool.self) { held = exists }
        return held
    }

    /// `requeue` for a page's lease: queued again, claimable `delay` after `now`, and idle workers woken.
    func requeuePage(_ lease: Lease, page: Int, reason: String, delay: Duration, countAttempt: Bool, now: Date?) async throws {
        let rows = try await client.query(
            """
            WITH requeued AS (
                UPDATE page_tasks SET state = 'queued', worker = NULL, expires_at = NULL, reason = \(Self.storable(reason)),
                    not_before = coalesce(\(now)::timestamptz, now()) + make_interval(secs => \(delay.secondsValue)),
                    queued_at = coalesce(\(now)::timestamptz, now()) + make_interval(secs => \(delay.secondsValue)),
                    attempts = CASE WHEN \(countAttempt) THEN attempts ELSE greatest(attempts - 1, 0) END
                WHERE job_id = \(lease.jobID) AND page = \(page) AND worker = \(lease.worker) AND attempts = \(lease.attempt)
                  AND state = 'running'
                RETURNING 1
            )
            SELECT pg_notify(\(Self.queuedChannel), '') FROM requeued
            """,
            logger: logger)
        var found = false
        for try await _ in rows { found = true }
        if !found { throw TransitionRefused(jobID: lease.jobID, status: .queued) }
    }

    /// The rescuer's pass over pages: those whose lease expired more than `grace` ago are queued again, or fail
    /// once they used `maxAttempts`, and then their job fails. The jobs' rows are locked first, in id order and
    /// skipping those locked elsewhere, then their expired pages (SKIP LOCKED): the order of `end_page` and of a
    /// job's end (the job, then its pages), so a rescue never waits on either in a cycle.
    func rescueExpiredPages(
        maxAttempts: Int, grace: Duration, now: Date?, limit: Int, connection: PostgresConnection
    ) async throws -> (requeued: Int, failed: Int) {
        let candidates = try await connection.query(
            """
            SELECT DISTINCT job_id FROM page_tasks
            WHERE state = 'running'
              AND expires_at + make_interval(secs => \(grace.secondsValue)) < coalesce(\(now)::timestamptz, now())
            LIMIT \(limit)
            """,
            logger: logger)
        var jobs: [UUID] = []
        for try await id in candidates.decode(UUID.self) { jobs.append(id) }
        guard !jobs.isEmpty else { return (0, 0) }
        let rows = try await connection.query(
            """
            WITH locked AS (
                SELECT id FROM jobs WHERE id = ANY(\(jobs)) ORDER BY id FOR UPDATE SKIP LOCKED
            ), expired AS (
                SELECT t.job_id, t.page, t.attempts FROM page_tasks t
                WHERE t.job_id IN (SELECT id FROM locked) AND t.state = 'running'
                  AND t.expires_at + make_interval(secs => \(grace.secondsValue)) < coalesce(\(now)::timestamptz, now())
                ORDER BY t.job_id, t.page
                FOR UPDATE OF t SKIP LOCKED
            )
            UPDATE page_tasks t SET worker = NULL, expires_at = NULL, queued_at = coalesce(\(now)::timestamptz, now()),
                state = CASE WHEN e.attempts >= \(maxAttempts) THEN 'failed' ELSE 'queued' END,
                reason = CASE WHEN e.attempts >= \(maxAttempts)
                              THEN 'worker lost: gave up after ' || e.attempts || ' attempts'
                              ELSE 'worker lost: its lease expired during attempt ' || e.attempts END
            FROM expired e WHERE t.job_id = e.job_id AND t.page = e.page
            RETURNING t.job_id, t.state
            """,
            logger: logger)
        var result = (requeued: 0, failed: 0)
        var failedJobs: Set<UUID> = []
        for try await (job, state) in rows.decode((UUID, String).self) {
            if state == "queued" {
                result.requeued += 1
            } else {
                result.failed += 1
                failedJobs.insert(job)
            }
        }
        if result.requeued > 0 {
            try await connection.query("SELECT pg_notify(\(Self.queuedChannel), '')", logger: logger)
        }
        // A page that used its attempts fails its job, as a page's own failure does.
        if !failedJobs.isEmpty {
            try await connection.query("SELECT fail_jobs_of_failed_pages(\(Array(failedJobs)))", logger: logger)
        }
        return result
    }
}
