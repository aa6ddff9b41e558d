import NIOConcurrencyHelpers

/// Whether storage takes writes, as one process sees it: `JobStorage.checkWritable()` (a write probe, and free
/// space and inodes against the reserve) run at most once per `interval`, its verdict shared by every caller
/// in between. The API refuses submits while it fails (507 when full) and `/readyz` reports it; workers stop
/// claiming, so that a full disk is the system's condition and not a reason to fail accepted jobs.
public final class StorageHealth: Sendable {
    public let storage: any JobStorage
    public let interval: Duration
    private let verdict = NIOLockedValueBox<(at: ContinuousClock.Instant, error: StorageError?)?>(nil)

    public init(storage: any JobStorage, interval: Duration = .seconds(1)) {
        self.storage = storage
        self.interval = interval
    }

    /// Throws the `StorageError` that makes storage unusable now (kind `.full` when below the reserve).
    public func check() async throws(StorageError) {
        let now = ContinuousClock.now
        if let last = verdict.withLockedValue({ $0 }), now - last.at < interval {
            if let error = last.error { throw error }
            return
        }
        var failure: StorageError?
        do {
            try await storage.checkWritable()
        } catch {
            failure = StorageError.from(error, doing: "write to storage")
        }
        verdict.withLockedValue { $0 = (now, failure) }
        if let failure { throw failure }
    }

    /// Forgets the verdict, so the next `check()` looks again (after a write failed for lack of space).
    public func invalidate() {
        verdict.withLockedValue { $0 = nil }
    }
}
