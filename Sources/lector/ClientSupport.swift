import AsyncHTTPClient
import Crypto
import Foundation
import HTTPTypes
import LectorClient
import NIOCore
import OpenAPIAsyncHTTPClient
import OpenAPIRuntime

/// What `lector submit` and `lector watch` need of a Lector server, over the typed client (`LectorClient`).
struct LectorConnection: Sendable {
    let client: Client
    /// The same, with a short deadline, to tell whether the server answers at all (AsyncHTTPClient retries a
    /// refused connection until a request's deadline).
    let probeClient: Client
    let http: HTTPClient
    let baseURL: URL
    let key: String

    init(url: String, key: String, requestTimeout: TimeAmount = .minutes(2)) throws {
        guard let baseURL = URL(string: url), baseURL.scheme == "http" || baseURL.scheme == "https" else {
            throw CLIUsageError("LECTOR_URL must be an http(s) URL, not '\(url)'")
        }
        self.baseURL = baseURL
        self.key = key
        self.http = Self.noRedirects
        // The API writes times with milliseconds.
        let configuration = Configuration(dateTranscoder: .iso8601WithFractionalSeconds)
        client = Client(
            serverURL: baseURL, configuration: configuration,
            transport: AsyncHTTPClientTransport(configuration: .init(client: Self.noRedirects, timeout: requestTimeout)),
            middlewares: [BearerAuth(key: key)])
        probeClient = Client(
            serverURL: baseURL, configuration: configuration,
            transport: AsyncHTTPClientTransport(configuration: .init(client: Self.noRedirects, timeout: .seconds(5))))
    }

    /// One HTTP client for the process, following no redirect: the result route's 302 is read, not followed.
    /// It lives as long as the process (a client must be shut down before it is released).
    static let noRedirects = HTTPClient(
        eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))

    /// Whether the server answers `/healthz` within 5 s.
    func reachable() async -> Bool {
        guard case .ok = try? await probeClient.health(.init()) else { return false }
        return true
    }

    /// How a submit ended.
    enum Submitted: Sendable {
        case accepted(id: String)
        /// Refused for good (a 4xx other than 408 and 429): the document or the request is at fault.
        case refused(status: Int, code: String, message: String)
        /// Worth trying again: the server is unreachable, overloaded (429, 503) or failed (5xx, 408).
        case retry(String)
    }

    /// Sends a document as the raw body, with an Idempotency-Key (the same file and options always the same key).
    func submit(_ file: URL, options: SubmitOptions, idempotencyKey: String) async -> Submitted {
        let body: HTTPBody
        do {
            body = HTTPBody(try Data(contentsOf: file))
        } catch {
            return .refused(status: 0, code: "unreadable_file", message: "\(file.path) cannot be read: \(error.localizedDescription)")
        }
        let input = Operations.SubmitJob.Input(
            query: .init(lang: options.lang, mode: options.mode.flatMap(Operations.SubmitJob.Input.Query.ModePayload.init(rawValue:)),
                         formats: options.formats, filename: file.lastPathComponent),
            headers: .init(idempotencyKey: idempotencyKey),
            body: .binary(body))
        do {
            let output = try await client.submitJob(input)
            if case .accepted(let accepted) = output, case .json(let job) = accepted.body {
                return .accepted(id: job.id)
            }
            return Self.classify(output)
        } catch {
            return .retry("the server cannot be reached: \(Self.describe(error))")
        }
    }

    /// Any other answer of a submit, by its status code.
    static func classify(_ output: Operations.SubmitJob.Output) -> Submitted {
        let (status, error): (Int, Components.Schemas._Error?) =
            switch output {
            case .badRequest(let r): (400, try? r.body.json)
            case .unauthorized(let r): (401, try? r.body.json)
            case .notFound(let r): (404, try? r.body.json)
            case .conflict(let r): (409, try? r.body.json)
            case .gone(let r): (410, try? r.body.json)
            case .contentTooLarge(let r): (413, try? r.body.json)
            case .unsupportedMediaType(let r): (415, try? r.body.json)
            case .unprocessableContent(let r): (422, try? r.body.json)
            case .tooManyRequests(let r): (429, try? r.body.json)
            case .serviceUnavailable(let r): (503, try? r.body.json)
            case .code507(let r): (507, try? r.body.json)
            case .undocumented(let code, _): (code, nil)
            case .accepted: (202, nil)
            }
        let code = error?.error.code ?? "http_\(status)"
        let message = error?.error.message ?? "the server answered \(status)"
        if status == 408 || status == 429 || status >= 500 || status == 409 {
            return .retry("\(status) \(code): \(message)")
        }
        return .refused(status: status, code: code, message: message)
    }

    /// The job's status, reason and page progress.
    func job(_ id: String) async throws -> (status: String, reason: String?, pagesDone: Int?, pagesTotal: Int?)? {
        switch try await client.getJob(.init(path: .init(id: id))) {
        case .ok(let ok):
            let job = try ok.body.json
            return (job.status.rawValue, job.history.last?.reason, job.pagesDone, job.pagesTotal)
        case .notFound:
            return nil
        default:
            throw CLIFailure("the server could not tell the job's status")
        }
    }

    /// Downloads a finished job's result in `format` (through the signed link the result route answers with).
    func result(_ id: String, format: String) async throws -> Data {
        guard let format = Operations.GetResult.Input.Query.FormatPayload(rawValue: format) else {
            throw CLIUsageError("unknown format \(format)")
        }
        let output = try await client.getResult(.init(path: .init(id: id), query: .init(format: format)))
        guard case .found(let found) = output else {
            if case .notFound = output { throw ResultUnavailable(description: "the job has no \(format.rawValue) result") }
            throw CLIFailure("the job \(id) has no \(format.rawValue) result")
        }
        guard let link = found.headers.location, let url = URL(string: link, relativeTo: baseURL) else { throw CLIFailure("the server answered a bad link") }
        let response = try await http.execute(HTTPClientRequest(url: url.absoluteString), timeout: .minutes(5))
        guard response.status.code == 200 else { throw CLIFailure("downloading the result answered \(response.status.code)") }
        return Data(buffer: try await response.body.collect(upTo: 1 << 30))
    }

    /// The caller's live events (`GET /v1/events`): (job id, status or nil for progress, pages done, pages total).
    func events() async throws -> AsyncThrowingMapSequence<ServerSentEventsDeserializationSequence<ServerSentEventsLineDeserializationSequence<HTTPBody>>, JobUpdate?> {
        guard case .ok(let ok) = try await client.getEvents(.init()) else { throw CLIFailure("the event stream was refused") }
        return try ok.body.textEventStream.asDecodedServerSentEvents().map { event -> JobUpdate? in
            guard let data = event.data, let object = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any],
                let id = object["id"] as? String
            else { return nil }
            return JobUpdate(id: id, status: object["status"] as? String, reason: object["reason"] as? String,
                             pagesDone: object["pagesDone"] as? Int, pagesTotal: object["pagesTotal"] as? Int)
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? ClientError { return String(describing: error.underlyingError) }
        return String(describing: error)
    }
}

struct JobUpdate: Sendable {
    let id: String
    let status: String?
    let reason: String?
    let pagesDone: Int?
    let pagesTotal: Int?
}

/// The options a CLI submit sends.
struct SubmitOptions: Sendable, Hashable {
    var lang: String?
    var mode: String?
    /// The job option `formats` (`?formats=`): hOCR and the searchable PDF are made only when a job lists them,
    /// so a client that will fetch one asks for it; nil for json and txt, which every job has.
    var formats: String?

    init(lang: String?, mode: String?, format: String = "txt") {
        self.lang = lang
        self.mode = mode
        formats = ["hocr", "pdf"].contains(format) ? format : nil
    }

    /// An Idempotency-Key from the document's bytes and the options: a retry, or a second run over the same
    /// file, finds the first job instead of making another (within the server's 24 h).
    func idempotencyKey(for file: URL, salt: String = "") throws -> String {
        var hasher = SHA256()
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        hasher.update(data: Data("\0\(lang ?? "")\0\(mode ?? "")\0\(salt)".utf8))
        // Only when set, so that the keys of json and txt runs stay what they were before the option existed.
        if let formats { hasher.update(data: Data("\0formats=\(formats)".utf8)) }
        return "lector-cli-" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// Adds `Authorization: Bearer <key>` to every request.
struct BearerAuth: ClientMiddleware {
    let key: String

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, baseURL: URL, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, URL) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        var request = request
        request.headerFields[.authorization] = "Bearer \(key)"
        return try await next(request, body, baseURL)
    }
}

/// A finished job without the asked format (a searchable PDF of a job with a scene page): retrying cannot help.
struct ResultUnavailable: Error, CustomStringConvertible {
    let description: String
}

/// A mistake in how the command was called: exit status 2.
struct CLIUsageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Something went wrong talking to the server.
struct CLIFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Writes to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
