import Foundation
import LectorCore
import NIOConcurrencyHelpers

/// A token bucket per API key: `rate` requests per second on average, bursts up to `burst`.
///
/// Kept in the memory of one API process, so with N processes behind a load balancer a key gets up to N
/// times the rate; a shared limiter belongs with the scaling work.
public final class RateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private let rate: Double
    private let burst: Double
    private let buckets = NIOLockedValueBox([Int64: Bucket]())

    public init(rate: Double, burst: Int) {
        self.rate = max(rate, 0.001)
        self.burst = Double(max(burst, 1))
    }

    /// Takes a token for `key`; nil when allowed, else the seconds until the next token.
    public func acquire(_ key: Int64, now: ContinuousClock.Instant = .now) -> Int? {
        buckets.withLockedValue { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated).secondsValue * rate)
            bucket.updated = now
            defer {
                buckets[key] = bucket
                // A bucket that has refilled carries no state worth keeping; drop those when the table grows.
                // Rarely: each pass leaves the table at most half full, so it runs at most once per 5,000 keys.
                if buckets.count > 10_000 {
                    buckets = buckets.filter { _, other in other.tokens + (now - other.updated).secondsValue * rate < burst }
                    if buckets.count > 5_000 { buckets = [key: bucket] }
                }
            }
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                return nil
            }
            return Int(((1 - bucket.tokens) / rate).rounded(.up))
        }
    }
}
