#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a `MultipartStreamParser` hands its parts to.
protocol MultipartPartConsumer: AnyObject {
    /// A part starts; `headers` has lower-case names.
    func beginPart(headers: [String: String]) throws
    /// The next bytes of the current part's body (valid only during the call).
    func partData(_ bytes: UnsafeRawBufferPointer) throws
    /// The current part ended with its delimiter.
    func endPart() throws
}

/// An incremental `multipart/form-data` parser (RFC 2046 §5.1, RFC 7578): feed it the body in chunks of any
/// size and it calls its consumer with each part's headers, its bytes and its end.
///
/// Its cost is linear in the body's length whatever the bytes are. The delimiter is `CRLF--boundary`, and a
/// boundary cannot contain CR, so two candidate delimiters never overlap: the parser finds CRs with `memchr` and
/// compares at each one, touching each byte a bounded number of times. (The parser this replaces spent over a
/// minute on some 8 MB bodies, on the cooperative threads.) It keeps only the bytes that may still begin a
/// delimiter, or a header block up to `maxHeaderBytes`, so memory does not grow with the body.
struct MultipartStreamParser {
    enum Failure: Error, Equatable {
        case malformed(String)
        /// The body ended before the closing delimiter.
        case incomplete
    }

    private enum State {
        case preamble
        case afterDelimiter
        case headers
        case body
        case epilogue
    }

    private let delimiter: [UInt8]
    private let maxHeaderBytes: Int
    private let maxParts: Int
    private var pending: [UInt8]
    private var state = State.preamble
    private var parts = 0

    /// - Parameters:
    ///   - boundary: the `boundary` parameter of the Content-Type.
    ///   - maxHeaderBytes: the longest header block of one part.
    ///   - maxParts: the most parts a body may have.
    init(boundary: String, maxHeaderBytes: Int = 16 * 1024, maxParts: Int = 16) {
        self.delimiter = Array("\r\n--\(boundary)".utf8)
        self.maxHeaderBytes = maxHeaderBytes
        self.maxParts = maxParts
        // The first delimiter may open the body without a CRLF before it: parse as if one were there.
        self.pending = [0x0D, 0x0A]
    }

    /// Whether the closing delimiter has been seen.
    var isComplete: Bool { state == .epilogue }

    /// Parses the next chunk of the body.
    mutating func feed(_ chunk: UnsafeRawBufferPointer, into consumer: some MultipartPartConsumer) throws {
        if state == .epilogue { return }  // whatever follows the closing delimiter is ignored
        var buffer = pending
        pending = []
        buffer.append(contentsOf: chunk)
        let consumed = try buffer.withUnsafeBytes { try process($0, into: consumer) }
        buffer.removeFirst(consumed)
        pending = buffer
    }

    /// Runs the state machine over `bytes`; returns how many of them are consumed (the rest is kept for the
    /// next chunk).
    private mutating func process(_ bytes: UnsafeRawBufferPointer, into consumer: some MultipartPartConsumer) throws -> Int {
        var offset = 0
        while true {
            switch state {
            case .preamble:
                if let found = find(delimiter, in: bytes, from: offset) {
                    offset = found + delimiter.count
                    state = .afterDelimiter
                } else {
                    return max(offset, bytes.count - (delimiter.count - 1))
                }
            case .afterDelimiter:
                // "--" closes the body; otherwise optional padding, then CRLF and the part's headers.
                var index = offset
                guard index + 2 <= bytes.count else { return offset }
                if bytes[index] == 0x2D, bytes[index + 1] == 0x2D {
                    state = .epilogue
                    return bytes.count
                }
                while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
                guard index + 2 <= bytes.count else {
                    guard index - offset <= 64 else { throw Failure.malformed("a delimiter is followed by too much padding") }
                    return offset
                }
                guard bytes[index] == 0x0D, bytes[index + 1] == 0x0A else {
                    throw Failure.malformed("a boundary delimiter is not followed by a line break")
                }
                offset = index + 2
                state = .headers
            case .headers:
                // The header block ends with an empty line; a part may have no headers at all.
                let end: Int
                if offset + 2 <= bytes.count, bytes[offset] == 0x0D, bytes[offset + 1] == 0x0A {
                    end = offset
                } else if let found = find(Self.headerEnd, in: bytes, from: offset) {
                    end = found + 2
                } else {
                    guard bytes.count - offset <= maxHeaderBytes else {
                        throw Failure.malformed("a part's headers are longer than \(maxHeaderBytes) bytes")
                    }
                    return offset
                }
                guard end - offset <= maxHeaderBytes else {
                    throw Failure.malformed("a part's headers are longer than \(maxHeaderBytes) bytes")
                }
                parts += 1
                guard parts <= maxParts else { throw Failure.malformed("the body has more than \(maxParts) parts") }
                let headers = try Self.parseHeaders(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
                offset = end + 2
                state = .body
                try consumer.beginPart(headers: headers)
            case .body:
                if let found = find(delimiter, in: bytes, from: offset) {
                    if found > offset { try consumer.partData(UnsafeRawBufferPointer(rebasing: bytes[offset..<found])) }
                    try consumer.endPart()
                    offset = found + delimiter.count
                    state = .afterDelimiter
                } else {
                    // Keep what may be the start of a delimiter split across chunks.
                    let safe = bytes.count - (delimiter.count - 1)
                    if safe > offset {
                        try consumer.partData(UnsafeRawBufferPointer(rebasing: bytes[offset..<safe]))
                        offset = safe
                    }
                    return offset
                }
            case .epilogue:
                return bytes.count
            }
        }
    }

    /// Says whether the body ended properly: after its closing delimiter.
    func finish() throws {
        guard state == .epilogue else { throw Failure.incomplete }
    }

    private static let headerEnd: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A]

    /// The first place at or after `start` where `needle` (which starts with CR) occurs.
    private func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard let base = haystack.baseAddress, haystack.count - start >= needle.count else { return nil }
        var position = start
        let last = haystack.count - needle.count
        return needle.withUnsafeBytes { needleBytes -> Int? in
            while position <= last {
                guard let hit = memchr(base + position, Int32(needle[0]), last - position + 1) else { return nil }
                let index = base.distance(to: UnsafeRawPointer(hit))
                if memcmp(base + index, needleBytes.baseAddress!, needle.count) == 0 { return index }
                position = index + 1
            }
            return nil
        }
    }

    /// `Name: value` lines, CRLF-separated; names lower-cased; a line starting with whitespace continues the
    /// previous one (obsolete folding).
    private static func parseHeaders(_ block: UnsafeRawBufferPointer) throws -> [String: String] {
        guard let text = String(validating: block, as: UTF8.self) else {
            throw Failure.malformed("a part's headers are not UTF-8")
        }
        var headers: [String: String] = [:]
        var lastName: String?
        for line in text.split(separator: "\r\n", omittingEmptySubsequences: true) {
            if let first = line.first, first == " " || first == "\t", let name = lastName {
                headers[name, default: ""] += " " + line.trimmingWhitespace()
                continue
            }
            guard let colon = line.firstIndex(of: ":") else {
                throw Failure.malformed("a part's header line has no ':'")
            }
            let name = line[..<colon].trimmingWhitespace().lowercased()
            guard !name.isEmpty else { throw Failure.malformed("a part's header has an empty name") }
            headers[name] = line[line.index(after: colon)...].trimmingWhitespace()
            lastName = name
        }
        return headers
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let start = firstIndex(where: { !isSpace($0) }) else { return "" }
        let end = lastIndex(where: { !isSpace($0) })!
        return String(self[start...end])
    }
}
