import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import LectorCore
import LectorOCR
import MultipartKit

/// A checked upload: the document, its detected type, options and metadata, ready to become a job.
struct Upload {
    var document: Data
    var type: DocumentType
    var documentName: String
    var options: OCROptions
    /// The client's metadata exactly as sent (checked to be a JSON object); `{}` when none was sent.
    var metadataJSON: String

    /// Largest metadata accepted, in bytes of JSON text.
    static let maxMetadataBytes = 64 * 1024
    /// Most bytes a multipart envelope (boundaries, headers, metadata, options) may add to the document.
    static let multipartOverhead = 256 * 1024
}

/// Reads and checks a `POST /v1/jobs` body. Every failure is an `APIError` naming the problem.
struct UploadParser {
    let maxDocumentBytes: Int
    let supportedTypes: Set<DocumentType>
    let availableLanguages: Set<String>
    let availableDetectors: Set<DetectorKind>
    let defaultLanguage: String

    static let optionNames = ["lang", "mode", "operations", "detector"]

    func parse(_ request: Request) async throws -> Upload {
        if let length = request.headers[.contentLength].flatMap(Int.init),
            length > maxDocumentBytes + Upload.multipartOverhead
        {
            throw tooLarge()
        }
        let contentType = request.headers[.contentType] ?? ""
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            for (key, _) in request.uri.queryParameters {
                throw APIError.badRequest("invalid_option",
                    "unknown query parameter '\(String(key).prefix(64))': with multipart/form-data, send options in the 'options' part")
            }
            let body = try await collect(request, limit: maxDocumentBytes + Upload.multipartOverhead)
            return try parseMultipart(body, contentType: contentType)
        }
        if contentType.lowercased().hasPrefix("application/json") || contentType.lowercased().hasPrefix("application/x-www-form-urlencoded") {
            throw APIError(.unsupportedMediaType, "unsupported_media_type",
                "send the document as multipart/form-data with a 'document' part, or as the raw request body with the document's own Content-Type")
        }
        let body = try await collect(request, limit: maxDocumentBytes)
        let query = request.uri.queryParameters
        for (key, _) in query where !(Self.optionNames + ["filename"]).contains(String(key)) {
            throw APIError.badRequest("invalid_option",
                "unknown query parameter '\(String(key).prefix(64))'; allowed: \((Self.optionNames + ["filename"]).joined(separator: ", "))")
        }
        // In a query, operations are comma-separated: ?operations=deskew,binarize:adaptive
        let operations = query.get("operations").map { $0.isEmpty ? [] : $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let options = try makeOptions(lang: query.get("lang"), mode: query.get("mode"), operations: operations, detector: query.get("detector"))
        let name = sanitizeFileName(query.get("filename"))
        return try makeUpload(document: Data(buffer: body), name: name, options: options, metadataJSON: "{}")
    }

    private func collect(_ request: Request, limit: Int) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw tooLarge()
        }
    }

    private func tooLarge() -> APIError {
        APIError(.contentTooLarge, "document_too_large", "the document is larger than the limit of \(maxDocumentBytes) bytes")
    }

    private func parseMultipart(_ body: ByteBuffer, contentType: String) throws -> Upload {
        guard let boundary = Self.boundary(from: contentType) else {
            throw APIError.badRequest("invalid_multipart", "multipart/form-data without a boundary parameter")
        }
        var parts: [(headers: [String: String], body: ByteBuffer)] = []
        var headers: [String: String] = [:]
        var current = ByteBuffer()
        let parser = MultipartParser(boundary: boundary)
        parser.onHeader = { name, value in headers[name.lowercased()] = value }
        parser.onBody = { chunk in current.writeBuffer(&chunk) }
        parser.onPartComplete = {
            parts.append((headers, current))
            headers = [:]
            current = ByteBuffer()
        }
        do {
            try parser.execute(body)
        } catch {
            throw APIError.badRequest("invalid_multipart", "the multipart body is malformed")
        }
        guard !parts.isEmpty, Self.hasClosingDelimiter(body, boundary: boundary) else {
            throw APIError.badRequest("invalid_multipart", "the multipart body is incomplete: its closing boundary is missing")
        }

        var document: (data: Data, name: String)?
        var metadata: String?
        var options: OCROptions?
        for part in parts {
            let disposition = Self.dispositionParameters(part.headers["content-disposition"] ?? "")
            guard let name = disposition["name"] else {
                throw APIError.badRequest("invalid_multipart", "a part has no Content-Disposition name")
            }
            switch name {
            case "document":
                guard document == nil else { throw APIError.badRequest("invalid_multipart", "more than one 'document' part") }
                guard part.body.readableBytes <= maxDocumentBytes else { throw tooLarge() }
                document = (Data(buffer: part.body), sanitizeFileName(disposition["filename"]))
            case "metadata":
                guard metadata == nil else { throw APIError.badRequest("invalid_metadata", "more than one 'metadata' part") }
                metadata = try parseMetadata(part.body)
            case "options":
                guard options == nil else { throw APIError.badRequest("invalid_options", "more than one 'options' part") }
                options = try parseOptions(part.body)
            default:
                throw APIError.badRequest("invalid_multipart",
                    "unknown part '\(name.prefix(64))'; allowed: document, metadata, options")
            }
        }
        guard let document else {
            throw APIError.badRequest("missing_document", "the multipart body has no 'document' part")
        }
        return try makeUpload(
            document: document.data, name: document.name,
            options: options ?? makeOptions(lang: nil), metadataJSON: metadata ?? "{}")
    }

    private func makeUpload(document: Data, name: String, options: OCROptions, metadataJSON: String) throws -> Upload {
        guard !document.isEmpty else { throw APIError.badRequest("empty_document", "the document is empty (0 bytes)") }
        guard document.count <= maxDocumentBytes else { throw tooLarge() }
        guard let type = DocumentType.detect(document) else {
            let accepted = supportedTypes.map(\.mediaType).sorted().joined(separator: ", ")
            throw APIError(.unsupportedMediaType, "unsupported_document_type",
                "the document's bytes are not a format Lector reads (accepted: \(accepted))")
        }
        guard supportedTypes.contains(type) else {
            throw APIError(.unsupportedMediaType, "unsupported_document_type",
                "\(type.mediaType) documents are not supported by this server's engine")
        }
        return Upload(document: document, type: type, documentName: name, options: options, metadataJSON: metadataJSON)
    }

    /// Checks the metadata part and returns its text unchanged (PostgreSQL's jsonb keeps numbers exact).
    private func parseMetadata(_ body: ByteBuffer) throws -> String {
        guard body.readableBytes <= Upload.maxMetadataBytes else {
            throw APIError.badRequest("invalid_metadata", "metadata is larger than \(Upload.maxMetadataBytes) bytes")
        }
        // UTF-8 without a byte-order mark, an object from its first byte: Foundation's decoder also takes
        // UTF-16 and BOMs, which PostgreSQL's jsonb would then refuse.
        let bytes = Array(body.readableBytesView)
        guard String(validating: bytes, as: UTF8.self) != nil, !bytes.contains(0),
            bytes.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{")
        else {
            throw APIError.badRequest("invalid_metadata", "metadata must be a JSON object in UTF-8")
        }
        guard let value = JSONValue.parse(Data(buffer: body)) else {
            throw APIError.badRequest("invalid_metadata", "metadata is not valid JSON")
        }
        guard case .object = value else {
            throw APIError.badRequest("invalid_metadata", "metadata must be a JSON object")
        }
        guard !value.containsNUL else {
            throw APIError.badRequest("invalid_metadata", "metadata must not contain the character U+0000")
        }
        guard value.depth <= 32 else {
            throw APIError.badRequest("invalid_metadata", "metadata is nested deeper than 32 levels")
        }
        guard let text = body.getString(at: body.readerIndex, length: body.readableBytes) else {
            throw APIError.badRequest("invalid_metadata", "metadata is not UTF-8")
        }
        return text
    }

    private func parseOptions(_ body: ByteBuffer) throws -> OCROptions {
        guard body.readableBytes <= 16 * 1024, let value = JSONValue.parse(Data(buffer: body)),
            case .object(let members) = value
        else {
            throw APIError.badRequest("invalid_options", "options must be a JSON object, e.g. {\"lang\": \"eng\"}")
        }
        var lang: String?, mode: String?, detector: String?, operations: [String]?
        for (key, value) in members {
            switch (key, value) {
            case ("lang", .string(let string)): lang = string
            case ("lang", _): throw APIError.badRequest("invalid_options", "options.lang must be a string, e.g. \"eng+deu\"")
            case ("mode", .string(let string)): mode = string
            case ("mode", _): throw APIError.badRequest("invalid_options", "options.mode must be a string: auto, document or scene")
            case ("detector", .string(let string)): detector = string
            case ("detector", _): throw APIError.badRequest("invalid_options", "options.detector must be a string: db or east")
            case ("operations", .array(let items)):
                operations = try items.map { item in
                    guard case .string(let name) = item else {
                        throw APIError.badRequest("invalid_options", "options.operations must be an array of strings, e.g. [\"deskew\", \"binarize:adaptive\"]")
                    }
                    return name
                }
            case ("operations", _):
                throw APIError.badRequest("invalid_options", "options.operations must be an array of strings, e.g. [\"deskew\", \"binarize:adaptive\"]")
            default:
                throw APIError.badRequest("invalid_options", "unknown option '\(key.prefix(64))'; allowed: \(Self.optionNames.joined(separator: ", "))")
            }
        }
        return try makeOptions(lang: lang, mode: mode, operations: operations, detector: detector)
    }

    private func makeOptions(lang: String?, mode: String? = nil, operations: [String]? = nil, detector: String? = nil) throws -> OCROptions {
        var options = OCROptions(lang: lang ?? defaultLanguage)
        if let mode {
            guard let parsed = PipelineMode(rawValue: mode) else {
                throw APIError.badRequest("invalid_options", "mode must be one of: auto, document, scene")
            }
            options.mode = parsed
        }
        if let detector {
            guard let parsed = DetectorKind(rawValue: detector) else {
                throw APIError.badRequest("invalid_options", "detector must be one of: db, east")
            }
            options.detector = parsed
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
            try options.validate(availableLanguages: availableLanguages, availableDetectors: availableDetectors)
        } catch {
            throw APIError.badRequest("invalid_options", error.message)
        }
        return options
    }

    /// Keeps the last path component, drops control characters, caps the length. The name is only recorded;
    /// the stored file is always `document.<type>`.
    func sanitizeFileName(_ raw: String?) -> String {
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

    /// Whether `--boundary--` appears near the end of the body (only whitespace or a short epilogue after it):
    /// MultipartKit's parser accepts a body that stops early and drops the unfinished part silently.
    static func hasClosingDelimiter(_ body: ByteBuffer, boundary: String) -> Bool {
        let delimiter = Array("--\(boundary)--".utf8)
        let window = min(body.readableBytes, delimiter.count + 1024)
        guard let tail = body.getBytes(at: body.readerIndex + body.readableBytes - window, length: window),
            tail.count >= delimiter.count
        else { return false }
        for start in stride(from: tail.count - delimiter.count, through: 0, by: -1)
        where tail[start] == delimiter[0] && Array(tail[start..<start + delimiter.count]) == delimiter {
            return true
        }
        return false
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
