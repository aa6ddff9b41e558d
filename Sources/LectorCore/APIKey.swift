import Crypto
import Foundation

/// An API key: `lk_<prefix>_<secret>`.
///
/// The prefix (12 hex characters) is public and finds the key's row; the secret (43 base64url characters,
/// 256 bits) is shown once, when the key is created, and only its SHA-256 digest is stored.
public struct APIKey: Sendable, Equatable {
    public let prefix: String
    public let secret: String

    /// The key as the client sends it.
    public var token: String { "lk_\(prefix)_\(secret)" }

    /// A new random key.
    public static func generate() -> APIKey {
        var rng = SystemRandomNumberGenerator()
        let prefixBytes = (0..<6).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        let secretBytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        return APIKey(prefix: prefixBytes.hexString, secret: Data(secretBytes).base64URLEncoded)
    }

    /// Parses a token; nil when it does not have the shape of a key.
    public init?(token: String) {
        let parts = token.split(separator: "_", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "lk", parts[1].count == 12, parts[1].allSatisfy(\.isHexDigit),
            (40...64).contains(parts[2].count),
            parts[2].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else { return nil }
        self.prefix = String(parts[1]).lowercased()
        self.secret = String(parts[2])
    }

    private init(prefix: String, secret: String) {
        self.prefix = prefix
        self.secret = secret
    }

    /// SHA-256 of the secret: what the database stores.
    public var secretDigest: [UInt8] { Array(SHA256.hash(data: Data(secret.utf8))) }
}

/// Compares two byte strings in time that depends only on their lengths.
public func constantTimeEquals(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) { difference |= x ^ y }
    return difference == 0
}

extension Sequence<UInt8> {
    /// Lower-case hexadecimal.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Data {
    /// Base64url without padding (RFC 4648 §5).
    public var base64URLEncoded: String {
        base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
