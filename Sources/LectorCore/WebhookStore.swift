import Foundation
import LectorModel
import Logging
import PostgresNIO

/// One delivery taken from the outbox for an attempt.
public struct DueDelivery: Sendable {
    /// The `webhook-id` header: the outbox row's id, the same on every attempt.
    public let id: UUID
    public let jobID: UUID
    public let url: String
    public let status: JobStatus
    public let reason: String?
    /// This attempt's number (1 for the first).
    public let attempt: Int
    public let createdAt: Date
    /// The job owner's signing secret as stored; nil if it is missing (then the attempt fails, and is recorded).
    public let secret: String?
}

/// One attempt, as recorded and listed.
public struct DeliveryAttempt: Sendable, Equatable {
    public let attempt: Int
    public let at: Date
    public let durationMs: Double
    public let statusCode: Int?
    public let error: String?

    public init(attempt: Int, at: Date, durationMs: Double, statusCode: Int?, error: String?) {
        self.attempt = attempt
        self.at = at
        self.durationMs = durationMs
        self.statusCode = statusCode
        self.error = error
    }

    public var succeeded: Bool { statusCode.map { (200..<300).contains($0) } ?? false }
}

/// A delivery with its attempts, for `GET /v1/jobs/{id}/deliveries`.
public struct DeliveryRecord: Sendable {
    public let id: UUID
    public let url: String
    public let status: JobStatus
    public let createdAt: Date
    public let deliveredAt: Date?
    public let gaveUpAt: Date?
    public let nextAttemptAt: Date?
    public let attempts: [DeliveryAttempt]
}

/// The webhook outbox: claiming due deliveries, recording attempts, listing them. All webhook delivery SQL of
/// the product lives in this file (the outbox rows themselves are written by the trigger of db/008_webhooks.sql).
public struct WebhookStore: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger.clampedForDatabase()
    }

    /// Takes up to `limit` due deliveries for an attempt each: one statement (so one short transaction) that
    /// locks due rows with `FOR UPDATE SKIP LOCKED` (several workers never take the same row), counts the attempt
    /// and moves `next_attempt_at` `hold` ahead, so no other worker takes the row while this attempt runs. If
    /// the worker dies, the row is due again after `hold`.
    public func claimDue(limit: Int, hold: Duration, now: Date? = nil) async throws -> [DueDelivery] {
        let rows = try await client.query(
            """
            WITH due AS (
                SELECT id FROM webhook_deliveries
                WHERE delivered_at IS NULL AND gave_up_at IS NULL
                  AND next_attempt_at <= coalesce(\(now)::timestamptz, now())
                ORDER BY next_attempt_at
                LIMIT \(limit)
                FOR UPDATE SKIP LOCKED
            )
            UPDATE webhook_deliveries d
            SET attempts = d.attempts + 1,
                next_attempt_at = coalesce(\(now)::timestamptz, now()) + make_interval(secs => \(hold.secondsValue))
            FROM due
            WHERE d.id = due.id
            RETURNING d.id, d.job_id, d.url, d.status, d.reason, d.attempts, d.created_at,
                      (SELECT u.webhook_secret FROM jobs j JOIN users u ON u.id = j.owner_id WHERE j.id = d.job_id)
            """,
            logger: logger)
        var due: [DueDelivery] = []
        for try await row in rows.decode((UUID, UUID, String, String, String?, Int, Date, String?).self) {
            guard let status = JobStatus(rawValue: row.3) else { continue }
            due.append(DueDelivery(
                id: row.0, jobID: row.1, url: row.2, status: status, reason: row.4, attempt: row.5, createdAt: row.6,
                secret: row.7))
        }
        return due
    }

    /// Records an attempt and decides what follows, in one statement: delivered (a 2xx), or due again after
    /// `retryDelay`, or given up when that retry would come more than `giveUpAfter` after the delivery was
    /// written. Only the attempt that holds the row (its `attempts` count) changes its state; a stale one (its
    /// hold ran out and another worker took the row) only adds its attempt to the record.
    public func record(
        _ delivery: DueDelivery, attempt: DeliveryAttempt, retryDelay: Duration, giveUpAfter: Duration, now: Date? = nil
    ) async throws {
        let succeeded = attempt.succeeded
        try await client.query(
            """
            WITH attempt AS (
                INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_ms, status_code, error)
                VALUES (\(delivery.id), \(attempt.attempt), \(attempt.at), \(attempt.durationMs),
                        \(attempt.statusCode), \(attempt.error))
            )
            UPDATE webhook_deliveries
            SET delivered_at = CASE WHEN \(succeeded) THEN coalesce(\(now)::timestamptz, now()) END,
                gave_up_at = CASE
                    WHEN NOT \(succeeded) AND coalesce(\(now)::timestamptz, now()) + make_interval(secs => \(retryDelay.secondsValue))
                         > created_at + make_interval(secs => \(giveUpAfter.secondsValue))
                    THEN coalesce(\(now)::timestamptz, now()) END,
                next_attempt_at = coalesce(\(now)::timestamptz, now()) + make_interval(secs => \(retryDelay.secondsValue))
            WHERE id = \(delivery.id) AND attempts = \(delivery.attempt)
              AND delivered_at IS NULL AND gave_up_at IS NULL
            """,
            logger: logger)
    }

    /// The deliveries of a job that belongs to `ownerID`, oldest first, each with its attempts; nil when there
    /// is no such job (or it is another user's).
    public func deliveries(jobID: UUID, ownerID: Int64) async throws -> [DeliveryRecord]? {
        let rows = try await client.query(
            """
            SELECT d.id, d.url, d.status, d.created_at, d.delivered_at, d.gave_up_at,
                   CASE WHEN d.delivered_at IS NULL AND d.gave_up_at IS NULL THEN d.next_attempt_at END,
                   a.attempt, a.at, a.duration_ms, a.status_code, a.error, j.id
            FROM jobs j
            LEFT JOIN webhook_deliveries d ON d.job_id = j.id
            LEFT JOIN webhook_attempts a ON a.delivery_id = d.id
            WHERE j.id = \(jobID) AND j.owner_id = \(ownerID)
            ORDER BY d.created_at, d.id, a.id
            """,
            logger: logger)
        var found = false
        var records: [DeliveryRecord] = []
        typealias Row = (UUID?, String?, String?, Date?, Date?, Date?, Date?, Int?, Date?, Double?, Int?, String?, UUID)
        for try await row in rows.decode(Row.self) {
            found = true
            guard let id = row.0, let url = row.1, let status = row.2.flatMap(JobStatus.init(rawValue:)), let created = row.3
            else { continue }
            var attempts = records.last?.id == id ? records.removeLast().attempts : []
            if let number = row.7, let at = row.8, let duration = row.9 {
                attempts.append(DeliveryAttempt(attempt: number, at: at, durationMs: duration, statusCode: row.10, error: row.11))
            }
            records.append(DeliveryRecord(
                id: id, url: url, status: status, createdAt: created, deliveredAt: row.4, gaveUpAt: row.5,
                nextAttemptAt: row.6, attempts: attempts))
        }
        return found ? records : nil
    }
}
