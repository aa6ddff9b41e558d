import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Logging
import LectorCore
import PostgresNIO
import _ConnectionPoolModule

/// Turns every error into a JSON error body; nothing reaches the client as a stack trace or an empty 500.
///
/// Database errors become 503 (the API stays up while PostgreSQL restarts); unknown errors are logged with
/// a request id and answered 500 without internals.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            throw APIError(error.status, Self.code(for: error.status), error.body ?? Self.message(for: error.status))
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "document_too_large", "the request body is larger than the server accepts")
        } catch let error as DeadlineExceeded {
            context.logger.error("database did not answer in time", metadata: ["error": "\(error)"])
            throw APIError.databaseUnavailable
        } catch let error as ConnectionPoolError {
            // Raised as is by the pool, e.g. once its circuit breaker opens during a long outage.
            context.logger.error("database pool error", metadata: ["error": "\(describeDatabaseError(error))"])
            throw APIError.databaseUnavailable
        } catch let error as PostgresTransactionError {
            context.logger.error("database error", metadata: ["error": "\(describeDatabaseError(error))"])
            throw APIError.databaseUnavailable
        } catch let error as PSQLError {
            context.logger.error("database error", metadata: ["error": "\(describeDatabaseError(error))"])
            throw APIError.databaseUnavailable
        } catch let error as PostgresDecodingError {
            context.logger.error("database decoding error", metadata: ["error": "\(describeDatabaseError(error))"])
            throw APIError(.internalServerError, "internal_error", "internal error")
        } catch let error as StorageError {
            context.logger.error("storage error", metadata: ["error": "\(error.description)"])
            throw APIError(.serviceUnavailable, "storage_unavailable", "the document storage is unavailable; try again shortly")
        } catch let error as HTTPResponseError {
            throw APIError(error.status, Self.code(for: error.status), Self.message(for: error.status))
        } catch {
            if error is CancellationError { throw error }
            context.logger.error("unhandled error", metadata: ["error": "\(describeDatabaseError(error))"])
            throw APIError(.internalServerError, "internal_error", "internal error")
        }
    }

    static func code(for status: HTTPResponse.Status) -> String {
        switch status.code {
        case 400: "bad_request"
        case 401: "unauthorized"
        case 403: "forbidden"
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 413: "document_too_large"
        case 415: "unsupported_media_type"
        case 503: "unavailable"
        default: status.code < 500 ? "bad_request" : "internal_error"
        }
    }

    static func message(for status: HTTPResponse.Status) -> String {
        switch status.code {
        case 404: "no such route"
        case 405: "method not allowed on this route"
        default: status.reasonPhrase.isEmpty ? "error \(status.code)" : status.reasonPhrase.lowercased()
        }
    }
}
