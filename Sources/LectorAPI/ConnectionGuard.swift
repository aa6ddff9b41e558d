import Foundation
import HTTPTypes
import LectorModel
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Limits on how slowly a client may talk to the API.
public struct ConnectionLimits: Sendable {
    /// From the connection's start or its previous response, the longest until a request's head has arrived
    /// (a half-sent head, or an idle keep-alive connection, is closed after it).
    public var headerTimeout: TimeAmount
    /// The longest a request body may take in all.
    public var bodyTimeout: TimeAmount
    /// Bytes per second a body must average over each `rateWindow` while the server is waiting for it.
    public var minBodyRate: Int
    public var rateWindow: TimeAmount
    /// How often the limits are checked.
    public var tick: TimeAmount

    public init(headerTimeout: TimeAmount, bodyTimeout: TimeAmount, minBodyRate: Int, rateWindow: TimeAmount = .seconds(10)) {
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.minBodyRate = minBodyRate
        self.rateWindow = rateWindow
        self.tick = .milliseconds(min(1000, max(100, rateWindow.nanoseconds / 4_000_000)))
    }
}

/// One per HTTP/1 connection, between the HTTP codec and Hummingbird: enforces `ConnectionLimits` and answers
/// the HTTP parser's errors with a JSON body, as every other error is answered.
///
/// - A connection that has not sent a complete request head within `headerTimeout` of opening (or of its
///   previous response) is closed: this ends half-sent requests and idle keep-alive connections.
/// - A body that takes longer than `bodyTimeout`, or arrives slower than `minBodyRate` over a window while the
///   server is asking for more (a read is outstanding, so the stall is the client's and not our own
///   backpressure), is answered 408 `request_timeout` (when no response has started) and the connection closed.
/// - An `HTTPParserError` (oversized head, invalid request line or headers) is answered 431 or 400 with a JSON
///   body, then the connection closed; Hummingbird would answer an empty 400. (Before the first request's head,
///   `ParserErrorResponder` does it: this handler is added once a WebSocket upgrade has been ruled out.)
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limits: ConnectionLimits
    private var timer: RepeatedTask?
    /// Since when the connection waits for a request head; nil while a request is being received or answered.
    private var waitingForHeadSince: NIODeadline?
    /// The body being received: its start, the current window's start and bytes.
    private var body: (start: NIODeadline, windowStart: NIODeadline, windowBytes: Int)?
    private var responseStarted = false
    private var responseEnded = false
    private var requestEnded = false
    /// Request heads received and responses ended: the connection waits for a head only when they are equal
    /// (a pipelining client may send the next head while the previous response is being written).
    private var headsReceived = 0
    private var responsesEnded = 0
    /// Whether the next handler asked for data that has not arrived yet.
    private var readOutstanding = false
    private var closing = false

    init(limits: ConnectionLimits) {
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func start(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        waitingForHeadSince = .now()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: limits.tick, delay: limits.tick) { _ in
            let (handler, context) = bound.value
            handler.check(context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readOutstanding = false
        switch unwrapInboundIn(data) {
        case .head:
            headsReceived += 1
            waitingForHeadSince = nil
            let now = NIODeadline.now()
            body = (now, now, 0)
            responseStarted = false
            responseEnded = false
            requestEnded = false
        case .body(let buffer):
            body?.windowBytes += buffer.readableBytes
        case .end:
            body = nil
            requestEnded = true
            // Answered before its body was all read (an early 4xx): the wait for the next head starts now.
            if responseEnded, responsesEnded == headsReceived { waitingForHeadSince = .now() }
        }
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        readOutstanding = true
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.kind != .informational:
            responseStarted = true
        case .end:
            // The response is complete: the connection now waits for the next head (the body, if the client is
            // still sending one, is drained by Hummingbird under the body limits).
            responseEnded = true
            responsesEnded += 1
            if requestEnded, responsesEnded == headsReceived { waitingForHeadSince = .now() }
        default:
            break
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        let (status, code, message) = ParserErrorResponder.answer(parserError)
        fail(context: context, status: HTTPResponse.Status(code: Int(status.code)), code: code, message: message)
    }

    private func check(context: ChannelHandlerContext) {
        guard !closing else { return }
        let now = NIODeadline.now()
        if let since = waitingForHeadSince, now - since > limits.headerTimeout {
            closing = true
            context.close(promise: nil)
            return
        }
        guard var body else { return }
        if now - body.start > limits.bodyTimeout {
            fail(context: context, status: .requestTimeout, code: .requestTimeout,
                 message: "the request body took longer than \(limits.bodyTimeout.nanoseconds / 1_000_000_000) s")
            return
        }
        guard now - body.windowStart >= limits.rateWindow else { return }
        let seconds = Double((now - body.windowStart).nanoseconds) / 1e9
        if readOutstanding, Double(body.windowBytes) < Double(limits.minBodyRate) * seconds {
            fail(context: context, status: .requestTimeout, code: .requestTimeout,
                 message: "the request body arrived slower than \(limits.minBodyRate) bytes per second")
            return
        }
        body.windowStart = now
        body.windowBytes = 0
        self.body = body
    }

    /// Answers with a JSON error when no response has started, then closes the connection.
    private func fail(context: ChannelHandlerContext, status: HTTPResponse.Status, code: ErrorCode, message: String) {
        guard !closing else { return }
        closing = true
        guard !responseStarted else {
            context.close(promise: nil)
            return
        }
        responseStarted = true
        let json = (try? JSONSerialization.data(
            withJSONObject: ["error": ["code": code.rawValue, "message": message]], options: [.sortedKeys])) ?? Data()
        let head = HTTPResponse(status: status, headerFields: [
            .contentType: "application/json; charset=utf-8", .contentLength: "\(json.count)", .connection: "close",
        ])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(context.channel.allocator.buffer(bytes: json))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Right after NIO's HTTP decoder, until the first request's head: answers the parser's errors on that head
/// (an oversized request line or headers: 431; anything else malformed: 400) with a JSON body and closes. Before
/// a WebSocket upgrade is decided `ConnectionGuard` is not in the pipeline, and nothing can have been written
/// yet. It removes itself at the first head: an upgraded connection then carries WebSocket frames, which no HTTP
/// handler may see, and a plain one has `ConnectionGuard` for every later error.
final class ParserErrorResponder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let isHead = if case .head = unwrapInboundIn(data) { true } else { false }
        context.fireChannelRead(data)
        if isHead { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }

    static func answer(_ error: HTTPParserError) -> (HTTPResponseStatus, ErrorCode, String) {
        switch error {
        case .headerOverflow:
            (.requestHeaderFieldsTooLarge, .requestHeaderTooLarge, "the request line or headers are larger than the server accepts")
        case .invalidURL:
            (.badRequest, .malformedRequest, "the request's URL is not valid")
        default:
            (.badRequest, .malformedRequest, "the request is not valid HTTP/1.1")
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !failed else { return }
        failed = true
        let (status, code, message) = Self.answer(parserError)
        let json = (try? JSONSerialization.data(
            withJSONObject: ["error": ["code": code.rawValue, "message": message]], options: [.sortedKeys])) ?? Data()
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(json.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: json)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// First in the pipeline, on raw bytes: closes a connection whose first request head has not arrived within
/// `timeout` (before a WebSocket upgrade is decided, `ConnectionGuard` is not in the pipeline yet). Removes
/// itself once the head's blank line has been seen.
final class FirstHeadTimer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    private var tail: [UInt8] = []

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        // The last 3 bytes of the previous read, then the whole of this one: the blank line may span reads.
        let bytes = tail + Array(buffer.readableBytesView)
        let terminator: [UInt8] = [13, 10, 13, 10]
        let found = bytes.count >= 4 && (0...(bytes.count - 4)).contains { bytes[$0..<$0 + 4].elementsEqual(terminator) }
        tail = Array(bytes.suffix(3))
        context.fireChannelRead(data)
        if found {
            timer?.cancel()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}
