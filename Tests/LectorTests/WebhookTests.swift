import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import LectorWorker
import NIOCore
import PostgresNIO
import Testing

/// A webhook receiver on 127.0.0.1: records what arrives and answers 503 to the first `failures` requests,
/// then 200.
actor WebhookReceiver {
    struct Received: Sendable {
        let id: String
        let timestamp: String
        let signature: String
        let contentType: String
        let host: String
        let body: Data
    }

    private(set) var received: [Received] = []
    /// The answer to the n-th request (1-based).
    let respond: @Sendable (Int) -> Response

    init(failures: Int = 0) {
        self.respond = { count in Response(status: count <= failures ? .serviceUnavailable : .ok) }
    }

    init(respond: @escaping @Sendable (Int) -> Response) {
        self.respond = respond
    }

    func receive(_ request: Received) -> Response {
        received.append(request)
        return respond(received.count)
    }

    nonisolated func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("hook") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            return await self.receive(Received(
                id: request.headers[HTTPField.Name("webhook-id")!] ?? "",
                timestamp: request.headers[HTTPField.Name("webhook-timestamp")!] ?? "",
                signature: request.headers[HTTPField.Name("webhook-signature")!] ?? "",
                contentType: request.headers[.contentType] ?? "",
                host: request.head.authority ?? "",
                body: Data(buffer: body)))
        }
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }
}

/// Verifies a Standard Webhooks signature with nothing of Lector's: HMAC-SHA256 keyed with the base64-decoded
/// part of `whsec_…` over "<id>.<timestamp>.<body>".
func verifyStandardWebhook(secret: String, id: String, timestamp: String, body: Data, header: String) -> Bool {
    guard secret.hasPrefix("whsec_"), let key = Data(base64Encoded: String(secret.dropFirst(6))) else { return false }
    let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(timestamp).".utf8) + body, using: SymmetricKey(data: key))
    let expected = "v1," + Data(mac).base64EncodedString()
    return header.split(separator: " ").contains { $0 == expected }
}

@Suite("Webhooks: addresses, URLs and signatures")
struct WebhookUnitTests {
    @Test("IPv4 classifier: private, loopback, link-local (metadata), CGNAT, multicast and unspecified refused")
    func classifiesIPv4() throws {
        let refused = [
            "0.0.0.0", "10.1.2.3", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.255.0.9", "169.254.169.254",
            "172.16.0.1", "172.31.255.255", "192.168.1.1", "224.0.0.1", "239.255.255.250", "255.255.255.255", "192.0.2.1",
        ]
        for text in refused {
            let address = try #require(IPAddress(text))
            #expect(address.refusal != nil, "\(text) should be refused")
        }
        for text in ["1.1.1.1", "8.8.8.8", "93.184.216.34", "172.15.255.255", "172.32.0.1", "100.63.255.255", "100.128.0.1", "169.253.1.1"] {
            let address = try #require(IPAddress(text))
            #expect(address.refusal == nil, "\(text) is public: \(address.refusal ?? "")")
        }
        #expect(IPAddress("169.254.169.254")?.refusal?.contains("link-local") == true)
        #expect(IPAddress("100.64.0.1")?.refusal?.contains("CGNAT") == true)
        // Spellings the resolver accepts are not literals: they are resolved, then checked.
        #expect(IPAddress("2130706433") == nil)
        #expect(IPAddress("0x7f.1") == nil)
    }

    @Test("IPv6 classifier: loopback, unspecified, ULA, link-local, multicast, and IPv4-mapped private refused")
    func classifiesIPv6() throws {
        let refused = [
            "::", "::1", "fc00::1", "fd12:3456::1", "fe80::1", "febf::1", "ff02::1", "::ffff:127.0.0.1",
            "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::10.0.0.1", "2002:0a00:0001::1", "2001:db8::1", "::127.0.0.1",
        ]
        for text in refused {
            let address = try #require(IPAddress(text))
            #expect(address.refusal != nil, "\(text) should be refused")
        }
        for text in ["2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "fec0::1"] {
            let address = try #require(IPAddress(text))
            if text == "fec0::1" {
                #expect(address.refusal != nil, "site-local is refused")
            } else {
                #expect(address.refusal == nil, "\(text) is public: \(address.refusal ?? "")")
            }
        }
        #expect(IPAddress("::1")?.description == "::1")
        #expect(IPAddress("fe80::1")?.refusal?.contains("link-local") == true)
    }

    @Test("callback URLs: https only, no userinfo, no literal private host; the opt-in allows http and private")
    func checksURLs() throws {
        let strict = CallbackURLPolicy(allowPrivate: false)
        #expect(throws: CallbackURLRefused.self) { try strict.check("http://example.com/hook") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("https://user:pw@example.com/hook") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("https://user@example.com/hook") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("https://10.0.0.7/hook") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("https://169.254.169.254/latest/meta-data/") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("https://[::1]:8443/hook") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("https://[fe80::1%25eth0]/hook") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("ftp://example.com/") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("/relative") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("https://exa mple.com/") }
        #expect(throws: CallbackURLRefused.self) { try strict.check("https://example.com/" + String(repeating: "a", count: 2048)) }
        let target = try strict.check("https://Hooks.Example.com/lector?x=1")
        #expect(target.host == "hooks.example.com" && target.port == 443 && target.literal == nil)
        let open = CallbackURLPolicy(allowPrivate: true)
        #expect(try open.check("http://127.0.0.1:9000/hook").literal == IPAddress("127.0.0.1"))
        #expect(throws: CallbackURLRefused.self) { try open.check("https://user:pw@127.0.0.1/hook") }
    }

    @Test("names are checked on their resolved addresses")
    func checksResolvedAddresses() async throws {
        let strict = CallbackURLPolicy(allowPrivate: false)
        // localhost resolves to loopback addresses only: refused although the name is not an address.
        await #expect(throws: CallbackURLRefused.self) {
            _ = try await strict.resolve(try strict.check("https://localhost/hook"))
        }
        // A spelling of 127.0.0.1 that only the resolver understands.
        await #expect(throws: CallbackURLRefused.self) {
            _ = try await strict.resolve(try strict.check("https://2130706433/hook"))
        }
        let open = CallbackURLPolicy(allowPrivate: true)
        let addresses = try await open.resolve(try open.check("http://localhost:1/hook"))
        #expect(addresses.allSatisfy { $0.refusal?.contains("loopback") == true })
    }

    @Test("signatures follow Standard Webhooks (its published example)")
    func signsLikeStandardWebhooks() throws {
        let secret = try #require(WebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let signature = secret.signature(
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8))
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        let fresh = WebhookSecret.generate()
        #expect(fresh.text.hasPrefix("whsec_") && fresh.key.count == 32)
        #expect(WebhookSecret("whsec_notbase64!") == nil)
    }

    @Test("retry delays grow exponentially with jitter and stop at the cap")
    func backoff() {
        var configuration = WebhookDeliveryConfiguration(settings: Settings(environment: [:]))
        configuration.retryBase = .seconds(5)
        configuration.retryMax = .seconds(3600)
        for attempt in 1...20 {
            let delay = configuration.retryDelay(afterAttempt: attempt).secondsValue
            let nominal = min(5 * pow(2, Double(attempt - 1)), 3600)
            #expect(delay >= nominal * 0.5 && delay < nominal * 1.5)
        }
    }
}

@Suite("Webhooks: outbox and delivery")
struct WebhookTests {
    static let privateAllowed = [
        "LECTOR_WEBHOOK_ALLOW_PRIVATE": "true", "LECTOR_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
        "LECTOR_WEBHOOK_RETRY_MAX_SECONDS": "0.2", "LECTOR_WEBHOOK_TIMEOUT": "5",
    ]

    /// A user with a key and a webhook secret.
    static func userWithSecret(_ harness: TestHarness) async throws -> (token: String, keyID: Int64, secret: String) {
        let name = "hook-\(UUID().uuidString.prefix(6))"
        let (keyID, key) = try await harness.keys.createKey(forUser: name)
        let secret = try #require(try await harness.keys.rotateWebhookSecret(user: name))
        return (key.token, keyID, secret.text)
    }

    static func submit(
        _ client: some TestClientProtocol, token: String, options: String
    ) async throws -> TestResponse {
        var form = Multipart()
        form.add(name: "document", filename: "page.png", contentType: "image/png", data: try TestImages.render(["hook"], width: 300))
        form.add(name: "options", json: options)
        return try await client.execute(
            uri: "/v1/jobs", method: .post, headers: [.authorization: "Bearer \(token)", .contentType: form.contentType],
            body: form.finished())
    }

    /// Claims the one queued job and ends it through `end_job`, as a worker would.
    static func finishNextJob(_ harness: TestHarness) async throws -> UUID {
        let claimed = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)))
        try await harness.jobs.end(claimed.lease, as: .finished)
        return claimed.id
    }

    static func deliverer(_ harness: TestHarness, metrics: LectorMetrics = LectorMetrics()) -> WebhookDeliverer {
        WebhookDeliverer(
            store: WebhookStore(client: harness.client, logger: TestDatabase.logger),
            configuration: WebhookDeliveryConfiguration(settings: harness.settings), metrics: metrics,
            logger: TestDatabase.logger)
    }

    /// Runs delivery passes until `done` or 20 s.
    static func deliver(_ deliverer: WebhookDeliverer, until done: @Sendable () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while await !done() {
            guard ContinuousClock.now < deadline else { throw TestFailure("delivery did not happen in time") }
            if await deliverer.runOnce() == 0 { try await Task.sleep(for: .milliseconds(30)) }
        }
    }

    @Test("a finished job's end is delivered once: signed, with status and links")
    func deliversFinishedJob() async throws {
        try await TestHarness.run(environment: Self.privateAllowed) { harness in
            let user = try await Self.userWithSecret(harness)
            let receiver = WebhookReceiver()
            try await receiver.application().test(.live) { live in
                let port = try #require(live.port)
                let url = "http://127.0.0.1:\(port)/hook"
                try await harness.application().test(.router) { client in
                    let submitted = try await Self.submit(client, token: user.token, options: #"{"callbackUrl": "\#(url)"}"#)
                    #expect(submitted.status == .accepted, "\(String(buffer: submitted.body))")
                    // Not an engine option: the job's options do not carry it.
                    let id = try #require(submitted.json["id"] as? String)
                    let status = try await client.execute(uri: "/v1/jobs/\(id)", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                    #expect((status.json["options"] as? [String: Any])?["callbackUrl"] == nil)
                }
                let jobID = try await Self.finishNextJob(harness)
                let deliverer = Self.deliverer(harness)
                try await Self.deliver(deliverer) { await receiver.received.count >= 1 }
                // Further passes find nothing due: delivered once.
                for _ in 0..<3 { #expect(await deliverer.runOnce() == 0) }
                let received = await receiver.received
                #expect(received.count == 1)
                let request = try #require(received.first)
                #expect(verifyStandardWebhook(
                    secret: user.secret, id: request.id, timestamp: request.timestamp, body: request.body, header: request.signature))
                #expect(!verifyStandardWebhook(
                    secret: WebhookSecret.generate().text, id: request.id, timestamp: request.timestamp, body: request.body,
                    header: request.signature))
                #expect(abs((Double(request.timestamp) ?? 0) - Date().timeIntervalSince1970) < 60)
                #expect(request.contentType == "application/json")
                let body = try #require(try JSONSerialization.jsonObject(with: request.body) as? [String: Any])
                let idString = jobID.uuidString.lowercased()
                #expect(body["id"] as? String == idString)
                #expect(body["status"] as? String == "FINISHED")
                #expect(body["reason"] is NSNull)
                let links = try #require(body["links"] as? [String: String])
                #expect(links["result"] == "/v1/jobs/\(idString)/result")
                #expect(links["self"] == "/v1/jobs/\(idString)")
                // webhook-id is the outbox row's id.
                let rows = try await harness.client.query(
                    "SELECT id, delivered_at IS NOT NULL, attempts FROM webhook_deliveries WHERE job_id = \(jobID)", logger: TestDatabase.logger)
                var outbox: [(UUID, Bool, Int)] = []
                for try await row in rows.decode((UUID, Bool, Int).self) { outbox.append(row) }
                #expect(outbox.count == 1)
                #expect(outbox.first?.0.uuidString.lowercased() == request.id)
                #expect(outbox.first?.1 == true && outbox.first?.2 == 1)
            }
        }
    }

    @Test("a receiver answering 503 for a while gets the end once, late; every attempt is recorded and listed")
    func retriesUntilDelivered() async throws {
        try await TestHarness.run(environment: Self.privateAllowed) { harness in
            let user = try await Self.userWithSecret(harness)
            let other = try await harness.newUser()
            let receiver = WebhookReceiver(failures: 3)
            try await receiver.application().test(.live) { live in
                let port = try #require(live.port)
                try await harness.application().test(.router) { client in
                    // The raw-body form of the option.
                    let image = try TestImages.render(["hook"], width: 300)
                    let url = "http://127.0.0.1:\(port)/hook"
                    let encoded = url.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
                    let submitted = try await client.execute(
                        uri: "/v1/jobs?callbackUrl=\(encoded)", method: .post,
                        headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"],
                        body: ByteBuffer(bytes: image))
                    #expect(submitted.status == .accepted, "\(String(buffer: submitted.body))")
                    let id = try #require(submitted.json["id"] as? String)

                    // Not ended yet: no delivery.
                    let none = try await client.execute(
                        uri: "/v1/jobs/\(id)/deliveries", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                    #expect(none.status == .ok)
                    #expect((none.json["deliveries"] as? [Any])?.isEmpty == true)

                    _ = try await Self.finishNextJob(harness)
                    let metrics = LectorMetrics()
                    try await Self.deliver(Self.deliverer(harness, metrics: metrics)) { await receiver.received.count >= 4 }
                    let exposition = String(decoding: await metrics.exposition(), as: UTF8.self)
                    #expect(exposition.contains(#"lector_webhook_attempts_total{result="http_error"} 3"#), "\(exposition)")
                    #expect(exposition.contains(#"lector_webhook_attempts_total{result="delivered"} 1"#))
                    let received = await receiver.received
                    #expect(received.count == 4)
                    #expect(Set(received.map(\.id)).count == 1, "one webhook-id on every attempt")
                    #expect(Set(received.map(\.body)).count == 1, "the same body on every attempt")
                    for request in received {
                        #expect(verifyStandardWebhook(
                            secret: user.secret, id: request.id, timestamp: request.timestamp, body: request.body,
                            header: request.signature))
                    }

                    let listed = try await client.execute(
                        uri: "/v1/jobs/\(id)/deliveries", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                    #expect(listed.status == .ok)
                    let deliveries = try #require(listed.json["deliveries"] as? [[String: Any]])
                    #expect(deliveries.count == 1)
                    let delivery = try #require(deliveries.first)
                    #expect(delivery["id"] as? String == received.first?.id)
                    #expect(delivery["state"] as? String == "delivered")
                    #expect(delivery["jobStatus"] as? String == "FINISHED")
                    #expect(delivery["url"] as? String == url)
                    #expect(delivery["deliveredAt"] is String)
                    #expect(delivery["nextAttemptAt"] == nil)
                    let attempts = try #require(delivery["attempts"] as? [[String: Any]])
                    #expect(attempts.map { $0["statusCode"] as? Int } == [503, 503, 503, 200])
                    #expect(attempts.map { $0["attempt"] as? Int } == [1, 2, 3, 4])
                    #expect(attempts.allSatisfy { $0["at"] is String && ($0["durationMs"] as? Double ?? -1) >= 0 })

                    // Another user's job: 404, as on every /v1 route.
                    let foreign = try await client.execute(
                        uri: "/v1/jobs/\(id)/deliveries", method: .get, headers: [.authorization: "Bearer \(other.token)"])
                    #expect(foreign.status == .notFound)
                    let unknown = try await client.execute(
                        uri: "/v1/jobs/\(UUID().uuidString)/deliveries", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                    #expect(unknown.status == .notFound)
                }
            }
        }
    }

    @Test("a host name is resolved, checked and connected to by address, with the name kept in Host")
    func connectsToCheckedAddressByName() async throws {
        try await TestHarness.run(environment: Self.privateAllowed) { harness in
            let user = try await Self.userWithSecret(harness)
            let receiver = WebhookReceiver()
            try await receiver.application().test(.live) { live in
                let port = try #require(live.port)
                let ownerRows = try await harness.client.query(
                    "SELECT user_id FROM api_keys WHERE id = \(user.keyID)", logger: TestDatabase.logger)
                var owner: Int64 = 0
                for try await id in ownerRows.decode(Int64.self) { owner = id }
                // localhost may resolve to ::1 first, where nothing listens: the next checked address is tried.
                try await harness.jobs.create(NewJob(
                    id: UUID(), ownerID: owner, documentName: "d", contentType: "image/png", sizeBytes: 1,
                    sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}",
                    callbackURL: "http://localhost:\(port)/hook"))
                _ = try await Self.finishNextJob(harness)
                try await Self.deliver(Self.deliverer(harness)) { await receiver.received.count >= 1 }
                let request = try #require(await receiver.received.first)
                #expect(request.host == "localhost:\(port)")
                #expect(verifyStandardWebhook(
                    secret: user.secret, id: request.id, timestamp: request.timestamp, body: request.body, header: request.signature))
            }
        }
    }

    /// A job with a callback to `url`, ended FINISHED; returns its id and owner.
    static func endedJob(_ harness: TestHarness, keyID: Int64, url: String) async throws -> (UUID, Int64) {
        let ownerRows = try await harness.client.query("SELECT user_id FROM api_keys WHERE id = \(keyID)", logger: TestDatabase.logger)
        var owner: Int64 = 0
        for try await id in ownerRows.decode(Int64.self) { owner = id }
        let job = NewJob(
            id: UUID(), ownerID: owner, documentName: "d", contentType: "image/png", sizeBytes: 1,
            sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}", callbackURL: url)
        try await harness.jobs.create(job)
        _ = try await Self.finishNextJob(harness)
        return (job.id, owner)
    }

    @Test("a redirect is not followed, and an endless answer is read only up to 4 KiB")
    func noRedirectsBoundedAnswers() async throws {
        try await TestHarness.run(environment: Self.privateAllowed) { harness in
            let user = try await Self.userWithSecret(harness)
            let receiver = WebhookReceiver { count in
                if count == 1 {
                    return Response(status: .found, headers: [.location: "http://127.0.0.1:1/elsewhere"])
                }
                // An answer that never ends: read to its end, the attempt would time out (5 s) instead of
                // counting as a 200.
                let endless = AsyncStream<ByteBuffer>(unfolding: {
                    try? await Task.sleep(for: .milliseconds(20))
                    return ByteBuffer(repeating: 0x41, count: 1024)
                })
                return Response(status: .ok, body: .init(asyncSequence: endless))
            }
            try await receiver.application().test(.live) { live in
                let port = try #require(live.port)
                let (id, owner) = try await Self.endedJob(harness, keyID: user.keyID, url: "http://127.0.0.1:\(port)/hook")
                let webhooks = WebhookStore(client: harness.client, logger: TestDatabase.logger)
                try await Self.deliver(Self.deliverer(harness)) {
                    (try? await webhooks.deliveries(jobID: id, ownerID: owner))?.first?.deliveredAt != nil
                }
                let record = try #require(try await webhooks.deliveries(jobID: id, ownerID: owner)?.first)
                #expect(record.attempts.map(\.statusCode) == [302, 200])
                #expect(record.attempts.last.map { $0.durationMs < 4000 } == true)
                #expect(await receiver.received.count == 2, "the redirect's target was never asked")
            }
        }
    }

    @Test("retries stop after the give-up time: the delivery is marked failed")
    func givesUp() async throws {
        var environment = Self.privateAllowed
        environment["LECTOR_WEBHOOK_GIVE_UP_SECONDS"] = "1"
        environment["LECTOR_WEBHOOK_RETRY_BASE_SECONDS"] = "0.1"
        environment["LECTOR_WEBHOOK_RETRY_MAX_SECONDS"] = "0.3"
        try await TestHarness.run(environment: environment) { harness in
            let user = try await Self.userWithSecret(harness)
            let receiver = WebhookReceiver(failures: .max)
            try await receiver.application().test(.live) { live in
                let port = try #require(live.port)
                let (id, owner) = try await Self.endedJob(harness, keyID: user.keyID, url: "http://127.0.0.1:\(port)/hook")
                let webhooks = WebhookStore(client: harness.client, logger: TestDatabase.logger)
                try await Self.deliver(Self.deliverer(harness)) {
                    (try? await webhooks.deliveries(jobID: id, ownerID: owner))?.first?.gaveUpAt != nil
                }
                let record = try #require(try await webhooks.deliveries(jobID: id, ownerID: owner)?.first)
                #expect(record.attempts.count >= 2)
                #expect(record.attempts.allSatisfy { $0.statusCode == 503 })
                #expect(record.deliveredAt == nil && record.nextAttemptAt == nil)
                try await harness.application().test(.router) { client in
                    let listed = try await client.execute(
                        uri: "/v1/jobs/\(id.uuidString.lowercased())/deliveries", method: .get,
                        headers: [.authorization: "Bearer \(user.token)"])
                    let deliveries = try #require(listed.json["deliveries"] as? [[String: Any]])
                    #expect(deliveries.first?["state"] as? String == "failed")
                }
            }
        }
    }

    @Test("several deliverers at once never take the same delivery")
    func concurrentDeliverers() async throws {
        try await TestHarness.run(environment: Self.privateAllowed) { harness in
            let user = try await Self.userWithSecret(harness)
            let receiver = WebhookReceiver()
            try await receiver.application().test(.live) { live in
                let port = try #require(live.port)
                let ownerRows = try await harness.client.query(
                    "SELECT user_id FROM api_keys WHERE id = \(user.keyID)", logger: TestDatabase.logger)
                var owner: Int64 = 0
                for try await id in ownerRows.decode(Int64.self) { owner = id }
                let count = 12
                for _ in 0..<count {
                    try await harness.jobs.create(NewJob(
                        id: UUID(), ownerID: owner, documentName: "d", contentType: "image/png", sizeBytes: 1,
                        sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}",
                        callbackURL: "http://127.0.0.1:\(port)/hook"))
                    _ = try await Self.finishNextJob(harness)
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<3 {
                        group.addTask {
                            try await Self.deliver(Self.deliverer(harness)) { await receiver.received.count >= count }
                        }
                    }
                    try await group.waitForAll()
                }
                let received = await receiver.received
                #expect(received.count == count)
                #expect(Set(received.map(\.id)).count == count, "each delivery made once")
            }
        }
    }

    @Test("without the opt-in, private, link-local, loopback and http callback URLs are refused at submit with 400")
    func refusesPrivateTargetsAtSubmit() async throws {
        try await TestHarness.run { harness in
            let user = try await Self.userWithSecret(harness)
            try await harness.application().test(.router) { client in
                let refused = [
                    "https://10.0.0.5/hook", "https://192.168.1.20/hook", "http://example.com/hook",
                    "https://169.254.169.254/latest/meta-data/", "https://[::1]/hook", "https://[fd00::1]/hook",
                    "https://user:secret@example.com/hook", "https://localhost/hook", "https://127.1/hook",
                    "https://100.64.1.1/hook",
                ]
                for url in refused {
                    let response = try await Self.submit(client, token: user.token, options: #"{"callbackUrl": "\#(url)"}"#)
                    #expect(response.status == .badRequest, "\(url)")
                    #expect(response.errorCode == "invalid_callback_url", "\(url): \(String(buffer: response.body))")
                }
                let notString = try await Self.submit(client, token: user.token, options: #"{"callbackUrl": 7}"#)
                #expect(notString.errorCode == "invalid_callback_url")
                // The raw-body form, refused before the body is read.
                let raw = try await client.execute(
                    uri: "/v1/jobs?callbackUrl=https%3A%2F%2F169.254.169.254%2F", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"],
                    body: ByteBuffer(bytes: try TestImages.render(["x"], width: 200)))
                #expect(raw.status == .badRequest)
                #expect(raw.errorCode == "invalid_callback_url")
                // A user without a webhook secret cannot name a callback (nothing could be signed).
                let plain = try await harness.newUser()
                let unsigned = try await Self.submit(client, token: plain.token, options: #"{"callbackUrl": "https://example.com/hook"}"#)
                #expect(unsigned.status == .badRequest)
                #expect(unsigned.errorCode == "webhook_secret_missing")
            }
            let count = try await harness.jobs.countsByStatus().values.reduce(0, +)
            #expect(count == 0, "no job was created")
        }
    }

    @Test("delivery checks the resolved address again: a loopback target stored earlier is refused and recorded")
    func refusesPrivateTargetsAtDelivery() async throws {
        try await TestHarness.run(environment: ["LECTOR_WEBHOOK_RETRY_BASE_SECONDS": "0.05"]) { harness in
            let user = try await Self.userWithSecret(harness)
            let receiver = WebhookReceiver()
            try await receiver.application().test(.live) { live in
                let port = try #require(live.port)
                // Stored as if it had passed the submit checks (an opt-in since turned off, or a name that now
                // resolves elsewhere): https://localhost resolves to loopback.
                let ownerRows = try await harness.client.query(
                    "SELECT user_id FROM api_keys WHERE id = \(user.keyID)", logger: TestDatabase.logger)
                var owner: Int64 = 0
                for try await id in ownerRows.decode(Int64.self) { owner = id }
                let job = NewJob(
                    id: UUID(), ownerID: owner, documentName: "d", contentType: "image/png", sizeBytes: 1,
                    sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}",
                    callbackURL: "https://localhost:\(port)/hook")
                try await harness.jobs.create(job)
                _ = try await Self.finishNextJob(harness)
                let deliverer = Self.deliverer(harness)
                #expect(await deliverer.runOnce() == 1)
                let webhooks = WebhookStore(client: harness.client, logger: TestDatabase.logger)
                let records = try #require(try await webhooks.deliveries(jobID: job.id, ownerID: owner))
                let attempt = try #require(records.first?.attempts.first)
                #expect(attempt.statusCode == nil)
                #expect(attempt.error?.hasPrefix("refused:") == true, "\(attempt.error ?? "")")
                #expect(records.first?.deliveredAt == nil && records.first?.nextAttemptAt != nil)
                #expect(await receiver.received.isEmpty)
            }
        }
    }

    @Test("a job failed by the rescuer gets its outbox row too, in the same transaction")
    func rescuerFailureWritesOutbox() async throws {
        try await TestHarness.run { harness in
            let user = try await Self.userWithSecret(harness)
            let ownerRows = try await harness.client.query(
                "SELECT user_id FROM api_keys WHERE id = \(user.keyID)", logger: TestDatabase.logger)
            var owner: Int64 = 0
            for try await id in ownerRows.decode(Int64.self) { owner = id }
            let job = NewJob(
                id: UUID(), ownerID: owner, documentName: "d", contentType: "image/png", sizeBytes: 1,
                sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}",
                callbackURL: "https://hooks.example.com/lector")
            try await harness.jobs.create(job)
            let silent = NewJob(
                id: UUID(), ownerID: owner, documentName: "d", contentType: "image/png", sizeBytes: 1,
                sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}")
            try await harness.jobs.create(silent)
            let start = Date()
            _ = try #require(try await harness.jobs.claimNext(worker: "lost", leaseDuration: .seconds(60), now: start))
            _ = try #require(try await harness.jobs.claimNext(worker: "lost", leaseDuration: .seconds(60), now: start))
            let report = try await harness.jobs.rescueExpired(maxAttempts: 1, now: start.addingTimeInterval(120))
            #expect(report.failed == 2)
            let rows = try await harness.client.query(
                "SELECT job_id, url, status, reason FROM webhook_deliveries", logger: TestDatabase.logger)
            var outbox: [(UUID, String, String, String?)] = []
            for try await row in rows.decode((UUID, String, String, String?).self) { outbox.append(row) }
            #expect(outbox.count == 1, "only the job with a callback URL")
            #expect(outbox.first?.0 == job.id)
            #expect(outbox.first?.1 == "https://hooks.example.com/lector")
            #expect(outbox.first?.2 == "FAILURE")
            #expect(outbox.first?.3?.hasPrefix("worker lost") == true)
        }
    }

    @Test("a key's default callback URL applies to its submits that name none")
    func keyDefault() async throws {
        try await TestHarness.run { harness in
            let plain = try await harness.newUser()
            // No secret yet: refused.
            await #expect(throws: KeyStoreError.self) {
                try await harness.keys.setDefaultCallbackURL(keyID: plain.keyID, url: "https://hooks.example.com/a")
            }
            let user = try await Self.userWithSecret(harness)
            try await harness.keys.setDefaultCallbackURL(keyID: user.keyID, url: "https://hooks.example.com/default")
            try await harness.application().test(.router) { client in
                let submitted = try await Self.submit(client, token: user.token, options: #"{"lang": "eng"}"#)
                #expect(submitted.status == .accepted)
                let id = try #require((submitted.json["id"] as? String).flatMap(UUID.init(uuidString:)))
                let rows = try await harness.client.query("SELECT callback_url FROM jobs WHERE id = \(id)", logger: TestDatabase.logger)
                var url: String?
                for try await value in rows.decode(String?.self) { url = value }
                #expect(url == "https://hooks.example.com/default")
            }
            try await harness.keys.setDefaultCallbackURL(keyID: user.keyID, url: nil)
        }
    }
}
