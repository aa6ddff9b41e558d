import Foundation
import HTTPTypes
import Hummingbird
import LectorModel
import NIOCore
import NIOPosix
import LectorCore

/// A checked upload: the spooled document, its detected type, options and metadata, ready to become a job.
struct Upload {
    var document: SpooledDocument
    var type: DocumentType
    var documentName: String
    var options: OCROptions
    /// The client's metadata exactly as sent (checked to be a JSON object); `{}` when none was sent.
    var metadataJSON: String
    /// `callbackUrl`, checked without the network (scheme, userinfo, literal address); not an engine option, so
    /// kept out of `options`. The controller resolves its host before the job is created.
    var callback: CallbackURLPolicy.Target?
    /// `priority` (0-9) and `dependsOn`: scheduling, not engine options either (db/010).
    var priority = 0
    var dependsOn: [UUID] = []
    /// Whether an identical finished job's results may be reused (options `reuse`, default true).
    var reuse = true

    /// Largest metadata accepted, in bytes of JSON text.
    static let maxMetadataBytes = 64 * 1024
    /// Largest options part accepted.
    static let maxOptionsBytes = 16 * 1024
    /// Most bytes a multipart envelope (boundaries, headers, metadata, options) may add to the document.
    static let multipartOverhead = 256 * 1024
}

/// A checked batch: each document's upload (the shared options and metadata in each), and the job parameters.
struct BatchUpload {
    var uploads: [Upload]
    var options: OCROptions
    var parameters: UploadParser.JobParameters
    var metadataJSON: String
}

/// Reads and checks a `POST /v1/jobs` body. Every failure is an `APIError` naming the problem.
///
/// The body is streamed: each chunk is parsed (multipart) and the document's bytes are written to a spool
/// file and hashed on a thread pool, so an upload costs a bounded buffer in memory whatever its size, and
/// never blocks Swift's cooperative threads (BENCHMARKS.md, Hostile input).
struct UploadParser {
    let maxDocumentBytes: Int
    let supportedTypes: Set<DocumentType>
    let availableLanguages: Set<String>
    let availableDetectors: Set<DetectorKind>
    let availableRecognizers: Set<RecognizerKind>
    let defaultLanguage: String
    let spoolDirectory: String
    var callbackPolicy = CallbackURLPolicy(allowPrivate: false)
    var threadPool: NIOThreadPool = .singleton

    static let optionNames = ["lang", "mode", "operations", "detector", "recognizer", "formats", "callbackUrl", "priority", "dependsOn", "reuse"]
    /// Chunks are gathered up to this size before one trip to the thread pool.
    static let batchBytes = 64 * 1024

    func parse(_ request: Request) async throws -> Upload {
        if let length = request.headers[.contentLength].flatMap(Int.init),
            length > maxDocumentBytes + Upload.multipartOverhead
        {
            throw tooLarge()
        }
        let contentType = request.headers[.contentType] ?? ""
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            for (key, _) in request.uri.queryParameters {
                throw APIError.badRequest(.unknownParameter,
                    "unknown query parameter '\(String(key).prefix(64))': with multipart/form-data, send options in the 'options' part")
            }
            guard let boundary = Self.boundary(from: contentType) else {
                throw APIError.badRequest(.invalidMultipart, "multipart/form-data without a boundary parameter")
            }
            let receiver = MultipartReceiver(boundary: boundary, spoolDirectory: spoolDirectory, maxDocumentBytes: maxDocumentBytes)
            let parts: MultipartReceiver.Parts
            do {
                try await stream(request.body, limit: maxDocumentBytes + Upload.multipartOverhead) { chunk in
                    try receiver.feed(chunk)
                }
                parts = try await threadPool.runIfActive { try receiver.finish() }
            } catch {
                // A refused upload leaves nothing behind, now rather than when the last reference goes.
                try? await threadPool.runIfActive { receiver.discard() }
                throw error
            }
            guard let document = parts.document else {
                throw APIError.badRequest(.missingDocument, "the multipart body has no 'document' part")
            }
            let metadata = try parts.metadata.map(parseMetadata)
            let (options, job) = try parts.options.map(parseOptions) ?? (makeOptions(lang: nil), JobParameters())
            var upload = try makeUpload(document: document, name: parts.documentName, options: options, metadataJSON: metadata ?? "{}")
            upload.callback = job.callback
            upload.priority = job.priority
            upload.dependsOn = job.dependsOn
            upload.reuse = job.reuse
            return upload
        }
        if contentType.lowercased().hasPrefix("application/json") || contentType.lowercased().hasPrefix("application/x-www-form-urlencoded") {
            throw APIError(.unsupportedMediaType, .unsupportedMediaType,
                "send the document as multipart/form-data with a 'document' part, or as the raw request body with the document's own Content-Type (application/json is for a direct upload's id: {\"upload\": \"...\"})")
        }
        // Options come from the query: checked before the body is read.
        let query = request.uri.queryParameters
        for (key, _) in query where !(Self.optionNames + ["filename"]).contains(String(key)) {
            throw APIError.badRequest(.unknownParameter,
                "unknown query parameter '\(String(key).prefix(64))'; allowed: \((Self.optionNames + ["filename"]).joined(separator: ", "))")
        }
        // In a query, operations are comma-separated: ?operations=deskew,binarize:adaptive
        let operations = query.get("operations").map { $0.isEmpty ? [] : $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        // Formats too: ?formats=json,txt,hocr,pdf
        let formats = query.get("formats").map { $0.isEmpty ? [] : $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let options = try makeOptions(
            lang: query.get("lang"), mode: query.get("mode"), operations: operations, detector: query.get("detector"),
            recognizer: query.get("recognizer"), formats: formats)
        let callback = try query.get("callbackUrl").map(checkCallback)
        let priority = try query.get("priority").map { raw -> Int in
            guard let value = Int(raw), (0...9).contains(value), raw == "\(value)" else { throw Self.badPriority() }
            return value
        }
        // In a query, dependencies are comma-separated job ids: ?dependsOn=ID,ID
        let dependsOn = try query.get("dependsOn").map { raw in
            try Self.checkDependencies(raw.split(separator: ",", omittingEmptySubsequences: false).map(String.init))
        }
        let reuse = try query.get("reuse").map { raw -> Bool in
            guard raw == "true" || raw == "false" else {
                throw APIError.badRequest(.invalidOptions, "reuse must be true (the default) or false")
            }
            return raw == "true"
        }
        let name = Self.sanitizeFileName(query.get("filename"))
        let writer = try await threadPool.runIfActive { [spoolDirectory] in try DocumentSpoolWriter(directory: spoolDirectory) }
        let document: SpooledDocument
        do {
            try await stream(request.body, limit: maxDocumentBytes) { chunk in
                try chunk.withUnsafeReadableBytes { bytes in try writer.write(bytes) }
            }
            document = try await threadPool.runIfActive { try writer.finish() }
        } catch {
            try? await threadPool.runIfActive { writer.abandon() }
            throw error
        }
        var upload = try makeUpload(document: document, name: name, options: options, metadataJSON: "{}")
        upload.callback = callback
        upload.priority = priority ?? 0
        upload.dependsOn = dependsOn ?? []
        upload.reuse = reuse ?? true
        return upload
    }

    /// A `POST /v1/batches` body: multipart/form-data with one 'document' part per job (up to
    /// `JobStore.maxBatchJobs`), and optional 'options' and 'metadata' parts shared by every job. Each document is
    /// checked as a submit's; the first bad one refuses the whole batch, its message naming the document.
    func parseBatch(_ request: Request, maxBatchBytes: Int) async throws -> BatchUpload {
        let tooLarge = APIError(.contentTooLarge, .batchTooLarge, "the batch is larger than the limit of \(maxBatchBytes) bytes")
        // The envelope grows with the parts: 1 KiB of boundary and headers each is far more than a client sends.
        let limit = maxBatchBytes + Upload.multipartOverhead + JobStore.maxBatchJobs * 1024
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw tooLarge
        }
        let contentType = request.headers[.contentType] ?? ""
        guard contentType.lowercased().hasPrefix("multipart/form-data") else {
            throw APIError(.unsupportedMediaType, .unsupportedMediaType,
                "send the documents as multipart/form-data, one 'document' part each, or application/json with {\"uploads\": [...]}")
        }
        for (key, _) in request.uri.queryParameters {
            throw APIError.badRequest(.unknownParameter,
                "unknown query parameter '\(String(key).prefix(64))': send options in the 'options' part")
        }
        guard let boundary = Self.boundary(from: contentType) else {
            throw APIError.badRequest(.invalidMultipart, "multipart/form-data without a boundary parameter")
        }
        let receiver = MultipartReceiver(
            boundary: boundary, spoolDirectory: spoolDirectory, maxDocumentBytes: maxDocumentBytes, maxDocuments: JobStore.maxBatchJobs)
        do {
            try await stream(request.body, limit: limit, tooLarge: tooLarge) { chunk in
                try receiver.feed(chunk)
            }
            let parts = try await threadPool.runIfActive { try receiver.finish() }
            guard !parts.documents.isEmpty else {
                throw APIError.badRequest(.missingDocument, "the multipart body has no 'document' part")
            }
            let metadata = try parts.metadata.map(parseMetadata) ?? "{}"
            let (options, job) = try parts.options.map(parseOptions) ?? (makeOptions(lang: nil), JobParameters())
            var uploads: [Upload] = []
            for (index, item) in parts.documents.enumerated() {
                do {
                    uploads.append(try makeUpload(document: item.document, name: item.name, options: options, metadataJSON: metadata))
                } catch let error as APIError {
                    throw APIError(error.status, error.code, "document \(index + 1) ('\(item.name.prefix(64))'): \(error.message)")
                }
            }
            return BatchUpload(uploads: uploads, options: options, parameters: job, metadataJSON: metadata)
        } catch {
            try? await threadPool.runIfActive { receiver.discard() }
            throw error
        }
    }

    /// The job-level options beside the engine's: where to call back, the priority, the dependencies.
    struct JobParameters {
        var callback: CallbackURLPolicy.Target?
        var priority = 0
        var dependsOn: [UUID] = []
        /// `reuse: false`: read the document even when an identical finished job's results could be reused.
        var reuse = true
    }

    static func badPriority() -> APIError {
        APIError.badRequest(.invalidPriority, "priority must be an integer from 0 (the default) to 9 (first)")
    }

    /// Job ids, at most `NewJob.maxDependencies`, duplicates dropped (400 `invalid_depends_on`).
    static func checkDependencies(_ raw: [String]) throws -> [UUID] {
        guard raw.count <= NewJob.maxDependencies else {
            throw APIError.badRequest(.invalidDependsOn, "dependsOn names at most \(NewJob.maxDependencies) jobs")
        }
        var ids: [UUID] = []
        for item in raw {
            guard item.count == 36, let id = UUID(uuidString: item) else {
                throw APIError.badRequest(.invalidDependsOn, "dependsOn must list job ids; '\(item.prefix(64))' is not one")
            }
            if !ids.contains(id) { ids.append(id) }
        }
        return ids
    }

    /// The checks of a callback URL that need no network (400 `invalid_callback_url`).
    private func checkCallback(_ raw: String) throws -> CallbackURLPolicy.Target {
        do {
            return try callbackPolicy.check(raw)
        } catch {
            throw APIError.badRequest(.invalidCallbackUrl, error.description)
        }
    }

    /// Hands the body to `consume` on the thread pool, in batches of about `batchBytes`, refusing more than
    /// `limit` bytes (413).
    private func stream(
        _ body: RequestBody, limit: Int, tooLarge: APIError? = nil, _ consume: @escaping @Sendable (ByteBuffer) throws -> Void
    ) async throws {
        var received = 0
        var batch = ByteBuffer()
        for try await chunk in body {
            received += chunk.readableBytes
            guard received <= limit else { throw tooLarge ?? self.tooLarge() }
            if batch.readableBytes == 0, chunk.readableBytes >= Self.batchBytes {
                try await threadPool.runIfActive { try consume(chunk) }
                continue
            }
            var chunk = chunk
            batch.writeBuffer(&chunk)
            if batch.readableBytes >= Self.batchBytes {
                let full = batch
                batch = ByteBuffer()
                try await threadPool.runIfActive { try consume(full) }
            }
        }
        if batch.readableBytes > 0 {
            let last = batch
            try await threadPool.runIfActive { try consume(last) }
        }
    }

    private func tooLarge() -> APIError {
        APIError(.contentTooLarge, .documentTooLarge, "the document is larger than the limit of \(maxDocumentBytes) bytes")
    }

    private func makeUpload(document: SpooledDocument, name: String, options: OCROptions, metadataJSON: String) throws -> Upload {
        guard document.size > 0 else { throw APIError.badRequest(.emptyDocument, "the document is empty (0 bytes)") }
        guard document.size <= maxDocumentBytes else { throw tooLarge() }
        guard let type = DocumentType.detect(document.head) else {
            let accepted = supportedTypes.map(\.mediaType).sorted().joined(separator: ", ")
            throw APIError(.unsupportedMediaType, .unsupportedDocumentType,
                "the document's bytes are not a format Lector reads (accepted: \(accepted))")
        }
        guard supportedTypes.contains(type) else {
            throw APIError(.unsupportedMediaType, .unsupportedDocumentType,
                "\(type.mediaType) documents are not supported by this server's engine")
        }
        return Upload(document: document, type: type, documentName: name, options: options, metadataJSON: metadataJSON)
    }

    /// Checks the metadata part and returns its text unchanged (PostgreSQL's jsonb keeps numbers exact).
    func parseMetadata(_ body: ByteBuffer) throws -> String {
        guard body.readableBytes <= Upload.maxMetadataBytes else {
            throw APIError.badRequest(.invalidMetadata, "metadata is larger than \(Upload.maxMetadataBytes) bytes")
        }
        // UTF-8 without a byte-order mark, an object from its first byte: Foundation's decoder also takes
        // UTF-16 and BOMs, which PostgreSQL's jsonb would then refuse.
        let bytes = Array(body.readableBytesView)
        guard String(validating: bytes, as: UTF8.self) != nil, !bytes.contains(0),
            bytes.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{")
        else {
            throw APIError.badRequest(.invalidMetadata, "metadata must be a JSON object in UTF-8")
        }
        guard let value = JSONValue.parse(Data(buffer: body)) else {
            throw APIError.badRequest(.invalidMetadata, "metadata is not valid JSON")
        }
        guard case .object = value else {
            throw APIError.badRequest(.invalidMetadata, "metadata must be a JSON object")
        }
        guard !value.containsNUL else {
            throw APIError.badRequest(.invalidMetadata, "metadata must not contain the character U+0000")
        }
        guard value.depth <= 32 else {
            throw APIError.badRequest(.invalidMetadata, "metadata is nested deeper than 32 levels")
        }
        if let number = JSONValue.firstNumberBeyondPostgres(in: bytes) {
            throw APIError.badRequest(.invalidMetadata,
                "metadata holds a number that cannot be stored exactly (at most 131072 digits before the decimal point and 16383 after): \(number)")
        }
        guard let text = body.getString(at: body.readerIndex, length: body.readableBytes) else {
            throw APIError.badRequest(.invalidMetadata, "metadata is not UTF-8")
        }
        return text
    }

    func parseOptions(_ body: ByteBuffer) throws -> (OCROptions, JobParameters) {
        guard body.readableBytes <= Upload.maxOptionsBytes, let value = JSONValue.parse(Data(buffer: body)),
            case .object(let members) = value
        else {
            throw APIError.badRequest(.invalidOptions, "options must be a JSON object, e.g. {\"lang\": \"eng\"}")
        }
        var lang: String?, mode: String?, detector: String?, recognizer: String?, operations: [String]?, formats: [String]?
        var job = JobParameters()
        for (key, value) in members {
            switch (key, value) {
            case ("priority", .integer(let value)) where (0...9).contains(value): job.priority = Int(value)
            case ("priority", _): throw Self.badPriority()
            case ("dependsOn", .array(let items)):
                job.dependsOn = try Self.checkDependencies(items.map { item in
                    guard case .string(let id) = item else {
                        throw APIError.badRequest(.invalidDependsOn, "dependsOn must be an array of job ids (strings)")
                    }
                    return id
                })
            case ("dependsOn", _): throw APIError.badRequest(.invalidDependsOn, "dependsOn must be an array of job ids (strings)")
            case ("reuse", .bool(let value)): job.reuse = value
            case ("reuse", _): throw APIError.badRequest(.invalidOptions, "options.reuse must be true (the default) or false")
            case ("callbackUrl", .string(let string)): job.callback = try checkCallback(string)
            case ("callbackUrl", _): throw APIError.badRequest(.invalidCallbackUrl, "options.callbackUrl must be a string: an https URL")
            case ("lang", .string(let string)): lang = string
            case ("lang", _): throw APIError.badRequest(.invalidOptions, "options.lang must be a string, e.g. \"eng+deu\"")
            case ("mode", .string(let string)): mode = string
            case ("mode", _): throw APIError.badRequest(.invalidOptions, "options.mode must be a string: auto, document or scene")
            case ("detector", .string(let string)): detector = string
            case ("detector", _): throw APIError.badRequest(.invalidOptions, "options.detector must be a string: db or east")
            case ("recognizer", .string(let string)): recognizer = string
            case ("recognizer", _): throw APIError.badRequest(.invalidOptions, "options.recognizer must be a string: tesseract or ppocr")
            case ("operations", .array(let items)):
                operations = try items.map { item in
                    guard case .string(let name) = item else {
                        throw APIError.badRequest(.invalidOptions, "options.operations must be an array of strings, e.g. [\"deskew\", \"binarize:adaptive\"]")
                    }
                    return name
                }
            case ("operations", _):
                throw APIError.badRequest(.invalidOptions, "options.operations must be an array of strings, e.g. [\"deskew\", \"binarize:adaptive\"]")
            case ("formats", .array(let items)):
                formats = try items.map { item in
                    guard case .string(let name) = item else { throw Self.formatsNotStrings }
                    return name
                }
            case ("formats", _):
                throw Self.formatsNotStrings
            default:
                throw APIError.badRequest(.invalidOptions, "unknown option '\(key.prefix(64))'; allowed: \(Self.optionNames.joined(separator: ", "))")
            }
        }
        return (try makeOptions(lang: lang, mode: mode, operations: operations, detector: detector, recognizer: recognizer,
                                formats: formats), job)
    }

    private static let formatsNotStrings = APIError.badRequest(
        .invalidOptions, "options.formats must be an array of strings, e.g. [\"json\", \"pdf\"]")

    private func makeOptions(
        lang: String?, mode: String? = nil, operations: [String]? = nil, detector: String? = nil, recognizer: String? = nil,
        formats: [String]? = nil
    ) throws -> OCROptions {
        var options = OCROptions(lang: lang ?? defaultLanguage)
        if let mode {
            guard let parsed = PipelineMode(rawValue: mode) else {
                throw APIError.badRequest(.invalidOptions, "mode must be one of: auto, document, scene")
            }
            options.mode = parsed
        }
        if let detector {
            guard let parsed = DetectorKind(rawValue: detector) else {
                throw APIError.badRequest(.invalidOptions, "detector must be one of: db, east")
            }
            options.detector = parsed
        }
        if let recognizer {
            guard let parsed = RecognizerKind(rawValue: recognizer) else {
                throw APIError.badRequest(.invalidOptions, "recognizer must be one of: tesseract, ppocr")
            }
            options.recognizer = parsed
        }
        if let formats {
            let allowed = ResultFormat.allCases.map(\.rawValue).joined(separator: ", ")
            guard formats.count <= 16 else {
                throw APIError.badRequest(.invalidOptions, "formats may list at most 16 entries; allowed: \(allowed)")
            }
            options.formats = try formats.map { name in
                guard let format = ResultFormat(rawValue: name) else {
                    throw APIError.badRequest(.invalidOptions, "unknown format \"\(name.prefix(40))\"; allowed: \(allowed)")
                }
                return format
            }
        }
        do throws(OCRError) {
            if let operations {
                var parsed: [PreprocessingOperation] = []
                for text in operations {
                    guard text.count <= 64 else { throw OCRError(.unsupportedOption, "an operation is longer than 64 characters") }
                    parsed.append(try PreprocessingOperation(parsing: text))
                }
                options.operations = parsed
            }
            // Counts, languages and detectors: the one check shared with the worker and `lector ocr`.
            try options.validate(availableLanguages: availableLanguages, availableDetectors: availableDetectors,
                                 availableRecognizers: availableRecognizers)
        } catch {
            throw APIError.badRequest(.invalidOptions, error.message)
        }
        return options
    }

    /// Keeps the last path component, drops control characters, caps the length. The name is only recorded;
    /// the stored file is always `document.<type>`.
    static func sanitizeFileName(_ raw: String?) -> String {
        guard let raw else { return "document" }
        let last = raw.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? ""
        let clean = String(last.unicodeScalars.filter { !CharacterSet.controlCharacters.contains($0) }.map(Character.init))
            .trimmingCharacters(in: .whitespaces)
        var capped = ""
        for scalar in clean.unicodeScalars.prefix(255) {
            guard capped.utf8.count + String(scalar).utf8.count <= 255 else { break }
            capped.unicodeScalars.append(scalar)
        }
        return capped.isEmpty || capped == "." || capped == ".." ? "document" : capped
    }

    static func boundary(from contentType: String) -> String? {
        for parameter in contentType.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.count == 2, pair[0].lowercased() == "boundary" {
                let value = pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                return value.isEmpty || value.count > 200 ? nil : value
            }
        }
        return nil
    }

    /// Parameters of a `Content-Disposition: form-data; name="x"; filename="y"` header.
    static func dispositionParameters(_ header: String) -> [String: String] {
        var result: [String: String] = [:]
        for parameter in header.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { continue }
            let key = pair[0].trimmingCharacters(in: .whitespaces).lowercased()
            var value = pair[1].trimmingCharacters(in: .whitespaces)
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
            result[key] = value
        }
        return result
    }
}

/// Receives a multipart body chunk by chunk: the document part goes to a spool file, metadata and options
/// into small bounded buffers; an unknown or repeated part is refused as soon as its headers arrive.
///
/// Not thread-safe: `UploadParser` feeds it one batch at a time on the thread pool, each awaited before the
/// next, which is why it can be `@unchecked Sendable`.
final class MultipartReceiver: MultipartPartConsumer, @unchecked Sendable {
    struct Parts {
        /// Every 'document' part in order, with its sanitized file name (one at most, but for a batch).
        var documents: [(document: SpooledDocument, name: String)] = []
        var metadata: ByteBuffer?
        var options: ByteBuffer?

        var document: SpooledDocument? { documents.first?.document }
        var documentName: String { documents.first?.name ?? "document" }
    }

    private enum Sink {
        case document(DocumentSpoolWriter)
        case metadata(ByteBuffer)
        case options(ByteBuffer)
    }

    private var parser: MultipartStreamParser
    private let spoolDirectory: String
    private let maxDocumentBytes: Int
    private let maxDocuments: Int
    private var sink: Sink?
    private var parts = Parts()
    private var documentName = "document"
    private var documentCount = 0

    /// `maxDocuments`: 1 for a job; a batch takes up to `JobStore.maxBatchJobs` 'document' parts.
    init(boundary: String, spoolDirectory: String, maxDocumentBytes: Int, maxDocuments: Int = 1) {
        // A document part each, options and metadata, and room for the 'too many documents' error to be the one given.
        self.parser = MultipartStreamParser(boundary: boundary, maxParts: max(16, maxDocuments + 3))
        self.spoolDirectory = spoolDirectory
        self.maxDocumentBytes = maxDocumentBytes
        self.maxDocuments = maxDocuments
    }

    func feed(_ chunk: ByteBuffer) throws {
        do {
            try chunk.withUnsafeReadableBytes { bytes in try parser.feed(bytes, into: self) }
        } catch let failure as MultipartStreamParser.Failure {
            throw Self.apiError(failure)
        }
    }

    /// Removes whatever was spooled (the upload was refused).
    func discard() {
        if case .document(let writer) = sink { writer.abandon() }
        sink = nil
        for item in parts.documents { item.document.discard() }
        parts.documents = []
    }

    func finish() throws -> Parts {
        do {
            try parser.finish()
        } catch let failure as MultipartStreamParser.Failure {
            throw Self.apiError(failure)
        }
        return parts
    }

    private static func apiError(_ failure: MultipartStreamParser.Failure) -> APIError {
        switch failure {
        case .incomplete:
            APIError.badRequest(.invalidMultipart, "the multipart body is incomplete: its closing boundary is missing")
        case .malformed(let reason):
            APIError.badRequest(.invalidMultipart, "the multipart body is malformed: \(reason)")
        }
    }

    func beginPart(headers: [String: String]) throws {
        let disposition = UploadParser.dispositionParameters(headers["content-disposition"] ?? "")
        guard let name = disposition["name"] else {
            throw APIError.badRequest(.invalidMultipart, "a part has no Content-Disposition name")
        }
        switch name {
        case "document":
            guard documentCount < maxDocuments else {
                throw maxDocuments == 1
                    ? APIError.badRequest(.invalidMultipart, "more than one 'document' part")
                    : APIError.badRequest(.tooManyDocuments, "a batch holds at most \(maxDocuments) documents")
            }
            documentCount += 1
            documentName = UploadParser.sanitizeFileName(disposition["filename"])
            sink = .document(try DocumentSpoolWriter(directory: spoolDirectory))
        case "metadata":
            guard parts.metadata == nil else { throw APIError.badRequest(.invalidMetadata, "more than one 'metadata' part") }
            sink = .metadata(ByteBuffer())
        case "options":
            guard parts.options == nil else { throw APIError.badRequest(.invalidOptions, "more than one 'options' part") }
            sink = .options(ByteBuffer())
        default:
            throw APIError.badRequest(.invalidMultipart, "unknown part '\(name.prefix(64))'; allowed: document, metadata, options")
        }
    }

    func partData(_ bytes: UnsafeRawBufferPointer) throws {
        switch sink {
        case .document(let writer):
            guard writer.size + Int64(bytes.count) <= maxDocumentBytes else {
                throw APIError(.contentTooLarge, .documentTooLarge, "the document is larger than the limit of \(maxDocumentBytes) bytes")
            }
            try writer.write(bytes)
        case .metadata(var buffer):
            guard buffer.readableBytes + bytes.count <= Upload.maxMetadataBytes else {
                throw APIError.badRequest(.invalidMetadata, "metadata is larger than \(Upload.maxMetadataBytes) bytes")
            }
            buffer.writeBytes(bytes)
            sink = .metadata(buffer)
        case .options(var buffer):
            guard buffer.readableBytes + bytes.count <= Upload.maxOptionsBytes else {
                throw APIError.badRequest(.invalidOptions, "options must be a JSON object of at most \(Upload.maxOptionsBytes) bytes")
            }
            buffer.writeBytes(bytes)
            sink = .options(buffer)
        case nil:
            break
        }
    }

    func endPart() throws {
        switch sink {
        case .document(let writer): parts.documents.append((try writer.finish(), documentName))
        case .metadata(let buffer): parts.metadata = buffer
        case .options(let buffer): parts.options = buffer
        case nil: break
        }
        sink = nil
    }
}
