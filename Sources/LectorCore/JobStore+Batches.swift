import Foundation
import LectorModel
import Logging
import PostgresNIO

/// A finished job whose results a new, identical job may take (db/011, "Reuse").
public struct ReusableResult: Sendable, Equatable {
    public let jobID: UUID
    /// The engine identity that made the results; the new job records it too.
    public let engineVersion: String
    /// Its page count, for the page pictures to copy.
    public let pages: Int?
}

/// A batch as `GET /v1/batches/{id}` shows it: its jobs in the order of the request.
public struct BatchRecord: Sendable {
    public struct Job: Sendable, Equatable {
        public let id: UUID
        public let position: Int
        public let documentName: String
        public let status: JobStatus
        /// The latest transition's reason (a failure's).
        public let reason: String?
        public let pagesDone: Int?
        public let pagesTotal: Int?
        public let deleted: Bool
    }

    public let id: UUID
    public let createdAt: Date
    public let jobs: [Job]

    /// Whether every job has ended (or was deleted).
    public var ended: Bool { jobs.allSatisfy { $0.deleted || $0.status.isTerminal } }
}

extension JobStore {
    /// The most jobs one batch may hold.
    public static let maxBatchJobs = 1000

    /// Creates a batch and its jobs in one transaction and one statement (`create_batch`, db/011): every job, with
    /// its `QUEUED` transition, or none. A job with a `reusing` entry is finished at once with those results (its
    /// folder must already hold the copies) when the source is still a finished, undeleted job of the owner.
    /// Returns the creation time and the jobs that were reused. Throws `UnknownDependency` as `create` does.
    public func createBatch(
        _ id: UUID, ownerID: Int64, jobs: [NewJob], reusing: [UUID: ReusableResult] = [:]
    ) async throws -> (createdAt: Date, reused: Set<UUID>) {
        precondition(!jobs.isEmpty && jobs.count <= Self.maxBatchJobs)
        // Options, metadata, callback, priority and dependencies are the batch's, passed once for all its jobs.
        let shared = jobs[0]
        precondition(jobs.allSatisfy {
            $0.ownerID == ownerID && $0.optionsJSON == shared.optionsJSON && $0.metadataJSON == shared.metadataJSON
                && $0.callbackURL == shared.callbackURL && $0.priority == shared.priority && $0.dependsOn == shared.dependsOn
        }, "a batch's jobs share their options, metadata, callback, priority and dependencies")
        let sources = jobs.map { reusing[$0.id]?.jobID.uuidString.lowercased() ?? "" }
        let engines = jobs.map { reusing[$0.id]?.engineVersion ?? "" }
        do {
            return try await committed { connection -> (Date, Set<UUID>) in
                if shared.dependsOn.count > 1 { try await Self.lockOutClaims(connection: connection, logger: logger) }
                var createdAt = Date()
                for try await date in try await connection.query(
                    """
                    SELECT create_batch(\(id), \(ownerID), \(jobs.map(\.id)), \(jobs.map(\.documentName)),
                        \(jobs.map(\.contentType)), \(jobs.map(\.sizeBytes)), \(jobs.map { $0.sha256.hexString }),
                        \(shared.optionsJSON), \(shared.metadataJSON), \(shared.callbackURL), \(Int16(clamping: shared.priority)),
                        \(shared.dependsOn), \(sources), \(engines))
                    """,
                    logger: logger
                ).decode(Date.self) { createdAt = date }
                var reused: Set<UUID> = []
                if !reusing.isEmpty {
                    for try await job in try await connection.query(
                        "SELECT id FROM jobs WHERE batch_id = \(id) AND reused_from IS NOT NULL", logger: logger
                    ).decode(UUID.self) { reused.insert(job) }
                }
                return (createdAt, reused)
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == Self.unknownDependencyState {
            throw UnknownDependency(message: error.serverInfo?[.message] ?? "a dependency is no job of this user")
        }
    }

    /// The batch and its jobs in request order; nil when there is no such batch of `ownerID` (nil: of anyone, for
    /// a signed archive link).
    public func batch(_ id: UUID, ownerID: Int64?) async throws -> BatchRecord? {
        var found: (Date, Int64)?
        for try await row in try await client.query(
            "SELECT created_at, owner_id FROM batches WHERE id = \(id) AND (\(ownerID)::int8 IS NULL OR owner_id = \(ownerID))",
            logger: logger
        ).decode((Date, Int64).self) { found = row }
        guard let (createdAt, owner) = found else { return nil }
        let rows = try await client.query(
            """
            SELECT j.id, j.batch_position, j.document_name, j.status, last.reason, j.pages_done, j.pages_total,
                   j.deleted_at IS NOT NULL
            FROM jobs j
            JOIN LATERAL (SELECT reason FROM job_transitions WHERE job_id = j.id ORDER BY id DESC LIMIT 1) last ON true
            WHERE j.batch_id = \(id) AND j.owner_id = \(owner)
            ORDER BY j.batch_position
            """,
            logger: logger)
        var jobs: [BatchRecord.Job] = []
        for try await row in rows.decode((UUID, Int, String, String?, String?, Int?, Int?, Bool).self) {
            jobs.append(BatchRecord.Job(
                id: row.0, position: row.1, documentName: row.2, status: row.3.flatMap(JobStatus.init(rawValue:)) ?? .queued,
                reason: row.4, pagesDone: row.5, pagesTotal: row.6, deleted: row.7))
        }
        return BatchRecord(id: id, createdAt: createdAt, jobs: jobs)
    }

    /// Cancels every job of the batch that has not ended (`cancel_batch`, db/011: under the claim's lock, in id
    /// order). Returns each affected job's outcome (`.cancelled` or `.requested`); nil when there is no such batch.
    public func cancelBatch(_ id: UUID, ownerID: Int64) async throws -> [UUID: CancelOutcome]? {
        try await committed { connection -> [UUID: CancelOutcome]? in
            var exists = false
            for try await _ in try await connection.query(
                "SELECT 1 FROM batches WHERE id = \(id) AND owner_id = \(ownerID)", logger: logger
            ) { exists = true }
            guard exists else { return nil }
            var outcomes: [UUID: CancelOutcome] = [:]
            for try await (job, outcome) in try await connection.query(
                "SELECT job_id, outcome FROM cancel_batch(\(id), \(ownerID))", logger: logger
            ).decode((UUID, String).self) {
                outcomes[job] = CancelOutcome(rawValue: outcome)
            }
            return outcomes
        }
    }

    /// A finished, undeleted job of `ownerID` with this document and these options, made by the fleet's current
    /// engine (the identity a worker announced last) and created less than `maxAgeDays` ago (the retention
    /// period, when one is set): the newest such job, or nil. One probe of `jobs_reuse_idx`.
    public func reusableJob(ownerID: Int64, sha256: [UInt8], optionsJSON: String, maxAgeDays: Int?) async throws -> ReusableResult? {
        let rows = try await client.query(
            """
            SELECT j.id, j.engine_version, j.pages_total FROM jobs j
            WHERE j.owner_id = \(ownerID) AND j.sha256 = \(ByteBuffer(bytes: sha256))
              AND j.status = 'FINISHED' AND j.deleted_at IS NULL AND j.engine_version IS NOT NULL
              AND j.engine_version = (SELECT version FROM engine_versions ORDER BY announced_at DESC LIMIT 1)
              AND j.options = \(optionsJSON)::jsonb
              AND (\(maxAgeDays)::int IS NULL OR j.created_at >= now() - make_interval(days => \(maxAgeDays)::int))
            ORDER BY j.created_at DESC
            LIMIT 1
            """,
            logger: logger)
        for try await (id, version, pages) in rows.decode((UUID, String, Int?).self) {
            return ReusableResult(jobID: id, engineVersion: version, pages: pages)
        }
        return nil
    }

    /// Records a worker's engine identity as the fleet's current one (db/011, `engine_versions`).
    public func announceEngine(_ identity: String) async throws {
        try await client.query(
            """
            INSERT INTO engine_versions (version) VALUES (\(identity))
            ON CONFLICT (version) DO UPDATE SET announced_at = clock_timestamp()
            """,
            logger: logger)
    }

    /// Ends a job created in this transaction with reused results (`finish_reused`, db/011); false when the source
    /// is no longer a finished, undeleted job of the owner (the job stays queued).
    static func finishReused(_ id: UUID, source: ReusableResult, connection: PostgresConnection, logger: Logger) async throws -> Bool {
        var finished = false
        for try await value in try await connection.query(
            "SELECT finish_reused(\(id), \(source.jobID), \(source.engineVersion))", logger: logger
        ).decode(Bool.self) { finished = value }
        return finished
    }
}
