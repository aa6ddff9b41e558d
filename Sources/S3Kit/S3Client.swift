import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// How often and how patiently an ``S3Client`` retries transient failures.
///
/// Delays use exponential backoff with full jitter: before retry *n* (1-based) the client sleeps a
/// random time in `0 ... min(maxDelay, baseDelay * 2^(n-1))`.
public struct RetryPolicy: Sendable {
    /// Attempts in all, the first one included (1 = no retries).
    public var maxAttempts: Int
    /// The backoff cap before the first retry.
    public var baseDelay: Duration
    /// The largest backoff cap.
    public var maxDelay: Duration

    /// Creates a policy. `maxAttempts` is clamped to at least 1.
    public init(maxAttempts: Int = 4, baseDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(5)) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// No retries.
    public static let none = RetryPolicy(maxAttempts: 1)

    /// The random delay before retry number `retry` (1-based).
    func delay(beforeRetry retry: Int) -> Duration {
        let cap = min(maxDelay.seconds, baseDelay.seconds * pow(2, Double(max(0, retry - 1))))
        return .seconds(Double.random(in: 0...max(0, cap)))
    }
}

/// Where and how an ``S3Client`` talks to its bucket.
public struct S3Configuration: Sendable {
    /// How the bucket appears in URLs.
    public enum Addressing: Sendable {
        /// `https://endpoint/bucket/key` (SeaweedFS, MinIO, most self-hosted stores).
        case path
        /// `https://bucket.endpoint/key` (AWS's default).
        case virtualHost
    }

    /// The store's base URL, e.g. `http://127.0.0.1:18433` or `https://s3.eu-west-1.amazonaws.com`.
    public var endpoint: URL
    /// The signing region, e.g. `us-east-1`.
    public var region: String
    /// The bucket.
    public var bucket: String
    /// Prepended to every key (e.g. `lector/`); listings return keys without it.
    public var keyPrefix: String
    /// The access key id.
    public var accessKey: String
    /// The secret access key.
    public var secretKey: String
    /// A session token for temporary credentials.
    public var sessionToken: String?
    /// Path-style or virtual-host addressing.
    public var addressing: Addressing
    /// The deadline of one attempt, from sending the request to the last byte of the response
    /// (so it must cover the largest transfer). A response whose body is still arriving then is cancelled.
    public var requestTimeout: Duration
    /// Retries of transient failures.
    public var retry: RetryPolicy

    /// Creates a configuration.
    public init(
        endpoint: URL, region: String, bucket: String, keyPrefix: String = "", accessKey: String, secretKey: String,
        sessionToken: String? = nil, addressing: Addressing = .path, requestTimeout: Duration = .seconds(60),
        retry: RetryPolicy = RetryPolicy()
    ) {
        self.endpoint = endpoint
        self.region = region
        self.bucket = bucket
        self.keyPrefix = keyPrefix
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.sessionToken = sessionToken
        self.addressing = addressing
        self.requestTimeout = requestTimeout
        self.retry = retry
    }
}

/// What the store says about one object.
public struct S3ObjectInfo: Sendable, Equatable {
    /// The key, without the client's key prefix.
    public var key: String
    /// The size in bytes.
    public var size: Int64
    /// The ETag, without quotes (the MD5 in hex for a single-part upload).
    public var etag: String?
    /// The content type (HEAD and GET only).
    public var contentType: String?
    /// The last modification time (listings only).
    public var lastModified: Date?
    /// User metadata (`x-amz-meta-*`, names lowercased, prefix removed; HEAD and GET only).
    public var metadata: [String: String]

    /// Creates an object description.
    public init(
        key: String, size: Int64, etag: String? = nil, contentType: String? = nil, lastModified: Date? = nil,
        metadata: [String: String] = [:]
    ) {
        self.key = key
        self.size = size
        self.etag = etag
        self.contentType = contentType
        self.lastModified = lastModified
        self.metadata = metadata
    }
}

/// One page of a ListObjectsV2 listing.
public struct S3ListPage: Sendable {
    /// The objects on this page, keys without the client's key prefix.
    public var objects: [S3ObjectInfo]
    /// The token for the next page; nil on the last page.
    public var continuationToken: String?
}

/// A small S3 client over AsyncHTTPClient, for one bucket.
///
/// Every request is signed with SigV4 (payload hashed when the body is known, including files), has
/// a deadline (``S3Configuration/requestTimeout``) and is retried on transient failures per
/// ``S3Configuration/retry``. Uploads carry `x-amz-checksum-sha256` and `Content-MD5`, so the store
/// rejects a corrupted body. Files are streamed in both directions, never held in memory. Error
/// bodies are read up to 64 KiB.
///
/// The `HTTPClient` is the caller's: the client neither creates nor shuts it down. ``makeHTTPClient(connections:connectTimeout:)``
/// makes one fit for S3 (no redirects, no decompression, a bounded pool).
public struct S3Client: Sendable {
    /// The configuration.
    public let configuration: S3Configuration
    let http: HTTPClient
    let signer: SigV4Signer
    let logger: Logger
    let scheme: String
    let hostPort: String
    let basePath: String

    /// The most bytes read from an error reply.
    static let maxErrorBody = 64 * 1024
    /// The most bytes read from a listing or other XML reply.
    static let maxXMLBody = 16 * 1024 * 1024

    /// Creates a client.
    /// - Throws: ``S3Error`` (`invalidArgument`) if the endpoint has no scheme or host.
    public init(configuration: S3Configuration, httpClient: HTTPClient, logger: Logger = Logger(label: "S3Kit")) throws {
        guard let components = URLComponents(url: configuration.endpoint, resolvingAgainstBaseURL: false),
            let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = components.percentEncodedHost, !host.isEmpty
        else {
            throw S3Error(kind: .invalidArgument, operation: "Init", message: "invalid endpoint \(configuration.endpoint)")
        }
        self.configuration = configuration
        self.http = httpClient
        self.logger = logger
        self.signer = SigV4Signer(
            accessKey: configuration.accessKey, secretKey: configuration.secretKey, region: configuration.region,
            sessionToken: configuration.sessionToken)
        self.scheme = scheme
        self.hostPort = host + (components.port.map { ":\($0)" } ?? "")
        var path = components.percentEncodedPath
        while path.hasSuffix("/") { path.removeLast() }
        self.basePath = path
    }

    // MARK: - Objects

    /// Uploads `data` to `key`. Returns the ETag.
    ///
    /// With `onlyIfAbsent`, the request carries `If-None-Match: *`: a store that supports conditional writes
    /// answers 412 (`PreconditionFailed`) when the key exists, and the upload does not happen.
    @discardableResult
    public func putObject(
        key: String, data: Data, contentType: String? = nil, metadata: [String: String] = [:], onlyIfAbsent: Bool = false
    ) async throws -> String? {
        try await putObject(
            key: key, body: ByteBuffer(data: data), contentType: contentType, metadata: metadata, onlyIfAbsent: onlyIfAbsent)
    }

    /// Uploads `body` to `key`. Returns the ETag. `onlyIfAbsent`: as for `putObject(key:data:)`.
    @discardableResult
    public func putObject(
        key: String, body: ByteBuffer, contentType: String? = nil, metadata: [String: String] = [:], onlyIfAbsent: Bool = false
    ) async throws -> String? {
        try validate(metadata: metadata)
        let sha = SHA256.hash(data: body.readableBytesView)
        let md5 = Insecure.MD5.hash(data: body.readableBytesView)
        var headers = uploadHeaders(
            size: Int64(body.readableBytes), sha256: sha, md5: md5, contentType: contentType, metadata: metadata)
        if onlyIfAbsent { headers.append((name: "if-none-match", value: "*")) }
        let request = Request(
            operation: "PutObject", method: .PUT, key: key, headers: headers, body: .bytes(body),
            payloadHash: SigV4Signer.hex(sha))
        return try await send(request) { response in Self.etag(response.headers) }
    }

    /// Uploads the file at `path` to `key`, streaming it: the file is read once to hash it and once
    /// (per attempt) to send it, one 1 MiB chunk at a time. Returns the ETag.
    @discardableResult
    public func putObject(
        key: String, filePath path: String, contentType: String? = nil, metadata: [String: String] = [:]
    ) async throws -> String? {
        try validate(metadata: metadata)
        let digest: FileIO.Digest
        do {
            digest = try await FileIO.digest(path: path)
        } catch {
            throw S3Error(kind: .local, operation: "PutObject", message: "cannot read \(path): \(error)")
        }
        let headers = uploadHeaders(
            size: digest.size, sha256: digest.sha256, md5: digest.md5, contentType: contentType, metadata: metadata)
        let request = Request(
            operation: "PutObject", method: .PUT, key: key, headers: headers, body: .file(path, size: digest.size),
            payloadHash: SigV4Signer.hex(digest.sha256))
        return try await send(request) { response in Self.etag(response.headers) }
    }

    /// Downloads `key` into the file at `path`, streaming: the body goes to a temporary file next to
    /// `path`, renamed over it once complete (a failed download leaves `path` untouched).
    /// - Returns: The object's size, ETag and content type.
    /// - Throws: ``S3Error`` with status 404 (`NoSuchKey`) if there is no such object.
    @discardableResult
    public func getObject(key: String, toFile path: String) async throws -> S3ObjectInfo {
        let request = Request(operation: "GetObject", method: .GET, key: key)
        return try await send(request) { response in
            let writer: FileIO.AtomicWriter
            do {
                writer = try await FileIO.AtomicWriter.create(destination: path)
            } catch {
                throw S3Error(kind: .local, operation: "GetObject", message: "cannot create \(path): \(error)")
            }
            var size: Int64 = 0
            do {
                for try await chunk in response.body {
                    size += Int64(chunk.readableBytes)
                    try await writer.write(chunk)
                }
                if let expected = Self.contentLength(response.headers), expected != size {
                    throw S3Error(
                        kind: .transport, operation: "GetObject",
                        message: "body ended after \(size) of \(expected) bytes")
                }
                try await writer.commit()
            } catch {
                await writer.discard()
                throw error
            }
            return Self.info(key: key, size: size, headers: response.headers)
        }
    }

    /// Downloads `key` into memory, refusing objects larger than `maxBytes`.
    /// - Throws: ``S3Error`` (`tooLarge`) beyond `maxBytes`; with status 404 if there is no such object.
    public func getObjectData(key: String, maxBytes: Int) async throws -> Data {
        let request = Request(operation: "GetObject", method: .GET, key: key)
        return try await send(request) { response in
            if let length = Self.contentLength(response.headers), length > Int64(maxBytes) {
                throw S3Error(
                    kind: .tooLarge, operation: "GetObject", message: "object is \(length) bytes, limit \(maxBytes)")
            }
            let buffer = try await Self.collect(response.body, maxBytes: maxBytes, operation: "GetObject")
            return Data(buffer: buffer)
        }
    }

    /// The first `count` bytes of `key` (fewer when the object is shorter), with a ranged GET
    /// (`Range: bytes=0-<count-1>`). A store that ignores the range and sends the whole object is read only
    /// up to `count` bytes. An empty object answers 416, which this returns as no bytes.
    /// - Throws: ``S3Error`` with status 404 if there is no such object.
    public func getObjectPrefix(key: String, count: Int) async throws -> [UInt8] {
        precondition(count > 0, "count must be positive")
        let request = Request(
            operation: "GetObject", method: .GET, key: key, headers: [(name: "range", value: "bytes=0-\(count - 1)")])
        return try await send(request, accept: { (200..<300).contains($0) || $0 == 416 }) { response in
            guard response.status.code != 416 else { return [] }
            var bytes: [UInt8] = []
            for try await chunk in response.body {
                bytes += chunk.readableBytesView.prefix(count - bytes.count)
                if bytes.count >= count { break }
            }
            return bytes
        }
    }

    /// Streams `key`'s body through `consume`, one chunk at a time (never the whole object in memory), from a
    /// fresh `initial()` state on every attempt: a transport failure in the middle of the body is retried from
    /// the start. Returns the object's information and the final state.
    /// - Throws: ``S3Error`` with status 404 if there is no such object; whatever `consume` throws.
    public func getObject<State>(
        key: String, initial: @escaping @Sendable () -> State, consume: @escaping @Sendable (inout State, ByteBuffer) throws -> Void
    ) async throws -> (info: S3ObjectInfo, state: State) where State: Sendable {
        let request = Request(operation: "GetObject", method: .GET, key: key)
        return try await send(request) { response in
            var state = initial()
            var size: Int64 = 0
            for try await chunk in response.body {
                size += Int64(chunk.readableBytes)
                try consume(&state, chunk)
            }
            if let expected = Self.contentLength(response.headers), expected != size {
                throw S3Error(kind: .transport, operation: "GetObject", message: "body ended after \(size) of \(expected) bytes")
            }
            return (Self.info(key: key, size: size, headers: response.headers), state)
        }
    }

    /// Returns what the store says about `key`, or nil if there is no such object.
    public func headObject(key: String) async throws -> S3ObjectInfo? {
        let request = Request(operation: "HeadObject", method: .HEAD, key: key)
        return try await send(request, accept: { $0 == 404 || (200..<300).contains($0) }) { response in
            guard response.status != .notFound else { return nil }
            let size = Self.contentLength(response.headers) ?? 0
            return Self.info(key: key, size: size, headers: response.headers)
        }
    }

    /// Deletes `key`. Deleting a missing key succeeds (as in S3).
    public func deleteObject(key: String) async throws {
        let request = Request(operation: "DeleteObject", method: .DELETE, key: key)
        try await send(request) { _ in () }
    }

    /// Deletes `keys` with DeleteObjects, 1000 per request.
    /// - Returns: The keys the store failed to delete, with its error code (empty if all went).
    @discardableResult
    public func deleteObjects(keys: [String]) async throws -> [(key: String, code: String)] {
        var failed: [(key: String, code: String)] = []
        var start = 0
        while start < keys.count {
            let batch = keys[start..<min(keys.count, start + 1000)]
            start += batch.count
            var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            xml += "<Quiet>true</Quiet>"
            for key in batch {
                xml += "<Object><Key>\(xmlEscape(configuration.keyPrefix + key))</Key></Object>"
            }
            xml += "</Delete>"
            let body = ByteBuffer(string: xml)
            let sha = SHA256.hash(data: body.readableBytesView)
            let md5 = Insecure.MD5.hash(data: body.readableBytesView)
            let headers = [
                (name: "content-type", value: "application/xml"),
                (name: "content-md5", value: Data(md5).base64EncodedString()),
                (name: "x-amz-checksum-sha256", value: Data(sha).base64EncodedString()),
            ]
            let request = Request(
                operation: "DeleteObjects", method: .POST, key: nil, query: [("delete", nil)], headers: headers,
                body: .bytes(body), payloadHash: SigV4Signer.hex(sha))
            let root = try await send(request) { response in
                try await Self.readXML(response, operation: "DeleteObjects")
            }
            for error in root.children("Error") {
                failed.append((key: stripPrefix(error.text("Key") ?? ""), code: error.text("Code") ?? "Unknown"))
            }
        }
        return failed
    }

    /// Copies `sourceKey` to `destinationKey` within the bucket (server side; up to 5 GB).
    public func copyObject(from sourceKey: String, to destinationKey: String) async throws {
        let source = "/" + S3URIEncoding.encode(configuration.bucket, keepSlash: false) + "/"
            + S3URIEncoding.encode(configuration.keyPrefix + sourceKey, keepSlash: true)
        let request = Request(
            operation: "CopyObject", method: .PUT, key: destinationKey, headers: [(name: "x-amz-copy-source", value: source)])
        // S3 may answer 200 with an <Error> body for a copy that failed late.
        let root = try await send(request) { response in try await Self.readXML(response, operation: "CopyObject") }
        if root.name == "Error" {
            throw S3Error(
                kind: .http, operation: "CopyObject", statusCode: 200, code: root.text("Code"),
                message: root.text("Message") ?? "copy failed", requestID: root.text("RequestId"))
        }
    }

    /// Lists one page of keys under `prefix` (relative to the client's key prefix) with ListObjectsV2.
    public func listObjectsPage(prefix: String = "", continuationToken: String? = nil, maxKeys: Int = 1000) async throws
        -> S3ListPage
    {
        var query: [(String, String?)] = [("list-type", "2"), ("max-keys", String(min(1000, max(1, maxKeys))))]
        query.append(("prefix", configuration.keyPrefix + prefix))
        if let continuationToken {
            query.append(("continuation-token", continuationToken))
        }
        let request = Request(operation: "ListObjectsV2", method: .GET, key: nil, query: query)
        let root = try await send(request) { response in try await Self.readXML(response, operation: "ListObjectsV2") }
        guard root.name == "ListBucketResult" else {
            throw S3Error(kind: .invalidResponse, operation: "ListObjectsV2", message: "unexpected root <\(root.name)>")
        }
        let objects = root.children("Contents").map { item in
            S3ObjectInfo(
                key: stripPrefix(item.text("Key") ?? ""), size: Int64(item.text("Size") ?? "") ?? 0,
                etag: item.text("ETag").map(Self.unquote), lastModified: item.text("LastModified").flatMap(Self.parseISO8601))
        }
        let truncated = root.text("IsTruncated") == "true"
        let next = root.text("NextContinuationToken").flatMap { $0.isEmpty ? nil : $0 }
        if truncated && next == nil {
            throw S3Error(
                kind: .invalidResponse, operation: "ListObjectsV2", message: "truncated listing without a continuation token")
        }
        return S3ListPage(objects: objects, continuationToken: truncated ? next : nil)
    }

    /// Lists every key under `prefix`, following continuation tokens.
    public func listObjects(prefix: String = "", pageSize: Int = 1000) async throws -> [S3ObjectInfo] {
        var all: [S3ObjectInfo] = []
        var token: String?
        repeat {
            let page = try await listObjectsPage(prefix: prefix, continuationToken: token, maxKeys: pageSize)
            all += page.objects
            if page.continuationToken != nil && page.continuationToken == token {
                throw S3Error(kind: .invalidResponse, operation: "ListObjectsV2", message: "continuation token repeated")
            }
            token = page.continuationToken
        } while token != nil
        return all
    }

    // MARK: - Presigned URLs

    /// A presigned GET URL for `key`, valid for `expires` (1 s to 7 days), optionally making the store
    /// answer with the given `Content-Type` and `Content-Disposition`.
    public func presignedGET(
        key: String, expires: Duration, responseContentType: String? = nil, responseContentDisposition: String? = nil,
        now: Date = Date()
    ) throws -> URL {
        var query: [(String, String?)] = []
        if let responseContentDisposition {
            query.append(("response-content-disposition", responseContentDisposition))
        }
        if let responseContentType {
            query.append(("response-content-type", responseContentType))
        }
        return try presign(method: "GET", key: key, query: query, headers: [], expires: expires, now: now)
    }

    /// A presigned PUT URL for `key`, valid for `expires` (1 s to 7 days). `Content-Type` and
    /// `Content-Length`, when given, are signed headers: the uploader must send exactly these values.
    public func presignedPUT(
        key: String, expires: Duration, contentType: String? = nil, contentLength: Int64? = nil, now: Date = Date()
    ) throws -> URL {
        var headers: [(name: String, value: String)] = []
        if let contentType { headers.append((name: "content-type", value: contentType)) }
        if let contentLength { headers.append((name: "content-length", value: String(contentLength))) }
        return try presign(method: "PUT", key: key, query: [], headers: headers, expires: expires, now: now)
    }

    func presign(
        method: String, key: String, query: [(String, String?)], headers: [(name: String, value: String)],
        expires: Duration, now: Date
    ) throws -> URL {
        let seconds = Int(expires.seconds.rounded(.down))
        guard (1...SigV4Signer.maxPresignExpiry).contains(seconds) else {
            throw S3Error(kind: .invalidArgument, operation: "Presign", message: "expiry must be 1 s to 7 days")
        }
        try validate(key: key, operation: "Presign")
        guard let url = URL(string: url(key: key, query: query)) else {
            throw S3Error(kind: .invalidArgument, operation: "Presign", message: "cannot build a URL for \(key)")
        }
        return signer.presign(method: method, url: url, headers: headers, expires: seconds, date: now)
    }

    // MARK: - Requests

    /// A request body that can be sent again on a retry.
    enum Body: Sendable {
        case empty
        case bytes(ByteBuffer)
        case file(String, size: Int64)
    }

    /// What to send, before URL building and signing.
    struct Request: Sendable {
        var operation: String
        var method: HTTPMethod
        var key: String?
        var query: [(String, String?)] = []
        var headers: [(name: String, value: String)] = []
        var body: Body = .empty
        var payloadHash: String = SigV4Signer.emptyPayloadHash
    }

    /// The URL of `key` (or of the bucket when nil), with `query` encoded canonically in order.
    func url(key: String?, query: [(String, String?)]) -> String {
        let encodedKey = key.map { S3URIEncoding.encode(configuration.keyPrefix + $0, keepSlash: true) } ?? ""
        let bucket = S3URIEncoding.encode(configuration.bucket, keepSlash: false)
        var text: String
        switch configuration.addressing {
        case .path:
            text = "\(scheme)://\(hostPort)\(basePath)/\(bucket)" + (key == nil ? "" : "/\(encodedKey)")
        case .virtualHost:
            text = "\(scheme)://\(bucket).\(hostPort)\(basePath)/\(encodedKey)"
        }
        if !query.isEmpty {
            text += "?" + query.map { name, value in
                S3URIEncoding.encode(name, keepSlash: false)
                    + (value.map { "=" + S3URIEncoding.encode($0, keepSlash: false) } ?? "")
            }.joined(separator: "&")
        }
        return text
    }

    func validate(key: String, operation: String) throws {
        let full = configuration.keyPrefix + key
        guard !full.isEmpty, full.utf8.count <= 1024 else {
            throw S3Error(kind: .invalidArgument, operation: operation, message: "key must be 1 to 1024 bytes")
        }
    }

    /// Builds, signs and sends `request`, retrying transient failures; hands an accepted response
    /// (2xx by default) to `handle`, and turns any other into an ``S3Error``. `handle` runs inside the
    /// retry loop, so a transport failure while it streams the body is retried too. Each attempt, body
    /// included, ends at ``S3Configuration/requestTimeout`` (see ``withDeadline(_:operation:_:)``).
    func send<T: Sendable>(
        _ request: Request, accept: @escaping @Sendable (Int) -> Bool = { (200..<300).contains($0) },
        _ handle: @escaping @Sendable (HTTPClientResponse) async throws -> T
    ) async throws -> T {
        if let key = request.key {
            try validate(key: key, operation: request.operation)
        }
        let policy = configuration.retry
        let timeout = configuration.requestTimeout
        let (http, logger) = (self.http, self.logger)
        var attempt = 1
        while true {
            do {
                let prepared = try httpRequest(request, now: Date())
                return try await Self.withDeadline(timeout, operation: request.operation) {
                    let response = try await http.execute(prepared, deadline: .now() + TimeAmount(timeout), logger: logger)
                    let status = Int(response.status.code)
                    guard accept(status) else {
                        throw await Self.error(from: response, operation: request.operation)
                    }
                    return try await handle(response)
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                var failure = S3Error.wrap(error, operation: request.operation)
                failure.attempts = attempt
                guard failure.isTransient, attempt < policy.maxAttempts, !Task.isCancelled else {
                    throw failure
                }
                let delay = policy.delay(beforeRetry: attempt)
                logger.debug(
                    "S3 request failed, retrying",
                    metadata: ["operation": "\(request.operation)", "attempt": "\(attempt)", "error": "\(failure)"])
                attempt += 1
                try await Task.sleep(for: delay)
            }
        }
    }

    /// Runs `body` (a request and the reading of its whole response) and cancels it once `timeout` has passed,
    /// throwing a transient ``S3Error`` (`transport`). AsyncHTTPClient's own deadline ends when the response
    /// head arrives; without this, a store that sends the body slowly, or stops halfway, would hold the caller
    /// for as long as it keeps some bytes coming.
    static func withDeadline<T: Sendable>(
        _ timeout: Duration, operation: String, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw S3Error(
                    kind: .transport, operation: operation,
                    message: "no complete answer within \(timeout.seconds) s (body included)")
            }
            return value
        }
    }

    /// The signed `HTTPClientRequest` for one attempt.
    func httpRequest(_ request: Request, now: Date) throws -> HTTPClientRequest {
        let text = url(key: request.key, query: request.query)
        guard let url = URL(string: text) else {
            throw S3Error(kind: .invalidArgument, operation: request.operation, message: "cannot build a URL for \(text)")
        }
        var headers = request.headers
        switch request.body {
        case .empty:
            if request.method == .PUT || request.method == .POST {
                headers.append((name: "content-length", value: "0"))
            }
        case .bytes(let buffer):
            headers.append((name: "content-length", value: String(buffer.readableBytes)))
        case .file(_, let size):
            headers.append((name: "content-length", value: String(size)))
        }
        let added = signer.sign(
            method: request.method.rawValue, url: url, headers: headers, payloadHash: request.payloadHash, date: now)
        var result = HTTPClientRequest(url: text)
        result.method = request.method
        for header in headers + added where header.name != "content-length" {
            result.headers.replaceOrAdd(name: header.name, value: header.value)
        }
        switch request.body {
        case .empty:
            if request.method == .PUT || request.method == .POST {
                result.body = .bytes(ByteBuffer())
            }
        case .bytes(let buffer):
            result.body = .bytes(buffer)
        case .file(let path, let size):
            result.body = .stream(FileIO.Chunks(path: path), length: .known(size))
        }
        return result
    }

    /// Checks that user metadata can travel as HTTP headers: names are HTTP tokens, values printable
    /// ASCII (S3 would need RFC 2047 encoding for anything else; encode such values yourself).
    func validate(metadata: [String: String]) throws {
        let tokenSymbols = Set("!#$%&'*+-.^_`|~".utf8)
        for (name, value) in metadata {
            let nameOK = !name.isEmpty && name.utf8.allSatisfy { byte in
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || tokenSymbols.contains(byte)
            }
            let valueOK = value.utf8.allSatisfy { (0x20...0x7E).contains($0) || $0 == 0x09 }
            guard nameOK, valueOK else {
                throw S3Error(
                    kind: .invalidArgument, operation: "PutObject",
                    message: "metadata \(name) must have a token name and a printable ASCII value")
            }
        }
    }

    /// Headers of an upload: checksums, type and metadata (the length is added when sending).
    func uploadHeaders(
        size: Int64, sha256: SHA256.Digest, md5: Insecure.MD5.Digest, contentType: String?, metadata: [String: String]
    ) -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = [
            (name: "x-amz-checksum-sha256", value: Data(sha256).base64EncodedString()),
            (name: "content-md5", value: Data(md5).base64EncodedString()),
        ]
        if let contentType {
            headers.append((name: "content-type", value: contentType))
        }
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) {
            headers.append((name: "x-amz-meta-" + name.lowercased(), value: value))
        }
        return headers
    }

    // MARK: - Replies

    /// Reads at most ``maxErrorBody`` bytes of an error reply and makes an ``S3Error`` of it.
    static func error(from response: HTTPClientResponse, operation: String) async -> S3Error {
        let status = Int(response.status.code)
        let requestID = response.headers.first(name: "x-amz-request-id")
        var body = ByteBuffer()
        do {
            for try await chunk in response.body {
                var chunk = chunk
                let room = maxErrorBody - body.readableBytes
                if chunk.readableBytes > room {
                    chunk = chunk.getSlice(at: chunk.readerIndex, length: room) ?? ByteBuffer()
                }
                body.writeImmutableBuffer(chunk)
                if body.readableBytes >= maxErrorBody { break }
            }
        } catch {
            // A partial error body is still worth parsing; the status alone decides transience.
        }
        let root = XMLNode.parse(Data(buffer: body))
        let message = root?.text("Message") ?? (response.status.reasonPhrase.isEmpty ? "HTTP \(status)" : response.status.reasonPhrase)
        return S3Error(
            kind: .http, operation: operation, statusCode: status, code: root?.text("Code"), message: message,
            requestID: root?.text("RequestId") ?? requestID)
    }

    /// Collects a body of at most `maxBytes`, or throws ``S3Error`` (`tooLarge`).
    static func collect(_ body: HTTPClientResponse.Body, maxBytes: Int, operation: String) async throws -> ByteBuffer {
        var buffer = ByteBuffer()
        for try await chunk in body {
            guard buffer.readableBytes + chunk.readableBytes <= maxBytes else {
                throw S3Error(kind: .tooLarge, operation: operation, message: "body exceeds \(maxBytes) bytes")
            }
            buffer.writeImmutableBuffer(chunk)
        }
        return buffer
    }

    /// Reads and parses an XML reply (bounded by ``maxXMLBody``).
    static func readXML(_ response: HTTPClientResponse, operation: String) async throws -> XMLNode {
        let buffer = try await collect(response.body, maxBytes: maxXMLBody, operation: operation)
        if buffer.readableBytes == 0 {
            return XMLNode(name: "")
        }
        guard let root = XMLNode.parse(Data(buffer: buffer)) else {
            throw S3Error(kind: .invalidResponse, operation: operation, message: "malformed XML reply")
        }
        return root
    }

    static func contentLength(_ headers: HTTPHeaders) -> Int64? {
        headers.first(name: "content-length").flatMap { Int64($0) }
    }

    static func etag(_ headers: HTTPHeaders) -> String? {
        headers.first(name: "etag").map(unquote)
    }

    static func unquote(_ text: String) -> String {
        text.count >= 2 && text.hasPrefix("\"") && text.hasSuffix("\"") ? String(text.dropFirst().dropLast()) : text
    }

    static func info(key: String, size: Int64, headers: HTTPHeaders) -> S3ObjectInfo {
        var metadata: [String: String] = [:]
        for header in headers where header.name.lowercased().hasPrefix("x-amz-meta-") {
            metadata[String(header.name.lowercased().dropFirst("x-amz-meta-".count))] = header.value
        }
        return S3ObjectInfo(
            key: key, size: size, etag: etag(headers), contentType: headers.first(name: "content-type"),
            metadata: metadata)
    }

    static func parseISO8601(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) {
            return date
        }
        return try? Date(text, strategy: Date.ISO8601FormatStyle())
    }

    func stripPrefix(_ key: String) -> String {
        key.hasPrefix(configuration.keyPrefix) ? String(key.dropFirst(configuration.keyPrefix.count)) : key
    }
}

extension S3Client {
    /// An `HTTPClient` fit for S3, for the caller to own and shut down: redirects are not followed (a store never
    /// needs them, and following one would send a signed request, and its body, elsewhere), bodies are not
    /// decompressed (they are the objects' bytes, checked against their checksums), and at most `connections`
    /// connections are open to the store (AsyncHTTPClient's per-host limit: further requests wait for one);
    /// connections idle for a minute are closed.
    public static func makeHTTPClient(connections: Int, connectTimeout: Duration = .seconds(10)) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: TimeAmount(connectTimeout)), decompression: .disabled)
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, connections))
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

extension TimeAmount {
    /// A NIO time amount from a `Duration` (nanosecond precision).
    init(_ duration: Duration) {
        let nanos = duration.components.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        self = .nanoseconds(nanos.overflow ? .max : nanos.partialValue + duration.components.attoseconds / 1_000_000_000)
    }
}
