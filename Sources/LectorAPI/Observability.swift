import Foundation
import HTTPTypes
import Hummingbird
import LectorCore
import Logging

/// Takes the client's `X-Request-Id` (1 to 128 visible ASCII characters) or makes one, puts it into the
/// request's log metadata as `request_id`, and echoes it on the response, errors included.
struct RequestIDMiddleware<Context: RequestContext>: RouterMiddleware {
    static var header: HTTPField.Name { HTTPField.Name("X-Request-Id")! }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let given = request.headers[Self.header].flatMap { value in
            (1...128).contains(value.utf8.count) && value.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) ? value : nil
        }
        let id = given ?? context.id
        var context = context
        context.logger[metadataKey: "request_id"] = "\(id)"
        do {
            var response = try await next(request, context)
            response.headers[Self.header] = id
            return response
        } catch var error as APIError {
            error.headers[Self.header] = id
            throw error
        }
    }
}

/// Records every answer in `lector_http_request_duration_seconds` by route template (never the raw path:
/// ids would make a family per job), method and status. Sits outside `ErrorMiddleware`, so errors count
/// with the status the client saw.
struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: LectorMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        func record(_ status: Int) {
            let route = context.endpointPath.map { $0 == "NotFound" ? "unmatched" : $0 } ?? "unmatched"
            metrics.httpRequest(route: route, method: request.method.rawValue, status: status, duration: ContinuousClock.now - started)
        }
        do {
            let response = try await next(request, context)
            record(response.status.code)
            return response
        } catch let error as HTTPResponseError {
            record(error.status.code)
            throw error
        }
    }
}

/// `GET /metrics` in Prometheus' text format.
func metricsResponse(_ metrics: LectorMetrics) async -> Response {
    Response(
        status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
        body: .init(byteBuffer: ByteBuffer(bytes: await metrics.exposition())))
}

/// A worker's metrics listener (`LECTOR_METRICS_PORT`): `/metrics` and `/healthz`, nothing else.
public func buildMetricsApplication(metrics: LectorMetrics, host: String, port: Int, logger: Logger) -> some ApplicationProtocol {
    let router = Router()
    router.get("metrics") { _, _ in await metricsResponse(metrics) }
    router.get("healthz") { _, _ in jsonResponse(["status": "ok"]) }
    return Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "lector-worker"), logger: logger)
}
