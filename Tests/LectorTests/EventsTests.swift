import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import HummingbirdWSTesting
import WSClient
@testable import LectorAPI
import LectorCore
import LectorWorker
import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import Testing

@Suite("Live job events")
struct EventsTests {
    /// The events of an SSE body: (id, event, data as JSON).
    static func parse(_ body: String) -> [(id: String?, event: String, data: [String: Any])] {
        body.components(separatedBy: "\n\n").compactMap { block in
            var id: String?, event = "message", data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("id: ") { id = String(line.dropFirst(4)) }
                if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data += line.dropFirst(6) }
            }
            guard !data.isEmpty, let object = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] else {
                return nil
            }
            return (id, event, object)
        }
    }

    @Test("a job's SSE stream replays the log, follows the worker with page progress, ends after the final state, and resumes from Last-Event-ID")
    func jobStream() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let other = try await harness.newUser()
            let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
            let tiff = try TestImages.render(["first page"], format: "tiff")
            try await harness.application().test(.router) { client in
                var headers = auth
                headers[.contentType] = "image/tiff"
                let submitted = try await client.execute(uri: "/v1/jobs?mode=document", method: .post, headers: headers, body: ByteBuffer(bytes: tiff))
                let id = try #require(submitted.json["id"] as? String)
                #expect((submitted.json["links"] as? [String: Any])?["events"] as? String == "/v1/jobs/\(id)/events")

                // Another user's job: 404 before any stream starts.
                let foreign = try await client.execute(uri: "/v1/jobs/\(id)/events", method: .get, headers: [.authorization: "Bearer \(other.token)"])
                #expect(foreign.status == .notFound)
                #expect(foreign.errorCode == "job_not_found")

                let body = try await harness.withWorker {
                    let response = try await client.execute(uri: "/v1/jobs/\(id)/events", method: .get, headers: auth)
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentType]?.hasPrefix("text/event-stream") == true)
                    return String(buffer: response.body)
                }
                let events = Self.parse(body)
                let statuses = events.filter { $0.event == "status" }.compactMap { $0.data["status"] as? String }
                #expect(statuses == ["QUEUED", "IN_PROGRESS", "FINISHED"], "\(body)")
                #expect(events.last?.event == "status" && events.last?.data["status"] as? String == "FINISHED")
                // The transition ids increase; every event of this stream is about this job.
                let ids = events.filter { $0.event == "status" }.compactMap { $0.id.flatMap(Int64.init) }
                #expect(ids == ids.sorted() && Set(ids).count == ids.count)
                #expect(events.allSatisfy { $0.data["id"] as? String == id })

                // Progress is kept on the job: 1 of 1 page.
                let status = try await client.execute(uri: "/v1/jobs/\(id)", method: .get, headers: auth)
                #expect(status.json["pagesDone"] as? Int == 1)
                #expect(status.json["pagesTotal"] as? Int == 1)

                // Resuming after the IN_PROGRESS event replays only what came after it.
                var resume = auth
                resume[HTTPField.Name("Last-Event-ID")!] = "\(ids[1])"
                let rest = Self.parse(String(buffer: try await client.execute(uri: "/v1/jobs/\(id)/events", method: .get, headers: resume).body))
                #expect(rest.filter { $0.event == "status" }.compactMap { $0.data["status"] as? String } == ["FINISHED"])
                // A stream of an ended job replays and ends at once.
                let ended = Self.parse(String(buffer: try await client.execute(uri: "/v1/jobs/\(id)/events", method: .get, headers: auth).body))
                #expect(ended.count == 3)

                var bad = auth
                bad[HTTPField.Name("Last-Event-ID")!] = "not-an-id"
                #expect(try await client.execute(uri: "/v1/jobs/\(id)/events", method: .get, headers: bad).status == .badRequest)
            }
        }
    }

    @Test("page progress of a running job reaches the stream (rate-limited) and the job")
    func progress() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
            let worker = harness.workerServices(id: "progress", engines: ScriptedEngineFactory(steps: [.pages(4, each: .milliseconds(500))])) {
                $0.progressInterval = .milliseconds(200)
            }.worker
            try await harness.application().test(.router) { client in
                let submitted = try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"],
                    body: ByteBuffer(bytes: try TestImages.render(["x"])))
                let id = try #require(submitted.json["id"] as? String)
                let body = try await withThrowingTaskGroup(of: String?.self) { group in
                    group.addTask {
                        try await worker.run()
                        return nil
                    }
                    group.addTask {
                        String(buffer: try await client.execute(uri: "/v1/jobs/\(id)/events", method: .get, headers: auth).body)
                    }
                    defer { group.cancelAll() }
                    while let next = try await group.next() {
                        if let body = next { return body }
                    }
                    return ""
                }
                let progress = Self.parse(body).filter { $0.event == "progress" }
                let done = progress.compactMap { $0.data["pagesDone"] as? Int }
                #expect(!done.isEmpty, "\(body)")
                #expect(done == done.sorted())
                #expect(progress.allSatisfy { $0.data["pagesTotal"] as? Int == 4 })
                #expect(progress.allSatisfy { $0.id?.contains(".") == true })
                let status = try await client.execute(uri: "/v1/jobs/\(id)", method: .get, headers: auth)
                #expect(status.json["pagesDone"] as? Int == 4)
                #expect(status.json["pagesTotal"] as? Int == 4)
            }
        }
    }

    @Test("GET /v1/events streams the caller's jobs, and no one else's")
    func ownerStream() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let other = try await harness.newUser()
            try await harness.application().test(.live) { client in
                let port = try #require(client.port)
                let stream = try RawConnection(port: port)
                try stream.send("GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(user.token)\r\n\r\n")
                try await Task.sleep(for: .milliseconds(300))
                let image = ByteBuffer(bytes: try TestImages.render(["mine"]))
                let mine = try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"], body: image)
                let theirs = try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(other.token)", .contentType: "image/png"], body: image)
                let mineID = try #require(mine.json["id"] as? String)
                let theirsID = try #require(theirs.json["id"] as? String)
                let text = try await stream.readUntil(timeout: 10) { $0.contains("\"id\":\"\(mineID)\"") }
                #expect(text.contains("event: status"))
                #expect(text.contains("\"id\":\"\(mineID)\""))
                #expect(!text.contains(theirsID))
                stream.close()
            }
        }
    }

    @Test("the same stream over a WebSocket: JSON frames, a normal close after the final state; refusals are close codes")
    func webSocket() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let other = try await harness.newUser()
            try await harness.application().test(.live) { client in
                let submitted = try await client.execute(
                    uri: "/v1/jobs?mode=document", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"],
                    body: ByteBuffer(bytes: try TestImages.render(["over a socket"])))
                let id = try #require(submitted.json["id"] as? String)
                let frames = NIOLockedValueBox<[String]>([])
                let close = try await harness.withWorker {
                    try await client.ws(
                        "/v1/jobs/\(id)/ws", configuration: .init(additionalHeaders: [.authorization: "Bearer \(user.token)"])
                    ) { inbound, _, _ in
                        for try await message in inbound.messages(maxSize: 1 << 16) {
                            if case .text(let text) = message { frames.withLockedValue { $0.append(text) } }
                        }
                    }
                }
                #expect(close?.closeCode == .normalClosure)
                let objects = frames.withLockedValue { $0 }.compactMap {
                    (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
                }
                let statuses = objects.filter { $0["type"] as? String == "status" }.compactMap { $0["status"] as? String }
                #expect(statuses == ["QUEUED", "IN_PROGRESS", "FINISHED"], "\(frames.withLockedValue { $0 })")

                // Someone else's job, and no key: refused with close codes and a JSON reason.
                let foreign = try await client.ws(
                    "/v1/jobs/\(id)/ws", configuration: .init(additionalHeaders: [.authorization: "Bearer \(other.token)"])
                ) { inbound, _, _ in for try await _ in inbound {} }
                #expect(foreign?.closeCode == .unknown(4404))
                #expect(foreign?.reason?.contains("job_not_found") == true)
                let anonymous = try await client.ws("/v1/jobs/\(id)/ws") { inbound, _, _ in for try await _ in inbound {} }
                #expect(anonymous?.closeCode == .unknown(4401))
            }
        }
    }

    @Test("event payloads of the database parse; others are ignored")
    func payloads() {
        let job = UUID()
        let event = JobEvent.parse("t 42 \(job.uuidString.lowercased()) 7 FAILURE 1700000000123 gave up: disk on fire")
        #expect(event == .transition(id: 42, job: job, owner: 7, status: .failure, at: Date(timeIntervalSince1970: 1_700_000_000.123), reason: "gave up: disk on fire"))
        #expect(JobEvent.parse("p \(job.uuidString.lowercased()) 7 3 12") == .progress(job: job, owner: 7, done: 3, total: 12))
        #expect(JobEvent.parse("t 42 \(job.uuidString.lowercased()) 7 QUEUED 1700000000000 ") != nil)
        #expect(JobEvent.parse("x y") == nil)
        #expect(JobEvent.parse("t nope") == nil)
    }
}

extension RawConnection {
    /// Reads until `done` holds for what arrived, the server closes, or `timeout` seconds pass.
    func readUntil(timeout: Double, _ done: @escaping @Sendable (String) -> Bool) async throws -> String {
        let fd = descriptor
        return try await NIOThreadPool.singleton.runIfActive {
            var timeval = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeval, socklen_t(MemoryLayout<timeval>.size))
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            let deadline = Date(timeIntervalSinceNow: timeout)
            while Date() < deadline {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count == 0 { break }
                if count > 0 { received += buffer[0..<count] }
                if done(String(decoding: received, as: UTF8.self)) { break }
            }
            return String(decoding: received, as: UTF8.self)
        }
    }
}
