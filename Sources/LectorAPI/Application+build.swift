import Foundation
import Hummingbird
import LectorCore
import Logging
import PostgresNIO

/// Builds the router: public health routes, the web page, the signed file links, and `/v1` behind API keys.
public func buildRouter(_ dependencies: APIDependencies) -> Router<LectorRequestContext> {
    let router = Router(context: LectorRequestContext.self)
    let timeout = Duration.milliseconds(Int64(dependencies.settings.databaseTimeout * 1000))
    router.add(middleware: RequestLogMiddleware())
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
    let listener = NotificationListener(
        client: dependencies.jobs.client, channel: JobStore.endedChannel, logger: logger,
        onListening: { [waiters = dependencies.waiters] in waiters.signalAll() },
        onNotification: { [waiters = dependencies.waiters, ended = dependencies.endedJobs] payload in
            guard let (id, status) = EndedJobs.parse(payload) else { return }
            if let status { ended.record(id, status) }
            waiters.signal(id)
        })
    let settings = dependencies.settings
    let limits = ConnectionLimits(
        headerTimeout: .milliseconds(Int64(settings.httpHeaderTimeout * 1000)),
        bodyTimeout: .milliseconds(Int64(settings.httpBodyTimeout * 1000)),
        minBodyRate: settings.httpMinBodyRate, rateWindow: .milliseconds(Int64(settings.httpRateWindow * 1000)))
    var app = Application(
        router: buildRouter(dependencies),
        server: .http1(configuration: .init(additionalChannelHandlers: [ConnectionGuard(limits: limits)])),
        configuration: .init(
            address: .hostname(dependencies.settings.httpHost, port: dependencies.settings.httpPort),
            serverName: "lector"),
        logger: logger)
    app.addServices(listener)
    return app
}

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`. Its source is
/// `Sources/LectorAPI/openapi.json`, embedded into the binary by `make openapi`. A test fails when a route
/// exists that it does not describe, and when the embedded copy differs from the file.
public enum OpenAPIDocument {
    public static let data = Data(json.utf8)
}
