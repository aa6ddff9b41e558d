import AsyncHTTPClient
import NIOCore
import NIOPosix

/// An error from an ``S3Client`` operation.
///
/// `statusCode`, `code` and `message` come from the store's reply when there was one (`code` is S3's
/// error code from the XML body, such as `NoSuchKey` or `SlowDown`). ``isTransient`` says whether
/// trying again may succeed; the client already retried those up to its ``RetryPolicy``.
public struct S3Error: Error, Sendable, CustomStringConvertible {
    /// What went wrong, broadly.
    public enum Kind: Sendable, Equatable {
        /// The store answered with an error status.
        case http
        /// No usable answer: connection refused or reset, a timeout, a deadline exceeded.
        case transport
        /// The store answered with something this client cannot read.
        case invalidResponse
        /// An argument was rejected before anything was sent (bad key, expiry out of range, …).
        case invalidArgument
        /// A body was larger than the caller's limit.
        case tooLarge
        /// A local failure (reading or writing a file).
        case local
    }

    /// What went wrong, broadly.
    public var kind: Kind
    /// The operation, e.g. `PutObject`.
    public var operation: String
    /// The HTTP status code, when the store answered.
    public var statusCode: Int?
    /// S3's error code from the XML error body (e.g. `NoSuchKey`, `SlowDown`), when there was one.
    public var code: String?
    /// A human-readable message (S3's `Message`, or a description of the underlying error).
    public var message: String
    /// S3's request id, when the store sent one.
    public var requestID: String?
    /// How many attempts were made before giving up (1 when the error was not retried).
    public var attempts: Int = 1

    /// Creates an error.
    public init(
        kind: Kind, operation: String, statusCode: Int? = nil, code: String? = nil, message: String,
        requestID: String? = nil
    ) {
        self.kind = kind
        self.operation = operation
        self.statusCode = statusCode
        self.code = code
        self.message = message
        self.requestID = requestID
    }

    /// S3 error codes that mean "try again later".
    static let transientCodes: Set<String> = [
        "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "ThrottlingException", "Throttling", "RequestThrottled", "TooManyRequests",
    ]

    /// Whether trying again may succeed: transport failures (connection errors, timeouts), 5xx, 429
    /// and S3's throttling and timeout codes (`SlowDown`, `RequestTimeout`, …).
    public var isTransient: Bool {
        switch kind {
        case .transport:
            return true
        case .http:
            if let statusCode, statusCode >= 500 || statusCode == 429 { return true }
            if let code, Self.transientCodes.contains(code) { return true }
            return false
        case .invalidResponse, .invalidArgument, .tooLarge, .local:
            return false
        }
    }

    public var description: String {
        var text = "S3 \(operation) failed"
        if let statusCode { text += " (HTTP \(statusCode))" }
        if let code { text += " \(code)" }
        text += ": \(message)"
        if let requestID { text += " [request \(requestID)]" }
        if attempts > 1 { text += " after \(attempts) attempts" }
        return text
    }

    /// Classifies any error thrown while talking to the store. `CancellationError` is returned as is
    /// by the caller and never reaches here.
    static func wrap(_ error: any Error, operation: String) -> S3Error {
        if let error = error as? S3Error {
            return error
        }
        if let error = error as? HTTPClientError {
            let nonTransport: [HTTPClientError] = [
                .invalidURL, .emptyHost, .emptyScheme, .missingSocketPath, .alreadyShutdown, .bodyLengthMismatch,
                .cancelled, .redirectLimitReached, .redirectCycleDetected, .traceRequestWithBody,
                .identityCodingIncorrectlyPresent,
            ]
            let kind: Kind = nonTransport.contains(error) ? .invalidArgument : .transport
            return S3Error(kind: kind, operation: operation, message: "\(error)")
        }
        if error is IOError || error is ChannelError || error is NIOConnectionError {
            return S3Error(kind: .transport, operation: operation, message: "\(error)")
        }
        return S3Error(kind: .local, operation: operation, message: "\(error)")
    }
}
