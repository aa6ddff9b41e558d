import Crypto
import Foundation
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Callback URLs are hostile input: a client names a URL, and a Lector worker, inside the operator's network,
// sends a request to it. Everything that decides whether Lector may connect to an address lives here, shared
// by the API (at submit), `lector keys webhook` and the delivery service (before every attempt).

/// An IP address, as its bytes (4 for IPv4, 16 for IPv6).
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// A literal in the strict forms `inet_pton` takes: dotted quad, or IPv6 (without brackets or zone).
    /// Other spellings of IPv4 that resolvers accept ("2130706433", "0x7f.1") are not literals here; they reach
    /// the resolver, which turns them into addresses that are then checked.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self.bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return
        }
        return nil
    }

    public var isIPv4: Bool { bytes.count == 4 }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = isIPv4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil }
        guard ok else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Why Lector must not connect to this address, or nil when it is a public unicast address.
    public var refusal: String? {
        isIPv4 ? Self.refusalV4(bytes) : Self.refusalV6(bytes)
    }

    private static func inPrefix(_ bytes: [UInt8], _ prefix: [UInt8], _ length: Int) -> Bool {
        var remaining = length
        for (index, byte) in prefix.enumerated() where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if bytes[index] & mask != byte & mask { return false }
            remaining -= bits
        }
        return true
    }

    static func refusalV4(_ b: [UInt8]) -> String? {
        let ranges: [([UInt8], Int, String)] = [
            ([0, 0, 0, 0], 8, "unspecified (0.0.0.0/8)"),
            ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
            ([100, 64, 0, 0], 10, "shared address space (CGNAT, 100.64.0.0/10)"),
            ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
            ([169, 254, 0, 0], 16, "link-local (169.254.0.0/16, cloud metadata services)"),
            ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
            ([192, 0, 0, 0], 24, "IETF protocol assignments (192.0.0.0/24)"),
            ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
            ([192, 88, 99, 0], 24, "6to4 relay anycast (192.88.99.0/24)"),
            ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
            ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
            ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
            ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
            ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
            ([240, 0, 0, 0], 4, "reserved or broadcast (240.0.0.0/4)"),
        ]
        for (prefix, length, name) in ranges where inPrefix(b, prefix, length) { return name }
        return nil
    }

    static func refusalV6(_ b: [UInt8]) -> String? {
        // Forms that carry an IPv4 address are judged by that address.
        let embedded = Array(b[12..<16])
        if inPrefix(b, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF], 96) {  // ::ffff:a.b.c.d, IPv4-mapped
            return refusalV4(embedded).map { "IPv4-mapped " + $0 }
        }
        if inPrefix(b, [0x00, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0], 96) {  // 64:ff9b::/96, NAT64
            return refusalV4(embedded).map { "NAT64 " + $0 }
        }
        if inPrefix(b, [0x20, 0x02], 16) {  // 2002::/16, 6to4: the IPv4 address is in bytes 2...5
            return refusalV4(Array(b[2..<6])).map { "6to4 " + $0 }
        }
        let ranges: [([UInt8], Int, String)] = [
            ([UInt8](repeating: 0, count: 16), 128, "unspecified (::)"),
            ([UInt8](repeating: 0, count: 15) + [1], 128, "loopback (::1)"),
            ([UInt8](repeating: 0, count: 12), 96, "IPv4-compatible (::/96, deprecated)"),
            ([0x01, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only (100::/64)"),
            ([0x20, 0x01, 0x0D, 0xB8], 32, "documentation (2001:db8::/32)"),
            ([0xFC], 7, "unique local (fc00::/7)"),
            ([0xFE, 0x80], 10, "link-local (fe80::/10)"),
            ([0xFE, 0xC0], 10, "site-local (fec0::/10, deprecated)"),
            ([0xFF], 8, "multicast (ff00::/8)"),
        ]
        for (prefix, length, name) in ranges where inPrefix(b, prefix, length) { return name }
        return nil
    }
}

/// Why a callback URL was refused: a message written for the client.
public struct CallbackURLRefused: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The rules for callback URLs, shared by submit, `lector keys webhook` and delivery.
public struct CallbackURLPolicy: Sendable {
    /// `LECTOR_WEBHOOK_ALLOW_PRIVATE`: also allow `http` and private, loopback and link-local targets (tests,
    /// closed networks).
    public var allowPrivate: Bool
    public static let maxLength = 2048

    public init(allowPrivate: Bool) {
        self.allowPrivate = allowPrivate
    }

    /// A checked URL: what will be requested, and the host to resolve.
    public struct Target: Sendable, Equatable {
        public let url: String
        public let host: String
        public let port: Int
        public let isHTTPS: Bool
        /// The host when it is an IP literal.
        public let literal: IPAddress?
    }

    /// The checks that need no network: length, scheme, no userinfo, a host, and a literal host's address.
    public func check(_ raw: String) throws(CallbackURLRefused) -> Target {
        guard !raw.isEmpty, raw.utf8.count <= Self.maxLength else {
            throw CallbackURLRefused("callbackUrl must be 1 to \(Self.maxLength) bytes")
        }
        guard raw.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw CallbackURLRefused("callbackUrl must be an absolute URL of visible ASCII characters (percent-encode the rest)")
        }
        guard let components = URLComponents(string: raw), let scheme = components.scheme?.lowercased() else {
            throw CallbackURLRefused("callbackUrl is not an absolute URL")
        }
        guard scheme == "https" || (scheme == "http" && allowPrivate) else {
            throw CallbackURLRefused("callbackUrl must use https")
        }
        // The authority is what lies between "//" and the path, query or fragment; any "@" in it is userinfo.
        let afterScheme = raw.drop { $0 != ":" }.dropFirst()
        let authority = afterScheme.hasPrefix("//") ? afterScheme.dropFirst(2).prefix { !"/?#".contains($0) } : ""
        guard components.user == nil, components.password == nil, !authority.contains("@") else {
            throw CallbackURLRefused("callbackUrl must not carry a user name or password")
        }
        guard afterScheme.hasPrefix("//"), let rawHost = components.host, !rawHost.isEmpty else {
            throw CallbackURLRefused("callbackUrl has no host")
        }
        let host = rawHost.hasPrefix("[") && rawHost.hasSuffix("]") ? String(rawHost.dropFirst().dropLast()) : rawHost
        guard !host.contains("%") else {
            throw CallbackURLRefused("callbackUrl's host must not carry a zone or percent-encoding")
        }
        let port = components.port ?? (scheme == "https" ? 443 : 80)
        guard (1...65535).contains(port) else { throw CallbackURLRefused("callbackUrl's port is out of range") }
        let literal = IPAddress(host)
        if let literal, !allowPrivate, let why = literal.refusal {
            throw CallbackURLRefused("callbackUrl points to a \(why) address, which Lector does not call")
        }
        return Target(url: raw, host: host.lowercased(), port: port, isHTTPS: scheme == "https", literal: literal)
    }

    /// Resolves the target's host (a literal resolves to itself) and checks every address: refused when any
    /// is private, loopback, link-local, unspecified, multicast or CGNAT (unless `allowPrivate`). Returns the
    /// addresses, in the resolver's order; the caller connects to one of them and to nothing else.
    public func resolve(_ target: Target, threadPool: NIOThreadPool = .singleton) async throws -> [IPAddress] {
        let addresses: [IPAddress]
        if let literal = target.literal {
            addresses = [literal]
        } else {
            let host = target.host
            addresses = try await threadPool.runIfActive { try Self.lookUp(host) }
        }
        guard !addresses.isEmpty else { throw CallbackURLRefused("\(target.host) has no address") }
        if !allowPrivate {
            for address in addresses {
                if let why = address.refusal {
                    throw CallbackURLRefused("\(target.host) resolves to \(address), a \(why) address, which Lector does not call")
                }
            }
        }
        return addresses
    }

    /// The host's addresses (TCP, IPv4 and IPv6), deduplicated. `CallbackURLRefused` when the name does not
    /// exist; `ResolutionFailed` when the resolver could not answer (try again later).
    static func lookUp(_ host: String) throws -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Darwin)
        hints.ai_socktype = SOCK_STREAM
        #else
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #endif
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &result)
        defer { if let result { freeaddrinfo(result) } }
        guard status == 0 else {
            if status == EAI_NONAME {
                throw CallbackURLRefused("\(host) does not resolve")
            }
            throw ResolutionFailed(description: "cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        var addresses: [IPAddress] = []
        var cursor = result
        while let info = cursor {
            if let sockaddr = info.pointee.ai_addr {
                if info.pointee.ai_family == AF_INET {
                    let bytes = sockaddr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                        withUnsafeBytes(of: pointer.pointee.sin_addr) { Array($0) }
                    }
                    if let address = IPAddress(bytes: bytes), !addresses.contains(address) { addresses.append(address) }
                } else if info.pointee.ai_family == AF_INET6 {
                    let bytes = sockaddr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                        withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) }
                    }
                    if let address = IPAddress(bytes: bytes), !addresses.contains(address) { addresses.append(address) }
                }
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }
}

/// The resolver could not answer (a timeout, no server): not a verdict on the name.
public struct ResolutionFailed: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A user's webhook signing secret: `whsec_` and the base64 of 32 random bytes (the Standard Webhooks form).
public struct WebhookSecret: Sendable, Equatable {
    public let text: String
    /// The HMAC key: the base64-decoded part after `whsec_`.
    public let key: [UInt8]

    public init?(_ text: String) {
        guard text.hasPrefix("whsec_"), let key = Data(base64Encoded: String(text.dropFirst(6))), key.count >= 24 else {
            return nil
        }
        self.text = text
        self.key = Array(key)
    }

    public static func generate() -> WebhookSecret {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        return WebhookSecret("whsec_" + Data(bytes).base64EncodedString())!
    }

    /// `v1,<base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))>`: the `webhook-signature` header.
    public func signature(id: String, timestamp: Int64, body: [UInt8]) -> String {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: key))
        mac.update(data: Array("\(id).\(timestamp).".utf8))
        mac.update(data: body)
        return "v1," + Data(mac.finalize()).base64EncodedString()
    }
}
