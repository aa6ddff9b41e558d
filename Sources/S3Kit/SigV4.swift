import Crypto
import Foundation

/// An AWS Signature Version 4 signer for S3-style requests.
///
/// The signer is pure value code: it never reads the clock or the network. The caller passes the
/// request's method, its URL (already percent-encoded, as it will be sent), the headers it will send,
/// the payload hash and the signing time, and gets back the headers to add (or a presigned URL).
///
/// It follows S3's flavour of SigV4, which is what botocore's `S3SigV4Auth` (headers) and
/// `S3SigV4QueryAuth` (presigned URLs) implement, not the generic `SigV4Auth`:
/// - the canonical URI is the path encoded **once** (no double encoding) and **not normalised**
///   (`.`/`..` segments and repeated `/` are kept, as they are part of S3 keys);
/// - each byte outside the RFC 3986 unreserved set (`A-Z a-z 0-9 - . _ ~`) is written `%XX`
///   (uppercase hex), except `/` in the path;
/// - the canonical query is every `key=value` pair encoded the same way (including `/`, `=`, `&`,
///   `+`), sorted by encoded key and then encoded value; a parameter without `=` gets an empty value;
/// - header names are lowercased, values trimmed with inner runs of whitespace collapsed to one
///   space, repeated headers joined with `,`, and the list sorted by name.
///
/// The path and query of `url` are first percent-decoded and then re-encoded canonically, so a URL
/// built with ``S3URIEncoding`` signs to the same bytes as botocore, and a hand-written one with, for
/// instance, an unencoded `(` still gets the canonical `%28`. A `+` in the query is a literal plus
/// (it is encoded `%2B`), never a space: build query strings with ``S3URIEncoding/encode(_:keepSlash:)``.
public struct SigV4Signer: Sendable {
    /// The access key id.
    public var accessKey: String
    /// The secret access key.
    public var secretKey: String
    /// The region in the credential scope, e.g. `us-east-1`.
    public var region: String
    /// The service in the credential scope; `s3` for S3.
    public var service: String
    /// A session token (temporary credentials); sent as `x-amz-security-token` when set.
    public var sessionToken: String?

    /// The payload hash to send when the body is not hashed (`x-amz-content-sha256: UNSIGNED-PAYLOAD`).
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"
    /// The SHA-256 of an empty body, in lowercase hex.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// The longest validity a presigned URL may have (7 days), in seconds.
    public static let maxPresignExpiry = 604_800

    /// Headers that are never signed: hop-by-hop headers and ones proxies or HTTP stacks may rewrite
    /// (the same list as botocore's `SIGNED_HEADERS_BLACKLIST`).
    static let unsignableHeaders: Set<String> = [
        "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "te", "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent",
        "x-amzn-trace-id",
    ]

    /// Creates a signer.
    public init(accessKey: String, secretKey: String, region: String, service: String = "s3", sessionToken: String? = nil) {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.region = region
        self.service = service
        self.sessionToken = sessionToken
    }

    /// Returns the lowercase hex SHA-256 of `data`, the value to pass as `payloadHash`.
    public static func hexSHA256<D: DataProtocol>(_ data: D) -> String {
        hex(SHA256.hash(data: data))
    }

    /// Signs a request with an `Authorization` header.
    ///
    /// - Parameters:
    ///   - method: The HTTP method, e.g. `GET` (uppercased for signing).
    ///   - url: The URL that will be requested, percent-encoded.
    ///   - headers: The headers that will be sent and signed. `host` is derived from `url` when absent.
    ///     Any `authorization`, `x-amz-date`, `x-amz-content-sha256` or `x-amz-security-token` given
    ///     here is replaced. Hop-by-hop headers (see `unsignableHeaders`) are not signed.
    ///   - payloadHash: The lowercase hex SHA-256 of the body, ``emptyPayloadHash`` or ``unsignedPayload``.
    ///   - date: The signing time.
    /// - Returns: The headers to add to (or replace in) the request: `host` (when it was not given),
    ///   `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token` (with a session token) and
    ///   `authorization`. Send `host` exactly as returned: it was signed.
    public func sign(
        method: String, url: URL, headers: [(name: String, value: String)], payloadHash: String, date: Date
    ) -> [(name: String, value: String)] {
        let stamp = AMZDate(date)
        let replaced: Set<String> = ["authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"]
        var toSign = headers.filter { !replaced.contains($0.name.lowercased()) }
        var added: [(name: String, value: String)] = []
        if !toSign.contains(where: { $0.name.lowercased() == "host" }) {
            added.append((name: "host", value: Self.hostHeader(for: url)))
        }
        added.append((name: "x-amz-date", value: stamp.full))
        added.append((name: "x-amz-content-sha256", value: payloadHash))
        if let sessionToken {
            added.append((name: "x-amz-security-token", value: sessionToken))
        }
        toSign += added

        let canonical = Self.canonicalHeaders(toSign)
        let request = [
            method.uppercased(),
            S3URIEncoding.canonicalPath(Self.percentEncodedPath(url)),
            S3URIEncoding.canonicalQuery(Self.percentEncodedQuery(url)),
            canonical.block,
            canonical.signedNames,
            payloadHash,
        ].joined(separator: "\n")
        let signature = self.signature(canonicalRequest: request, stamp: stamp)
        let authorization = "AWS4-HMAC-SHA256 Credential=\(accessKey)/\(scope(stamp)), "
            + "SignedHeaders=\(canonical.signedNames), Signature=\(signature)"
        added.append((name: "authorization", value: authorization))
        return added
    }

    /// Returns a presigned URL: the request authorised by query parameters, valid for `expires` seconds.
    ///
    /// The payload is always `UNSIGNED-PAYLOAD`. Every header given is signed, so the client that uses
    /// the URL must send exactly those header values (bind `content-type` or `content-length` this
    /// way). `host` is derived from `url` when absent and is always signed.
    ///
    /// The returned URL keeps the original query parameters, in their order, canonically encoded, then
    /// `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`,
    /// `X-Amz-Security-Token` (with a session token) and last `X-Amz-Signature`, as botocore does.
    /// - Precondition: `1 <= expires <= maxPresignExpiry`.
    public func presign(
        method: String, url: URL, headers: [(name: String, value: String)], expires: Int, date: Date
    ) -> URL {
        precondition((1...Self.maxPresignExpiry).contains(expires), "presign expiry must be 1...604800 s")
        let stamp = AMZDate(date)
        var toSign = headers.filter { !Self.unsignableHeaders.contains($0.name.lowercased()) }
        if !toSign.contains(where: { $0.name.lowercased() == "host" }) {
            toSign.append((name: "host", value: Self.hostHeader(for: url)))
        }
        let canonical = Self.canonicalHeaders(toSign)

        var params = S3URIEncoding.decodeQuery(Self.percentEncodedQuery(url)).map {
            (S3URIEncoding.encode(bytes: $0.key, keepSlash: false), S3URIEncoding.encode(bytes: $0.value, keepSlash: false))
        }
        let auth: [(String, String)] = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "\(accessKey)/\(scope(stamp))"),
            ("X-Amz-Date", stamp.full),
            ("X-Amz-Expires", String(expires)),
            ("X-Amz-SignedHeaders", canonical.signedNames),
        ]
        params += auth.map { (S3URIEncoding.encode($0.0, keepSlash: false), S3URIEncoding.encode($0.1, keepSlash: false)) }
        if let sessionToken {
            params.append(("X-Amz-Security-Token", S3URIEncoding.encode(sessionToken, keepSlash: false)))
        }
        let query = params.map { $0.0 + "=" + $0.1 }.joined(separator: "&")
        let path = S3URIEncoding.canonicalPath(Self.percentEncodedPath(url))
        let request = [
            method.uppercased(), path, S3URIEncoding.canonicalQuery(query), canonical.block, canonical.signedNames,
            Self.unsignedPayload,
        ].joined(separator: "\n")
        let signature = self.signature(canonicalRequest: request, stamp: stamp)

        var components = URLComponents(url: url, resolvingAgainstBaseURL: false) ?? URLComponents()
        components.percentEncodedPath = path
        components.percentEncodedQuery = query + "&X-Amz-Signature=" + signature
        components.fragment = nil
        guard let signed = components.url else {
            preconditionFailure("a URL rebuilt from a valid URL's parts is valid")
        }
        return signed
    }

    // MARK: - Pieces

    /// The credential scope: `yyyymmdd/region/service/aws4_request`.
    func scope(_ stamp: AMZDate) -> String {
        "\(stamp.day)/\(region)/\(service)/aws4_request"
    }

    /// Computes the hex signature of a canonical request.
    func signature(canonicalRequest: String, stamp: AMZDate) -> String {
        let stringToSign = [
            "AWS4-HMAC-SHA256", stamp.full, scope(stamp), Self.hexSHA256(Data(canonicalRequest.utf8)),
        ].joined(separator: "\n")
        var key = SymmetricKey(data: Data("AWS4\(secretKey)".utf8))
        for part in [stamp.day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        return Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
    }

    /// The canonical header block (`name:value` lines, each ending in a newline) and the
    /// `;`-separated signed header names.
    static func canonicalHeaders(_ headers: [(name: String, value: String)]) -> (block: String, signedNames: String) {
        var byName: [String: [String]] = [:]
        for header in headers {
            let name = header.name.lowercased().trimmingCharacters(in: .whitespaces)
            guard !unsignableHeaders.contains(name) else { continue }
            byName[name, default: []].append(trimAll(header.value))
        }
        let names = byName.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        var block = ""
        for name in names {
            block += name + ":" + (byName[name] ?? []).joined(separator: ",") + "\n"
        }
        return (block, names.joined(separator: ";"))
    }

    /// Trims a header value and collapses each inner run of whitespace to one space.
    static func trimAll(_ value: String) -> String {
        value.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }

    /// The `host` header for `url`: lowercase host, with the port unless it is the scheme's default.
    public static func hostHeader(for url: URL) -> String {
        var host = (url.host(percentEncoded: true) ?? "").lowercased()
        if host.contains(":") && !host.hasPrefix("[") {
            host = "[\(host)]"
        }
        if let port = url.port {
            let scheme = url.scheme?.lowercased()
            let isDefault = (scheme == "http" && port == 80) || (scheme == "https" && port == 443)
            if !isDefault {
                host += ":\(port)"
            }
        }
        return host
    }

    static func percentEncodedPath(_ url: URL) -> String {
        URLComponents(url: url, resolvingAgainstBaseURL: false)?.percentEncodedPath ?? url.path(percentEncoded: true)
    }

    static func percentEncodedQuery(_ url: URL) -> String {
        URLComponents(url: url, resolvingAgainstBaseURL: false)?.percentEncodedQuery ?? ""
    }

    static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A signing time in SigV4's two formats, computed without `Calendar` or `DateFormatter`.
struct AMZDate: Sendable {
    /// `yyyyMMdd'T'HHmmss'Z'`, in UTC.
    let full: String
    /// `yyyyMMdd`, in UTC.
    let day: String

    init(_ date: Date) {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let dayOfMonth = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)

        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        day = pad(year, 4) + pad(month, 2) + pad(dayOfMonth, 2)
        full = day + "T" + pad(secondOfDay / 3600, 2) + pad(secondOfDay % 3600 / 60, 2) + pad(secondOfDay % 60, 2) + "Z"
    }
}

/// Percent-encoding as S3's SigV4 wants it: every byte outside the RFC 3986 unreserved set
/// (`A-Z a-z 0-9 - . _ ~`) becomes `%XX` with uppercase hex; `/` is kept in paths only.
public enum S3URIEncoding {
    /// Encodes the UTF-8 bytes of `text`.
    /// - Parameter keepSlash: Keep `/` as is (object keys in a path); `false` for query keys and values.
    public static func encode(_ text: String, keepSlash: Bool) -> String {
        encode(bytes: Array(text.utf8), keepSlash: keepSlash)
    }

    /// Encodes raw bytes (which need not be UTF-8).
    public static func encode(bytes: [UInt8], keepSlash: Bool) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for byte in bytes {
            if isUnreserved(byte) || (keepSlash && byte == UInt8(ascii: "/")) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether `byte` is in RFC 3986's unreserved set.
    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// Percent-decodes `text` to bytes; a `%` not followed by two hex digits is kept literally.
    /// `+` stays `+` (this is URI decoding, not form decoding).
    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8] {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
                let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2])
            {
                out.append(high << 4 | low)
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return out
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// The canonical URI of a percent-encoded path: decoded, then encoded once keeping `/`.
    /// An empty path is `/`. Not normalised (S3 keys may contain `//`, `.` and `..`).
    public static func canonicalPath(_ percentEncodedPath: String) -> String {
        guard !percentEncodedPath.isEmpty else { return "/" }
        return encode(bytes: decode(percentEncodedPath), keepSlash: true)
    }

    /// Splits a percent-encoded query into decoded `(key, value)` pairs, in order. Empty pairs
    /// (`&&`) are dropped; a pair without `=` has an empty value.
    static func decodeQuery(_ percentEncodedQuery: String) -> [(key: [UInt8], value: [UInt8])] {
        percentEncodedQuery.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : [])
        }
    }

    /// The canonical query string: each pair re-encoded, sorted by encoded key then encoded value,
    /// joined with `&`.
    public static func canonicalQuery(_ percentEncodedQuery: String) -> String {
        let pairs = percentEncodedQuery.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = encode(bytes: decode(parts[0]), keepSlash: false)
            let value = parts.count > 1 ? encode(bytes: decode(parts[1]), keepSlash: false) : ""
            return (Array(key.utf8), Array(value.utf8))
        }
        let sorted = pairs.sorted { lhs, rhs in
            lhs.0 == rhs.0 ? lhs.1.lexicographicallyPrecedes(rhs.1) : lhs.0.lexicographicallyPrecedes(rhs.0)
        }
        return sorted.map { String(decoding: $0.0, as: UTF8.self) + "=" + String(decoding: $0.1, as: UTF8.self) }
            .joined(separator: "&")
    }
}
