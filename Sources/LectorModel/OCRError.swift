/// Why recognition failed, in words a user can act on.
public struct OCRError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The document cannot be read (corrupt, wrong format, empty). Retrying will not help.
        case unreadableDocument
        /// The document is over a configured limit (pixels, pages). Retrying will not help.
        case limitExceeded
        /// The job asks for something the engine does not have (a language). Retrying will not help.
        case unsupportedOption
        /// The engine itself failed (could not start, ran out of a resource). Retrying may help.
        case engineFailure
        /// Recognition was cancelled (`OCRCancellation`): the worker is stopping or lost the job.
        case cancelled
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// Whether a later attempt may succeed.
    public var isTransient: Bool { kind == .engineFailure || kind == .cancelled }

    public var description: String { message }
}
