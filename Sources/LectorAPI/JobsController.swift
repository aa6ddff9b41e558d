import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import LectorModel
import NIOCore
import LectorCore
import Logging
import PostgresNIO

/// Everything the API's routes need.
public struct APIDependencies: Sendable {
    public var jobs: JobStore
    public var keys: KeyStore
    public var storage: any JobStorage
    public var signer: ResultLinkSigner
    /// Long-poll waiters, signalled with a job id by the LISTEN connection.
    public var waiters: WaitRegistry<UUID>
    /// Jobs heard ending recently, so that woken waiters of finished jobs need no query.
    let endedJobs = EndedJobs()
    public var settings: Settings
    public var supportedTypes: Set<DocumentType>
    public var availableLanguages: Set<String>
    /// Detectors whose model is installed (EAST only after `lector models fetch east`).
    public var availableDetectors: Set<DetectorKind>
    /// Recognisers whose models are installed (`lector serve` sets it from the engine's model files).
    public var availableRecognizers: Set<RecognizerKind> = Set(RecognizerKind.allCases)
    /// The server-wide cap on uploads in flight (`LECTOR_MAX_UPLOADS_IN_FLIGHT`).
    let uploads: UploadGate
    /// Batch archives being streamed at once by this process (each holds a result file in memory at a time).
    let archiveStreams = UploadGate(limit: 4)
    /// Storage's free space and inodes against the reserve, read at most once a second.
    let storageHealth: StorageHealth
    /// This process's metrics (`GET /metrics`).
    public var metrics: LectorMetrics
    /// Live job events heard by this process, for SSE and WebSocket subscribers.
    public let events = JobEventHub()

    public init(
        jobs: JobStore, keys: KeyStore, storage: any JobStorage, signer: ResultLinkSigner, waiters: WaitRegistry<UUID>,
        settings: Settings, supportedTypes: Set<DocumentType>, availableLanguages: Set<String>,
        availableDetectors: Set<DetectorKind> = [.db], metrics: LectorMetrics = LectorMetrics()
    ) {
        self.metrics = metrics
        self.availableDetectors = availableDetectors
        self.jobs = jobs
        self.keys = keys
        self.storage = storage
        self.signer = signer
        self.waiters = waiters
        self.settings = settings
        self.supportedTypes = supportedTypes
        self.availableLanguages = availableLanguages
        self.uploads = UploadGate(limit: settings.maxUploadsInFlight)
        self.storageHealth = StorageHealth(
            storage: storage, interval: storage is ObjectStorage ? ObjectStorage.healthInterval : .seconds(1))
    }
}

/// `/v1/jobs` and the signed `/files` links.
struct JobsController {
    let dependencies: APIDependencies

    func addRoutes(v1: RouterGroup<LectorRequestContext>, root: Router<LectorRequestContext>) {
        v1.post("jobs", use: submit)
        v1.get("jobs", use: list)
        v1.get("languages", use: languages)
        v1.get("jobs/:id", use: status)
        v1.post("jobs/:id/cancel", use: cancel)
        v1.post("jobs/:id/rerun", use: rerun)
        v1.delete("jobs/:id", use: delete)
        v1.get("jobs/:id/result", use: result)
        v1.get("jobs/:id/deliveries", use: deliveries)
        v1.get("jobs/:id/pages/:page", use: page)
        root.get("files/:id/:file", use: file)
    }

    // MARK: POST /v1/jobs

    @Sendable func submit(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let idempotencyKey = try Self.idempotencyKey(request)
        // Refused before the body is read: too many uploads in flight, or storage below its reserve.
        guard let pass = dependencies.uploads.enter() else {
            var error = APIError(.serviceUnavailable, .tooManyUploads,
                "the server is receiving \(dependencies.uploads.limit) uploads already; try again shortly")
            error.headers[.retryAfter] = "1"
            throw error
        }
        defer { pass.leave() }
        try await dependencies.storageHealth.check()
        if (request.headers[.contentType] ?? "").lowercased().hasPrefix("application/json") {
            // A job from a direct upload (`POST /v1/uploads`): DirectUploads.swift.
            return try await submitUpload(request, context: context, user: user, idempotencyKey: idempotencyKey)
        }
        let parser = UploadParser(
            maxDocumentBytes: dependencies.settings.maxUploadBytes, supportedTypes: dependencies.supportedTypes,
            availableLanguages: dependencies.availableLanguages, availableDetectors: dependencies.availableDetectors,
            availableRecognizers: dependencies.availableRecognizers,
            defaultLanguage: dependencies.settings.defaultLanguage, spoolDirectory: dependencies.storage.spoolDirectory,
            callbackPolicy: CallbackURLPolicy(allowPrivate: dependencies.settings.webhookAllowPrivate))
        let upload = try await parser.parse(request)
        let callbackURL = try await resolveCallbackURL(upload.callback, user: user)

        let id = UUID()
        let digest = upload.document.sha256
        let optionsJSON = String(decoding: try JSONEncoder.lector().encode(upload.options), as: UTF8.self)
        // The request's fingerprint: document, options and metadata. A retry must repeat all three.
        var hasher = SHA256()
        hasher.update(data: digest)
        hasher.update(data: Data([0]) + Data(optionsJSON.utf8) + Data([0]) + Data(upload.metadataJSON.utf8))
        if let callbackURL { hasher.update(data: Data([0]) + Data(callbackURL.utf8)) }
        if upload.priority != 0 || !upload.dependsOn.isEmpty {
            let scheduling = "\(upload.priority) " + upload.dependsOn.map { $0.uuidString.lowercased() }.joined(separator: ",")
            hasher.update(data: Data([1]) + Data(scheduling.utf8))
        }
        if !upload.reuse { hasher.update(data: Data([2])) }
        let fingerprint = Array(hasher.finalize())
        if let key = idempotencyKey, let replay = try await replay(key: key, user: user, fingerprint: fingerprint) {
            return replay
        }
        let reusable = await reusableResult(
            user: user, sha256: digest, optionsJSON: optionsJSON, reuse: upload.reuse, dependsOn: upload.dependsOn,
            logger: context.logger)
        let job = NewJob(
            id: id, ownerID: user.id, documentName: upload.documentName, contentType: upload.type.mediaType,
            sizeBytes: upload.document.size, sha256: digest, optionsJSON: optionsJSON,
            metadataJSON: upload.metadataJSON, callbackURL: callbackURL, priority: upload.priority,
            dependsOn: upload.dependsOn)

        // The folder is complete before the QUEUED row commits; if the commit fails, the folder goes.
        try await dependencies.storage.createJobFolder(
            id: id, documentFileName: upload.type.storedFileName, document: upload.document,
            metadataJSON: Self.folderMetadata(job, owner: user.name, storedFileName: upload.type.storedFileName))
        var reusing: ReusableResult?
        if let reusable, await copyResults(of: reusable, to: id, logger: context.logger) { reusing = reusable }
        let createdAt: Date
        switch try await insert(job, user: user, idempotencyKey: idempotencyKey, fingerprint: fingerprint, reusing: reusing) {
        case .created(let date, let reused): (createdAt, reusing) = (date, reused ? reusing : nil)
        case .replayed(let response): return response
        }
        dependencies.metrics.jobSubmitted(mode: upload.options.mode.rawValue)
        if reusing != nil { dependencies.metrics.jobReused() }
        dependencies.metrics.uploaded(bytes: upload.document.size)
        context.logger.info(reusing == nil ? "job queued" : "job finished with reused results", metadata: [
            "job_id": "\(id.uuidString.lowercased())", "type": "\(upload.type.rawValue)", "bytes": "\(upload.document.size)",
            "reused_from": "\(reusing?.jobID.uuidString.lowercased() ?? "")",
        ])
        return try submitted(id: id, createdAt: createdAt, reusedFrom: reusing?.jobID)
    }

    enum Inserted {
        /// Created; `reused`: finished with the reused results (false when their source went meanwhile).
        case created(Date, reused: Bool)
        /// A concurrent request with the same Idempotency-Key won: its job.
        case replayed(Response)
    }

    /// Commits the job's `QUEUED` row once its folder is complete; removes the folder when the database certainly
    /// refused the job.
    func insert(
        _ job: NewJob, user: AuthenticatedUser, idempotencyKey: String?, fingerprint: [UInt8], reusing: ReusableResult? = nil
    ) async throws -> Inserted {
        let id = job.id
        do {
            let (createdAt, reused) = try await database { [jobs = dependencies.jobs] in
                try await jobs.create(job, idempotencyKey: idempotencyKey.map { ($0, fingerprint) }, reusing: reusing)
            }
            return .created(createdAt, reused: reused)
        } catch let error as UnknownDependency {
            // The database refused the job (an ERROR): nothing was created.
            try? await dependencies.storage.removeJobFolder(id: id)
            throw APIError.badRequest(.invalidDependsOn, error.message)
        } catch is IdempotencyKeyTaken {
            // A concurrent request with the same key won: answer with its job.
            try? await dependencies.storage.removeJobFolder(id: id)
            if let key = idempotencyKey, let replay = try await replay(key: key, user: user, fingerprint: fingerprint) {
                return .replayed(replay)
            }
            throw APIError(.conflict, .idempotencyConflict, "a request with this Idempotency-Key is in progress; retry")
        } catch {
            await removeFolderIfRolledBack(id, after: error)
            throw error
        }
    }

    /// Removes a new job's folder when the database certainly rolled the job back: a statement of the
    /// transaction failed with an ERROR of its own. A deadline, a broken connection or a FATAL (the server
    /// shutting down) leave the outcome unknown (COMMIT may have been reached), so the folder stays: an orphan
    /// costs disk, a removed folder of a committed job would lose the job. (`StorageSweeper` removes orphans
    /// once they are old.)
    func removeFolderIfRolledBack(_ id: UUID, after error: any Error) async {
        if let error = error as? PSQLError, error.serverInfo?[.severity] == "ERROR" {
            try? await dependencies.storage.removeJobFolder(id: id)
        }
    }

    /// The 202 answer of a submit.
    func submitted(id: UUID, createdAt: Date, reusedFrom: UUID? = nil) throws -> Response {
        let body = SubmittedJob(
            id: id.uuidString.lowercased(), status: reusedFrom == nil ? .queued : .finished, createdAt: createdAt,
            reusedFrom: reusedFrom?.uuidString.lowercased(), links: JobLinks(id: id))
        var headers = HTTPFields()
        headers[.location] = JobLinks(id: id).`self`
        headers[.retryAfter] = "\(dependencies.settings.retryAfter)"
        return try json(body, status: .accepted, headers: headers)
    }

    /// The job's callback URL: the submit's `callbackUrl`, else the key's default (checked when it was set).
    ///
    /// A URL given now is resolved too, within 2 s: refused (400 `invalid_callback_url`) when any address of its
    /// host is private, loopback, link-local, unspecified, multicast or CGNAT, or the name does not exist. A
    /// resolver that does not answer in time is no verdict: the job is accepted, and delivery checks the
    /// addresses again before every attempt, which is the check that protects the network.
    func resolveCallbackURL(_ target: CallbackURLPolicy.Target?, user: AuthenticatedUser) async throws -> String? {
        guard let target else { return user.defaultCallbackURL }
        guard user.hasWebhookSecret else {
            throw APIError.badRequest(.webhookSecretMissing,
                "callbacks are signed with a per-user secret, and this user has none yet: an operator creates it with `lector keys webhook-secret --user NAME`")
        }
        let policy = CallbackURLPolicy(allowPrivate: dependencies.settings.webhookAllowPrivate)
        do {
            _ = try await withDeadline(.seconds(2), "resolving the callback host") { try await policy.resolve(target) }
        } catch let error as CallbackURLRefused {
            throw APIError.badRequest(.invalidCallbackUrl, error.description)
        } catch {
            // No verdict (the resolver timed out or failed): delivery checks again before every attempt.
        }
        return target.url
    }

    // MARK: GET /v1/jobs/{id}/deliveries

    /// The job's webhook deliveries and every attempt of each (owner only; 404 otherwise).
    @Sendable func deliveries(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try jobID(context)
        let webhooks = WebhookStore(client: dependencies.jobs.client, logger: dependencies.jobs.logger)
        // A deleted job is 410 here too (`JobDeleted`).
        _ = try await database({ [jobs = dependencies.jobs] in try await jobs.state(of: id, ownerID: user.id) })
        guard let records = try await database({ try await webhooks.deliveries(jobID: id, ownerID: user.id) }) else {
            throw APIError.jobNotFound
        }
        return try json(DeliveriesView(id: id.uuidString.lowercased(), deliveries: records.map(DeliveryView.init)), status: .ok)
    }

    /// The answer to a submit whose Idempotency-Key was used before: the original job (202, as the first
    /// answer was, with `Idempotent-Replayed: true`), or 422 when it came with another document.
    func replay(key: String, user: AuthenticatedUser, fingerprint: [UInt8]) async throws -> Response? {
        let jobs = dependencies.jobs
        guard let original = try await database({ try await jobs.idempotentJob(key: key, ownerID: user.id, fingerprint: fingerprint) })
        else { return nil }
        guard original.sameDocument else {
            throw APIError(.unprocessableContent, .idempotencyKeyReused,
                "this Idempotency-Key was used for another request (document, options or metadata) in the last 24 hours")
        }
        var headers = HTTPFields()
        headers[.location] = JobLinks(id: original.id).`self`
        headers[.retryAfter] = "\(dependencies.settings.retryAfter)"
        headers[HTTPField.Name("Idempotent-Replayed")!] = "true"
        let body = SubmittedJob(
            id: original.id.uuidString.lowercased(), status: original.status, createdAt: original.createdAt,
            links: JobLinks(id: original.id))
        return try json(body, status: .accepted, headers: headers)
    }

    /// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
    static func idempotencyKey(_ request: Request) throws -> String? {
        guard let value = request.headers[HTTPField.Name("Idempotency-Key")!] else { return nil }
        guard (1...255).contains(value.utf8.count), value.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw APIError.badRequest(.invalidIdempotencyKey, "Idempotency-Key must be 1 to 255 visible ASCII characters")
        }
        return value
    }

    // MARK: GET /v1/languages

    /// The languages a job's `lang` may name: the Tesseract models installed on this server.
    @Sendable func languages(_ request: Request, context: LectorRequestContext) async throws -> Response {
        _ = try context.requireUser()
        struct Languages: Encodable {
            let languages: [String]
            let `default`: String
        }
        return try json(
            Languages(languages: dependencies.availableLanguages.sorted(), default: dependencies.settings.defaultLanguage),
            status: .ok)
    }

    // MARK: GET /v1/jobs/{id}

    @Sendable func status(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try jobID(context)
        guard let (record, history) = try await database({ [jobs = dependencies.jobs] in try await jobs.job(id, ownerID: user.id) }) else {
            throw APIError.jobNotFound
        }
        return try json(JobView(record: record, history: history), status: .ok)
    }

    // MARK: POST /v1/jobs/{id}/cancel

    /// Cancels a job (owner only; 404 otherwise). Queued: it ends at once, `FAILURE` "cancelled", and the answer is
    /// 200 with the job. Running: the request goes to its worker, which stops the OCR within about a second and
    /// ends the job the same way; the answer is 202 with the job as it stands. Ended already: 409 `job_ended`.
    @Sendable func cancel(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try jobID(context)
        let jobs = dependencies.jobs
        guard let outcome = try await database({ try await jobs.cancel(id, ownerID: user.id) }) else {
            throw APIError.jobNotFound
        }
        guard let (record, history) = try await database({ try await jobs.job(id, ownerID: user.id) }) else {
            throw APIError.jobNotFound
        }
        switch outcome {
        case .gone:
            throw APIError.jobDeleted
        case .ended:
            var error = APIError(.conflict, .jobEnded, "the job has ended (\(record.status.rawValue)); there is nothing to cancel")
            error.details["status"] = record.status.rawValue
            throw error
        case .cancelled:
            context.logger.info("job cancelled", metadata: ["job_id": "\(id.uuidString.lowercased())"])
            // A job split into page tasks (docs/design/queue.md, "Page tasks") may have left its pages' parts.
            if let pages = record.pagesTotal, pages > 1 {
                await dependencies.storage.removeResults(id: id, fileNames: ResultFiles.pageParts(pages: pages))
            }
            return try json(JobView(record: record, history: history), status: .ok)
        case .requested:
            context.logger.info("job cancel requested", metadata: ["job_id": "\(id.uuidString.lowercased())"])
            var headers = HTTPFields()
            headers[.retryAfter] = "1"
            return try json(JobView(record: record, history: history), status: .accepted, headers: headers)
        }
    }

    // MARK: POST /v1/jobs/{id}/rerun

    /// Reads a job's stored document again with new options: a new job, linked to the first (`rerunOf`), 202 like a
    /// submit. Body: `{"options": {...}}`, checked as a submit's options part (an empty body or no `options`:
    /// the defaults). No upload: the document is hard-linked into the new job's folder. Owner only (404).
    @Sendable func rerun(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let source = try jobID(context)
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Upload.maxOptionsBytes + 1024)
        } catch {
            throw APIError(.contentTooLarge, .bodyTooLarge, "the body must be at most \(Upload.maxOptionsBytes) bytes of JSON")
        }
        var optionsBody = ByteBuffer(string: "{}")
        if body.readableBytes > 0 {
            guard let value = JSONValue.parse(Data(buffer: body)), case .object(let members) = value else {
                throw APIError.badRequest(.invalidBody, "the body must be a JSON object: {\"options\": {...}}")
            }
            for key in members.keys where key != "options" {
                throw APIError.badRequest(.invalidBody, "unknown field '\(key.prefix(64))'; the body takes options")
            }
            if let options = members["options"] { optionsBody = ByteBuffer(string: options.jsonString()) }
        }
        let parser = UploadParser(
            maxDocumentBytes: dependencies.settings.maxUploadBytes, supportedTypes: dependencies.supportedTypes,
            availableLanguages: dependencies.availableLanguages, availableDetectors: dependencies.availableDetectors,
            availableRecognizers: dependencies.availableRecognizers,
            defaultLanguage: dependencies.settings.defaultLanguage, spoolDirectory: dependencies.storage.spoolDirectory,
            callbackPolicy: CallbackURLPolicy(allowPrivate: dependencies.settings.webhookAllowPrivate))
        let (options, parameters) = try parser.parseOptions(optionsBody)
        guard parameters.priority == 0, parameters.dependsOn.isEmpty else {
            throw APIError.badRequest(.invalidOptions, "a re-OCR takes engine options and callbackUrl only; priority and dependsOn belong to a submit")
        }
        let callback = parameters.callback
        let jobs = dependencies.jobs
        guard let (record, _) = try await database({ try await jobs.job(source, ownerID: user.id) }) else {
            throw APIError.jobNotFound
        }
        // A callback URL named now replaces the first job's; none keeps it.
        let callbackURL = callback == nil ? nil : try await resolveCallbackURL(callback, user: user)
        guard let type = DocumentType(mediaType: record.contentType) else {
            throw APIError(.conflict, .documentUnavailable, "this job's document type can no longer be read")
        }
        try await dependencies.storageHealth.check()
        let document: SpooledDocument
        do {
            document = try await dependencies.storage.spoolDocument(
                of: source, fileName: type.storedFileName, sha256: Self.bytes(hex: record.sha256Hex))
        } catch let error as StorageError where error.kind == .missing {
            throw APIError(.conflict, .documentUnavailable, "this job's document is no longer stored")
        }
        let id = UUID()
        let optionsJSON = String(decoding: try JSONEncoder.lector().encode(options), as: UTF8.self)
        let described = NewJob(
            id: id, ownerID: user.id, documentName: record.documentName, contentType: record.contentType,
            sizeBytes: record.sizeBytes, sha256: Self.bytes(hex: record.sha256Hex), optionsJSON: optionsJSON,
            metadataJSON: record.metadataJSON)
        try await dependencies.storage.createJobFolder(
            id: id, documentFileName: type.storedFileName, document: document,
            metadataJSON: Self.folderMetadata(
                described, owner: user.name, storedFileName: type.storedFileName,
                also: ["rerunOf": .string(source.uuidString.lowercased())]))
        let createdAt: Date?
        do {
            createdAt = try await database { try await jobs.rerun(id, of: source, ownerID: user.id, optionsJSON: optionsJSON, callbackURL: callbackURL) }
        } catch {
            await removeFolderIfRolledBack(id, after: error)
            throw error
        }
        guard let createdAt else {
            try? await dependencies.storage.removeJobFolder(id: id)
            throw APIError.jobNotFound
        }
        dependencies.metrics.jobSubmitted(mode: options.mode.rawValue)
        context.logger.info("job queued (re-OCR)", metadata: [
            "job_id": "\(id.uuidString.lowercased())", "rerun_of": "\(source.uuidString.lowercased())",
        ])
        let response = SubmittedJob(id: id.uuidString.lowercased(), status: .queued, createdAt: createdAt, links: JobLinks(id: id))
        var headers = HTTPFields()
        headers[.location] = JobLinks(id: id).`self`
        headers[.retryAfter] = "\(dependencies.settings.retryAfter)"
        return try json(response, status: .accepted, headers: headers)
    }

    /// A job folder's `metadata.json`: `{"job": {...}, "metadata": <as sent>}`. The client's metadata goes in as
    /// sent (it was checked to be one JSON object); `also` adds what a kind of submit knows besides (the batch, the
    /// upload, the job a re-OCR reads again).
    static func folderMetadata(_ job: NewJob, owner: String, storedFileName: String, also: [String: JSONValue] = [:]) -> Data {
        var description: [String: JSONValue] = [
            "id": .string(job.id.uuidString.lowercased()),
            "owner": .string(owner),
            "documentName": .string(job.documentName),
            "documentFile": .string(storedFileName),
            "contentType": .string(job.contentType),
            "size": .integer(job.sizeBytes),
            "sha256": .string(job.sha256.hexString),
            "options": JSONValue.parse(Data(job.optionsJSON.utf8)) ?? .object([:]),
            "priority": .integer(Int64(job.priority)),
            "dependsOn": .array(job.dependsOn.map { .string($0.uuidString.lowercased()) }),
        ]
        description.merge(also) { _, added in added }
        return Data((#"{"job":"# + JSONValue.object(description).jsonString() + #","metadata":"# + job.metadataJSON + "}\n").utf8)
    }

    /// Bytes of a hex string (the stored SHA-256).
    static func bytes(hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex, let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) {
            if let byte = UInt8(hex[index..<next], radix: 16) { bytes.append(byte) }
            index = next
        }
        return bytes
    }

    // MARK: DELETE /v1/jobs/{id}

    /// Deletes a job (owner only; 404 otherwise): its folder (document, results, pictures) and the metadata the
    /// client gave (document name, options, metadata, callback URL); the row and its history stay, so that it
    /// is on record that the job existed. 204. Afterwards every route of the job answers 410 `job_deleted`. A
    /// queued job is cancelled in the same transaction; a running one is refused with 409 `job_running` (its
    /// worker would write results into the folder): cancel it, then delete it once it has ended.
    @Sendable func delete(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try jobID(context)
        let jobs = dependencies.jobs
        guard let outcome = try await database({ try await jobs.delete(id, ownerID: user.id) }) else {
            throw APIError.jobNotFound
        }
        switch outcome {
        case .gone:
            throw APIError.jobDeleted
        case .running:
            throw APIError(.conflict, .jobRunning,
                "the job is running: cancel it (POST /v1/jobs/{id}/cancel), then delete it once it has ended")
        case .deleted:
            do {
                try await dependencies.storage.removeJobFolder(id: id)
            } catch {
                // The job is deleted; its folder is now an orphan, which the storage sweeper removes.
                context.logger.error("a deleted job's folder could not be removed; the sweeper will", metadata: [
                    "job_id": "\(id.uuidString.lowercased())", "error": "\(String(reflecting: error))",
                ])
            }
            context.logger.info("job deleted", metadata: ["job_id": "\(id.uuidString.lowercased())"])
            return Response(status: .noContent)
        }
    }

    // MARK: GET /v1/jobs?status=&limit=&cursor=

    /// The user's jobs, newest first, `limit` at a time (1-100, default 20); `cursor` is the previous page's
    /// `nextCursor`. Another user's jobs never appear.
    @Sendable func list(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let query = request.uri.queryParameters
        for (name, _) in query where !["status", "limit", "cursor"].contains(String(name)) {
            throw APIError.badRequest(.unknownParameter, "unknown query parameter '\(name.prefix(64))'; this route takes status, limit and cursor")
        }
        var status: JobStatus?
        if let raw = query.get("status") {
            guard let value = JobStatus(rawValue: raw) else {
                throw APIError.badRequest(.invalidStatus, "status must be one of: QUEUED, IN_PROGRESS, FINISHED, FAILURE")
            }
            status = value
        }
        var limit = 20
        if let raw = query.get("limit") {
            guard let value = Int(raw), (1...100).contains(value), raw == "\(value)" else {
                throw APIError.badRequest(.invalidLimit, "limit must be a whole number from 1 to 100")
            }
            limit = value
        }
        var cursor: JobListCursor?
        if let raw = query.get("cursor") {
            guard let value = JobListCursor(token: raw) else {
                throw APIError.badRequest(.invalidCursor, "cursor must be a nextCursor this route returned")
            }
            cursor = value
        }
        let jobs = dependencies.jobs
        let page = try await database { [status, cursor, limit] in
            try await jobs.list(ownerID: user.id, status: status, after: cursor, limit: limit)
        }
        return try json(JobList(jobs: page.jobs.map(JobList.Item.init), nextCursor: page.next?.token), status: .ok)
    }

    // MARK: GET /v1/jobs/{id}/pages/{page}?size=preview|thumbnail

    /// A finished job's page picture: 302 to a signed link, like the result route. The preview's long side is
    /// at most 1600 px; scale `result.json`'s boxes by the preview's width over the page's `width`.
    @Sendable func page(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try jobID(context)
        let query = request.uri.queryParameters
        for (name, _) in query where String(name) != "size" {
            throw APIError.badRequest(.unknownParameter, "unknown query parameter '\(name.prefix(64))'; this route takes size")
        }
        guard let raw = context.parameters.get("page"), let number = Int(raw), number >= 1, raw == "\(number)" else {
            throw APIError.badRequest(.invalidPage, "the page must be a page number, 1 or more")
        }
        let fileName: String
        switch query.get("size") ?? "preview" {
        case "preview": fileName = ResultFiles.preview(page: number)
        case "thumbnail": fileName = ResultFiles.thumbnail(page: number)
        default: throw APIError.badRequest(.invalidSize, "size must be preview or thumbnail")
        }
        let jobs = dependencies.jobs
        guard let state = try await database({ try await jobs.state(of: id, ownerID: user.id) }) else {
            throw APIError.jobNotFound
        }
        switch state.status {
        case .finished:
            guard try await dependencies.storage.hasResult(id: id, fileName: fileName) else {
                throw APIError(.notFound, .pageUnavailable, "this job has no picture of page \(number)")
            }
            var headers = HTTPFields()
            headers[.location] = try resultLocation(id: id, file: fileName, contentType: "image/jpeg")
            headers[.cacheControl] = "no-store"
            return Response(status: .found, headers: headers)
        case .failure:
            var error = APIError(.conflict, .jobFailed, "the job failed: \(state.reason ?? "no reason recorded")")
            error.details["reason"] = state.reason ?? ""
            error.details["status"] = JobStatus.failure.rawValue
            throw error
        case .queued, .inProgress:
            var headers = HTTPFields()
            headers[.retryAfter] = "\(dependencies.settings.retryAfter)"
            return try json(PendingResult(id: id.uuidString.lowercased(), status: state.status, links: JobLinks(id: id)),
                            status: .accepted, headers: headers)
        }
    }

    // MARK: GET /v1/jobs/{id}/result

    @Sendable func result(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try jobID(context)
        let query = request.uri.queryParameters
        let formatName = query.get("format") ?? "json"
        guard let format = ResultFormat(rawValue: formatName) else {
            throw APIError.badRequest(.invalidFormat, "format must be one of: \(ResultFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let wait = try waitSeconds(request)

        let waiters = dependencies.waiters
        let ticket = waiters.register(id)
        defer { waiters.unregister(ticket) }
        let jobs = dependencies.jobs
        guard var state = try await database({ try await jobs.state(of: id, ownerID: user.id) }) else {
            throw APIError.jobNotFound
        }
        if let wait, !state.status.isTerminal {
            let deadline = ContinuousClock.now + .seconds(wait)
            while !state.status.isTerminal, ContinuousClock.now < deadline {
                _ = await waiters.wait(ticket, timeout: deadline - ContinuousClock.now)
                if Task.isCancelled { break }
                if dependencies.endedJobs.status(of: id) == .finished {
                    state = JobState(status: .finished, reason: nil)
                    break
                }
                guard let fresh = try await database({ try await jobs.state(of: id, ownerID: user.id) }) else {
                    throw APIError.jobNotFound
                }
                state = fresh
            }
        }

        var headers = HTTPFields()
        if let wait { headers[HTTPField.Name("Preference-Applied")!] = "wait=\(wait)" }
        switch state.status {
        case .finished:
            // Every finished job has json and txt; hocr and pdf only when the job asked for them in `formats` (they
            // are made with the recognition, from Tesseract's own page analysis), and the searchable PDF only when
            // every page went through the document pipeline.
            if !OCROptions.defaultFormats.contains(format),
                try await !dependencies.storage.hasResult(id: id, fileName: format.fileName)
            {
                throw APIError(.notFound, .formatUnavailable, format == .pdf
                    ? "this job has no searchable PDF: it is made when the job asks for it and every page is read by the document pipeline (submit, or re-OCR it with POST /v1/jobs/{id}/rerun, with options {\"formats\": [\"pdf\"], \"mode\": \"document\"}); json and txt are available"
                    : "this job has no \(formatName) result: it is made when the job asks for it (submit, or re-OCR it with POST /v1/jobs/{id}/rerun, with options {\"formats\": [\"\(formatName)\"]}); json and txt are available")
            }
            headers[.location] = try resultLocation(id: id, file: format.fileName, contentType: format.contentType)
            headers[.cacheControl] = "no-store"
            return Response(status: .found, headers: headers)
        case .failure:
            var error = APIError(.conflict, .jobFailed, "the job failed: \(state.reason ?? "no reason recorded")")
            error.details["reason"] = state.reason ?? ""
            error.details["status"] = JobStatus.failure.rawValue
            error.headers = headers
            throw error
        case .queued, .inProgress:
            headers[.retryAfter] = "\(dependencies.settings.retryAfter)"
            return try json(PendingResult(id: id.uuidString.lowercased(), status: state.status, links: JobLinks(id: id)),
                            status: .accepted, headers: headers)
        }
    }

    // MARK: GET /files/{id}/{file}?expires=&signature=

    @Sendable func file(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let id = try jobID(context)
        let fileName = context.parameters.get("file") ?? ""
        guard let contentType = Self.contentType(ofFile: fileName) else {
            throw APIError(.notFound, .notFound, "no such file")
        }
        // A link is valid in exactly the spelling the signer wrote: lower-case id, no doubled or trailing slash.
        guard request.uri.path == "/files/\(id.uuidString.lowercased())/\(fileName)" else {
            throw APIError(.forbidden, .invalidSignature, "this result link is not valid")
        }
        let query = request.uri.queryParameters
        switch dependencies.signer.verify(job: id, file: fileName, expires: query.get("expires"), signature: query.get("signature")) {
        case .valid: break
        case .expired: throw APIError(.forbidden, .linkExpired, "this result link has expired; ask the result route for a new one")
        case .invalid: throw APIError(.forbidden, .invalidSignature, "this result link is not valid")
        }
        guard let data = try await dependencies.storage.readResult(id: id, fileName: fileName) else {
            throw APIError(.notFound, .notFound, "no such file")
        }
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[.cacheControl] = "private, max-age=\(dependencies.signer.ttl)"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    // MARK: helpers

    /// Where a result file is fetched: a presigned GET of the object store (object storage: the API serves no
    /// bytes), else this API's signed `/files` link; both valid for `LECTOR_RESULT_LINK_TTL`.
    private func resultLocation(id: UUID, file: String, contentType: String) throws -> String {
        let storageLink: String?
        do {
            storageLink = try dependencies.storage.resultLink(
                id: id, fileName: file, contentType: contentType,
                downloadName: "\(id.uuidString.lowercased())-\(file)", expires: .seconds(dependencies.signer.ttl))
        } catch {
            throw APIError(.serviceUnavailable, .storageUnavailable, "a link to the result could not be made; try again")
        }
        return storageLink ?? dependencies.signer.link(job: id, file: file)
    }

    /// The type of a file a signed link may name: a result format, or a page picture; nil for anything else.
    static func contentType(ofFile name: String) -> String? {
        if let format = ResultFormat.allCases.first(where: { $0.fileName == name }) { return format.contentType }
        return ResultFiles.isPagePicture(name) ? "image/jpeg" : nil
    }

    /// A database call bounded by `LECTOR_DATABASE_TIMEOUT`: past it the request answers 503.
    func database<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withDeadline(.milliseconds(Int64(dependencies.settings.databaseTimeout * 1000)), "database call", operation)
    }

    private func jobID(_ context: LectorRequestContext) throws -> UUID {
        guard let raw = context.parameters.get("id"), let id = UUID(uuidString: raw) else {
            throw APIError.badRequest(.invalidJobId, "the job id must be a UUID")
        }
        return id
    }

    /// `?wait=N` or `Prefer: wait=N`, capped at the configured maximum; nil when absent.
    func waitSeconds(_ request: Request) throws -> Int? {
        var raw: String? = request.uri.queryParameters.get("wait")
        if raw == nil, let prefer = request.headers[HTTPField.Name("Prefer")!] {
            for preference in prefer.split(separator: ",") {
                let pair = preference.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: CharacterSet.whitespaces) }
                if pair.count == 2, pair[0].lowercased() == "wait" { raw = pair[1] }
            }
        }
        guard let raw else { return nil }
        guard let seconds = Int(raw), seconds >= 0 else {
            throw APIError.badRequest(.invalidWait, "wait must be a whole number of seconds (at most \(dependencies.settings.longPollMax))")
        }
        return min(seconds, dependencies.settings.longPollMax)
    }

    func json(_ value: some Encodable, status: HTTPResponse.Status, headers: HTTPFields = [:]) throws -> Response {
        var headers = headers
        headers[.contentType] = "application/json; charset=utf-8"
        let data = try JSONEncoder.lector().encode(value)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
