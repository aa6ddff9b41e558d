import NIOConcurrencyHelpers

/// Lets many tasks wait for a signal on a key, with a timeout, at the cost of one continuation each.
///
/// Register first, then check the condition, then wait: a signal that arrives between registration and the
/// wait is kept in the ticket, so no wake-up is lost. Used to fan one LISTEN connection out to every
/// long-poll request of an API process, and one to every slot of a worker.
public final class WaitRegistry<Key: Hashable & Sendable>: Sendable {
    public struct Ticket: Sendable {
        fileprivate let id: UInt64
        fileprivate let key: Key
    }

    private struct Entry {
        var key: Key
        var signalled = false
        var cancelled = false
        var continuation: CheckedContinuation<Void, Never>?
    }

    private struct State {
        var nextID: UInt64 = 0
        var entries: [UInt64: Entry] = [:]
        var byKey: [Key: Set<UInt64>] = [:]
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Number of tickets alive now.
    public var count: Int { state.withLockedValue { $0.entries.count } }

    public func register(_ key: Key) -> Ticket {
        state.withLockedValue { state in
            state.nextID += 1
            let id = state.nextID
            state.entries[id] = Entry(key: key)
            state.byKey[key, default: []].insert(id)
            return Ticket(id: id, key: key)
        }
    }

    /// Forgets a ticket. Call it when done with the ticket, whether or not it was waited on.
    public func unregister(_ ticket: Ticket) {
        let continuation = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard let entry = state.entries.removeValue(forKey: ticket.id) else { return nil }
            state.byKey[ticket.key]?.remove(ticket.id)
            if state.byKey[ticket.key]?.isEmpty == true { state.byKey[ticket.key] = nil }
            return entry.continuation
        }
        continuation?.resume()
    }

    /// Wakes every ticket registered on `key`.
    public func signal(_ key: Key) {
        let continuations = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            guard let ids = state.byKey[key] else { return [] }
            return ids.compactMap { id in
                state.entries[id]?.signalled = true
                defer { state.entries[id]?.continuation = nil }
                return state.entries[id]?.continuation
            }
        }
        for continuation in continuations { continuation.resume() }
    }

    /// Wakes every ticket (used when the LISTEN connection was re-established and notifications may be lost).
    public func signalAll() {
        let continuations = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            var woken: [CheckedContinuation<Void, Never>] = []
            for id in state.entries.keys {
                state.entries[id]?.signalled = true
                if let continuation = state.entries[id]?.continuation { woken.append(continuation) }
                state.entries[id]?.continuation = nil
            }
            return woken
        }
        for continuation in continuations { continuation.resume() }
    }

    /// Waits until the ticket is signalled (true), the timeout passes or the task is cancelled (false).
    /// Returns at once when the ticket was signalled since it was registered or last waited on.
    public func wait(_ ticket: Ticket, timeout: Duration) async -> Bool {
        if consumeSignal(ticket) { return true }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal(ticket) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
        return consumeSignal(ticket)
    }

    private func consumeSignal(_ ticket: Ticket) -> Bool {
        state.withLockedValue { state in
            guard state.entries[ticket.id]?.signalled == true else { return false }
            state.entries[ticket.id]?.signalled = false
            return true
        }
    }

    private func waitForSignal(_ ticket: Ticket) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state -> Bool in
                    guard let entry = state.entries[ticket.id], !entry.signalled, !entry.cancelled else { return true }
                    state.entries[ticket.id]?.continuation = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                state.entries[ticket.id]?.cancelled = true
                defer { state.entries[ticket.id]?.continuation = nil }
                return state.entries[ticket.id]?.continuation
            }
            continuation?.resume()
        }
        state.withLockedValue { $0.entries[ticket.id]?.cancelled = false }
    }
}
