import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import LectorCore
import LectorModel
import NIOCore

/// Direct uploads (object storage only): `POST /v1/uploads` answers a presigned PUT, the client sends the document
/// straight to the store, and `POST /v1/jobs` with `{"upload": "<id>"}` makes the job from the uploaded object.
///
/// Stateless: the upload id is an `UploadTicket` signed with the result-link key, so no table records uploads; an
/// unused upload's object is removed by `StorageSweeper` once its id can no longer make a job. With file storage
/// both routes answer 409 `direct_uploads_unavailable` (the route exists; this server's storage has no presigned
/// PUT).
struct UploadsController {
    let dependencies: APIDependencies

    func addRoutes(v1: RouterGroup<LectorRequestContext>) {
        v1.post("uploads", use: create)
    }

    /// Largest JSON body of `POST /v1/uploads`.
    static let maxRequestBytes = 4 * 1024

    static let unavailable = APIError(.conflict, .directUploadsUnavailable,
        "direct uploads need object storage (LECTOR_STORAGE=s3://...); send the document to POST /v1/jobs instead")

    struct Created: Encodable {
        /// The upload id, for `POST /v1/jobs` `{"upload": id}`.
        let id: String
        let method: String
        /// The presigned PUT.
        let url: String
        /// The headers the PUT must carry, exactly (they are signed).
        let headers: [String: String]
        /// When the URL expires.
        let expiresAt: Date
        /// Until when the id makes a job.
        let submitBefore: Date
    }

    /// `POST /v1/uploads` with `{"contentType": "image/png", "size": 12345}`: 201 with the upload id, the presigned
    /// PUT (Content-Type and Content-Length signed), the headers to send and the expiry.
    @Sendable func create(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        for (name, _) in request.uri.queryParameters {
            throw APIError.badRequest(.unknownParameter, "unknown query parameter '\(String(name).prefix(64))'; this route takes none")
        }
        let members = try await Self.jsonObject(request, limit: Self.maxRequestBytes)
        var contentType: String?
        var size: Int64?
        for (key, value) in members {
            switch (key, value) {
            case ("contentType", .string(let text)): contentType = text
            case ("contentType", _): throw APIError.badRequest(.invalidContentType, "contentType must be a string, e.g. \"image/png\"")
            case ("size", .integer(let number)): size = number
            case ("size", _): throw APIError.badRequest(.invalidSize, "size must be the document's length in bytes, a whole number")
            default: throw APIError.badRequest(.invalidRequest, "unknown member '\(key.prefix(64))'; allowed: contentType, size")
            }
        }
        guard let contentType else { throw APIError.badRequest(.invalidContentType, "contentType is required, e.g. \"image/png\"") }
        guard let size else { throw APIError.badRequest(.invalidSize, "size is required: the document's length in bytes") }
        guard size > 0 else { throw APIError.badRequest(.emptyDocument, "size must be at least 1 byte") }
        let limit = dependencies.settings.maxUploadBytes
        guard size <= Int64(limit) else {
            throw APIError(.contentTooLarge, .documentTooLarge, "the document is larger than the limit of \(limit) bytes")
        }
        let supported = dependencies.supportedTypes
        guard let type = DocumentType(mediaType: contentType.lowercased()), supported.contains(type) else {
            let accepted = supported.map(\.mediaType).sorted().joined(separator: ", ")
            throw APIError(.unsupportedMediaType, .unsupportedDocumentType,
                "contentType must be a type Lector reads (accepted: \(accepted))")
        }
        guard let storage = dependencies.storage as? ObjectStorage else { throw Self.unavailable }

        let ttl = dependencies.settings.uploadURLTTL
        let now = Date()
        let expires = Int(now.timeIntervalSince1970) + ttl
        let ticket = UploadTicket(upload: UUID(), owner: user.id, expires: expires, size: size, type: type)
        let url = try storage.uploadLink(
            owner: user.id, upload: ticket.upload, contentType: type.mediaType, size: size, expires: .seconds(ttl), now: now)
        let body = Created(
            id: ticket.id(signer: dependencies.signer), method: "PUT", url: url,
            headers: ["Content-Type": type.mediaType, "Content-Length": "\(size)"],
            expiresAt: Date(timeIntervalSince1970: TimeInterval(expires)),
            submitBefore: Date(timeIntervalSince1970: TimeInterval(expires + ttl)))
        context.logger.info("upload link made", metadata: ["upload": "\(ticket.upload.uuidString.lowercased())", "bytes": "\(size)"])
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        let data = try JSONEncoder.lector().encode(body)
        return Response(status: .created, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// The body as one JSON object (Content-Type application/json, at most `limit` bytes), member by member.
    static func jsonObject(_ request: Request, limit: Int) async throws -> [(key: String, value: JSONValue)] {
        let raw = try await jsonBody(request, limit: limit)
        guard let value = JSONValue.parse(Data(raw)), case .object(let members) = value else {
            throw APIError.badRequest(.invalidJson, "the body must be a JSON object")
        }
        return members.sorted { $0.key < $1.key }
    }

    /// The raw body of a JSON request: 415 for another Content-Type, 413 beyond `limit`.
    static func jsonBody(_ request: Request, limit: Int) async throws -> [UInt8] {
        guard (request.headers[.contentType] ?? "").lowercased().hasPrefix("application/json") else {
            throw APIError(.unsupportedMediaType, .unsupportedMediaType, "send a JSON body with Content-Type: application/json")
        }
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw APIError(.contentTooLarge, .requestTooLarge, "the JSON body is larger than \(limit) bytes")
        }
        var bytes: [UInt8] = []
        for try await chunk in request.body {
            guard bytes.count + chunk.readableBytes <= limit else {
                throw APIError(.contentTooLarge, .requestTooLarge, "the JSON body is larger than \(limit) bytes")
            }
            bytes += chunk.readableBytesView
        }
        return bytes
    }

    /// The members of a JSON object's text, each value as its raw text (so that metadata is kept exactly as sent);
    /// nil when `bytes` is not one object. Call it on text `JSONValue.parse` accepted: it trusts the JSON to be
    /// valid and only finds where each member starts and ends.
    static func rawMembers(_ bytes: [UInt8]) -> [(key: String, value: ArraySlice<UInt8>)]? {
        let space: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
        var index = 0
        func skipSpace() { while index < bytes.count, space.contains(bytes[index]) { index += 1 } }
        /// Moves past a string starting at `index` (a quote); false when it does not end.
        func skipString() -> Bool {
            index += 1
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "\\"): index += 2
                case UInt8(ascii: "\""): index += 1; return true
                default: index += 1
                }
            }
            return false
        }
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        var members: [(key: String, value: ArraySlice<UInt8>)] = []
        while true {
            skipSpace()
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: "}") { return members }
            if bytes[index] == UInt8(ascii: ",") { index += 1; skipSpace() }
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
            let keyStart = index
            guard skipString(),
                let key = try? JSONDecoder().decode(String.self, from: Data(bytes[keyStart..<index]))
            else { return nil }
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipSpace()
            let valueStart = index
            var depth = 0
            scan: while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "\""):
                    guard skipString() else { return nil }
                    continue scan
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if depth == 0 { break scan }
                    depth -= 1
                case UInt8(ascii: ","): if depth == 0 { break scan }
                default: break
                }
                index += 1
            }
            var valueEnd = index
            while valueEnd > valueStart, space.contains(bytes[valueEnd - 1]) { valueEnd -= 1 }
            guard valueEnd > valueStart else { return nil }
            members.append((key, bytes[valueStart..<valueEnd]))
        }
    }
}

/// The JSON submit: `POST /v1/jobs` with `{"upload": "<id>", "options": {...}, "metadata": {...}, "filename": "..."}`.
extension JobsController {
    /// Largest JSON submit body: metadata and options at their limits, and room for the rest.
    static let maxJSONSubmitBytes = Upload.maxMetadataBytes + Upload.maxOptionsBytes + 4096

    func submitUpload(
        _ request: Request, context: LectorRequestContext, user: AuthenticatedUser, idempotencyKey: String?
    ) async throws -> Response {
        for (name, _) in request.uri.queryParameters {
            throw APIError.badRequest(.unknownParameter,
                "unknown query parameter '\(String(name).prefix(64))': with application/json, send options in the body's 'options' member")
        }
        let raw = try await UploadsController.jsonBody(request, limit: Self.maxJSONSubmitBytes)
        guard let value = JSONValue.parse(Data(raw)), case .object = value, let members = UploadsController.rawMembers(raw) else {
            throw APIError.badRequest(.invalidJson, "the body must be a JSON object: {\"upload\": \"<id from POST /v1/uploads>\"}")
        }
        var token: String?, options: ArraySlice<UInt8>?, metadata: ArraySlice<UInt8>?, fileName: String?
        var seen: Set<String> = []
        for (key, value) in members {
            guard seen.insert(key).inserted else {
                throw APIError.badRequest(.invalidJson, "the member '\(key.prefix(64))' appears more than once")
            }
            switch key {
            case "upload":
                guard let text = try? JSONDecoder().decode(String.self, from: Data(value)) else {
                    throw APIError.badRequest(.invalidUpload, "upload must be a string: the id POST /v1/uploads answered")
                }
                token = text
            case "options": options = value
            case "metadata": metadata = value
            case "filename":
                guard let text = try? JSONDecoder().decode(String.self, from: Data(value)) else {
                    throw APIError.badRequest(.invalidFilename, "filename must be a string")
                }
                fileName = text
            default:
                throw APIError.badRequest(.invalidJson, "unknown member '\(key.prefix(64))'; allowed: upload, options, metadata, filename")
            }
        }
        guard let token else {
            throw APIError.badRequest(.invalidUpload, "upload is required: the id POST /v1/uploads answered")
        }
        guard let storage = dependencies.storage as? ObjectStorage else { throw UploadsController.unavailable }
        let parser = UploadParser(
            maxDocumentBytes: dependencies.settings.maxUploadBytes, supportedTypes: dependencies.supportedTypes,
            availableLanguages: dependencies.availableLanguages, availableDetectors: dependencies.availableDetectors,
            availableRecognizers: dependencies.availableRecognizers,
            defaultLanguage: dependencies.settings.defaultLanguage, spoolDirectory: dependencies.storage.spoolDirectory,
            callbackPolicy: CallbackURLPolicy(allowPrivate: dependencies.settings.webhookAllowPrivate))
        let metadataJSON = try metadata.map { try parser.parseMetadata(ByteBuffer(bytes: $0)) } ?? "{}"
        let (ocrOptions, parameters) = try parser.parseOptions(ByteBuffer(bytes: options ?? ArraySlice("{}".utf8)))
        let callbackURL = try await resolveCallbackURL(parameters.callback, user: user)
        let documentName = UploadParser.sanitizeFileName(fileName)

        let optionsJSON = String(decoding: try JSONEncoder.lector().encode(ocrOptions), as: UTF8.self)
        // The fingerprint names the upload rather than the document's digest: a retry after success finds the
        // upload gone, and must still be answered with its job.
        var hasher = SHA256()
        hasher.update(data: Data(("upload:" + token).utf8))
        hasher.update(data: Data([0]) + Data(optionsJSON.utf8) + Data([0]) + Data(metadataJSON.utf8) + Data([0]) + Data(documentName.utf8))
        if let callbackURL { hasher.update(data: Data([0]) + Data(callbackURL.utf8)) }
        if parameters.priority != 0 || !parameters.dependsOn.isEmpty {
            let scheduling = "\(parameters.priority) " + parameters.dependsOn.map { $0.uuidString.lowercased() }.joined(separator: ",")
            hasher.update(data: Data([1]) + Data(scheduling.utf8))
        }
        if !parameters.reuse { hasher.update(data: Data([2])) }
        let fingerprint = Array(hasher.finalize())
        if let key = idempotencyKey, let replay = try await replay(key: key, user: user, fingerprint: fingerprint) {
            return replay
        }

        let id = UUID()
        let (ticket, type, copied) = try await takeUpload(token, user: user, storage: storage, toJob: id)
        let job = NewJob(
            id: id, ownerID: user.id, documentName: documentName, contentType: type.mediaType, sizeBytes: copied.size,
            sha256: copied.sha256, optionsJSON: optionsJSON, metadataJSON: metadataJSON, callbackURL: callbackURL,
            priority: parameters.priority, dependsOn: parameters.dependsOn)
        try await storage.writeJobMetadata(
            id: id, documentFileName: type.storedFileName,
            metadataJSON: Self.folderMetadata(
                job, owner: user.name, storedFileName: type.storedFileName,
                also: ["upload": .string(ticket.upload.uuidString.lowercased())]))
        var reusing: ReusableResult?
        if let reusable = await reusableResult(
            user: user, sha256: copied.sha256, optionsJSON: optionsJSON, reuse: parameters.reuse,
            dependsOn: parameters.dependsOn, logger: context.logger),
            await copyResults(of: reusable, to: id, logger: context.logger)
        {
            reusing = reusable
        }

        let createdAt: Date
        switch try await insert(job, user: user, idempotencyKey: idempotencyKey, fingerprint: fingerprint, reusing: reusing) {
        case .created(let date, let reused): (createdAt, reusing) = (date, reused ? reusing : nil)
        case .replayed(let response): return response
        }
        // The job holds its own copy: the upload goes (else the sweeper removes it later).
        do {
            try await storage.removeUpload(owner: user.id, upload: ticket.upload)
        } catch {
            context.logger.warning("could not remove a used upload; the sweeper will", metadata: ["error": "\(String(reflecting: error))"])
        }
        dependencies.metrics.jobSubmitted(mode: ocrOptions.mode.rawValue)
        if reusing != nil { dependencies.metrics.jobReused() }
        dependencies.metrics.uploaded(bytes: copied.size)
        context.logger.info("job queued", metadata: [
            "job_id": "\(id.uuidString.lowercased())", "type": "\(type.rawValue)", "bytes": "\(copied.size)",
            "upload": "\(ticket.upload.uuidString.lowercased())",
            "reused_from": "\(reusing?.jobID.uuidString.lowercased() ?? "")",
        ])
        return try submitted(id: id, createdAt: createdAt, reusedFrom: reusing?.jobID)
    }

    /// Checks an upload id and its object (there, of the declared size, within the limit, a document by its first
    /// bytes) and copies the object into job `id`'s folder, measured on the copy. The caller writes
    /// metadata.json, and removes the folder if no job comes of it.
    func takeUpload(
        _ token: String, user: AuthenticatedUser, storage: ObjectStorage, toJob id: UUID
    ) async throws -> (UploadTicket, DocumentType, ObjectStorage.CopiedDocument) {
        let ticket: UploadTicket
        switch UploadTicket.verify(token, owner: user.id, signer: dependencies.signer, ttl: dependencies.settings.uploadURLTTL) {
        case .valid(let valid): ticket = valid
        case .expired: throw APIError(.gone, .uploadExpired, "this upload id has expired; create a new upload")
        case .invalid: throw APIError(.notFound, .uploadNotFound, "no such upload for this key")
        }

        // The uploaded object: there, of the declared size, within the limit, and a document by its first bytes.
        guard let size = try await storage.uploadedSize(owner: user.id, upload: ticket.upload) else {
            throw APIError(.conflict, .uploadNotReceived,
                "nothing was uploaded with this id (yet, or any more): PUT the document to the upload URL first")
        }
        let limit = dependencies.settings.maxUploadBytes
        guard size <= Int64(limit) else {
            throw APIError(.contentTooLarge, .documentTooLarge, "the document is larger than the limit of \(limit) bytes")
        }
        guard size == ticket.size else {
            throw APIError.badRequest(.uploadSizeMismatch, "the uploaded object has \(size) bytes, not the \(ticket.size) declared")
        }
        let head: [UInt8]
        do {
            head = try await storage.uploadHead(owner: user.id, upload: ticket.upload)
        } catch let error as StorageError where error.kind == .missing {
            throw APIError(.conflict, .uploadNotReceived, "the upload disappeared before the job was made; upload again")
        }
        let type = try checkType(head)

        // The job's folder: the document copied server-side and measured on the copy.
        let copied: ObjectStorage.CopiedDocument
        do {
            copied = try await storage.copyUpload(owner: user.id, upload: ticket.upload, toJob: id, documentFileName: type.storedFileName)
        } catch let error as StorageError where error.kind == .missing {
            throw APIError(.conflict, .uploadNotReceived, "the upload disappeared before the job was made; upload again")
        }
        guard copied.size == ticket.size, DocumentType.detect(copied.head) == type else {
            try? await storage.removeJobFolder(id: id)
            throw APIError(.conflict, .uploadChanged, "the upload changed while the job was made; submit again")
        }
        return (ticket, type, copied)
    }

    /// The document type of an upload's first bytes (415 when Lector does not read it).
    private func checkType(_ head: [UInt8]) throws -> DocumentType {
        let supported = dependencies.supportedTypes
        guard let type = DocumentType.detect(head) else {
            let accepted = supported.map(\.mediaType).sorted().joined(separator: ", ")
            throw APIError(.unsupportedMediaType, .unsupportedDocumentType,
                "the uploaded bytes are not a format Lector reads (accepted: \(accepted))")
        }
        guard supported.contains(type) else {
            throw APIError(.unsupportedMediaType, .unsupportedDocumentType,
                "\(type.mediaType) documents are not supported by this server's engine")
        }
        return type
    }
}
