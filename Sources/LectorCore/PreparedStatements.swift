import Foundation
import LectorModel
import PostgresNIO

// The statements every job runs, as named prepared statements: PostgresNIO prepares each one on a connection the
// first time that connection runs it and afterwards sends only its name and values, so PostgreSQL neither parses
// nor plans them again (BENCHMARKS.md, P3). Everything else the product asks stays an ordinary query.
//
// Parameter types are spelled out, so that a NULL (no idempotency key, no test clock) needs no inference.
// A connection pooler in transaction mode (PgBouncer < 1.21) cannot carry named statements across
// transactions: point Lector at PostgreSQL itself, or at a pooler that tracks prepared statements.

/// `KeyStore.authenticate`: the key row and its user, by the key's public prefix; with the key's default
/// callback URL and whether the user has a webhook secret (db/008_webhooks.sql), so a submit needs no other query.
struct AuthenticateStatement: PostgresPreparedStatement {
    static let name = "lector_authenticate_v2"
    static let sql = """
        SELECT k.id, k.secret_hash, u.id, u.name, k.webhook_url, u.webhook_secret IS NOT NULL
        FROM api_keys k JOIN users u ON u.id = k.user_id
        WHERE k.prefix = $1 AND k.revoked_at IS NULL
        """
    static let bindingDataTypes: [PostgresDataType] = [.text]
    typealias Row = (Int64, ByteBuffer, Int64, String, String?, Bool)

    var prefix: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(prefix)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// `JobStore.create`: `create_job` with the callback URL (db/008_webhooks.sql; 005 without it).
struct CreateJobStatement: PostgresPreparedStatement {
    static let name = "lector_create_job_v3"
    static let sql = "SELECT create_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    static let bindingDataTypes: [PostgresDataType] = [
        .uuid, .int8, .text, .text, .int8, .bytea, .text, .text, .text, .bytea, .text, .int2, .uuidArray,
    ]
    typealias Row = Date

    var job: NewJob
    var idempotencyKey: String?
    var fingerprint: [UInt8]?

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 13)
        bindings.append(job.id)
        bindings.append(job.ownerID)
        bindings.append(job.documentName)
        bindings.append(job.contentType)
        bindings.append(job.sizeBytes)
        bindings.append(ByteBuffer(bytes: job.sha256))
        bindings.append(job.optionsJSON)
        bindings.append(job.metadataJSON)
        bindings.append(idempotencyKey)
        bindings.append(fingerprint.map { ByteBuffer(bytes: $0) })
        bindings.append(job.callbackURL)
        bindings.append(Int16(clamping: job.priority))
        bindings.append(job.dependsOn)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Date.self) }
}

/// `JobStore.claimNext`: `claim_job` (db/004_claim_function.sql).
struct ClaimJobStatement: PostgresPreparedStatement {
    static let name = "lector_claim_job_v1"
    static let sql = "SELECT job_id, attempt, content_type, options FROM claim_job($1, $2, $3, $4)"
    static let bindingDataTypes: [PostgresDataType] = [.text, .float8, .timestamptz, .bool]
    typealias Row = (UUID, Int, String, String)

    var worker: String
    var leaseSeconds: Double
    var now: Date?
    var skipLocked: Bool

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(worker)
        bindings.append(leaseSeconds)
        bindings.append(now)
        bindings.append(skipLocked)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// `JobStore.claimBatch`: `claim_work` (db/014_page_tasks.sql; `claim_jobs` of db/013 with page tasks).
struct ClaimWorkStatement: PostgresPreparedStatement {
    static let name = "lector_claim_work_v1"
    static let sql = "SELECT worker, job_id, attempt, content_type, options, page FROM claim_work($1, $2, $3, $4)"
    static let bindingDataTypes: [PostgresDataType] = [.textArray, .float8, .timestamptz, .bool]
    typealias Row = (String, UUID, Int, String, String, Int?)

    var workers: [String]
    var leaseSeconds: Double
    var now: Date?
    var skipLocked: Bool

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(workers)
        bindings.append(leaseSeconds)
        bindings.append(now)
        bindings.append(skipLocked)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// `JobStore.end`: takes the attempt's lease row lock before its result files are moved into place.
struct LockLeaseStatement: PostgresPreparedStatement {
    static let name = "lector_lock_lease_v1"
    static let sql = "SELECT 1 FROM job_leases WHERE job_id = $1 AND worker = $2 AND attempt = $3 FOR UPDATE"
    static let bindingDataTypes: [PostgresDataType] = [.uuid, .text, .int4]
    typealias Row = Int32

    var lease: Lease

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 3)
        bindings.append(lease.jobID)
        bindings.append(lease.worker)
        bindings.append(Int32(clamping: lease.attempt))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int32.self) }
}

/// `JobStore.end`: `end_job` (db/005_job_functions.sql).
struct EndJobStatement: PostgresPreparedStatement {
    static let name = "lector_end_job_v1"
    static let sql = "SELECT end_job($1, $2, $3, $4, $5)"
    static let bindingDataTypes: [PostgresDataType] = [.uuid, .text, .int4, .text, .text]
    typealias Row = Bool

    var lease: Lease
    var status: JobStatus
    var reason: String?

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(lease.jobID)
        bindings.append(lease.worker)
        bindings.append(Int32(clamping: lease.attempt))
        bindings.append(status.rawValue)
        bindings.append(reason.map(JobStore.storable))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Bool.self) }
}
