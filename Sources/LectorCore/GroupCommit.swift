import NIOConcurrencyHelpers

/// Group commit: callers that ask while a batch is in flight are served together by the next one.
///
/// A caller that asks while fewer than `maxInFlight` batches are in flight leads: its batch is performed at once,
/// holding its own input and the inputs waiting then (up to `maxBatch`). Callers that ask while `maxInFlight`
/// batches are in flight wait; when one answers, the first waiter leads the next batch, for up to `maxBatch` of
/// them. So a lone caller is served at once, as without batching, and callers that arrive together share one
/// round trip and one transaction. With `maxBatch` 1 there is no batching and no waiting: each caller performs
/// its own. No task or timer is made: the leader performs the batch in its own task, so the batch runs under
/// that task's cancellation (a cancelled leader may fail its followers, which then retry as after any failure).
/// A waiting caller cannot be cancelled out of its wait; it waits for the batches ahead of it (one per
/// `maxBatch` waiters before it) and its own.
public final class GroupCommit<Input: Sendable, Output: Sendable>: Sendable {
    /// Performs one batch: one result per input, in the inputs' order.
    public typealias Perform = @Sendable ([Input]) async -> [Result<Output, any Error>]

    public let maxBatch: Int
    public let maxInFlight: Int
    private let perform: Perform

    private enum Answer: Sendable {
        case done(Result<Output, any Error>)
        case lead
    }

    private struct Waiter {
        let input: Input
        let continuation: CheckedContinuation<Answer, Never>
    }

    private struct State {
        var inFlight = 0
        var waiting: [Waiter] = []
    }

    private let state = NIOLockedValueBox(State())

    public init(maxBatch: Int, maxInFlight: Int = 1, perform: @escaping Perform) {
        self.maxBatch = max(1, maxBatch)
        self.maxInFlight = max(1, maxInFlight)
        self.perform = perform
    }

    /// How many callers wait for the batch in flight.
    public var waiting: Int { state.withLockedValue { $0.waiting.count } }

    /// Serves `input` in the next batch (at once when none is in flight).
    public func submit(_ input: Input) async throws -> Output {
        if maxBatch == 1 {
            let results = await perform([input])
            precondition(results.count == 1, "a batch answers each of its inputs")
            return try results[0].get()
        }
        let answer: Answer = await withCheckedContinuation { continuation in
            let lead = state.withLockedValue { state -> Bool in
                if state.inFlight >= maxInFlight {
                    state.waiting.append(Waiter(input: input, continuation: continuation))
                    return false
                }
                state.inFlight += 1
                return true
            }
            if lead { continuation.resume(returning: .lead) }
        }
        switch answer {
        case .done(let result):
            return try result.get()
        case .lead:
            return try await lead(input).get()
        }
    }

    /// Performs `input` and the inputs waiting now, answers them, and hands the lead to the next waiter (or ends
    /// the flight when none waits).
    private func lead(_ input: Input) async -> Result<Output, any Error> {
        let followers = state.withLockedValue { state -> [Waiter] in
            let taken = Array(state.waiting.prefix(maxBatch - 1))
            state.waiting.removeFirst(taken.count)
            return taken
        }
        let results = await perform([input] + followers.map(\.input))
        precondition(results.count == followers.count + 1, "a batch answers each of its inputs")
        // Whoever asked while this batch was in flight leads the next one.
        let next = state.withLockedValue { state -> Waiter? in
            guard !state.waiting.isEmpty else {
                state.inFlight -= 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.continuation.resume(returning: .lead)
        for (follower, result) in zip(followers, results.dropFirst()) { follower.continuation.resume(returning: .done(result)) }
        return results[0]
    }
}
