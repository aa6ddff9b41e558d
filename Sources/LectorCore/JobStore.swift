import Foundation
import LectorModel
import Logging
import PostgresNIO

/// A job as the database holds it.
public struct JobRecord: Sendable {
    public let id: UUID
    public let ownerID: Int64
    public let documentName: String
    public let contentType: String
    public let sizeBytes: Int64
    public let sha256Hex: String
    /// The job's options as stored: a JSON object.
    public let optionsJSON: String
    /// The client's metadata as stored: a JSON object.
    public let metadataJSON: String
    public let createdAt: Date
    public let status: JobStatus
    /// Page progress of the running (or last) attempt, when the worker reported it.
    public var pagesDone: Int?
    public var pagesTotal: Int?
    /// The job this one re-reads with other options (`POST /v1/jobs/{id}/rerun`).
    public var rerunOf: UUID? = nil
    /// 0-9, higher first (db/010).
    public var priority: Int = 0
    /// The jobs it depends on that have not finished yet: while any is left, the job waits in `QUEUED`.
    public var waitingFor: [UUID] = []
    /// The batch it belongs to (`POST /v1/batches`), if any.
    public var batchID: UUID? = nil
    /// The finished job whose results it took instead of reading the document (db/011, reuse).
    public var reusedFrom: UUID? = nil
}

/// One row of the append-only status log.
public struct JobTransition: Sendable, Equatable {
    public let status: JobStatus
    public let at: Date
    public let worker: String?
    public let reason: String?
}

/// A job as the list shows it: what it is, where it stands, and how long it took.
public struct JobSummary: Sendable, Equatable {
    public let id: UUID
    public let documentName: String
    public let contentType: String
    public let sizeBytes: Int64
    public let createdAt: Date
    public let status: JobStatus
    /// The latest transition's reason (a failure's, or why a job was requeued).
    public let reason: String?
    /// When the latest attempt started (nil while the job never ran).
    public let startedAt: Date?
    /// When the job ended (FINISHED or FAILURE).
    public let endedAt: Date?
    /// While IN_PROGRESS: pages read so far and pages in all, as of the worker's latest lease renewal.
    public let pagesDone: Int?
    public let pagesTotal: Int?
}

/// Where a page of `JobStore.list` ends: the last job's creation time (in microseconds, PostgreSQL's precision,
/// so that no job is skipped or repeated) and its id. Clients see it as an opaque string.
public struct JobListCursor: Sendable, Equatable {
    public let createdAtMicros: Int64
    public let id: UUID

    public init(createdAtMicros: Int64, id: UUID) {
        self.createdAtMicros = createdAtMicros
        self.id = id
    }

    /// base64url of "<micros>.<uuid>", without padding.
    public var token: String {
        Data("\(createdAtMicros).\(id.uuidString.lowercased())".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The cursor `token` wrote; nil for anything else.
    public init?(token: String) {
        guard (1...100).contains(token.utf8.count),
            token.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x2D || $0 == 0x5F })
        else { return nil }
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8) else { return nil }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let micros = Int64(parts[0]), micros >= 0, let id = UUID(uuidString: String(parts[1])),
            parts[0] == "\(micros)", parts[1] == id.uuidString.lowercased()
        else { return nil }
        self.init(createdAtMicros: micros, id: id)
    }
}

/// A worker's hold on one attempt of one job. Every write a worker makes about the job names its lease, and
/// is refused once the lease is gone (expired and rescued, or the job ended): that is the fencing.
public struct Lease: Sendable, Equatable {
    public let jobID: UUID
    public let worker: String
    public let attempt: Int
    /// Random, made when the job was claimed: names this claim's staging area. The attempt number alone is not
    /// unique, since a hand-back (`requeue(countAttempt: false)`) returns it to the next claim.
    public let claim: String
    /// The page this lease holds, for a page task (db/014); nil for the job itself. A page's lease is renewed,
    /// requeued and rescued like a job's, and ended by `PageTaskQueue.endPage`; its attempt counts the page's
    /// claims.
    public let page: Int?

    public init(jobID: UUID, worker: String, attempt: Int, claim: String = StagingID.newClaim(), page: Int? = nil) {
        self.jobID = jobID
        self.worker = worker
        self.attempt = attempt
        self.claim = claim
        self.page = page
    }

    /// Where this claim stages its results (`JobStorage.stageResults`).
    public var stage: StagingID { StagingID(attempt: attempt, claim: claim) }
}

/// What a worker gets from a claim.
public struct ClaimedJob: Sendable {
    public let lease: Lease
    /// As stored: the media type and the options' JSON, as submitted (the idempotency fingerprint and reuse
    /// compare those bytes). Read them typed through `documentType` and `options()`.
    public let contentType: String
    public let optionsJSON: String
    public var id: UUID { lease.jobID }

    public init(lease: Lease, contentType: String, optionsJSON: String) {
        self.lease = lease
        self.contentType = contentType
        self.optionsJSON = optionsJSON
    }

    /// The document's type; nil for a media type Lector does not read.
    public var documentType: DocumentType? { DocumentType(mediaType: contentType) }

    /// The job's options, decoded as the API encoded them.
    public func options() throws -> OCROptions {
        try JSONDecoder().decode(OCROptions.self, from: Data(optionsJSON.utf8))
    }
}

/// What one rescuer pass did.
public struct RescueReport: Sendable, Equatable {
    public var requeued: Int
    public var failed: Int
    /// Page tasks (db/014) queued again, and failed at their attempt limit.
    public var pagesRequeued = 0
    public var pagesFailed = 0

    public init(requeued: Int = 0, failed: Int = 0) {
        self.requeued = requeued
        self.failed = failed
    }
}

/// What `lector jobs stats` shows.
public struct QueueStats: Sendable {
    public let counts: [JobStatus: Int]
    public let oldestQueuedAge: Double?
    public let expiredLeases: Int
    public let waitingForRetry: Int
}

/// What the API hands over to create a job.
public struct NewJob: Sendable {
    public var id: UUID
    public var ownerID: Int64
    public var documentName: String
    public var contentType: String
    public var sizeBytes: Int64
    public var sha256: [UInt8]
    public var optionsJSON: String
    public var metadataJSON: String
    /// Where to POST the job's end (checked by `CallbackURLPolicy`); nil for none.
    public var callbackURL: String?
    /// 0-9, higher first within the owner's turn (db/010).
    public var priority: Int
    /// Jobs of the same owner that must finish first; one that fails fails this job (db/010).
    public var dependsOn: [UUID]

    /// The most dependencies one job may name.
    public static let maxDependencies = 100

    public init(
        id: UUID, ownerID: Int64, documentName: String, contentType: String, sizeBytes: Int64,
        sha256: [UInt8], optionsJSON: String, metadataJSON: String, callbackURL: String? = nil,
        priority: Int = 0, dependsOn: [UUID] = []
    ) {
        self.callbackURL = callbackURL
        self.priority = priority
        self.dependsOn = dependsOn
        self.id = id
        self.ownerID = ownerID
        self.documentName = documentName
        self.contentType = contentType
        self.sizeBytes = sizeBytes
        self.sha256 = sha256
        self.optionsJSON = optionsJSON
        self.metadataJSON = metadataJSON
    }
}

/// The state a client asks about: the latest transition of one job.
public struct JobState: Sendable, Equatable {
    public let status: JobStatus
    public let reason: String?

    public init(status: JobStatus, reason: String?) {
        self.status = status
        self.reason = reason
    }
}

/// Thrown by `create` when the idempotency key is already held by a live earlier request.
public struct IdempotencyKeyTaken: Error, CustomStringConvertible {
    public var description: String { "the idempotency key is already in use" }
}

/// A submit named a job to depend on that is no job of its user (or was deleted); nothing was created.
public struct UnknownDependency: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Thrown by the look-ups of one job when the job was deleted (`DELETE /v1/jobs/{id}`): the API answers 410.
public struct JobDeleted: Error, CustomStringConvertible {
    public let jobID: UUID
    public init(jobID: UUID) { self.jobID = jobID }
    public var description: String { "job \(jobID) was deleted" }
}

/// A transition that the database refused (an illegal move, or the job is not where the caller thought).
public struct TransitionRefused: Error, CustomStringConvertible {
    public let jobID: UUID
    public let status: JobStatus
    public var description: String { "transition of job \(jobID) to \(status.rawValue) was refused" }
}

/// One end of a batch that the database refused for a reason of its own (`end_jobs` rolled it back alone and
/// wrote the others); `record` retries it as any failed end.
public struct EndFailed: Error, CustomStringConvertible {
    public let jobID: UUID
    public let message: String
    public var description: String { "the end of job \(jobID) failed: \(message)" }
}

/// Every query about jobs. All job SQL of the product lives in this file and its extensions (JobStore+Batches).
public struct JobStore: Sendable {
    /// Channel notified with an empty payload whenever a job becomes `QUEUED`.
    public static let queuedChannel = "lector_job_queued"
    /// Channel notified with the job's id when the cancel of a running job is requested (`cancel_job`, db/009).
    public static let cancelChannel = "lector_job_cancel"

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger.clampedForDatabase()
    }

    /// Inserts the job and its `QUEUED` transition in one transaction; returns the job's creation time.
    ///
    /// With an idempotency key, the key is recorded in the same transaction; when the user already holds that
    /// key (used less than 24 hours ago), nothing is created and `IdempotencyKeyTaken` is thrown: look the
    /// original up with `idempotentJob`.
    ///
    @discardableResult
    public func create(_ job: NewJob, idempotencyKey: (key: String, fingerprint: [UInt8])? = nil) async throws -> Date {
        try await create(job, idempotencyKey: idempotencyKey, reusing: nil).createdAt
    }

    /// `create`, and with `reusing` the job is finished in the same transaction with that job's results
    /// (`finish_reused`, db/011: its folder must already hold the copies), when that job is still a finished,
    /// undeleted job of the same owner; `reused` says whether it was (otherwise the job is queued as usual).
    public func create(
        _ job: NewJob, idempotencyKey: (key: String, fingerprint: [UInt8])?, reusing: ReusableResult?
    ) async throws -> (createdAt: Date, reused: Bool) {
        // One statement: `create_job` (db/005_job_functions.sql) inserts the job, its QUEUED transition and the
        // key in one transaction, waiting at most 2 s for a concurrent request's key.
        let statement = CreateJobStatement(
            job: job, idempotencyKey: idempotencyKey?.key, fingerprint: idempotencyKey?.fingerprint)
        let createdAt: Date?
        let reused: Bool
        do {
            // In an explicit transaction: the caller answers 202 on this, so it needs COMMIT's own answer
            // (see `committed`).
            (createdAt, reused) = try await committed { connection -> (Date?, Bool) in
                if job.dependsOn.count > 1 { try await Self.lockOutClaims(connection: connection, logger: logger) }
                var createdAt: Date?
                for try await date in try await connection.execute(statement, logger: logger) { createdAt = date }
                var reused = false
                if let reusing, createdAt != nil {
                    reused = try await Self.finishReused(job.id, source: reusing, connection: connection, logger: logger)
                }
                return (createdAt, reused)
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == Self.idempotencyKeyTakenState {
            throw IdempotencyKeyTaken()
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == Self.unknownDependencyState {
            throw UnknownDependency(message: error.serverInfo?[.message] ?? "a dependency is no job of this user")
        }
        guard let createdAt else { throw TransitionRefused(jobID: job.id, status: .queued) }
        return (createdAt, reused)
    }

    /// A failure reason as PostgreSQL's `text` can hold it: without NUL characters, which it refuses (a reason
    /// may quote a hostile document's bytes, through the engine's or poppler's messages).
    public static func storable(_ reason: String) -> String {
        reason.contains("\u{0}") ? reason.replacingOccurrences(of: "\u{0}", with: "") : reason
    }

    /// Waits for the claim in flight and keeps claims out until this transaction ends. `create_job` share-locks a
    /// job's dependencies in id order while a batched claim (`claim_jobs`, `claim_work`) locks the jobs it claims in claim
    /// order: with two or more dependencies the two could wait for each other. Taking the claim's table lock
    /// first (in a mode that only claims and cancels conflict with) orders them: submits with one dependency or
    /// none never take it.
    static func lockOutClaims(connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("LOCK TABLE job_claim_lock IN ROW SHARE MODE", logger: logger)
    }

    /// The SQLSTATE `create_job` raises when a live request holds the idempotency key.
    static let idempotencyKeyTakenState = "LK001"
    /// The SQLSTATE `create_job` raises when a dependency is no job of the owner (db/010).
    static let unknownDependencyState = "LK002"

    /// Claims the oldest claimable queued job for `worker` and gives it a lease, or returns nil.
    ///
    /// One short transaction, run by the server-side function `claim_job` (`db/004_claim_function.sql`) in a
    /// single round trip: take the queue's table lock, pick the oldest `QUEUED` job whose retry time has come
    /// through the partial index, append `IN_PROGRESS`, count the attempt, write the lease, commit. Claimers
    /// are serialised by the lock, and each one's SELECT runs after the previous claimer committed, so no job
    /// is claimed twice. Nothing else happens under the lock.
    ///
    /// `strategy: .skipLocked` replaces the table lock with `FOR UPDATE SKIP LOCKED` on the picked row, for
    /// the side-by-side measurement in BENCHMARKS.md. `now` is the database's clock unless a test passes one.
    public func claimNext(
        worker: String, leaseDuration: Duration, strategy: ClaimStrategy = .tableLock, now: Date? = nil
    ) async throws -> ClaimedJob? {
        let statement = ClaimJobStatement(
            worker: worker, leaseSeconds: leaseDuration.secondsValue, now: now, skipLocked: strategy == .skipLocked)
        var claimed: ClaimedJob?
        // A commit that fails after the row arrived goes unseen (see `committed`), and that is safe here: the
        // job is still queued, another worker claims it, and this attempt's end is refused (fencing).
        for try await (id, attempt, contentType, options) in try await client.execute(statement, logger: logger) {
            claimed = ClaimedJob(lease: Lease(jobID: id, worker: worker, attempt: attempt), contentType: contentType, optionsJSON: options)
        }
        return claimed
    }

    /// The most slots one `claimBatch` may claim for (`claim_work` refuses more).
    public static let maxClaimBatch = 256

    /// Claims for several slots in one transaction and one round trip: `claim_jobs` (db/013) runs `claim_job`
    /// once per worker name under the one table lock, so a batch obeys every rule of a single claim. The jobs
    /// come back in the order of `workers`, the first workers served first.
    public func claimBatch(
        workers: [String], leaseDuration: Duration, strategy: ClaimStrategy = .tableLock, now: Date? = nil
    ) async throws -> [ClaimedJob] {
        precondition(workers.count <= Self.maxClaimBatch, "claimBatch takes at most \(Self.maxClaimBatch) workers")
        guard !workers.isEmpty else { return [] }
        // Also for one worker: claim_work gives the slots that find no job a page task (db/014).
        let statement = ClaimWorkStatement(
            workers: workers, leaseSeconds: leaseDuration.secondsValue, now: now, skipLocked: strategy == .skipLocked)
        var claimed: [ClaimedJob] = []
        for try await (worker, id, attempt, contentType, options, page) in try await client.execute(statement, logger: logger) {
            claimed.append(ClaimedJob(
                lease: Lease(jobID: id, worker: worker, attempt: attempt, page: page), contentType: contentType, optionsJSON: options))
        }
        return claimed
    }

    /// Extends a lease; false when it is no longer held (the job was rescued, or ended) or when the attempt has
    /// run longer than `maxRuntime` (a hung read or a runaway engine must not hold a job forever: the lease is
    /// then left to expire and the rescuer requeues the job).
    ///
    /// Never waits for the lease row's lock: one worker renews all its leases in turn, so one renewal stuck
    /// behind a lock would let the others expire. A locked row is being ended (by this attempt) or rescued; it
    /// counts as held, unrenewed, and the next beat finds out which.
    ///
    public func renew(
        _ lease: Lease, duration: Duration, maxRuntime: Duration = .seconds(86_400), now: Date? = nil
    ) async throws -> Bool {
        if let page = lease.page {
            return try await renewPage(lease, page: page, duration: duration, maxRuntime: maxRuntime, now: now)
        }
        let rows = try await client.query(
            """
            WITH mine AS (
                SELECT job_id FROM job_leases
                WHERE job_id = \(lease.jobID) AND worker = \(lease.worker) AND attempt = \(lease.attempt)
                  AND claimed_at + make_interval(secs => \(maxRuntime.secondsValue)) > coalesce(\(now)::timestamptz, now())
            ), unlocked AS (
                SELECT l.job_id FROM job_leases l JOIN mine USING (job_id) FOR UPDATE OF l SKIP LOCKED
            ), renewed AS (
                UPDATE job_leases l SET expires_at = coalesce(\(now)::timestamptz, now()) + make_interval(secs => \(duration.secondsValue))
                FROM unlocked WHERE l.job_id = unlocked.job_id
                RETURNING 1
            )
            SELECT EXISTS (SELECT 1 FROM mine)
            """,
            logger: logger)
        var held = false
        for try await exists in rows.decode(Bool.self) { held = exists }
        return held
    }

    /// Appends `FINISHED` or `FAILURE` for the job `lease` holds; `TransitionRefused` when this attempt no longer
    /// holds the lease (it expired and the job was rescued, or the job ended).
    ///
    /// `end_job` (db/005_job_functions.sql) locks the lease row and appends the transition; the trigger drops the
    /// lease. Without `beforeCommit`, that is the whole end, one statement. With it (the worker moves its result
    /// files into place there), one transaction: lock the lease row, run `beforeCommit`, `end_job`, commit; so a
    /// stale attempt can never overwrite a newer one's files, and the transition's time is taken after the files
    /// are in place (a folder's fsync can take tens of milliseconds on a busy disk).
    public func end(
        _ lease: Lease, as status: JobStatus, reason: String? = nil, pages: Int? = nil, engineVersion: String? = nil,
        beforeCommit: (@Sendable () async throws -> Void)? = nil
    ) async throws {
        precondition(status.isTerminal, "end(_:as:) takes FINISHED or FAILURE")
        precondition(lease.page == nil, "a page ends with endPage")
        let statement = EndJobStatement(lease: lease, status: status, reason: reason)
        guard beforeCommit != nil || pages != nil || engineVersion != nil else {
            var ended = false
            for try await row in try await client.execute(statement, logger: logger) { ended = row }
            if !ended { throw TransitionRefused(jobID: lease.jobID, status: status) }
            return
        }
        try await transaction { connection in
            try await Self.lockLease(lease, status: status, connection: connection, logger: logger)
            try await beforeCommit?()
            if pages != nil || engineVersion != nil {
                // The final progress, with the end: a job faster than the progress interval still shows it. And
                // the engine that made the results, for reuse (db/011).
                try await connection.query(
                    """
                    UPDATE jobs SET pages_done = coalesce(\(pages), pages_done), pages_total = coalesce(\(pages), pages_total),
                        engine_version = coalesce(\(engineVersion), engine_version)
                    WHERE id = \(lease.jobID)
                    """, logger: logger)
            }
            var ended = false
            for try await row in try await connection.execute(statement, logger: logger) { ended = row }
            if !ended { throw TransitionRefused(jobID: lease.jobID, status: status) }
        }
    }

    /// Ends several jobs in one transaction: the leases locked in one statement (in job order), every held
    /// request's `beforeCommit` run side by side, then every ready end in one `end_jobs` call (db/013: the jobs'
    /// rows locked in id order, each end in its own subtransaction), then one commit (one WAL flush, one NOTIFY
    /// lock: BENCHMARKS.md, FLEET). A request whose lease is gone fails with `TransitionRefused`, one whose
    /// closure throws with its error, and one the database refuses with `EndFailed`; none of those is written,
    /// and the others are. An error of the transaction itself (the connection, the commit) fails every request.
    public func endBatch(_ requests: [EndRequest]) async -> [Result<Void, any Error>] {
        if requests.count == 1, let request = requests.first {
            do {
                try await end(
                    request.lease, as: request.status, reason: request.reason, pages: request.pages,
                    engineVersion: request.engineVersion, beforeCommit: request.beforeCommit)
                return [.success(())]
            } catch {
                return [.failure(error)]
            }
        }
        var results = [Result<Void, any Error>](repeating: .success(()), count: requests.count)
        do {
            try await transaction { connection in
                let ids = requests.map(\.lease.jobID), workers = requests.map(\.lease.worker)
                let attempts = requests.map { Int32(clamping: $0.lease.attempt) }
                let rows = try await connection.query(
                    """
                    SELECT l.job_id, l.worker, l.attempt FROM job_leases l
                    JOIN unnest(\(ids)::uuid[], \(workers)::text[], \(attempts)::int4[]) AS r(job_id, worker, attempt)
                      ON l.job_id = r.job_id AND l.worker = r.worker AND l.attempt = r.attempt
                    ORDER BY l.job_id
                    FOR UPDATE OF l
                    """, logger: logger)
                // Fencing is by (job, worker, attempt), as in `lockLease`.
                struct Holder: Hashable { let id: UUID, worker: String, attempt: Int }
                var holders: Set<Holder> = []
                for try await (id, worker, attempt) in rows.decode((UUID, String, Int32).self) {
                    holders.insert(Holder(id: id, worker: worker, attempt: Int(attempt)))
                }
                let held = requests.indices.filter { index in
                    let lease = requests[index].lease
                    return holders.contains(Holder(id: lease.jobID, worker: lease.worker, attempt: lease.attempt))
                }
                // The files of every held end, side by side (each closure bounds itself: the worker's commit deadline).
                let outcomes = await withTaskGroup(of: (Int, (any Error)?).self) { group in
                    for index in held {
                        let request = requests[index]
                        group.addTask {
                            do {
                                try await request.beforeCommit?()
                                return (index, nil)
                            } catch {
                                return (index, error)
                            }
                        }
                    }
                    var outcomes: [Int: any Error] = [:]
                    for await (index, error) in group { if let error { outcomes[index] = error } }
                    return outcomes
                }
                var ready: [Int] = []
                for (index, request) in requests.enumerated() {
                    if !held.contains(index) {
                        results[index] = .failure(TransitionRefused(jobID: request.lease.jobID, status: request.status))
                    } else if let error = outcomes[index] {
                        results[index] = .failure(error)
                    } else {
                        ready.append(index)
                    }
                }
                guard !ready.isEmpty else { return }
                // Every ready end in one statement, each in its own subtransaction (db/013 `end_jobs`).
                let ends = ready.map { requests[$0] }
                struct End: Encodable {
                    let job: UUID, worker: String, attempt: Int, status: String, reason: String?, pages: Int?, engine: String?
                }
                let json = try JSONEncoder().encode(ends.map {
                    End(job: $0.lease.jobID, worker: $0.lease.worker, attempt: $0.lease.attempt, status: $0.status.rawValue,
                        reason: $0.reason.map(Self.storable), pages: $0.pages, engine: $0.engineVersion)
                })
                let answered = try await connection.query(
                    "SELECT job_id, ended, failure FROM end_jobs(\(String(decoding: json, as: UTF8.self))::jsonb)", logger: logger)
                var answers: [UUID: (ended: Bool, failure: String?)] = [:]
                for try await (id, ended, failure) in answered.decode((UUID, Bool, String?).self) { answers[id] = (ended, failure) }
                for index in ready {
                    let request = requests[index]
                    switch answers[request.lease.jobID] {
                    case (true, _)?:
                        break
                    case (false, let failure?)?:
                        results[index] = .failure(EndFailed(jobID: request.lease.jobID, message: failure))
                    default:
                        results[index] = .failure(TransitionRefused(jobID: request.lease.jobID, status: request.status))
                    }
                }
            }
        } catch {
            return requests.map { _ in .failure(error) }
        }
        return results
    }

    /// Gives the job back to the queue: `QUEUED` again with `reason`, claimable `delay` from now (the
    /// database's clock, like every other time the queue compares). `countAttempt: false` (a graceful
    /// hand-back) returns the attempt, so shutdowns never use up retries.
    public func requeue(
        _ lease: Lease, reason: String, delay: Duration = .zero, countAttempt: Bool = true, now: Date? = nil
    ) async throws {
        if let page = lease.page {
            return try await requeuePage(lease, page: page, reason: reason, delay: delay, countAttempt: countAttempt, now: now)
        }
        try await transaction { connection in
            try await Self.lockLease(lease, status: .queued, connection: connection, logger: logger)
            try await connection.query(
                """
                INSERT INTO job_transitions (job_id, status, worker, reason)
                VALUES (\(lease.jobID), \(JobStatus.queued.rawValue), \(lease.worker), \(Self.storable(reason)))
                """,
                logger: logger)
            try await connection.query(
                """
                UPDATE jobs SET not_before = coalesce(\(now)::timestamptz, now()) + make_interval(secs => \(delay.secondsValue)),
                    attempts = CASE WHEN \(countAttempt) THEN attempts ELSE greatest(attempts - 1, 0) END
                WHERE id = \(lease.jobID)
                """,
                logger: logger)
        }
    }

    /// Locks the attempt's lease row for the rest of the transaction; `TransitionRefused` when it is gone.
    private static func lockLease(_ lease: Lease, status: JobStatus, connection: PostgresConnection, logger: Logger) async throws {
        var found = false
        for try await _ in try await connection.execute(LockLeaseStatement(lease: lease), logger: logger) { found = true }
        if !found { throw TransitionRefused(jobID: lease.jobID, status: status) }
    }

    /// Creates job `id` from the stored document of job `source` of `ownerID`, with new options (and callback URL,
    /// when given; otherwise the first job's), linked to it (`rerun_job`, db/009_cancel_delete.sql): the row and
    /// its `QUEUED` transition in one statement. Returns the new job's creation time; nil when `source` is no job
    /// of this owner (nothing is written). Its folder must be in place first, as for `create`.
    public func rerun(_ id: UUID, of source: UUID, ownerID: Int64, optionsJSON: String, callbackURL: String?) async throws -> Date? {
        try await committed { connection -> Date? in
            let rows = try await connection.query(
                "SELECT rerun_job(\(id), \(source), \(ownerID), \(optionsJSON), \(callbackURL))", logger: logger)
            var createdAt: Date?
            for try await date in rows.decode(Date?.self) { createdAt = date }
            return createdAt
        }
    }

    /// What `cancel` did.
    public enum CancelOutcome: String, Sendable {
        /// The job was queued and is now `FAILURE` "cancelled".
        case cancelled
        /// The job is running: the request is recorded and announced to its worker, which ends it.
        case requested
        /// The job had ended already; nothing was written.
        case ended
        /// The job was deleted.
        case gone
    }

    /// What `delete` did.
    public enum DeleteOutcome: String, Sendable {
        /// The job's metadata is cleared and it is marked deleted (a queued job was cancelled first): remove its
        /// folder now.
        case deleted
        /// The job is running: refused (cancel it first).
        case running
        /// It was deleted before.
        case gone
    }

    /// Marks up to `limit` ended jobs created more than `days` days before `now` deleted, as `delete` does (the row
    /// and history stay; document name, options, metadata and callback URL are cleared), and returns their ids:
    /// the caller removes their folders. One statement; rows are taken with `FOR UPDATE SKIP LOCKED`, so
    /// processes running this at once never take the same job, and a job another transaction holds (being
    /// deleted by its owner) is left for the next pass. Reads `jobs_retention_idx` (db/009).
    public func expireEnded(olderThanDays days: Int, now: Date? = nil, limit: Int = 100) async throws -> [UUID] {
        // Committed before the caller removes the folders (see `committed`).
        try await committed { connection -> [UUID] in
            let rows = try await connection.query(
                """
                WITH old AS (
                    SELECT id FROM jobs
                    WHERE deleted_at IS NULL AND status IN ('FINISHED', 'FAILURE')
                      AND created_at < coalesce(\(now)::timestamptz, now()) - make_interval(days => \(days)::int)
                    ORDER BY created_at
                    LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE jobs j SET deleted_at = coalesce(\(now)::timestamptz, now()), document_name = '', options = '{}',
                    metadata = '{}', callback_url = NULL
                FROM old WHERE j.id = old.id
                RETURNING j.id
                """,
                logger: logger)
            var ids: [UUID] = []
            for try await id in rows.decode(UUID.self) { ids.append(id) }
            return ids
        }
    }

    /// Deletes a job of `ownerID` (`delete_job`, db/009_cancel_delete.sql): the row and its transitions stay,
    /// the document name, options, metadata and callback URL are cleared, `deleted_at` is set; a queued job is
    /// cancelled in the same transaction, under the claim's lock. The caller removes the folder afterwards (a
    /// crash in between leaves an orphan folder, which `StorageSweeper` removes: `existingJobIDs` does not count
    /// deleted jobs). nil when there is no such job of this owner.
    public func delete(_ id: UUID, ownerID: Int64) async throws -> DeleteOutcome? {
        // Committed before the caller removes the folder (see `committed`).
        try await committed { connection -> DeleteOutcome? in
            let rows = try await connection.query("SELECT delete_job(\(id), \(ownerID))", logger: logger)
            var outcome: DeleteOutcome?
            for try await value in rows.decode(String?.self) { outcome = value.flatMap(DeleteOutcome.init(rawValue:)) }
            return outcome
        }
    }

    /// The reason of a cancelled job's `FAILURE`.
    public static let cancelledReason = "cancelled"

    /// Cancels a job of `ownerID` (`cancel_job`, db/009_cancel_delete.sql: under the claim's table lock, so a
    /// cancel and a claim of the same job are serialised); nil when there is no such job of this owner.
    public func cancel(_ id: UUID, ownerID: Int64) async throws -> CancelOutcome? {
        // Committed before the client is told (see `committed`).
        try await committed { connection -> CancelOutcome? in
            let rows = try await connection.query("SELECT cancel_job(\(id), \(ownerID))", logger: logger)
            var outcome: CancelOutcome?
            for try await value in rows.decode(String?.self) { outcome = value.flatMap(CancelOutcome.init(rawValue:)) }
            return outcome
        }
    }

    /// Which of `ids` have a cancel request: the worker asks at every heartbeat, for the jobs it runs, in case it
    /// missed the NOTIFY.
    public func cancelRequested(_ ids: [UUID]) async throws -> Set<UUID> {
        guard !ids.isEmpty else { return [] }
        let rows = try await client.query(
            "SELECT id FROM jobs WHERE id = ANY(\(ids)) AND cancel_requested_at IS NOT NULL AND status = 'IN_PROGRESS'",
            logger: logger)
        var found: Set<UUID> = []
        for try await id in rows.decode(UUID.self) { found.insert(id) }
        return found
    }

    /// Requeues jobs whose lease expired ("worker lost"), or fails them once `maxAttempts` attempts were made.
    ///
    /// Safe to run in every worker at once: each pass locks the expired leases it handles with
    /// `FOR UPDATE SKIP LOCKED`, so two rescuers never handle the same job, and a worker that is ending its job
    /// right now (it holds the lease row) is skipped.
    ///
    /// `grace` is added to every expiry: after a database outage, live workers get one heartbeat to renew
    /// before their jobs count as lost.
    public func rescueExpired(
        maxAttempts: Int, grace: Duration = .zero, now: Date? = nil, limit: Int = 500
    ) async throws -> RescueReport {
        try await transaction { connection -> RescueReport in
            let rows = try await connection.query(
                """
                WITH expired AS (
                    SELECT job_id, attempt FROM job_leases
                    WHERE expires_at + make_interval(secs => \(grace.secondsValue)) < coalesce(\(now)::timestamptz, now())
                    ORDER BY expires_at
                    LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED
                )
                INSERT INTO job_transitions (job_id, status, reason)
                SELECT job_id,
                       CASE WHEN attempt >= \(maxAttempts) THEN 'FAILURE' ELSE 'QUEUED' END,
                       CASE WHEN attempt >= \(maxAttempts)
                            THEN 'worker lost: gave up after ' || attempt || ' attempts'
                            ELSE 'worker lost: its lease expired during attempt ' || attempt END
                FROM expired
                RETURNING status
                """,
                logger: logger)
            var report = RescueReport()
            for try await status in rows.decode(String.self) {
                if status == JobStatus.queued.rawValue { report.requeued += 1 } else { report.failed += 1 }
            }
            let pages = try await rescueExpiredPages(
                maxAttempts: maxAttempts, grace: grace, now: now, limit: limit, connection: connection)
            report.pagesRequeued = pages.requeued
            report.pagesFailed = pages.failed
            return report
        }
    }

    /// Counts by status, the age of the oldest queued job (waiting for a retry or not), expired leases and jobs
    /// waiting for their retry time.
    public func stats(now: Date? = nil) async throws -> QueueStats {
        let counts = try await countsByStatus()
        let rows = try await client.query(
            """
            SELECT
              (SELECT extract(epoch FROM coalesce(\(now)::timestamptz, now()) - min(created_at))::float8
                 FROM jobs WHERE status = 'QUEUED'),
              (SELECT count(*) FROM job_leases WHERE expires_at < coalesce(\(now)::timestamptz, now()))::int8,
              (SELECT count(*) FROM jobs WHERE status = 'QUEUED' AND not_before > coalesce(\(now)::timestamptz, now()))::int8
            """,
            logger: logger)
        for try await (age, expired, waiting) in rows.decode((Double?, Int, Int).self) {
            return QueueStats(counts: counts, oldestQueuedAge: age, expiredLeases: expired, waitingForRetry: waiting)
        }
        return QueueStats(counts: counts, oldestQueuedAge: nil, expiredLeases: 0, waitingForRetry: 0)
    }

    /// The job and its history, if it exists and belongs to `ownerID`.
    public func job(_ id: UUID, ownerID: Int64) async throws -> (JobRecord, [JobTransition])? {
        let rows = try await client.query(
            """
            SELECT id, owner_id, document_name, content_type, size_bytes, encode(sha256, 'hex'),
                   options::text, metadata::text, created_at, status, pages_done, pages_total, rerun_of,
                   deleted_at IS NOT NULL, priority::int8,
                   CASE WHEN status = 'QUEUED' AND blocked_by > 0 THEN ARRAY(
                       SELECT d.depends_on FROM job_dependencies d JOIN jobs w ON w.id = d.depends_on
                       WHERE d.job_id = jobs.id AND w.status IS DISTINCT FROM 'FINISHED' ORDER BY 1)
                   ELSE '{}'::uuid[] END,
                   batch_id, reused_from
            FROM jobs WHERE id = \(id) AND owner_id = \(ownerID)
            """,
            logger: logger
        )
        var record: JobRecord?
        for try await row in rows.decode(
            (UUID, Int64, String, String, Int64, String, String, String, Date, String?, Int?, Int?, UUID?, Bool, Int64, [UUID], UUID?, UUID?).self
        ) {
            if row.13 { throw JobDeleted(jobID: id) }
            record = JobRecord(
                id: row.0, ownerID: row.1, documentName: row.2, contentType: row.3, sizeBytes: row.4,
                sha256Hex: row.5, optionsJSON: row.6, metadataJSON: row.7, createdAt: row.8,
                status: row.9.flatMap(JobStatus.init(rawValue:)) ?? .queued, pagesDone: row.10, pagesTotal: row.11,
                rerunOf: row.12, priority: Int(row.14), waitingFor: row.15, batchID: row.16, reusedFrom: row.17
            )
        }
        guard let record else { return nil }
        return (record, try await history(of: id))
    }

    /// One page of a user's jobs, newest first (`created_at`, then id, both descending), for `GET /v1/jobs`.
    ///
    /// Keyset pagination: `after` is the last job of the previous page, so a page costs the same however deep
    /// it is, and jobs created meanwhile never shift it. Reads `jobs_owner_idx`; `status` filters on the
    /// current status. Fetches `limit + 1` rows to know whether another page follows.
    public func list(
        ownerID: Int64, status: JobStatus? = nil, after: JobListCursor? = nil, limit: Int
    ) async throws -> (jobs: [JobSummary], next: JobListCursor?) {
        let rows = try await client.query(
            """
            SELECT j.id, j.document_name, j.content_type, j.size_bytes, j.created_at,
                   (extract(epoch FROM j.created_at) * 1000000)::int8, j.status,
                   last.reason, started.at, CASE WHEN j.status IN ('FINISHED', 'FAILURE') THEN last.at END,
                   j.pages_done, j.pages_total
            FROM jobs j
            JOIN LATERAL (SELECT reason, at FROM job_transitions
                          WHERE job_id = j.id ORDER BY id DESC LIMIT 1) last ON true
            LEFT JOIN LATERAL (SELECT at FROM job_transitions
                               WHERE job_id = j.id AND status = 'IN_PROGRESS' ORDER BY id DESC LIMIT 1) started ON true
            WHERE j.owner_id = \(ownerID) AND j.deleted_at IS NULL
              AND (\(status?.rawValue)::text IS NULL OR j.status = \(status?.rawValue))
              AND (\(after?.createdAtMicros)::int8 IS NULL
                   OR (j.created_at, j.id) < ('epoch'::timestamptz + \(after?.createdAtMicros)::int8 * interval '1 microsecond',
                                             \(after?.id)::uuid))
            ORDER BY j.created_at DESC, j.id DESC
            LIMIT \(limit + 1)
            """,
            logger: logger)
        var jobs: [JobSummary] = []
        var cursors: [JobListCursor] = []
        for try await row in rows.decode((UUID, String, String, Int64, Date, Int64, String?, String?, Date?, Date?, Int32?, Int32?).self) {
            var pages: (done: Int, total: Int)?
            if let done = row.10, let total = row.11 { pages = (Int(done), Int(total)) }
            jobs.append(JobSummary(
                id: row.0, documentName: row.1, contentType: row.2, sizeBytes: row.3, createdAt: row.4,
                status: row.6.flatMap(JobStatus.init(rawValue:)) ?? .queued, reason: row.7, startedAt: row.8, endedAt: row.9,
                pagesDone: pages?.done, pagesTotal: pages?.total))
            cursors.append(JobListCursor(createdAtMicros: row.5, id: row.0))
        }
        guard jobs.count > limit else { return (jobs, nil) }
        return (Array(jobs.prefix(limit)), cursors[limit - 1])
    }

    /// Every transition of a job, oldest first.
    public func history(of id: UUID) async throws -> [JobTransition] {
        let rows = try await client.query(
            "SELECT status, at, worker, reason FROM job_transitions WHERE job_id = \(id) ORDER BY id",
            logger: logger
        )
        var history: [JobTransition] = []
        for try await (status, at, worker, reason) in rows.decode((String, Date, String?, String?).self) {
            guard let status = JobStatus(rawValue: status) else { continue }
            history.append(JobTransition(status: status, at: at, worker: worker, reason: reason))
        }
        return history
    }

    /// The latest transition of a job that belongs to `ownerID`: one indexed lookup, for the result route.
    public func state(of id: UUID, ownerID: Int64) async throws -> JobState? {
        let rows = try await client.query(
            """
            SELECT t.status, t.reason, j.deleted_at IS NOT NULL FROM jobs j
            JOIN LATERAL (SELECT status, reason FROM job_transitions
                          WHERE job_id = j.id ORDER BY id DESC LIMIT 1) t ON true
            WHERE j.id = \(id) AND j.owner_id = \(ownerID)
            """,
            logger: logger
        )
        for try await (status, reason, deleted) in rows.decode((String, String?, Bool).self) {
            if deleted { throw JobDeleted(jobID: id) }
            guard let status = JobStatus(rawValue: status) else { return nil }
            return JobState(status: status, reason: reason)
        }
        return nil
    }

    /// Answers when the database does (for `/readyz`).
    /// A job's transitions after the transition `after` (all with nil), as events, and its owner and progress;
    /// nil when the job does not exist or belongs to someone else. For a subscriber that starts or resumes.
    public func events(of id: UUID, ownerID: Int64, after: Int64?) async throws -> (events: [JobEvent], progress: (done: Int, total: Int)?)? {
        let job = try await client.query(
            "SELECT pages_done, pages_total, deleted_at IS NOT NULL FROM jobs WHERE id = \(id) AND owner_id = \(ownerID)",
            logger: logger)
        var found = false
        var progress: (Int, Int)?
        for try await (done, total, deleted) in job.decode((Int?, Int?, Bool).self) {
            if deleted { throw JobDeleted(jobID: id) }
            found = true
            if let done, let total { progress = (done, total) }
        }
        guard found else { return nil }
        let rows = try await client.query(
            """
            SELECT id, status, at, reason FROM job_transitions
            WHERE job_id = \(id) AND id > \(after ?? 0) ORDER BY id
            """,
            logger: logger)
        var events: [JobEvent] = []
        for try await (transition, status, at, reason) in rows.decode((Int64, String, Date, String?).self) {
            guard let status = JobStatus(rawValue: status) else { continue }
            events.append(.transition(id: transition, job: id, owner: ownerID, status: status, at: at, reason: reason))
        }
        return (events, progress)
    }

    /// Records page progress for the attempt that holds the lease, and announces it (`job_progress`, db/007);
    /// false when the lease is gone.
    @discardableResult
    public func reportProgress(_ lease: Lease, done: Int, total: Int) async throws -> Bool {
        // A page's progress is the job's count of pages read, written by `end_page`.
        guard lease.page == nil else { return true }
        let rows = try await client.query(
            "SELECT job_progress(\(lease.jobID), \(lease.worker), \(lease.attempt)::int, \(done)::int, \(total)::int)", logger: logger)
        for try await held in rows.decode(Bool.self) { return held }
        return false
    }

    /// Queued and running jobs, and the oldest queued job's age: the partial index of queued jobs and the
    /// lease table only, so the cost follows the queue's length, not the history's.
    public func queueDepth() async throws -> LectorMetrics.QueueDepth {
        let rows = try await client.query(
            """
            SELECT (SELECT count(*) FROM jobs WHERE status = 'QUEUED' AND blocked_by = 0)::int8,
                   (SELECT count(*) FROM job_leases)::int8,
                   (SELECT extract(epoch FROM now() - min(created_at))::float8 FROM jobs WHERE status = 'QUEUED' AND blocked_by = 0),
                   (SELECT count(*) FROM jobs WHERE status = 'QUEUED' AND blocked_by > 0)::int8,
                   (SELECT count(*) FROM page_tasks WHERE state = 'queued')::int8,
                   (SELECT count(*) FROM page_tasks WHERE state = 'running')::int8
            """,
            logger: logger)
        // Blocked jobs (db/010) are counted apart: no worker can take them, so they must not scale the fleet
        // (KEDA's query leaves them out too) nor age the queue. Page tasks (db/014) through their partial indexes.
        for try await (queued, running, age, blocked, pagesQueued, pagesRunning) in rows.decode((Int, Int, Double?, Int, Int, Int).self) {
            var depth = LectorMetrics.QueueDepth(queued: queued, running: running, oldestQueuedAge: age, blocked: blocked)
            depth.pagesQueued = pagesQueued
            depth.pagesRunning = pagesRunning
            return depth
        }
        return LectorMetrics.QueueDepth(queued: 0, running: 0, oldestQueuedAge: nil)
    }

    /// Which of `ids` have a job row that is not deleted (for the sweeper: a folder without one is an orphan).
    public func existingJobIDs(_ ids: [UUID]) async throws -> Set<UUID> {
        guard !ids.isEmpty else { return [] }
        let rows = try await client.query("SELECT id FROM jobs WHERE id = ANY(\(ids)) AND deleted_at IS NULL", logger: logger)
        var found: Set<UUID> = []
        for try await id in rows.decode(UUID.self) { found.insert(id) }
        return found
    }

    public func ping() async throws {
        try await client.query("SELECT 1", logger: logger)
    }

    /// Runs `body` in an explicit transaction and returns once COMMIT has answered: for writes the caller acts on
    /// (answers 202, tells the client a job is cancelled, removes a folder).
    ///
    /// A statement on its own is committed when PostgreSQL reaches the protocol's Sync, after it has sent the
    /// statement's CommandComplete, and PostgresNIO reports success at CommandComplete. A commit that fails in
    /// between (the server shutting down: the chaos run saw 202 answers for jobs that never existed) goes unseen.
    /// An explicit COMMIT is answered only after it committed. Two more round trips; the hot paths (claim,
    /// renew, end) stay single statements, because there an unseen rollback is safe: the job is still queued or
    /// still leased, and the rescuer and fencing take it from there.
    func committed<T: Sendable>(_ body: (PostgresConnection) async throws -> sending T) async throws -> T {
        try await transaction(body)
    }

    /// `withTransaction`, rethrowing the closure's own error (PostgresNIO wraps it in `PostgresTransactionError`)
    /// so that callers can match `TransitionRefused`.
    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> sending T) async throws -> T {
        do {
            return try await client.withTransaction(logger: logger, body)
        } catch let error as PostgresTransactionError {
            if let inner = error.closureError { throw inner }
            throw error
        }
    }

    /// The job an idempotency key of `ownerID` points to, if used less than 24 hours ago: its id, status,
    /// creation time, and whether it was made by a request with this fingerprint.
    public func idempotentJob(key: String, ownerID: Int64, fingerprint: [UInt8]) async throws
        -> (id: UUID, status: JobStatus, createdAt: Date, sameDocument: Bool)?
    {
        let rows = try await client.query(
            """
            SELECT j.id, j.status, j.created_at, i.request_sha256 = \(ByteBuffer(bytes: fingerprint))
            FROM idempotency_keys i JOIN jobs j ON j.id = i.job_id
            WHERE i.user_id = \(ownerID) AND i.key = \(key) AND i.created_at >= now() - interval '24 hours'
            """,
            logger: logger)
        for try await (id, status, createdAt, same) in rows.decode((UUID, String?, Date, Bool).self) {
            return (id, status.flatMap(JobStatus.init(rawValue:)) ?? .queued, createdAt, same)
        }
        return nil
    }

    /// Deletes idempotency keys older than 24 hours; returns how many.
    @discardableResult
    public func purgeIdempotencyKeys(now: Date? = nil) async throws -> Int {
        let rows = try await client.query(
            """
            WITH old AS (SELECT user_id, key FROM idempotency_keys
                         WHERE created_at < coalesce(\(now)::timestamptz, now()) - interval '24 hours' LIMIT 10000)
            DELETE FROM idempotency_keys i USING old WHERE i.user_id = old.user_id AND i.key = old.key
            RETURNING 1
            """,
            logger: logger)
        var count = 0
        for try await _ in rows { count += 1 }
        return count
    }

    /// Counts of jobs by current status.
    public func countsByStatus() async throws -> [JobStatus: Int] {
        let rows = try await client.query(
            "SELECT status, count(*) FROM jobs WHERE status IS NOT NULL GROUP BY status", logger: logger)
        var counts: [JobStatus: Int] = [:]
        for try await (status, count) in rows.decode((String, Int).self) {
            if let status = JobStatus(rawValue: status) { counts[status] = count }
        }
        return counts
    }
}
