import Foundation
import LectorModel
import NIOConcurrencyHelpers

/// What happens to a job, as announced on `NOTIFY lector_job_events` (`db/007_events.sql`).
public enum JobEvent: Sendable, Equatable {
    /// A transition of the append-only log; `id` is the transition's id, the event id clients resume from.
    case transition(id: Int64, job: UUID, owner: Int64, status: JobStatus, at: Date, reason: String?)
    /// Page progress of the running attempt.
    case progress(job: UUID, owner: Int64, done: Int, total: Int)

    public static let channel = "lector_job_events"

    public var job: UUID {
        switch self {
        case .transition(_, let job, _, _, _, _), .progress(let job, _, _, _): job
        }
    }

    public var owner: Int64 {
        switch self {
        case .transition(_, _, let owner, _, _, _), .progress(_, let owner, _, _): owner
        }
    }

    /// Parses a payload of `lector_job_events`; nil for anything else.
    public static func parse(_ payload: String) -> JobEvent? {
        let parts = payload.split(separator: " ", maxSplits: 6, omittingEmptySubsequences: false)
        switch parts.first {
        case "t":
            guard parts.count >= 6, let id = Int64(parts[1]), let job = UUID(uuidString: String(parts[2])),
                let owner = Int64(parts[3]), let status = JobStatus(rawValue: String(parts[4])), let ms = Int64(parts[5])
            else { return nil }
            let reason = parts.count > 6 && !parts[6].isEmpty ? String(parts[6]) : nil
            return .transition(id: id, job: job, owner: owner, status: status, at: Date(timeIntervalSince1970: Double(ms) / 1000), reason: reason)
        case "p":
            guard parts.count >= 5, let job = UUID(uuidString: String(parts[1])), let owner = Int64(parts[2]),
                let done = Int(parts[3]), let total = Int(parts[4])
            else { return nil }
            return .progress(job: job, owner: owner, done: done, total: total)
        default:
            return nil
        }
    }
}

/// Fans the events one LISTEN connection hears out to any number of subscribers in this process, by job or
/// by owner, at the cost of one `AsyncStream` each: no subscriber polls or holds a database connection.
///
/// A subscriber whose buffer is full loses the oldest events it has not read (a stalled client must not
/// hold memory); it learns of it through `.resync`, like after a reconnection of the LISTEN connection, and
/// re-reads the log.
public final class JobEventHub: Sendable {
    public enum Message: Sendable, Equatable {
        case event(JobEvent)
        /// Events may have been missed (the LISTEN connection was re-established): read the log again.
        case resync
    }

    public enum Topic: Hashable, Sendable {
        case job(UUID)
        case owner(Int64)
    }

    private struct Subscriber {
        let continuation: AsyncStream<Message>.Continuation
    }

    private let subscribers = NIOLockedValueBox<[Topic: [Int: Subscriber]]>([:])
    private let nextID = NIOLockedValueBox(0)
    private let bufferSize: Int

    public init(bufferSize: Int = 256) {
        self.bufferSize = bufferSize
    }

    /// A subscription: its messages until `cancel()` (or the stream's consumer goes away).
    public struct Subscription: Sendable {
        public let messages: AsyncStream<Message>
        fileprivate let hub: JobEventHub
        fileprivate let topic: Topic
        fileprivate let id: Int

        public func cancel() { hub.remove(topic, id) }
    }

    public func subscribe(_ topic: Topic) -> Subscription {
        let id = nextID.withLockedValue { value -> Int in
            value += 1
            return value
        }
        let (stream, continuation) = AsyncStream<Message>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        subscribers.withLockedValue { $0[topic, default: [:]][id] = Subscriber(continuation: continuation) }
        continuation.onTermination = { [weak self] _ in self?.remove(topic, id) }
        return Subscription(messages: stream, hub: self, topic: topic, id: id)
    }

    fileprivate func remove(_ topic: Topic, _ id: Int) {
        let removed = subscribers.withLockedValue { subscribers -> Subscriber? in
            let subscriber = subscribers[topic]?.removeValue(forKey: id)
            if subscribers[topic]?.isEmpty == true { subscribers[topic] = nil }
            return subscriber
        }
        removed?.continuation.finish()
    }

    /// Hands an event to the subscribers of its job and of its owner.
    public func publish(_ event: JobEvent) {
        let targets = subscribers.withLockedValue { subscribers in
            Array((subscribers[.job(event.job)] ?? [:]).values) + Array((subscribers[.owner(event.owner)] ?? [:]).values)
        }
        for subscriber in targets {
            if case .dropped = subscriber.continuation.yield(.event(event)) {
                subscriber.continuation.yield(.resync)
            }
        }
    }

    /// Tells every subscriber to re-read the log.
    public func resyncAll() {
        let all = subscribers.withLockedValue { $0.values.flatMap(\.values) }
        for subscriber in all { subscriber.continuation.yield(.resync) }
    }
}
