import NIOConcurrencyHelpers

/// The server-wide cap on uploads being received at once (`LECTOR_MAX_UPLOADS_IN_FLIGHT`). Beyond it a submit
/// is answered 503 with `Retry-After` before its body is read, so neither memory, spool space nor the thread
/// pool can be taken over by many slow or large uploads at once.
final class UploadGate: Sendable {
    let limit: Int
    private let inFlight = NIOLockedValueBox(0)

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// One upload's place; `leave()` gives it back.
    struct Pass: Sendable {
        fileprivate let gate: UploadGate
        func leave() { gate.inFlight.withLockedValue { $0 -= 1 } }
    }

    /// A place, or nil when `limit` uploads are in flight.
    func enter() -> Pass? {
        let admitted = inFlight.withLockedValue { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
        return admitted ? Pass(gate: self) : nil
    }

    /// A place held by an object: given back when the object goes (a streamed response's body, however it ends).
    final class Holder: Sendable {
        private let pass: Pass
        init(_ pass: Pass) { self.pass = pass }
        deinit { pass.leave() }
    }
}
