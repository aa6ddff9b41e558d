import Crypto
import Foundation
import LectorCore

/// Signs and checks result links: `/files/<job>/<file>?expires=<unix seconds>&signature=<hex HMAC-SHA256>`.
///
/// A link authorises one file of one job until it expires, without an API key, so it can be handed to a
/// browser or another service. Any change to the job, the file or the expiry breaks the signature.
public struct ResultLinkSigner: Sendable {
    public enum Verdict: Sendable, Equatable { case valid, expired, invalid }

    private let key: SymmetricKey
    public let ttl: Int

    public init(key: [UInt8], ttl: Int) {
        self.key = SymmetricKey(data: key)
        self.ttl = ttl
    }

    public func link(job: UUID, file: String, now: Date = Date()) -> String {
        let expires = Int(now.timeIntervalSince1970) + ttl
        let signature = Array(HMAC<SHA256>.authenticationCode(for: message(job, file, expires), using: key)).hexString
        return "/files/\(job.uuidString.lowercased())/\(file)?expires=\(expires)&signature=\(signature)"
    }

    public func verify(job: UUID, file: String, expires: String?, signature: String?, now: Date = Date()) -> Verdict {
        guard let (expiry, mac) = Self.parse(expires: expires, signature: signature),
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: message(job, file, expiry), using: key)
        else {
            return .invalid
        }
        return expiry >= Int(now.timeIntervalSince1970) ? .valid : .expired
    }

    /// A link's `expires` and `signature` for `subject`, signed in a `domain` of its own (e.g. batch archives).
    func sign(domain: String, _ subject: String, now: Date = Date()) -> (expires: Int, signature: String) {
        let expires = Int(now.timeIntervalSince1970) + ttl
        return (expires, authenticationCode(domain: domain, "\(subject)\n\(expires)").hexString)
    }

    /// Checks what `sign(domain:_:)` wrote, as `verify(job:file:...)` checks a result link.
    func verify(domain: String, _ subject: String, expires: String?, signature: String?, now: Date = Date()) -> Verdict {
        guard let (expiry, mac) = Self.parse(expires: expires, signature: signature),
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Data((domain + "\n" + "\(subject)\n\(expiry)").utf8), using: key)
        else {
            return .invalid
        }
        return expiry >= Int(now.timeIntervalSince1970) ? .valid : .expired
    }

    /// Exactly the form we write: digits only without leading zeros, lower-case hex; no sign, no upper case, no
    /// other spelling.
    private static func parse(expires: String?, signature: String?) -> (Int, [UInt8])? {
        guard let expires, (1...12).contains(expires.utf8.count), expires.utf8.allSatisfy({ (48...57).contains($0) }),
            expires.utf8.first != UInt8(ascii: "0"),
            let expiry = Int(expires), let signature,
            signature.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }),
            let mac = bytes(fromHex: signature)
        else {
            return nil
        }
        return (expiry, mac)
    }

    /// An HMAC-SHA256 with this key over `message`, in a `domain` of its own (e.g. upload ids), so that no MAC of
    /// one use is valid for another.
    func authenticationCode(domain: String, _ message: String) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Data((domain + "\n" + message).utf8), using: key))
    }

    private func message(_ job: UUID, _ file: String, _ expires: Int) -> Data {
        Data("\(job.uuidString.lowercased())/\(file)\n\(expires)".utf8)
    }

    static func bytes(fromHex hex: String) -> [UInt8]? {
        guard hex.count == 64 else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }
}
