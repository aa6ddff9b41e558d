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
    /// Extra response headers.
    var headers: [(String, String)] = []
    /// Send the head and this many bytes of the body, then nothing more (the connection stays open).
    var stallAfter: Int?
    /// Answer this long after the request ended.
    var delay: TimeAmount = .zero
}

/// A loopback HTTP server that answers the n-th request (1-based) with `script(n)`: enough to check
/// the client's retries, deadlines and error-body bounds without a real store.
final class FakeS3: Sendable {
    let channel: any Channel
    let count: NIOLockedValueBox<Int>
    /// Connections open now, and the most open at once.
    let connections: NIOLockedValueBox<(open: Int, most: Int)>

    var port: Int { channel.localAddress?.port ?? 0 }
    var requests: Int { count.withLockedValue { $0 } }
    var mostConnections: Int { connections.withLockedValue { $0.most } }

    init(_ script: @escaping @Sendable (Int) -> FakeReply) async throws {
        let count = NIOLockedValueBox(0)
        let connections = NIOLockedValueBox((open: 0, most: 0))
        self.count = count
        self.connections = connections
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                connections.withLockedValue { value in
                    value.open += 1
                    value.most = max(value.most, value.open)
                }
                channel.closeFuture.whenComplete { _ in connections.withLockedValue { $0.open -= 1 } }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(script: script, count: count))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async throws {
        try await channel.close()
    }

    func client(retry: RetryPolicy, timeout: Duration = .seconds(5), http: HTTPClient = .shared) throws -> S3Client {
        let configuration = S3Configuration(
            endpoint: URL(string: "http://127.0.0.1:\(port)")!, region: "us-east-1", bucket: "b", accessKey: "a",
            secretKey: "s", requestTimeout: timeout, retry: retry)
        return try S3Client(configuration: configuration, httpClient: http)
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
            if reply.delay > .zero {
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: reply.delay) { loopBound.value.0.answer(reply, context: loopBound.value.1) }
            } else {
                answer(reply, context: context)
            }
        }

        func answer(_ reply: FakeReply, context: ChannelHandlerContext) {
            var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: reply.status))
            head.headers.add(name: "content-length", value: String(reply.body.count))
            head.headers.add(name: "content-type", value: "application/xml")
            for (name, value) in reply.headers { head.headers.add(name: name, value: value) }
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if let stallAfter = reply.stallAfter {
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: reply.body.prefix(stallAfter))))), promise: nil)
                return
            }
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

    /// The deadline covers the body: a store that sends the head and part of the body, then nothing, is cut off
    /// at the deadline (AsyncHTTPClient's own deadline ends at the head), and the failure is transient.
    @Test func deadlineCoversTheBody() async throws {
        let server = try await FakeS3 { _ in FakeReply(body: Array(repeating: 7, count: 1000), stallAfter: 10) }
        let start = ContinuousClock.now
        let error = await #expect(throws: S3Error.self) {
            _ = try await server.client(retry: .none, timeout: .milliseconds(500)).getObjectData(key: "k", maxBytes: 10_000)
        }
        #expect(error?.kind == .transport && error?.isTransient == true)
        #expect(ContinuousClock.now - start < .seconds(15))
        // The streaming reads too.
        await #expect(throws: S3Error.self) {
            _ = try await server.client(retry: .none, timeout: .milliseconds(500)).getObject(
                key: "k", initial: { 0 }, consume: { count, chunk in count += chunk.readableBytes })
        }
        try await server.stop()
    }

    /// The client for S3 (`makeHTTPClient`) follows no redirect: a 307 is an error of its own, and the store saw
    /// one request. (`HTTPClient.shared` would follow it.)
    @Test func dedicatedClientFollowsNoRedirect() async throws {
        let http = S3Client.makeHTTPClient(connections: 2)
        let server = try await FakeS3 { number in
            number == 1 ? FakeReply(status: 307, headers: [("location", "/elsewhere")]) : FakeReply(status: 200, body: [1, 2, 3])
        }
        let error = await #expect(throws: S3Error.self) {
            _ = try await server.client(retry: .none, http: http).getObjectData(key: "k", maxBytes: 100)
        }
        #expect(error?.statusCode == 307 && error?.isTransient == false)
        #expect(server.requests == 1)
        try await server.stop()
        try await http.shutdown()
    }

    /// Nor does it decompress: a body sent with `Content-Encoding: gzip` comes back as sent (objects are stored
    /// bytes, checked against their checksums).
    @Test func dedicatedClientKeepsBodiesAsSent() async throws {
        let http = S3Client.makeHTTPClient(connections: 2)
        let bytes: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]  // a gzip header, then nonsense
        let server = try await FakeS3 { _ in FakeReply(status: 200, body: bytes, headers: [("content-encoding", "gzip")]) }
        #expect(try await server.client(retry: .none, http: http).getObjectData(key: "k", maxBytes: 100) == Data(bytes))
        try await server.stop()
        try await http.shutdown()
    }

    /// Its pool is bounded: eight requests at once, each answered after 200 ms, use at most two connections.
    @Test func dedicatedClientPoolIsBounded() async throws {
        let http = S3Client.makeHTTPClient(connections: 2)
        let server = try await FakeS3 { _ in FakeReply(status: 200, body: [1], delay: .milliseconds(200)) }
        let client = try server.client(retry: .none, http: http)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<8 { group.addTask { _ = try await client.getObjectData(key: "k\(index)", maxBytes: 10) } }
            try await group.waitForAll()
        }
        #expect(server.requests == 8)
        #expect(server.mostConnections == 2)
        try await server.stop()
        try await http.shutdown()
    }
}
