import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import S3Kit

/// One scripted reply of ``FakeS3``.
struct FakeReply: Sendable {
    var status: Int = 200
    var body: [UInt8] = []
    /// Never answer (to exercise deadlines).
    var hang = false
}

/// A loopback HTTP server that answers the n-th request (1-based) with `script(n)`: enough to check
/// the client's retries, deadlines and error-body bounds without a real store.
final class FakeS3: Sendable {
    let channel: any Channel
    let count: NIOLockedValueBox<Int>

    var port: Int { channel.localAddress?.port ?? 0 }
    var requests: Int { count.withLockedValue { $0 } }

    init(_ script: @escaping @Sendable (Int) -> FakeReply) async throws {
        let count = NIOLockedValueBox(0)
        self.count = count
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(script: script, count: count))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async throws {
        try await channel.close()
    }

    func client(retry: RetryPolicy, timeout: Duration = .seconds(5)) throws -> S3Client {
        let configuration = S3Configuration(
            endpoint: URL(string: "http://127.0.0.1:\(port)")!, region: "us-east-1", bucket: "b", accessKey: "a",
            secretKey: "s", requestTimeout: timeout, retry: retry)
        return try S3Client(configuration: configuration, httpClient: .shared)
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let script: @Sendable (Int) -> FakeReply
        let count: NIOLockedValueBox<Int>

        init(script: @escaping @Sendable (Int) -> FakeReply, count: NIOLockedValueBox<Int>) {
            self.script = script
            self.count = count
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            let number = count.withLockedValue { value in
                value += 1
                return value
            }
            let reply = script(number)
            guard !reply.hang else { return }
            var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: reply.status))
            head.headers.add(name: "content-length", value: String(reply.body.count))
            head.headers.add(name: "content-type", value: "application/xml")
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: reply.body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

func errorXML(_ code: String) -> [UInt8] {
    Array("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>\(code)</Code><Message>m</Message></Error>".utf8)
}

@Suite struct RetryTests {
    let fast = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(10), maxDelay: .milliseconds(50))

    @Test func slowDownIsRetriedThenSucceeds() async throws {
        let server = try await FakeS3 { number in
            number <= 2 ? FakeReply(status: 503, body: errorXML("SlowDown")) : FakeReply(status: 200)
        }
        try await server.client(retry: fast).putObject(key: "k", data: Data("x".utf8))
        #expect(server.requests == 3)
        try await server.stop()
    }

    @Test func retriesAreBounded() async throws {
        let server = try await FakeS3 { _ in FakeReply(status: 429, body: errorXML("TooManyRequests")) }
        let error = await #expect(throws: S3Error.self) {
            try await server.client(retry: fast).deleteObject(key: "k")
        }
        #expect(error?.statusCode == 429)
        #expect(error?.code == "TooManyRequests")
        #expect(error?.isTransient == true)
        #expect(error?.attempts == 3)
        #expect(server.requests == 3)
        try await server.stop()
    }

    @Test func clientErrorsAreNotRetried() async throws {
        let server = try await FakeS3 { _ in FakeReply(status: 403, body: errorXML("AccessDenied")) }
        let error = await #expect(throws: S3Error.self) {
            _ = try await server.client(retry: fast).headObject(key: "k")
        }
        #expect(error?.code == nil || error?.code == "AccessDenied")  // HEAD replies carry no body
        #expect(error?.statusCode == 403)
        #expect(server.requests == 1)
        try await server.stop()
    }

    @Test func errorBodiesAreBounded() async throws {
        // A 4 MiB error body: only the first 64 KiB are read, so the XML is cut and no code is found.
        let huge = errorXML("InternalError") + Array(repeating: UInt8(ascii: " "), count: 4 << 20)
        let server = try await FakeS3 { _ in FakeReply(status: 500, body: huge) }
        let error = await #expect(throws: S3Error.self) {
            _ = try await server.client(retry: .none).getObjectData(key: "k", maxBytes: 10)
        }
        #expect(error?.statusCode == 500)
        #expect(error?.isTransient == true)
        try await server.stop()
    }

    @Test func deadlineIsEnforcedAndTransient() async throws {
        let server = try await FakeS3 { _ in FakeReply(hang: true) }
        let start = ContinuousClock.now
        let error = await #expect(throws: S3Error.self) {
            _ = try await server.client(retry: RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(10)), timeout: .milliseconds(300))
                .getObjectData(key: "k", maxBytes: 10)
        }
        #expect(error?.kind == .transport)
        #expect(error?.attempts == 2)
        // Two 300 ms deadlines: well under a second when idle. The bound is loose because on 2 shared cores,
        // with the whole suite running, the event loop was seen to fire them 4.4 s late; what matters is that
        // a server that never answers cannot hold the client past its deadlines (it would hang forever).
        #expect(ContinuousClock.now - start < .seconds(15))
        try await server.stop()
    }
}
