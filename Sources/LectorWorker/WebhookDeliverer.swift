import AsyncHTTPClient
import Foundation
import LectorCore
import LectorModel
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// How the delivery service behaves; built from `Settings`.
public struct WebhookDeliveryConfiguration: Sendable {
    public var policy: CallbackURLPolicy
    /// The longest one attempt may take: resolving, connecting, sending, and the answer's head and first bytes.
    public var timeout: Duration
    public var retryBase: Duration
    public var retryMax: Duration
    /// Retries stop when the next would come later than this after the job's end.
    public var giveUpAfter: Duration
    public var pollInterval: Duration
    /// Deliveries one process makes at once.
    public var concurrency: Int
    /// The most bytes of an answer's body that are read (then the connection is dropped).
    public var maxResponseBytes = 4096

    public init(settings: Settings) {
        self.policy = CallbackURLPolicy(allowPrivate: settings.webhookAllowPrivate)
        self.timeout = .milliseconds(Int64(settings.webhookTimeout * 1000))
        self.retryBase = .milliseconds(Int64(settings.webhookRetryBaseSeconds * 1000))
        self.retryMax = .milliseconds(Int64(settings.webhookRetryMaxSeconds * 1000))
        self.giveUpAfter = .milliseconds(Int64(settings.webhookGiveUpSeconds * 1000))
        self.pollInterval = .milliseconds(Int64(settings.webhookPollInterval * 1000))
        self.concurrency = settings.webhookConcurrency
    }

    /// base · 2^(attempt−1), capped, times a jitter in [0.5, 1.5).
    public func retryDelay(afterAttempt attempt: Int) -> Duration {
        let exponent = Double(min(max(attempt - 1, 0), 40))
        let seconds = min(retryBase.secondsValue * pow(2, exponent), retryMax.secondsValue)
        return .milliseconds(Int64(seconds * Double.random(in: 0.5..<1.5) * 1000))
    }
}

/// Delivers the webhook outbox (`db/008_webhooks.sql`): every `pollInterval` (at once again while it finds
/// work) it takes due deliveries with `FOR UPDATE SKIP LOCKED`, so every worker process can run one, and POSTs
/// each, signed the Standard Webhooks way with the owner's secret. Every attempt is recorded; a non-2xx answer
/// or an error is retried with exponential backoff and jitter until `giveUpAfter`.
///
/// The callback URL's host is resolved here and every address checked (`CallbackURLPolicy`); the connection
/// then goes to the checked address and no other (AsyncHTTPClient's `dnsOverride`: the TCP connection is made
/// to that IP, while the `Host` header, TLS SNI and certificate check use the URL's name). No redirect is
/// followed, and at most `maxResponseBytes` of an answer are read.
public struct WebhookDeliverer: Service {
    public let store: WebhookStore
    public let configuration: WebhookDeliveryConfiguration
    public let logger: Logger
    public let metrics: LectorMetrics
    let eventLoopGroup: any EventLoopGroup

    public init(
        store: WebhookStore, configuration: WebhookDeliveryConfiguration, metrics: LectorMetrics = LectorMetrics(),
        logger: Logger, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.metrics = metrics
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let handled = await runOnce()
                if handled < configuration.concurrency {
                    try? await Task.sleep(for: configuration.pollInterval)
                }
            }
        }
    }

    /// Takes the due deliveries (at most `concurrency`), attempts them at once, records each; returns how many.
    /// Errors of the database are logged, and the next pass tries again.
    @discardableResult
    public func runOnce() async -> Int {
        let due: [DueDelivery]
        do {
            // Held for two timeouts and a margin: the attempt is over (and recorded) well before another worker
            // may take the row.
            let hold = configuration.timeout * 2 + .seconds(30)
            due = try await store.claimDue(limit: configuration.concurrency, hold: hold)
        } catch {
            logger.warning("webhook claim failed", metadata: ["error": "\(describeDatabaseError(error))"])
            return 0
        }
        await withTaskGroup(of: Void.self) { group in
            for delivery in due {
                group.addTask { await deliverAndRecord(delivery) }
            }
        }
        return due.count
    }

    private func deliverAndRecord(_ delivery: DueDelivery) async {
        var logger = self.logger
        logger[metadataKey: "job_id"] = "\(delivery.jobID.uuidString.lowercased())"
        logger[metadataKey: "delivery"] = "\(delivery.id.uuidString.lowercased())"
        let attempt = await self.attempt(delivery)
        let delay = configuration.retryDelay(afterAttempt: delivery.attempt)
        metrics.webhookAttempt(result: Self.metricResult(attempt))
        if attempt.succeeded {
            logger.info("webhook delivered", metadata: ["status": "\(attempt.statusCode ?? 0)", "attempt": "\(delivery.attempt)"])
        } else {
            logger.notice("webhook attempt failed", metadata: [
                "attempt": "\(delivery.attempt)", "status": "\(attempt.statusCode.map(String.init) ?? "-")",
                "error": "\(attempt.error ?? "-")",
            ])
        }
        // Recording is retried a few times: a lost record would only mean one more delivery (receivers drop
        // duplicates by webhook-id), but a delivered webhook should show as delivered.
        for wait in [0.0, 0.5, 2] {
            if wait > 0 { try? await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
            do {
                try await store.record(delivery, attempt: attempt, retryDelay: delay, giveUpAfter: configuration.giveUpAfter)
                return
            } catch {
                logger.warning("recording a webhook attempt failed", metadata: ["error": "\(describeDatabaseError(error))"])
            }
        }
    }

    /// The label of an attempt's outcome: a fixed set, never the URL or the error text.
    static func metricResult(_ attempt: DeliveryAttempt) -> String {
        if attempt.succeeded { return "delivered" }
        if attempt.statusCode != nil { return "http_error" }
        if attempt.error?.hasPrefix("refused:") == true { return "refused" }
        if attempt.error?.hasPrefix("timeout") == true { return "timeout" }
        return "error"
    }

    /// The body: `{"id", "status", "reason", "links"}`, the same bytes on every attempt.
    public static func body(for delivery: DueDelivery) -> [UInt8] {
        let id = delivery.jobID.uuidString.lowercased()
        let value: JSONValue = .object([
            "id": .string(id),
            "status": .string(delivery.status.rawValue),
            "reason": delivery.reason.map(JSONValue.string) ?? .null,
            "links": .object([
                "self": .string("/v1/jobs/\(id)"),
                "result": .string("/v1/jobs/\(id)/result"),
                "deliveries": .string("/v1/jobs/\(id)/deliveries"),
            ]),
        ])
        return Array(value.jsonString().utf8)
    }

    /// One attempt, never throwing: its outcome is what gets recorded.
    func attempt(_ delivery: DueDelivery) async -> DeliveryAttempt {
        let startedAt = Date()
        let started = ContinuousClock.now
        func outcome(status: Int? = nil, error: String? = nil) -> DeliveryAttempt {
            DeliveryAttempt(
                attempt: delivery.attempt, at: startedAt, durationMs: (ContinuousClock.now - started).secondsValue * 1000,
                statusCode: status, error: error.map { String($0.prefix(500)) })
        }
        guard let secretText = delivery.secret, let secret = WebhookSecret(secretText) else {
            return outcome(error: "the job's owner has no webhook secret")
        }
        let policy = configuration.policy
        let target: CallbackURLPolicy.Target
        let addresses: [IPAddress]
        do {
            target = try policy.check(delivery.url)
            addresses = try await withDeadline(configuration.timeout, "resolving the callback host") {
                try await policy.resolve(target)
            }
        } catch let error as CallbackURLRefused {
            return outcome(error: "refused: \(error.description)")
        } catch let error as DeadlineExceeded {
            return outcome(error: "timeout: \(error.description)")
        } catch {
            return outcome(error: "resolution failed: \(error)")
        }

        let body = Self.body(for: delivery)
        let webhookID = delivery.id.uuidString.lowercased()
        // The checked addresses in the resolver's order (at most 4): a connection that cannot be made (::1 when
        // the receiver listens on 127.0.0.1 only, an unreachable family) moves on to the next one. Each try sends
        // the request only once a connection exists, so a failed try never reached the receiver's application.
        var lastError = "no address"
        for address in addresses.prefix(4) {
            let remaining = configuration.timeout - (ContinuousClock.now - started)
            guard remaining > .milliseconds(1) else { break }
            switch await send(body: body, webhookID: webhookID, secret: secret, target: target, address: address, within: remaining) {
            case .answered(let status):
                return outcome(status: status)
            case .timedOut:
                return outcome(error: "timeout after \(configuration.timeout)")
            case .failed(let error):
                lastError = "request failed (\(address)): \(error)"
            }
        }
        return outcome(error: lastError)
    }

    private enum SendOutcome {
        case answered(Int)
        case timedOut
        case failed(String)
    }

    /// One POST to `target`, connected to `address` and nothing else.
    private func send(
        body: [UInt8], webhookID: String, secret: WebhookSecret, target: CallbackURLPolicy.Target, address: IPAddress,
        within limit: Duration
    ) async -> SendOutcome {
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.redirectConfiguration = .disallow
        clientConfiguration.timeout = .init(connect: .milliseconds(max(1, Int64(limit.secondsValue * 1000))))
        clientConfiguration.decompression = .disabled
        if target.literal == nil {
            // Connect to the checked address only: the resolver is not asked again (no DNS rebinding), while the
            // Host header, SNI and the certificate check keep the URL's name.
            // Every spelling of the host a URL parser gives, so that AsyncHTTPClient's lookup finds one of them.
            for host in [URLComponents(string: target.url)?.host, URL(string: target.url)?.host, target.host] {
                if let host { clientConfiguration.dnsOverride[host] = address.description }
            }
        }
        let client = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: clientConfiguration, backgroundActivityLogger: logger)
        let result: SendOutcome
        do {
            let timestamp = Int64(Date().timeIntervalSince1970)
            var request = HTTPClientRequest(url: target.url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "User-Agent", value: "Lector-Webhooks/1")
            request.headers.add(name: "webhook-id", value: webhookID)
            request.headers.add(name: "webhook-timestamp", value: "\(timestamp)")
            request.headers.add(name: "webhook-signature", value: secret.signature(id: webhookID, timestamp: timestamp, body: body))
            request.body = .bytes(ByteBuffer(bytes: body))
            let deadline = NIODeadline.now() + .milliseconds(max(1, Int64(limit.secondsValue * 1000)))
            let response = try await client.execute(request, deadline: deadline, logger: nil)
            // Read at most maxResponseBytes of the answer, then let the connection go. The status counts even if
            // the body breaks off.
            var read = 0
            do {
                for try await chunk in response.body {
                    read += chunk.readableBytes
                    if read >= configuration.maxResponseBytes { break }
                }
            } catch {}
            result = .answered(Int(response.status.code))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            result = .timedOut
        } catch {
            result = .failed(String(describing: error))
        }
        try? await client.shutdown()
        return result
    }
}
