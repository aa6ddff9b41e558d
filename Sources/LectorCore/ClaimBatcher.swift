import Foundation
import NIOConcurrencyHelpers

/// Claims for many slots of one process in few transactions: group commit, applied to the claim.
///
/// A slot that wants a job while no claim is in flight leads: it claims at once, for itself and for every slot
/// that asked meanwhile (up to `maxBatch`), in one `WorkQueue.claimBatch` call. Slots that ask while a claim is
/// in flight wait for the next one, which the first of them leads when the current one answers. So a lone slot
/// claims exactly as before (one job, no added delay), and slots that become idle together, as under a backlog
/// or when a job is queued to a waiting fleet, share one transaction. Each job keeps the lease of the slot it was
/// claimed for. No task or timer is made: the leader runs the claim in its own task.
///
/// A waiting slot cannot be cancelled out of its wait; it waits at most for the claim in flight.
public final class ClaimBatcher: Sendable {
    public let queue: any WorkQueue
    public let leaseDuration: Duration
    public let strategy: ClaimStrategy
    public let maxBatch: Int

    private enum Answer: Sendable {
        case claimed(ClaimedJob?)
        case lead
    }

    private struct Waiter {
        let worker: String
        let continuation: CheckedContinuation<Answer, any Error>
    }

    private struct State {
        var inFlight = false
        var waiting: [Waiter] = []
    }

    private let state = NIOLockedValueBox(State())

    public init(queue: any WorkQueue, leaseDuration: Duration, strategy: ClaimStrategy, maxBatch: Int) {
        self.queue = queue
        self.leaseDuration = leaseDuration
        self.strategy = strategy
        self.maxBatch = max(1, min(maxBatch, JobStore.maxClaimBatch))
    }

    /// How many slots wait for the claim in flight.
    public var waiting: Int { state.withLockedValue { $0.waiting.count } }

    /// The next claimable job for `worker` (a slot's name), or nil when none is claimable.
    public func claim(worker: String) async throws -> ClaimedJob? {
        let answer: Answer = try await withCheckedThrowingContinuation { continuation in
            let lead = state.withLockedValue { state -> Bool in
                if state.inFlight {
                    state.waiting.append(Waiter(worker: worker, continuation: continuation))
                    return false
                }
                state.inFlight = true
                return true
            }
            if lead { continuation.resume(returning: .lead) }
        }
        switch answer {
        case .claimed(let job):
            return job
        case .lead:
            return try await lead(worker: worker)
        }
    }

    /// Claims for `worker` and the slots waiting now, answers them, and hands the lead to the next waiter (or
    /// ends the flight when none waits).
    private func lead(worker: String) async throws -> ClaimedJob? {
        let followers = state.withLockedValue { state -> [Waiter] in
            let taken = Array(state.waiting.prefix(maxBatch - 1))
            state.waiting.removeFirst(taken.count)
            return taken
        }
        let result: Result<[ClaimedJob], any Error>
        do {
            result = .success(try await queue.claimBatch(
                workers: [worker] + followers.map(\.worker), leaseDuration: leaseDuration, strategy: strategy, now: nil))
        } catch {
            result = .failure(error)
        }
        // Whoever asked while this claim was in flight leads the next one.
        let next = state.withLockedValue { state -> Waiter? in
            guard !state.waiting.isEmpty else {
                state.inFlight = false
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.continuation.resume(returning: .lead)
        switch result {
        case .success(let jobs):
            let byWorker = Dictionary(jobs.map { ($0.lease.worker, $0) }, uniquingKeysWith: { first, _ in first })
            for follower in followers { follower.continuation.resume(returning: .claimed(byWorker[follower.worker])) }
            return byWorker[worker]
        case .failure(let error):
            for follower in followers { follower.continuation.resume(throwing: error) }
            throw error
        }
    }
}
