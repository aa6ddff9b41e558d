import Foundation
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
}

/// One row of the append-only status log.
public struct JobTransition: Sendable, Equatable {
    public let status: JobStatus
    public let at: Date
    public let worker: String?
    public let reason: String?
}

/// What a worker gets from a claim.
public struct ClaimedJob: Sendable {
    public let id: UUID
    public let contentType: String
    public let optionsJSON: String
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

    public init(
        id: UUID, ownerID: Int64, documentName: String, contentType: String, sizeBytes: Int64,
        sha256: [UInt8], optionsJSON: String, metadataJSON: String
    ) {
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
}

/// A transition that the database refused (an illegal move, or the job is not where the caller thought).
public struct TransitionRefused: Error, CustomStringConvertible {
    public let jobID: UUID
    public let status: JobStatus
    public var description: String { "transition of job \(jobID) to \(status.rawValue) was refused" }
}

/// Every query about jobs. All job SQL of the product lives in this file.
public struct JobStore: Sendable {
    /// Channel notified with an empty payload whenever a job becomes `QUEUED`.
    public static let queuedChannel = "lector_job_queued"
    /// Channel notified with the job's id whenever a job ends (`FINISHED` or `FAILURE`).
    public static let endedChannel = "lector_job_ended"

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Inserts the job and its `QUEUED` transition in one transaction; returns the job's creation time.
    @discardableResult
    public func create(_ job: NewJob) async throws -> Date {
        try await client.withTransaction(logger: logger) { connection -> Date in
            let created = try await connection.query(
                """
                INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, options, metadata)
                VALUES (\(job.id), \(job.ownerID), \(job.documentName), \(job.contentType), \(job.sizeBytes),
                        \(ByteBuffer(bytes: job.sha256)), \(job.optionsJSON)::jsonb, \(job.metadataJSON)::jsonb)
                RETURNING created_at
                """,
                logger: logger
            )
            var createdAt = Date()
            for try await date in created.decode(Date.self) { createdAt = date }
            try await connection.query(
                "INSERT INTO job_transitions (job_id, status) VALUES (\(job.id), \(JobStatus.queued.rawValue))",
                logger: logger
            )
            return createdAt
        }
    }

    /// Claims the oldest queued job for `worker`, or returns nil when none is queued.
    ///
    /// One short transaction: take the queue's table lock, pick the oldest `QUEUED` job through the partial
    /// index, append `IN_PROGRESS`, commit. Claimers are serialised by the lock, and each one's SELECT runs
    /// after the previous claimer committed, so no job is claimed twice. Nothing else happens under the lock.
    public func claimNext(worker: String) async throws -> ClaimedJob? {
        try await client.withTransaction(logger: logger) { connection -> ClaimedJob? in
            try await connection.query("LOCK TABLE job_claim_lock IN EXCLUSIVE MODE", logger: logger)
            let rows = try await connection.query(
                """
                INSERT INTO job_transitions (job_id, status, worker)
                SELECT id, \(JobStatus.inProgress.rawValue), \(worker) FROM jobs
                WHERE status = 'QUEUED'
                ORDER BY created_at, id
                LIMIT 1
                RETURNING job_id
                """,
                logger: logger
            )
            var claimed: UUID?
            for try await id in rows.decode(UUID.self) { claimed = id }
            guard let id = claimed else { return nil }
            let job = try await connection.query(
                "SELECT content_type, options::text FROM jobs WHERE id = \(id)", logger: logger)
            for try await (contentType, options) in job.decode((String, String).self) {
                return ClaimedJob(id: id, contentType: contentType, optionsJSON: options)
            }
            return nil
        }
    }

    /// Appends a terminal transition (`FINISHED` or `FAILURE`) for a job that `worker` holds.
    ///
    /// Refused (throws `TransitionRefused`) unless the job is `IN_PROGRESS` and its latest claim is `worker`'s.
    public func end(_ id: UUID, as status: JobStatus, worker: String, reason: String? = nil) async throws {
        precondition(status.isTerminal, "end(_:as:) takes FINISHED or FAILURE")
        let rows = try await client.query(
            """
            INSERT INTO job_transitions (job_id, status, worker, reason)
            SELECT \(id), \(status.rawValue), \(worker), \(reason)
            WHERE (SELECT worker FROM job_transitions WHERE job_id = \(id) ORDER BY id DESC LIMIT 1) = \(worker)
              AND (SELECT status FROM jobs WHERE id = \(id)) = 'IN_PROGRESS'
            RETURNING id
            """,
            logger: logger
        )
        var inserted = false
        for try await _ in rows { inserted = true }
        if !inserted { throw TransitionRefused(jobID: id, status: status) }
    }

    /// The job and its history, if it exists and belongs to `ownerID`.
    public func job(_ id: UUID, ownerID: Int64) async throws -> (JobRecord, [JobTransition])? {
        let rows = try await client.query(
            """
            SELECT id, owner_id, document_name, content_type, size_bytes, encode(sha256, 'hex'),
                   options::text, metadata::text, created_at, status
            FROM jobs WHERE id = \(id) AND owner_id = \(ownerID)
            """,
            logger: logger
        )
        var record: JobRecord?
        for try await row in rows.decode(
            (UUID, Int64, String, String, Int64, String, String, String, Date, String?).self
        ) {
            record = JobRecord(
                id: row.0, ownerID: row.1, documentName: row.2, contentType: row.3, sizeBytes: row.4,
                sha256Hex: row.5, optionsJSON: row.6, metadataJSON: row.7, createdAt: row.8,
                status: row.9.flatMap(JobStatus.init(rawValue:)) ?? .queued
            )
        }
        guard let record else { return nil }
        return (record, try await history(of: id))
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
            SELECT t.status, t.reason FROM jobs j
            JOIN LATERAL (SELECT status, reason FROM job_transitions
                          WHERE job_id = j.id ORDER BY id DESC LIMIT 1) t ON true
            WHERE j.id = \(id) AND j.owner_id = \(ownerID)
            """,
            logger: logger
        )
        for try await (status, reason) in rows.decode((String, String?).self) {
            guard let status = JobStatus(rawValue: status) else { return nil }
            return JobState(status: status, reason: reason)
        }
        return nil
    }

    /// Answers when the database does (for `/readyz`).
    public func ping() async throws {
        try await client.query("SELECT 1", logger: logger)
    }

    /// Whether a job row exists (whoever owns it).
    public func exists(_ id: UUID) async throws -> Bool {
        let rows = try await client.query("SELECT 1 FROM jobs WHERE id = \(id)", logger: logger)
        for try await _ in rows { return true }
        return false
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
