import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import LectorCore

/// The request context of every route: Hummingbird's core storage plus the authenticated user.
public struct LectorRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The handler of a WebSocket route, handed from the upgrade request to the upgraded connection.
    public let webSocket = WebSocketHandlerReference<LectorRequestContext>()
    /// Set by `AuthMiddleware` on `/v1` routes.
    public var user: AuthenticatedUser?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    /// The caller; every `/v1` handler may rely on it because `AuthMiddleware` runs first.
    func requireUser() throws -> AuthenticatedUser {
        guard let user else { throw APIError.unauthorized }
        return user
    }
}

/// Checks `Authorization: Bearer <key>` against the key table, then the key's rate limit (429 with
/// `Retry-After`). Keys never reach the logs.
struct AuthMiddleware: RouterMiddleware {
    let keys: KeyStore
    let timeout: Duration
    let limiter: RateLimiter

    func handle(
        _ request: Request, context: LectorRequestContext,
        next: (Request, LectorRequestContext) async throws -> Response
    ) async throws -> Response {
        guard let header = request.headers[.authorization] else { throw APIError.unauthorized }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw APIError.unauthorized }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        let user = try await withDeadline(timeout, "key lookup") { [keys] in try await keys.authenticate(token: token) }
        guard let user else { throw APIError.unauthorized }
        if let wait = limiter.acquire(user.keyID) {
            var error = APIError(.tooManyRequests, .rateLimited, "too many requests for this API key; retry after \(wait) s")
            error.headers[.retryAfter] = "\(wait)"
            throw error
        }
        var context = context
        context.user = user
        context.logger[metadataKey: "user"] = "\(user.name)"
        return try await next(request, context)
    }
}

/// One log line per request: method, path, status and duration. Never the query string (it carries result
/// link signatures) nor any header (`Authorization` carries the key).
struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var status = "500"
        defer {
            let ms = (ContinuousClock.now - started).secondsValue * 1000
            context.logger.info("request", metadata: [
                "method": "\(request.method.rawValue)", "path": "\(request.uri.path)", "status": "\(status)",
                "ms": "\(String(format: "%.1f", ms))",
            ])
        }
        do {
            let response = try await next(request, context)
            status = "\(response.status.code)"
            return response
        } catch let error as HTTPResponseError {
            status = "\(error.status.code)"
            throw error
        } catch is CancellationError {
            status = "cancelled"  // the client went away (a long poll, typically); nothing was sent
            throw CancellationError()
        }
    }
}

/// Refuses a request that repeats a query parameter (400 `repeated_parameter`): with two values, which one a
/// route reads would depend on the order, and a signed link must have one spelling only.
struct SingleQueryValuesMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var seen: Set<Substring> = []
        for (key, _) in request.uri.queryParameters where !seen.insert(key).inserted {
            throw APIError.badRequest(.repeatedParameter, "the query parameter '\(key.prefix(64))' is given more than once")
        }
        return try await next(request, context)
    }
}
