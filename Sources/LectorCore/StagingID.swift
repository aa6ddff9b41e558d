import Foundation

/// Where one claim of a job stages its results until the end commits them: the attempt number and a random
/// token made at the claim (`Lease.claim`). Written `<attempt>-<claim>` in storage names (object storage:
/// `<id>/attempts/<attempt>-<claim>/`; files: `.<name>.attempt-<attempt>-<claim>`).
///
/// The attempt number alone is not unique: a graceful hand-back (`JobStore.requeue(countAttempt: false)`)
/// returns it, so the next claim runs the same attempt number. With the number alone, the discard of the claim
/// that handed back could delete the next claim's staged objects. An integer literal is a stage without a claim
/// (`<attempt>`), for tests and tools.
public struct StagingID: Sendable, Hashable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public let attempt: Int
    /// Lower-case hex, at most 32 characters; empty for none.
    public let claim: String

    public init(attempt: Int, claim: String) {
        self.attempt = attempt
        self.claim = claim
    }

    public init(integerLiteral attempt: Int) {
        self.init(attempt: attempt, claim: "")
    }

    public var description: String { claim.isEmpty ? "\(attempt)" : "\(attempt)-\(claim)" }

    /// A new claim token: 64 random bits in hex.
    public static func newClaim() -> String {
        let value = UInt64.random(in: .min ... .max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Refuses what cannot name a staging area (it becomes part of a key or file name).
    func check() throws {
        guard attempt >= 0, claim.utf8.count <= 32,
            claim.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        else {
            throw StorageError(description: "invalid staging area \(self)")
        }
    }
}
