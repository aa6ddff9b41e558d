/// Thrown by `withDeadline` when the operation did not finish in time.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let description: String
}

/// Runs `operation`, cancelling it and throwing `DeadlineExceeded` when it takes longer than `limit`.
///
/// The API wraps its database calls in this, so that a request answers 503 within the limit while PostgreSQL
/// is unreachable instead of waiting for a pooled connection that cannot be made.
public func withDeadline<T: Sendable>(
    _ limit: Duration, _ what: String = "operation", _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw DeadlineExceeded(description: "\(what) took longer than \(limit)")
        }
        return value
    }
}
