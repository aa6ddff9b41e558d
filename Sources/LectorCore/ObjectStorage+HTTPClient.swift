import AsyncHTTPClient
import Logging
import S3Kit
import ServiceLifecycle

extension ObjectStorage {
    /// The object store's HTTP client for a process: its own (not `HTTPClient.shared`), without redirects or
    /// decompression, with at most `connections(settings:slots:)` connections (`S3Client.makeHTTPClient`). Run
    /// an `HTTPClientService` for it, so it is shut down when the process ends.
    public static func makeHTTPClient(settings: Settings, slots: Int?) -> HTTPClient {
        S3Client.makeHTTPClient(
            connections: connections(settings: settings, slots: slots),
            connectTimeout: .milliseconds(Int64(min(10, settings.s3Timeout) * 1000)))
    }

    /// `LECTOR_S3_CONNECTIONS`, else: for a worker (`slots`), 8 per slot (an attempt stages or copies its results
    /// 8 at a time, `concurrency`; its download comes before them) plus two (the sweeper and the health probe);
    /// for the API, 32 (a submit in flight holds one while its document is stored; more wait).
    public static func connections(settings: Settings, slots: Int?) -> Int {
        if let configured = settings.s3Connections { return configured }
        guard let slots else { return 32 }
        return slots * 8 + 2
    }
}

/// Shuts an `HTTPClient` down when the process ends: a `Service` that waits for the graceful shutdown, then
/// calls `shutdown()` (which fails requests still running; list it before the services that use the client, as
/// `ServiceGroup` stops services in reverse order).
public struct HTTPClientService: Service, CustomStringConvertible {
    public let client: HTTPClient
    public let logger: Logger

    public init(client: HTTPClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public var description: String { "HTTPClientService(object storage)" }

    public func run() async throws {
        try? await gracefulShutdown()
        do {
            try await client.shutdown()
        } catch {
            logger.warning("could not shut the object store's HTTP client down", metadata: ["error": "\(String(reflecting: error))"])
        }
    }
}
