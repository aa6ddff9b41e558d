import Foundation
import HTTPTypes
import Hummingbird
import LectorModel
import NIOCore

/// An error meant for the client: a status and a JSON body `{"error": {"code", "message"}}`.
///
/// The only error type that crosses the API boundary; `ErrorMiddleware` turns everything else into one.
public struct APIError: Error, HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: ErrorCode
    public let message: String
    public var headers: HTTPFields = [:]
    /// Extra fields placed inside `error` (for example the failure `reason` of a job).
    public var details: [String: String] = [:]

    public init(_ status: HTTPResponse.Status, _ code: ErrorCode, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var error: [String: String] = details
        error["code"] = code.rawValue
        error["message"] = message
        var headers = self.headers
        headers[.contentType] = "application/json; charset=utf-8"
        let body = (try? JSONSerialization.data(withJSONObject: ["error": error], options: [.sortedKeys])) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func badRequest(_ code: ErrorCode, _ message: String) -> APIError { APIError(.badRequest, code, message) }
    static let unauthorized = APIError(.unauthorized, .unauthorized, "a valid API key is required: send 'Authorization: Bearer <key>'")
    static let jobNotFound = APIError(.notFound, .jobNotFound, "no such job")
    static let jobDeleted = APIError(.gone, .jobDeleted, "this job was deleted: its files and metadata are gone")
    static let databaseUnavailable = APIError(.serviceUnavailable, .databaseUnavailable, "the database is unreachable; try again shortly")
}
