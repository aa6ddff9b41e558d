import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers

/// `LECTOR_LOG_FORMAT=json`: one JSON object per line on standard error — `time` (ISO 8601, milliseconds, UTC),
/// `level`, `message`, `logger` (the label), and every metadata value as a string (`job_id`, `request_id`,
/// `worker`, …). What goes into metadata is chosen by the code: never keys, signatures, query strings or
/// document bytes (docs/design/security.md).
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let write: @Sendable (String) -> Void

    public init(label: String, write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let (level, message, explicit) = (event.level, event.message, event.metadata)
        var fields: [String: String] = [:]
        for (key, value) in metadataProvider?.get() ?? [:] { fields[key] = "\(value)" }
        for (key, value) in metadata { fields[key] = "\(value)" }
        for (key, value) in explicit ?? [:] { fields[key] = "\(value)" }
        // Hummingbird names its request id `hb.request.id`; ours is `request_id` (RequestIDMiddleware).
        if let id = fields.removeValue(forKey: "hb.request.id"), fields["request_id"] == nil { fields["request_id"] = id }
        fields["time"] = Self.timestamp()
        fields["level"] = level.rawValue
        fields["message"] = message.description
        fields["logger"] = label
        guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return }
        write(String(decoding: data, as: UTF8.self) + "\n")
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var time = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &time)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(time.tm_year) + 1900, Int(time.tm_mon) + 1, Int(time.tm_mday),
            Int(time.tm_hour), Int(time.tm_min), Int(time.tm_sec), Int(now.tv_nsec / 1_000_000))
    }

    private static let lock = NIOLock()
    /// Where log lines go: standard error as the process started (see `captureNativeOutput`).
    nonisolated(unsafe) private static var output: Int32 = 2

    /// Writes whole lines to standard error, one writer at a time.
    public static let standardError: @Sendable (String) -> Void = { line in
        lock.withLock {
            var bytes = Array(line.utf8)[...]
            while !bytes.isEmpty {
                let written = bytes.withUnsafeBytes { Glibc.write(output, $0.baseAddress, $0.count) }
                if written < 0 { if errno == EINTR { continue } else { return } }
                bytes = bytes.dropFirst(written)
            }
        }
    }

    /// Keeps the log one JSON object per line when native libraries write to standard error themselves (libpng
    /// prints "libpng error: …" for a broken PNG): file descriptor 2 becomes a pipe, and a dedicated thread turns
    /// each line read from it into a JSON line (`logger: native`, level `warning`) on the real standard error.
    /// Call once, before any logging, from the executable.
    public static func captureNativeOutput() {
        var ends: [Int32] = [0, 0]
        let original = dup(2)
        guard original >= 0, pipe(&ends) == 0, dup2(ends[1], 2) >= 0 else { return }
        close(ends[1])
        lock.withLock { output = original }
        let reader = ends[0]
        let handler = JSONLogHandler(label: "native")
        // A blocking read loop needs a thread of its own, for the life of the process.
        Thread.detachNewThread {
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(reader, &buffer, buffer.count)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { return }
                pending += buffer[0..<count]
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    if !line.isEmpty {
                        handler.log(event: LogEvent(level: .warning, message: "\(line.prefix(4096))", metadata: nil,
                                                    source: "native", file: #fileID, function: #function, line: #line))
                    }
                }
                if pending.count > 65536 { pending.removeAll() }
            }
        }
    }
}
