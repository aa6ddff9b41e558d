import CEmbedded
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import NIOCore
import NIOHTTP1
import LectorCore
import Logging
import PostgresNIO
import ServiceLifecycle

/// Builds the router: public health routes, the web page, the signed file links, and `/v1` behind API keys.
public func buildRouter(_ dependencies: APIDependencies) -> Router<LectorRequestContext> {
    let router = Router(context: LectorRequestContext.self)
    let timeout = Duration.milliseconds(Int64(dependencies.settings.databaseTimeout * 1000))
    router.add(middleware: RequestIDMiddleware())
    router.add(middleware: RequestLogMiddleware())
    router.add(middleware: MetricsMiddleware(metrics: dependencies.metrics))
    router.add(middleware: ErrorMiddleware())
    router.add(middleware: SingleQueryValuesMiddleware())
    router.get("healthz") { _, _ -> Response in
        jsonResponse(["status": "ok"])
    }
    router.get("readyz") { _, context -> Response in
        var checks: [String: String] = [:]
        do {
            try await withDeadline(timeout, "ping") { try await dependencies.jobs.ping() }
            checks["database"] = "ok"
        } catch {
            checks["database"] = "unreachable"
        }
        do {
            try await dependencies.storageHealth.check()
            checks["storage"] = "ok"
        } catch let error as StorageError {
            checks["storage"] = error.kind == .full ? "full" : "not writable"
        } catch {
            checks["storage"] = "not writable"
        }
        let ready = checks.values.allSatisfy { $0 == "ok" }
        checks["status"] = ready ? "ready" : "not ready"
        return jsonResponse(checks, status: ready ? .ok : .serviceUnavailable)
    }
    router.get("metrics") { _, _ -> Response in
        await metricsResponse(dependencies.metrics)
    }
    router.get("openapi.json") { _, _ -> Response in
        Response(
            status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.data)))
    }
    WebAssets.addRoutes(to: router)
    let limiter = RateLimiter(rate: dependencies.settings.rateLimit, burst: dependencies.settings.rateBurst)
    let v1 = router.group("v1").add(
        middleware: AuthMiddleware(keys: dependencies.keys, timeout: timeout, limiter: limiter))
    JobsController(dependencies: dependencies).addRoutes(v1: v1, root: router)
    UploadsController(dependencies: dependencies).addRoutes(v1: v1)
    BatchesController(dependencies: dependencies).addRoutes(v1: v1, root: router)
    EventsController(dependencies: dependencies).addRoutes(v1: v1)
    return router
}

func jsonResponse(_ object: [String: String], status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    return Response(
        status: status, headers: [.contentType: "application/json; charset=utf-8"],
        body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// The API process: the HTTP server plus the LISTEN connection that wakes long-poll requests.
/// The `PostgresClient` is run by the caller's `ServiceGroup`, before these.
public func buildApplication(
    dependencies: APIDependencies, logger: Logger
) -> some ApplicationProtocol {
    dependencies.metrics.reportQueueDepth { [jobs = dependencies.jobs] in try await jobs.queueDepth() }
    // One LISTEN connection per API process, on the events channel: it wakes long-poll waiters of ended jobs
    // and feeds every live subscriber (SSE, WebSocket) through the hub.
    let listener = NotificationListener(
        client: dependencies.jobs.client, channel: JobEvent.channel, logger: logger,
        onListening: { [waiters = dependencies.waiters, events = dependencies.events] in
            waiters.signalAll()
            events.resyncAll()
        },
        onNotification: { [waiters = dependencies.waiters, ended = dependencies.endedJobs, events = dependencies.events] payload in
            guard let event = JobEvent.parse(payload) else { return }
            if case .transition(_, let id, _, let status, _, _) = event, status.isTerminal {
                ended.record(id, status)
                waiters.signal(id)
            }
            events.publish(event)
        })
    let settings = dependencies.settings
    let limits = ConnectionLimits(
        headerTimeout: .milliseconds(Int64(settings.httpHeaderTimeout * 1000)),
        bodyTimeout: .milliseconds(Int64(settings.httpBodyTimeout * 1000)),
        minBodyRate: settings.httpMinBodyRate, rateWindow: .milliseconds(Int64(settings.httpRateWindow * 1000)))
    // WebSocket upgrades are decided by a router of their own (only the WebSocket routes).
    let webSocketRouter = Router(context: LectorRequestContext.self)
    EventsController(dependencies: dependencies).addWebSocketRoutes(webSocketRouter)
    let webSocketResponder = webSocketRouter.buildResponder()
    let server = HTTPServerBuilder { responder in
        GuardedChannel(
            base: HTTP1WebSocketUpgradeChannel(
                responder: responder, webSocketResponder: webSocketResponder,
                configuration: .init(http1: .init(additionalChannelHandlers: [ConnectionGuard(limits: limits)]))),
            firstHeadTimeout: limits.headerTimeout)
    }
    var app = Application(
        router: buildRouter(dependencies),
        server: server,
        configuration: .init(
            address: .hostname(dependencies.settings.httpHost, port: dependencies.settings.httpPort),
            serverName: "lector"),
        logger: logger)
    app.addServices(listener)
    return app
}

/// The services of `lector serve`, in the order its `ServiceGroup` runs them after the `PostgresClient` and the
/// storage's HTTP client (shut down in reverse, so after their users): the application (`buildApplication`),
/// then the `StorageSweeper` as the settings configure it.
public func buildAPIServices(
    dependencies: APIDependencies, logger: Logger
) -> [ServiceGroupConfiguration.ServiceConfiguration] {
    let sweeper = StorageSweeper(settings: dependencies.settings, storage: dependencies.storage, jobs: dependencies.jobs, logger: logger)
    return [.init(service: buildApplication(dependencies: dependencies, logger: logger)), .init(service: sweeper)]
}

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`. Its source is
/// `Sources/LectorAPI/openapi.json`, compiled into the binary by the `CEmbedded` target (C23 `#embed`). A test
/// fails when a route exists that it does not describe.
public enum OpenAPIDocument {
    public static let data = Data(bytes: lector_openapi_json(), count: lector_openapi_json_size())
}

/// A server child channel with Lector's guards around it: `FirstHeadTimer` first in the pipeline (before a
/// WebSocket upgrade is decided, `ConnectionGuard` is not there yet) and `ParserErrorResponder` right after
/// the HTTP decoder.
struct GuardedChannel<Base: ServerChildChannel>: ServerChildChannel {
    let base: Base
    let firstHeadTimeout: TimeAmount

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Base.Value> {
        do {
            try channel.pipeline.syncOperations.addHandler(FirstHeadTimer(timeout: firstHeadTimeout), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(ParserErrorResponder(), position: .after(decoder))
            return value
        }
    }

    func handle(value: Base.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
