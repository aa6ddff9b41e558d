import Foundation
import Logging
import PostgresNIO

/// The sweeper's side of the database: the lock that lets one process at a time walk the shared storage, and the
/// durable marks of deleted jobs whose folders still have to be removed (`storage_removals`, db/012).
extension JobStore {
    /// The session advisory lock of the sweeper's shared pass (the object store's listing and the removal marks).
    /// Not the migrator's key.
    public static let sweepLockKey: Int64 = 0x4C45_4354_5357  // "LECTSW"

    /// Runs `body` while this process holds PostgreSQL's session advisory lock `key`, or returns nil at once when
    /// another session holds it (`pg_try_advisory_lock`: never waits).
    ///
    /// A session lock belongs to the connection that took it, and `PostgresClient` is a pool: the lock is taken
    /// and released on one leased connection, which stays leased (idle) for the whole of `body`; `body` runs its
    /// own queries on other connections. If the release fails, that connection is closed, which releases the lock
    /// too, so it can never stay held by a pooled connection. A connection that dies while `body` runs drops the
    /// lock early: another process may then start the same pass, which is safe (each removal is idempotent), only
    /// wasteful.
    public func withTryLock<T: Sendable>(_ key: Int64, _ body: () async throws -> T) async throws -> T? {
        let logger = self.logger
        return try await client.withConnection { connection -> T? in
            var locked = false
            for try await value in try await connection.query("SELECT pg_try_advisory_lock(\(key))", logger: logger).decode(Bool.self) {
                locked = value
            }
            guard locked else { return nil }
            func release() async {
                do {
                    try await connection.query("SELECT pg_advisory_unlock(\(key))", logger: logger)
                } catch {
                    logger.warning("could not release an advisory lock; closing its connection", metadata: [
                        "error": "\(String(reflecting: error))",
                    ])
                    try? await connection.close()
                }
            }
            do {
                let result = try await body()
                await release()
                return result
            } catch {
                await release()
                throw error
            }
        }
    }

    /// Deleted jobs whose folder removal is due again: marked (or last tried) before `olderThan` seconds ago, the
    /// longest waiting first, at most `limit`. `now` is the database's clock unless a test passes one.
    public func pendingStorageRemovals(olderThan seconds: Double, now: Date? = nil, limit: Int = 100) async throws -> [UUID] {
        let rows = try await client.query(
            """
            SELECT job_id FROM storage_removals
            WHERE coalesce(tried_at, marked_at) < coalesce(\(now)::timestamptz, now()) - make_interval(secs => \(seconds))
            ORDER BY coalesce(tried_at, marked_at)
            LIMIT \(limit)
            """,
            logger: logger)
        var ids: [UUID] = []
        for try await id in rows.decode(UUID.self) { ids.append(id) }
        return ids
    }

    /// Clears the marks of jobs whose folders the storage confirmed removed.
    public func storageRemoved(_ ids: [UUID]) async throws {
        guard !ids.isEmpty else { return }
        try await client.query("DELETE FROM storage_removals WHERE job_id = ANY(\(ids))", logger: logger)
    }

    /// Records a failed removal: the mark stays and goes to the back of the line.
    public func storageRemovalFailed(_ id: UUID, now: Date? = nil) async throws {
        try await client.query(
            """
            UPDATE storage_removals SET tried_at = coalesce(\(now)::timestamptz, now()), tries = tries + 1
            WHERE job_id = \(id)
            """,
            logger: logger)
    }
}
