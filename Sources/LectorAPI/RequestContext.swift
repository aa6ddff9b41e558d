import Hummingbird
import LectorCore

/// The request context of every route: Hummingbird's core storage plus the authenticated user.
public struct LectorRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
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

/// Checks `Authorization: Bearer <key>` against the key table. Keys never reach the logs.
struct AuthMiddleware: RouterMiddleware {
    let keys: KeyStore
    let timeout: Duration

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
        var context = context
        context.user = user
        context.logger[metadataKey: "user"] = "\(user.name)"
        return try await next(request, context)
    }
}
