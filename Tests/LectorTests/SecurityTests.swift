import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import LectorModel
import Logging
import NIOConcurrencyHelpers
import Testing

@Suite("OpenAPI, rate limits, idempotency, logs")
struct SecurityTests {
    @Test("the OpenAPI document describes every route, and is served")
    func openAPICoversRoutes() async throws {
        try await TestHarness.run { harness in
            let document = try #require(try JSONSerialization.jsonObject(with: OpenAPIDocument.data) as? [String: Any])
            #expect(document["openapi"] as? String == "3.1.0")
            let paths = try #require(document["paths"] as? [String: [String: Any]])
            let router = buildRouter(harness.dependencies)
            let routes = router.routes.map { route -> (String, String) in
                // Hummingbird writes parameters as ":id"; OpenAPI as "{id}".
                let path = route.path.description.split(separator: "/").map { part in
                    part.hasPrefix(":") ? "{\(part.dropFirst())}" : String(part)
                }.joined(separator: "/")
                return ("/" + path, route.method.rawValue.lowercased())
            }
            #expect(routes.count >= 7)
            for (path, method) in routes {
                #expect(paths[path]?[method] != nil, "route \(method.uppercased()) \(path) is not in openapi.json")
            }
            // And nothing described that does not exist.
            let described = paths.flatMap { path, operations in operations.keys.map { (path, $0) } }
            for (path, method) in described {
                #expect(routes.contains { $0 == (path, method) }, "openapi.json describes \(method) \(path), which is no route")
            }
            // The binary's copy is the file's (CEmbedded compiles it in).
            let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("Sources/LectorAPI/openapi.json")
            #expect(try Data(contentsOf: file) == OpenAPIDocument.data)
            // The error codes it lists are exactly `ErrorCode`'s, in the same order.
            let schemas = (document["components"] as? [String: Any])?["schemas"] as? [String: Any]
            #expect((schemas?["ErrorCode"] as? [String: Any])?["enum"] as? [String] == ErrorCode.allCases.map(\.rawValue))
            // The typed client was generated from this very document.
            let recorded = try String(contentsOf: file.deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("LectorClient/openapi.sha256"), encoding: .utf8)
            let digest = SHA256.hash(data: try Data(contentsOf: file)).map { String(format: "%02x", $0) }.joined()
            #expect(recorded.trimmingCharacters(in: .whitespacesAndNewlines) == digest, "Sources/LectorClient is stale: run `make openapi`")
            try await harness.application().test(.router) { client in
                let served = try await client.execute(uri: "/openapi.json", method: .get)
                #expect(served.status == .ok)
                #expect(Data(buffer: served.body) == OpenAPIDocument.data)
            }
        }
    }

    @Test("a key over its rate limit gets 429 with Retry-After; other keys are not affected")
    func rateLimit() async throws {
        try await TestHarness.run(environment: ["LECTOR_RATE_LIMIT": "0.5", "LECTOR_RATE_BURST": "3"]) { harness in
            let busy = try await harness.newUser()
            let calm = try await harness.newUser()
            try await harness.application().test(.router) { client in
                for _ in 0..<3 {
                    let ok = try await client.execute(uri: "/v1/jobs/\(UUID())", method: .get, headers: [.authorization: "Bearer \(busy.token)"])
                    #expect(ok.status == .notFound)
                }
                let limited = try await client.execute(uri: "/v1/jobs/\(UUID())", method: .get, headers: [.authorization: "Bearer \(busy.token)"])
                #expect(limited.status == .tooManyRequests)
                #expect(limited.errorCode == "rate_limited")
                let retryAfter = try #require(limited.headers[.retryAfter].flatMap(Int.init))
                #expect((1...2).contains(retryAfter))
                let other = try await client.execute(uri: "/v1/jobs/\(UUID())", method: .get, headers: [.authorization: "Bearer \(calm.token)"])
                #expect(other.status == .notFound)
            }
        }
    }

    @Test("the token bucket refills at its rate")
    func tokenBucket() {
        let limiter = RateLimiter(rate: 2, burst: 2)
        let start = ContinuousClock.now
        #expect(limiter.acquire(1, now: start) == nil)
        #expect(limiter.acquire(1, now: start) == nil)
        #expect(limiter.acquire(1, now: start) == 1)
        #expect(limiter.acquire(1, now: start + .milliseconds(500)) == nil)
        #expect(limiter.acquire(1, now: start + .milliseconds(500)) != nil)
        #expect(limiter.acquire(2, now: start) == nil)
    }

    @Test("Idempotency-Key: a retry returns the original job; another document is 422; keys are per user")
    func idempotency() async throws {
        try await TestHarness.run { harness in
            let alice = try await harness.newUser()
            let bob = try await harness.newUser()
            let first = try TestImages.render(["first"])
            let second = try TestImages.render(["second"])
            try await harness.application().test(.router) { client in
                func submit(_ token: String, _ body: Data, key: String?) async throws -> TestResponse {
                    var headers: HTTPFields = [.authorization: "Bearer \(token)", .contentType: "image/png"]
                    if let key { headers[HTTPField.Name("Idempotency-Key")!] = key }
                    return try await client.execute(uri: "/v1/jobs", method: .post, headers: headers, body: ByteBuffer(bytes: body))
                }
                let original = try await submit(alice.token, first, key: "order-17")
                #expect(original.status == .accepted)
                let id = try #require(original.json["id"] as? String)

                let retry = try await submit(alice.token, first, key: "order-17")
                #expect(retry.status == .accepted)
                #expect(retry.json["id"] as? String == id)
                #expect(retry.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
                #expect(retry.headers[.location] == "/v1/jobs/\(id)")

                let other = try await submit(alice.token, second, key: "order-17")
                #expect(other.status == .unprocessableContent)
                #expect(other.errorCode == "idempotency_key_reused")

                let bobs = try await submit(bob.token, first, key: "order-17")
                #expect(bobs.status == .accepted)
                #expect(bobs.json["id"] as? String != id)

                // The same document with other metadata is another request.
                var form = Multipart()
                form.add(name: "document", filename: "a.png", data: first)
                form.add(name: "metadata", json: #"{"batch": 2}"#)
                let otherMetadata = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(alice.token)", .contentType: form.contentType,
                              HTTPField.Name("Idempotency-Key")!: "order-17"],
                    body: form.finished())
                #expect(otherMetadata.status == .unprocessableContent)

                // Past 24 hours the key is free again, and purged.
                try await harness.client.query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'order-17'")
                let later = try await submit(alice.token, second, key: "order-17")
                #expect(later.status == .accepted)
                #expect(later.json["id"] as? String != id)
                try await harness.client.query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
                #expect(try await harness.jobs.purgeIdempotencyKeys() == 2)

                let bad = try await submit(alice.token, first, key: String(repeating: "k", count: 256))
                #expect(bad.status == .badRequest)
                #expect(bad.errorCode == "invalid_idempotency_key")

                // Concurrent retries of one request create one job.
                let ids = try await withThrowingTaskGroup(of: String?.self) { group in
                    for _ in 0..<6 {
                        group.addTask { try await submit(alice.token, second, key: "batch-9").json["id"] as? String }
                    }
                    var ids: [String?] = []
                    for try await id in group { ids.append(id) }
                    return ids
                }
                #expect(Set(ids).count == 1)
                #expect(ids.allSatisfy { $0 != nil })
                #expect(try await harness.jobs.countsByStatus()[.queued] == 4)
                let folders = try FileManager.default.contentsOfDirectory(atPath: harness.storage.root.path).filter { !$0.hasPrefix(".") }
                #expect(folders.count == 4, "no folder is left behind by the losing requests: \(folders)")
            }
        }
    }

    @Test("no API key and no link signature ever reaches the logs")
    func logsCarryNoSecrets() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let secret = try #require(APIKey(token: user.token)).secret
            let sink = LogSink()
            var logger = Logger(label: "capture") { _ in CapturingLogHandler(sink: sink) }
            logger.logLevel = .trace
            let app = buildApplication(dependencies: harness.dependencies, logger: logger)
            let job = UUID()
            try await harness.storage.createJobFolder(id: job, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
            try await harness.storage.writeResult(id: job, fileName: "result.txt", contents: Data("x".utf8))
            let link = harness.dependencies.signer.link(job: job, file: "result.txt")
            let signature = try #require(link.split(separator: "signature=").last.map(String.init))
            try await app.test(.router) { client in
                _ = try await client.execute(uri: "/v1/jobs/\(UUID())", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                _ = try await client.execute(uri: "/v1/jobs/\(UUID())", method: .get, headers: [.authorization: "Bearer \(user.token)x"])
                _ = try await client.execute(uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"], body: ByteBuffer(string: "not an image"))
                #expect(try await client.execute(uri: link, method: .get).status == .ok)
                _ = try await client.execute(uri: link + "0", method: .get)
            }
            let logged = sink.text
            #expect(logged.contains("/files/"), "the requests were logged: \(logged.prefix(300))")
            #expect(!logged.contains(secret))
            #expect(!logged.contains(signature))
        }
    }

    @Test("metadata and file names never make a path outside the job's folder")
    func pathsStayInside() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let image = try TestImages.render(["inside"])
            try await harness.application().test(.router) { client in
                var form = Multipart()
                form.add(name: "document", filename: "../../../../tmp/evil.png", contentType: "image/png", data: image)
                form.add(name: "metadata", json: #"{"../../x": "/etc/passwd", "filename": "../../../y"}"#)
                let response = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: form.contentType], body: form.finished())
                #expect(response.status == .accepted)
                let id = try #require((response.json["id"] as? String).flatMap(UUID.init(uuidString:)))
                let entries = try FileManager.default.contentsOfDirectory(atPath: harness.storage.root.path).filter { !$0.hasPrefix(".") }
                #expect(entries == [id.uuidString.lowercased()])
                let files = try FileManager.default.contentsOfDirectory(atPath: harness.storage.folder(of: id).path).sorted()
                #expect(files == ["document.png", "metadata.json"])
                #expect(!FileManager.default.fileExists(atPath: "/tmp/evil.png"))
            }
        }
    }
}

final class LogSink: Sendable {
    private let lines = NIOLockedValueBox([String]())
    func append(_ line: String) { lines.withLockedValue { $0.append(line) } }
    var text: String { lines.withLockedValue { $0.joined(separator: "\n") } }
}

struct CapturingLogHandler: LogHandler {
    let sink: LogSink
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = self.metadata.merging(event.metadata ?? [:]) { $1 }
        sink.append("\(event.level) \(event.message) \(all)")
    }
}
