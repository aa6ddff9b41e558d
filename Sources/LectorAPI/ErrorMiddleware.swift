import Foundation
import HTTPTypes
import Hummingbird
import LectorModel
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
        } catch is JobDeleted {
            throw APIError.jobDeleted
        } catch let error as HTTPError {
            throw APIError(error.status, Self.code(for: error.status), error.body ?? Self.message(for: error.status))
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, .documentTooLarge, "the request body is larger than the server accepts")
        } catch let error as DeadlineExceeded {
            context.logger.error("database did not answer in time", metadata: ["error": "\(error)"])
            throw APIError.databaseUnavailable
        } catch let error as ConnectionPoolError {
            // Raised as is by the pool, e.g. once its circuit breaker opens during a long outage.
            context.logger.error("database pool error", metadata: ["error": "\(describeDatabaseError(error))"])
            throw APIError.databaseUnavailable
        } catch let error as PostgresTransactionError {
            throw Self.databaseError(error.closureError ?? error.commitError ?? error.beginError ?? error, logger: context.logger)
        } catch let error as PSQLError {
            throw Self.databaseError(error, logger: context.logger)
        } catch let error as PostgresDecodingError {
            context.logger.error("database decoding error", metadata: ["error": "\(describeDatabaseError(error))"])
            throw APIError(.internalServerError, .internalError, "internal error")
        } catch let error as StorageError {
            throw Self.storageError(error, logger: context.logger)
        } catch let error as HTTPResponseError {
            throw APIError(error.status, Self.code(for: error.status), Self.message(for: error.status))
        } catch {
            if error is CancellationError { throw error }
            context.logger.error("unhandled error", metadata: ["error": "\(describeDatabaseError(error))"])
            throw APIError(.internalServerError, .internalError, "internal error")
        }
    }

    /// Only the database's unavailability is a 503: a refused connection, a server shutting down or out of
    /// resources, a lock or statement timeout, a serialization failure. Data errors (SQLSTATE class 22, e.g. a
    /// number `jsonb` cannot hold) come from the request and are a 400; anything else is our bug, a 500.
    static func databaseError(_ error: any Error, logger: Logger) -> APIError {
        guard let error = error as? PSQLError else {
            logger.error("database error", metadata: ["error": "\(describeDatabaseError(error))"])
            return APIError.databaseUnavailable
        }
        guard let state = error.serverInfo?[.sqlState] else {
            // No answer from the server: the connection failed or broke.
            logger.error("database unreachable", metadata: ["error": "\(describeDatabaseError(error))"])
            return APIError.databaseUnavailable
        }
        let transient = ["08", "53", "57", "58", "40"].contains(where: state.hasPrefix) || state == "55P03" || state == "57014"
        if transient {
            logger.error("database unavailable", metadata: ["error": "\(describeDatabaseError(error))"])
            return APIError.databaseUnavailable
        }
        if state.hasPrefix("22") {
            logger.notice("the database refused a value of the request", metadata: ["sqlstate": "\(state)"])
            return APIError.badRequest(.invalidValue, "a value in the request is outside what Lector can store (SQLSTATE \(state))")
        }
        logger.error("database error", metadata: ["error": "\(describeDatabaseError(error))"])
        return APIError(.internalServerError, .internalError, "internal error")
    }

    /// A full disk is 507 (the request may succeed once space is freed); any other storage failure is a 503.
    /// Never a 500: storage trouble is the system's condition, not a bug.
    static func storageError(_ error: StorageError, logger: Logger) -> APIError {
        logger.error("storage error", metadata: ["error": "\(error.description)"])
        var answer: APIError
        if error.kind == .full {
            answer = APIError(HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage"), .storageFull, "the server's storage is full; try again later")
        } else {
            answer = APIError(.serviceUnavailable, .storageUnavailable, "the document storage is unavailable; try again shortly")
        }
        answer.headers[.retryAfter] = "5"
        return answer
    }

    static func code(for status: HTTPResponse.Status) -> ErrorCode {
        switch status.code {
        case 400: .badRequest
        case 401: .unauthorized
        case 403: .forbidden
        case 404: .notFound
        case 405: .methodNotAllowed
        case 413: .documentTooLarge
        case 415: .unsupportedMediaType
        case 503: .unavailable
        default: status.code < 500 ? .badRequest : .internalError
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
