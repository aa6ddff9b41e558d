import NIOConcurrencyHelpers

/// Group commit: callers that ask while a batch is in flight are served together by the next one.
///
/// A caller that asks while nothing is in flight leads: its batch is performed at once, holding its own input and
/// every input that waited meanwhile (up to `maxBatch`). Callers that ask while a batch is in flight wait; when it
/// answers, the first of them leads the next batch, for all of them. So a lone caller is served at once, as
/// without batching, and callers that arrive together share one round trip and one transaction. No task or timer
/// is made: the leader performs the batch in its own task. A waiting caller cannot be cancelled out of its wait;
/// it waits at most for the batch in flight and its own.
public final class GroupCommit<Input: Sendable, Output: Sendable>: Sendable {
    /// Performs one batch: one result per input, in the inputs' order.
    public typealias Perform = @Sendable ([Input]) async -> [Result<Output, any Error>]

    public let maxBatch: Int
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
        var inFlight = false
        var waiting: [Waiter] = []
    }

    private let state = NIOLockedValueBox(State())

    public init(maxBatch: Int, perform: @escaping Perform) {
        self.maxBatch = max(1, maxBatch)
        self.perform = perform
    }

    /// How many callers wait for the batch in flight.
    public var waiting: Int { state.withLockedValue { $0.waiting.count } }

    /// Serves `input` in the next batch (at once when none is in flight).
    public func submit(_ input: Input) async throws -> Output {
        let answer: Answer = await withCheckedContinuation { continuation in
            let lead = state.withLockedValue { state -> Bool in
                if state.inFlight {
                    state.waiting.append(Waiter(input: input, continuation: continuation))
                    return false
                }
                state.inFlight = true
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
                state.inFlight = false
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.continuation.resume(returning: .lead)
        for (follower, result) in zip(followers, results.dropFirst()) { follower.continuation.resume(returning: .done(result)) }
        return results[0]
    }
}
