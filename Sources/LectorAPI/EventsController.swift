import AsyncAlgorithms
import Foundation
import HTTPTypes
import Hummingbird
import LectorCore
import NIOCore
import HummingbirdWebSocket
import ServiceLifecycle

/// Live job events: `GET /v1/jobs/{id}/events` and `GET /v1/events` (Server-Sent Events), and the same
/// messages as JSON over a WebSocket (`/v1/jobs/{id}/ws`).
///
/// Events come from the process's one LISTEN connection through `JobEventHub`; a subscriber subscribes
/// *before* it reads the log, so nothing between the read and the subscription is lost (a duplicate is
/// dropped by its transition id). A job's stream replays the log after `Last-Event-ID` (or from the start),
/// then follows live, and ends after the job's final state.
struct EventsController {
    let dependencies: APIDependencies
    /// A comment line this often keeps proxies from closing a quiet stream.
    static let keepAlive = Duration.seconds(15)

    func addRoutes(v1: RouterGroup<LectorRequestContext>) {
        v1.get("jobs/:id/events", use: jobEvents)
        v1.get("events", use: allEvents)
        // The WebSocket itself is served on upgrade (`addWebSocketRoutes`); a plain GET learns how to open it.
        v1.get("jobs/:id/ws") { _, context -> Response in
            _ = try context.requireUser()
            throw APIError(HTTPResponse.Status(code: 426, reasonPhrase: "Upgrade Required"), .upgradeRequired,
                           "open this route as a WebSocket (Upgrade: websocket), or read the same events at /v1/jobs/{id}/events")
        }
    }

    /// One message of a stream, as SSE and as a WebSocket text frame.
    struct Message: Sendable, Equatable {
        /// SSE `id`: the transition's id, or `<transition id>.<pages done>` for progress after it.
        let id: String?
        let event: String
        let json: String

        var sse: String {
            var text = ""
            if let id { text += "id: \(id)\n" }
            return text + "event: \(event)\ndata: \(json)\n\n"
        }

        /// `{"type": …, …}` for a WebSocket.
        var frame: String { "{\"type\":\"\(event)\"," + json.dropFirst() }

        static func make(_ event: JobEvent, lastTransition: Int64) -> Message {
            switch event {
            case .transition(let id, let job, _, let status, let at, let reason):
                var object: [String: Any] = [
                    "id": job.uuidString.lowercased(), "status": status.rawValue, "at": ISO8601.string(from: at),
                ]
                if let reason { object["reason"] = reason }
                return Message(id: "\(id)", event: "status", json: Self.encode(object))
            case .progress(let job, _, let done, let total):
                let object: [String: Any] = ["id": job.uuidString.lowercased(), "pagesDone": done, "pagesTotal": total]
                return Message(id: "\(lastTransition).\(done)", event: "progress", json: Self.encode(object))
            }
        }

        static func encode(_ object: [String: Any]) -> String {
            String(decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8), as: UTF8.self)
        }
    }

    // MARK: GET /v1/jobs/{id}/events

    @Sendable func jobEvents(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        guard let raw = context.parameters.get("id"), let id = UUID(uuidString: raw) else {
            throw APIError.badRequest(.invalidJobId, "the job id must be a UUID")
        }
        let feed = try await jobFeed(id: id, ownerID: user.id, after: try Self.lastEventID(request))
        return Self.sse { send in try await feed.run(send) }
    }

    /// One job's feed: subscribed, and its log read after `after`; throws `job_not_found` (or a database error)
    /// before anything is sent.
    func jobFeed(id: UUID, ownerID: Int64, after: Int64?) async throws -> JobFeed {
        let subscription = dependencies.events.subscribe(.job(id))
        let jobs = dependencies.jobs
        let timeout = Duration.milliseconds(Int64(dependencies.settings.databaseTimeout * 1000))
        do {
            guard let replay = try await withDeadline(timeout, "job events", { try await jobs.events(of: id, ownerID: ownerID, after: after) })
            else { throw APIError.jobNotFound }
            return JobFeed(id: id, ownerID: ownerID, after: after, replay: replay.events, progress: replay.progress,
                           subscription: subscription, jobs: jobs)
        } catch {
            subscription.cancel()
            throw error
        }
    }

    /// A job's messages: the replayed log, its progress, then live events until the final state.
    struct JobFeed: Sendable {
        let id: UUID
        let ownerID: Int64
        let after: Int64?
        let replay: [JobEvent]
        let progress: (done: Int, total: Int)?
        let subscription: JobEventHub.Subscription
        let jobs: JobStore

        func run(_ send: (Message) async throws -> Void) async throws {
            defer { subscription.cancel() }
            var last = after ?? 0
            var ended = false
            func emit(_ event: JobEvent) async throws {
                if case .transition(let transition, _, _, let status, _, _) = event {
                    guard transition > last else { return }  // already sent (replay and live overlap)
                    last = transition
                    if status.isTerminal { ended = true }
                } else if ended {
                    return
                }
                try await send(Message.make(event, lastTransition: last))
            }
            for event in replay { try await emit(event) }
            if !ended, let progress, progress.total > 0 {
                try await emit(.progress(job: id, owner: ownerID, done: progress.done, total: progress.total))
            }
            guard !ended else { return }
            for await message in subscription.messages {
                switch message {
                case .event(let event):
                    try await emit(event)
                case .resync:
                    // Missed events (LISTEN reconnected, or this subscriber fell behind): read the log again.
                    if let again = try? await jobs.events(of: id, ownerID: ownerID, after: last) {
                        for event in again.events { try await emit(event) }
                    }
                }
                if ended { return }
            }
        }
    }

    // MARK: GET /v1/events

    /// Every event of the caller's jobs, live (no replay: a dashboard reads the list first).
    @Sendable func allEvents(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let subscription = dependencies.events.subscribe(.owner(user.id))
        return Self.sse { send in
            defer { subscription.cancel() }
            var lastTransition: [UUID: Int64] = [:]
            for await message in subscription.messages {
                guard case .event(let event) = message else { continue }
                if case .transition(let id, let job, _, let status, _, _) = event {
                    lastTransition[job] = id
                    if status.isTerminal { lastTransition[job] = nil }
                }
                try await send(Message.make(event, lastTransition: lastTransition[event.job] ?? 0))
            }
        }
    }

    // MARK: GET /v1/jobs/{id}/ws

    /// The job's stream over a WebSocket: the same messages as JSON text frames (`{"type": "status" | "progress",
    /// …}`), then a normal close after the final state. The upgrade is always accepted and a refusal is a close
    /// frame with a JSON reason — 4401 (no valid key), 4404 (no such job), 4400 (bad request), 4503 (database
    /// unavailable) — because a refused upgrade would be answered by hummingbird-websocket with a redirect to the
    /// same address. The key comes in `Authorization: Bearer`, like every `/v1` route.
    func addWebSocketRoutes(_ router: Router<LectorRequestContext>) {
        router.ws("v1/jobs/:id/ws") { inbound, outbound, context in
            let request = context.request
            func refuse(_ code: UInt16, _ error: APIError) async throws {
                let reason = "{\"code\":\"\(error.code.rawValue)\"}"
                try await outbound.close(.unknown(code), reason: reason)
            }
            let header = request.headers[.authorization] ?? ""
            let parts = header.split(separator: " ", maxSplits: 1)
            let timeout = Duration.milliseconds(Int64(dependencies.settings.databaseTimeout * 1000))
            let keys = dependencies.keys
            guard parts.count == 2, parts[0].lowercased() == "bearer",
                let user = try? await withDeadline(timeout, "key lookup", { [token = String(parts[1])] in try await keys.authenticate(token: token) })
            else {
                return try await refuse(4401, .unauthorized)
            }
            guard let raw = context.requestContext.parameters.get("id"), let id = UUID(uuidString: raw) else {
                return try await refuse(4400, APIError.badRequest(.invalidJobId, "the job id must be a UUID"))
            }
            let feed: JobFeed
            do {
                feed = try await jobFeed(id: id, ownerID: user.id, after: try Self.lastEventID(request))
            } catch let error as APIError {
                return try await refuse(error.status == .notFound ? 4404 : 4400, error)
            } catch is JobDeleted {
                return try await refuse(4410, .jobDeleted)
            } catch {
                return try await refuse(4503, .databaseUnavailable)
            }
            // Whichever ends first ends the socket: the job's final state, the client going away (its inbound
            // stream ends), or a graceful shutdown of the server (clients resume with Last-Event-ID).
            let ended = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    try await feed.run { message in try await outbound.write(.text(message.frame)) }
                    return true
                }
                group.addTask {
                    for try await _ in inbound {}
                    return false
                }
                group.addTask {
                    try await gracefulShutdown()
                    return false
                }
                defer { group.cancelAll() }
                return try await group.next() ?? false
            }
            if ended { try await outbound.close(.normalClosure, reason: nil) } else { try? await outbound.close(.goingAway, reason: nil) }
        }
    }

    // MARK: helpers

    /// `Last-Event-ID` (or `?lastEventId=`): the transition id of the last event received.
    static func lastEventID(_ request: Request) throws -> Int64? {
        let raw = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.uri.queryParameters.get("lastEventId")
        guard let raw, !raw.isEmpty else { return nil }
        guard let transition = Int64(raw.split(separator: ".").first ?? ""), transition >= 0 else {
            throw APIError.badRequest(.invalidLastEventId, "Last-Event-ID must be an event id this API sent, e.g. 42 or 42.3")
        }
        return transition
    }

    /// A `text/event-stream` response: `produce` sends messages until it returns; a comment line every
    /// `keepAlive` keeps quiet streams open through proxies. Both run as child tasks of the response's
    /// writer, so a client that goes away cancels them.
    static func sse(_ produce: @escaping @Sendable (_ send: (Message) async throws -> Void) async throws -> Void) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            try await writer.write(ByteBuffer(string: ": lector events\n\n"))
            // A channel, not a buffer: a slow client holds the producer back, so the hub's bounded buffer fills and
            // the feed re-reads the log (`.resync`) instead of losing messages silently here.
            let output = AsyncChannel<String>()
            // A server shutting down ends its streams (clients reconnect with Last-Event-ID) instead of waiting.
            try await withGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    defer { output.finish() }
                    try await produce { message in await output.send(message.sse) }
                }
                group.addTask {
                    while true {
                        try await Task.sleep(for: keepAlive)
                        await output.send(": keep-alive\n\n")
                    }
                }
                for await text in output {
                    try await writer.write(ByteBuffer(string: text))
                }
                group.cancelAll()
            }
            } onGracefulShutdown: {
                output.finish()
            }
            try await writer.finish(nil)
        })
    }
}
