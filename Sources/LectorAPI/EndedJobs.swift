import Foundation
import LectorCore
import LectorModel
import NIOConcurrencyHelpers

/// The jobs this API process heard end (from `NOTIFY lector_job_events`) in the last minute.
///
/// A long-poll waiter woken for a `FINISHED` job answers from here, without a query: with a thousand waiters
/// the re-query of each one queued behind the pool's connections (BENCHMARKS.md, P5). Ownership was checked
/// by the waiter's first query. `FAILURE` still queries, for the reason.
final class EndedJobs: Sendable {
    private struct State {
        var statuses: [UUID: JobStatus] = [:]
        var order: [(UUID, ContinuousClock.Instant)] = []
    }

    private let state = NIOLockedValueBox(State())
    private let keep: Duration

    init(keep: Duration = .seconds(60)) {
        self.keep = keep
    }

    func record(_ id: UUID, _ status: JobStatus, now: ContinuousClock.Instant = .now) {
        state.withLockedValue { state in
            state.statuses[id] = status
            state.order.append((id, now))
            // Forget what is older than `keep` (the list is in arrival order).
            var expired = 0
            while expired < state.order.count, now - state.order[expired].1 > keep {
                let (old, _) = state.order[expired]
                state.statuses[old] = nil
                expired += 1
            }
            if expired > 0 { state.order.removeFirst(expired) }
        }
    }

    func status(of id: UUID) -> JobStatus? {
        state.withLockedValue { $0.statuses[id] }
    }
}
