import Foundation
import HTTPTypes
import Hummingbird
import LectorCore
import LectorModel
import NIOCore

/// `/v1/batches`: many documents in one request, with shared options; their progress in one view, cancelled as
/// a whole, their results in one archive. A batch is its jobs (db/011): each is an ordinary job, with its own
/// routes, events and webhook.
struct BatchesController {
    let dependencies: APIDependencies
    var jobs: JobsController { JobsController(dependencies: dependencies) }

    func addRoutes(v1: RouterGroup<LectorRequestContext>, root: Router<LectorRequestContext>) {
        v1.post("batches", use: create)
        v1.get("batches/:id", use: show)
        v1.post("batches/:id/cancel", use: cancel)
        v1.get("batches/:id/archive", use: archive)
        root.get("archives/:file", use: download)
    }

    /// Largest JSON body of a batch from direct uploads: a thousand ids with names, options and metadata.
    static let maxJSONBytes = 1024 * 1024

    // MARK: POST /v1/batches

    /// 202 with the batch and its jobs. Multipart: one 'document' part per job, optional 'options' and 'metadata'
    /// parts shared by all. JSON (object storage): `{"uploads": ["<id>" or {"upload": "<id>", "filename": "..."}],
    /// "options": {...}, "metadata": {...}}`. All or nothing: a bad document refuses the whole batch (4xx naming
    /// it), and the jobs are created in one transaction.
    @Sendable func create(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        guard let pass = dependencies.uploads.enter() else {
            var error = APIError(.serviceUnavailable, .tooManyUploads,
                "the server is receiving \(dependencies.uploads.limit) uploads already; try again shortly")
            error.headers[.retryAfter] = "1"
            throw error
        }
        defer { pass.leave() }
        try await dependencies.storageHealth.check()
        let parser = UploadParser(
            maxDocumentBytes: dependencies.settings.maxUploadBytes, supportedTypes: dependencies.supportedTypes,
            availableLanguages: dependencies.availableLanguages, availableDetectors: dependencies.availableDetectors,
            availableRecognizers: dependencies.availableRecognizers,
            defaultLanguage: dependencies.settings.defaultLanguage, spoolDirectory: dependencies.storage.spoolDirectory,
            callbackPolicy: CallbackURLPolicy(allowPrivate: dependencies.settings.webhookAllowPrivate))
        if (request.headers[.contentType] ?? "").lowercased().hasPrefix("application/json") {
            return try await createFromUploads(request, context: context, user: user, parser: parser)
        }
        let batch = try await parser.parseBatch(request, maxBatchBytes: dependencies.settings.maxBatchBytes)
        let callbackURL = try await jobs.resolveCallbackURL(batch.parameters.callback, user: user)
        let optionsJSON = String(decoding: try JSONEncoder.lector().encode(batch.options), as: UTF8.self)
        let batchID = UUID()

        var prepared: [PreparedJob] = []
        do {
            for upload in batch.uploads {
                let id = UUID()
                let job = NewJob(
                    id: id, ownerID: user.id, documentName: upload.documentName, contentType: upload.type.mediaType,
                    sizeBytes: upload.document.size, sha256: upload.document.sha256, optionsJSON: optionsJSON,
                    metadataJSON: batch.metadataJSON, callbackURL: callbackURL, priority: batch.parameters.priority,
                    dependsOn: batch.parameters.dependsOn)
                let metadata = folderMetadata(job, user: user, batchID: batchID, storedFileName: upload.type.storedFileName)
                try await dependencies.storage.createJobFolder(
                    id: id, documentFileName: upload.type.storedFileName, document: upload.document, metadataJSON: metadata)
                prepared.append(PreparedJob(job: job, reusing: nil))
                prepared[prepared.count - 1].reusing = await reuse(job, parameters: batch.parameters, user: user, context: context)
            }
        } catch {
            for item in prepared { try? await dependencies.storage.removeJobFolder(id: item.job.id) }
            throw error
        }
        for upload in batch.uploads { dependencies.metrics.uploaded(bytes: upload.document.size) }
        return try await commit(batchID, prepared, user: user, mode: batch.options.mode, context: context)
    }

    /// A job about to be created, and the finished job whose results it takes, if any.
    struct PreparedJob {
        var job: NewJob
        var reusing: ReusableResult?
    }

    /// The results of an identical finished job, copied into the new job's folder; nil when none (or reuse is off).
    private func reuse(
        _ job: NewJob, parameters: UploadParser.JobParameters, user: AuthenticatedUser, context: LectorRequestContext
    ) async -> ReusableResult? {
        guard let reusable = await jobs.reusableResult(
            user: user, sha256: job.sha256, optionsJSON: job.optionsJSON, reuse: parameters.reuse, dependsOn: job.dependsOn,
            logger: context.logger)
        else { return nil }
        return await jobs.copyResults(of: reusable, to: job.id, logger: context.logger) ? reusable : nil
    }

    /// The folder's `metadata.json`, as a submit writes it, naming the batch.
    private func folderMetadata(_ job: NewJob, user: AuthenticatedUser, batchID: UUID, storedFileName: String) -> Data {
        JobsController.folderMetadata(
            job, owner: user.name, storedFileName: storedFileName, also: ["batch": .string(batchID.uuidString.lowercased())])
    }

    /// Creates the batch and its jobs in one transaction, once every folder is complete; removes the folders when
    /// the database certainly refused them.
    private func commit(
        _ batchID: UUID, _ prepared: [PreparedJob], user: AuthenticatedUser, mode: PipelineMode, context: LectorRequestContext
    ) async throws -> Response {
        var reusing: [UUID: ReusableResult] = [:]
        for item in prepared { reusing[item.job.id] = item.reusing }
        let createdAt: Date
        let reused: Set<UUID>
        do {
            // A statement per job in one transaction: the deadline grows with the batch (10 ms a job).
            let limit = Duration.milliseconds(Int64(dependencies.settings.databaseTimeout * 1000) + 10 * Int64(prepared.count))
            (createdAt, reused) = try await withDeadline(limit, "creating a batch") { [store = dependencies.jobs, jobs = prepared.map(\.job), reusing] in
                try await store.createBatch(batchID, ownerID: user.id, jobs: jobs, reusing: reusing)
            }
        } catch let error as UnknownDependency {
            for item in prepared { try? await dependencies.storage.removeJobFolder(id: item.job.id) }
            throw APIError.badRequest(.invalidDependsOn, error.message)
        } catch {
            for item in prepared { await jobs.removeFolderIfRolledBack(item.job.id, after: error) }
            throw error
        }
        for _ in prepared { dependencies.metrics.jobSubmitted(mode: mode.rawValue) }
        for _ in reused { dependencies.metrics.jobReused() }
        context.logger.info("batch queued", metadata: [
            "batch_id": "\(batchID.uuidString.lowercased())", "jobs": "\(prepared.count)",
            "reused": "\(reused.count)",
        ])
        let body = SubmittedBatch(
            id: batchID.uuidString.lowercased(), createdAt: createdAt,
            jobs: prepared.map { item in
                SubmittedBatch.Job(
                    id: item.job.id.uuidString.lowercased(), documentName: item.job.documentName,
                    status: reused.contains(item.job.id) ? .finished : .queued,
                    reusedFrom: reused.contains(item.job.id) ? item.reusing?.jobID.uuidString.lowercased() : nil,
                    links: JobLinks(id: item.job.id))
            },
            links: BatchLinks(id: batchID))
        var headers = HTTPFields()
        headers[.location] = BatchLinks(id: batchID).`self`
        headers[.retryAfter] = "\(dependencies.settings.retryAfter)"
        return try jobs.json(body, status: .accepted, headers: headers)
    }

    /// `POST /v1/batches` with `application/json`: a batch of direct uploads (object storage only).
    private func createFromUploads(
        _ request: Request, context: LectorRequestContext, user: AuthenticatedUser, parser: UploadParser
    ) async throws -> Response {
        for (name, _) in request.uri.queryParameters {
            throw APIError.badRequest(.unknownParameter,
                "unknown query parameter '\(String(name).prefix(64))': with application/json, send options in the body's 'options' member")
        }
        let raw = try await UploadsController.jsonBody(request, limit: Self.maxJSONBytes)
        guard let value = JSONValue.parse(Data(raw)), case .object = value, let members = UploadsController.rawMembers(raw) else {
            throw APIError.badRequest(.invalidJson, "the body must be a JSON object: {\"uploads\": [\"<id>\", ...]}")
        }
        var items: [(token: String, name: String)]?
        var options: ArraySlice<UInt8>?, metadata: ArraySlice<UInt8>?
        var seen: Set<String> = []
        for (key, value) in members {
            guard seen.insert(key).inserted else {
                throw APIError.badRequest(.invalidJson, "the member '\(key.prefix(64))' appears more than once")
            }
            switch key {
            case "uploads": items = try Self.uploadItems(JSONValue.parse(Data(value)))
            case "options": options = value
            case "metadata": metadata = value
            default: throw APIError.badRequest(.invalidJson, "unknown member '\(key.prefix(64))'; allowed: uploads, options, metadata")
            }
        }
        guard let items, !items.isEmpty else {
            throw APIError.badRequest(.invalidUpload, "uploads is required: the ids POST /v1/uploads answered, at least one")
        }
        guard let storage = dependencies.storage as? ObjectStorage else { throw UploadsController.unavailable }
        let metadataJSON = try metadata.map { try parser.parseMetadata(ByteBuffer(bytes: $0)) } ?? "{}"
        let (ocrOptions, parameters) = try parser.parseOptions(ByteBuffer(bytes: options ?? ArraySlice("{}".utf8)))
        let callbackURL = try await jobs.resolveCallbackURL(parameters.callback, user: user)
        let optionsJSON = String(decoding: try JSONEncoder.lector().encode(ocrOptions), as: UTF8.self)
        let batchID = UUID()

        var prepared: [PreparedJob] = []
        var tickets: [UUID] = []
        var totalBytes: Int64 = 0
        do {
            for (index, item) in items.enumerated() {
                let id = UUID()
                let taken: (UploadTicket, DocumentType, ObjectStorage.CopiedDocument)
                do {
                    taken = try await jobs.takeUpload(item.token, user: user, storage: storage, toJob: id)
                } catch let error as APIError {
                    throw APIError(error.status, error.code, "upload \(index + 1): \(error.message)")
                }
                let (ticket, type, copied) = taken
                totalBytes += copied.size
                guard totalBytes <= Int64(dependencies.settings.maxBatchBytes) else {
                    try? await storage.removeJobFolder(id: id)
                    throw APIError(.contentTooLarge, .batchTooLarge,
                        "the batch's documents are larger than the limit of \(dependencies.settings.maxBatchBytes) bytes together")
                }
                let job = NewJob(
                    id: id, ownerID: user.id, documentName: item.name, contentType: type.mediaType, sizeBytes: copied.size,
                    sha256: copied.sha256, optionsJSON: optionsJSON, metadataJSON: metadataJSON, callbackURL: callbackURL,
                    priority: parameters.priority, dependsOn: parameters.dependsOn)
                prepared.append(PreparedJob(job: job, reusing: nil))
                tickets.append(ticket.upload)
                try await storage.writeJobMetadata(
                    id: id, documentFileName: type.storedFileName,
                    metadataJSON: folderMetadata(job, user: user, batchID: batchID, storedFileName: type.storedFileName))
                prepared[prepared.count - 1].reusing = await reuse(job, parameters: parameters, user: user, context: context)
            }
        } catch {
            for item in prepared { try? await storage.removeJobFolder(id: item.job.id) }
            throw error
        }
        let response = try await commit(batchID, prepared, user: user, mode: ocrOptions.mode, context: context)
        // The jobs hold their own copies: the uploads go (else the sweeper removes them later).
        for upload in tickets { try? await storage.removeUpload(owner: user.id, upload: upload) }
        for item in prepared { dependencies.metrics.uploaded(bytes: item.job.sizeBytes) }
        return response
    }

    /// `uploads`: up to `JobStore.maxBatchJobs` ids, each a string or `{"upload": id, "filename": name}`.
    static func uploadItems(_ value: JSONValue?) throws -> [(token: String, name: String)] {
        let shape = APIError.badRequest(.invalidUpload,
            "uploads must be an array of upload ids, or of {\"upload\": \"<id>\", \"filename\": \"<name>\"}")
        guard case .array(let list)? = value else { throw shape }
        guard list.count <= JobStore.maxBatchJobs else {
            throw APIError.badRequest(.tooManyDocuments, "a batch holds at most \(JobStore.maxBatchJobs) documents")
        }
        return try list.map { item in
            switch item {
            case .string(let token): return (token, "document")
            case .object(let members):
                for key in members.keys where key != "upload" && key != "filename" { throw shape }
                guard case .string(let token)? = members["upload"] else { throw shape }
                var name: String?
                if let raw = members["filename"] {
                    guard case .string(let text) = raw else { throw shape }
                    name = text
                }
                return (token, UploadParser.sanitizeFileName(name))
            default: throw shape
            }
        }
    }

    // MARK: GET /v1/batches/{id}?wait=N

    /// The batch: counts by status, pages done, and each job with its links. `?wait=N` (or `Prefer: wait=N`) answers
    /// when every job has ended, or after N seconds (capped by `LECTOR_LONG_POLL_MAX`), whichever comes first.
    @Sendable func show(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try batchID(context)
        for (name, _) in request.uri.queryParameters where String(name) != "wait" {
            throw APIError.badRequest(.unknownParameter, "unknown query parameter '\(name.prefix(64))'; this route takes wait")
        }
        let wait = try jobs.waitSeconds(request)
        var record: BatchRecord
        if let wait {
            // One read per wake-up: subscribed before each read, so that no ending falls between the read and the
            // wait; woken when every job the read saw pending was heard to end (or events were missed, or time is up).
            let deadline = ContinuousClock.now + .seconds(wait)
            while true {
                let subscription = dependencies.events.subscribe(.owner(user.id))
                defer { subscription.cancel() }
                record = try await load(id, ownerID: user.id)
                guard !record.ended, ContinuousClock.now < deadline, !Task.isCancelled else { break }
                let pending = Set(record.jobs.filter { !$0.deleted && !$0.status.isTerminal }.map(\.id))
                await Self.waitForEnds(of: pending, in: subscription, until: deadline)
            }
        } else {
            record = try await load(id, ownerID: user.id)
        }
        var headers = HTTPFields()
        if let wait { headers[HTTPField.Name("Preference-Applied")!] = "wait=\(wait)" }
        if !record.ended { headers[.retryAfter] = "\(dependencies.settings.retryAfter)" }
        return try jobs.json(BatchView(record), status: .ok, headers: headers)
    }

    /// Returns when every job of `pending` was heard to end, events may have been missed (resync), or `deadline`
    /// passed. The subscription is consumed by one task only, and dropped afterwards.
    static func waitForEnds(of pending: Set<UUID>, in subscription: JobEventHub.Subscription, until deadline: ContinuousClock.Instant) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var left = pending
                for await message in subscription.messages {
                    switch message {
                    case .resync: return
                    case .event(.transition(_, let job, _, let status, _, _)) where status.isTerminal:
                        left.remove(job)
                        if left.isEmpty { return }
                    case .event: continue
                    }
                }
            }
            group.addTask { try? await Task.sleep(until: deadline) }
            await group.next()
            group.cancelAll()
        }
    }

    // MARK: POST /v1/batches/{id}/cancel

    /// Cancels every job of the batch that has not ended: queued ones end at once (`FAILURE` "cancelled"), running
    /// ones are stopped by their workers. 200 with the batch when nothing is left running, 202 while cancels of
    /// running jobs are under way, 409 `batch_ended` when every job had ended already.
    @Sendable func cancel(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try batchID(context)
        guard let outcomes = try await jobs.database({ [store = dependencies.jobs] in try await store.cancelBatch(id, ownerID: user.id) }) else {
            throw Self.notFound
        }
        let record = try await load(id, ownerID: user.id)
        guard !outcomes.isEmpty else {
            var error = APIError(.conflict, .batchEnded, "every job of the batch has ended; there is nothing to cancel")
            error.details["status"] = "ENDED"
            throw error
        }
        context.logger.info("batch cancelled", metadata: [
            "batch_id": "\(id.uuidString.lowercased())", "jobs": "\(outcomes.count)",
        ])
        let running = outcomes.values.contains(.requested)
        var headers = HTTPFields()
        if running { headers[.retryAfter] = "1" }
        return try jobs.json(BatchView(record), status: running ? .accepted : .ok, headers: headers)
    }

    // MARK: GET /v1/batches/{id}/archive

    /// Once every job has ended: 302 to a signed link of the batch's archive (a ZIP of each finished job's
    /// `result.txt` and `result.json`, and `manifest.json` listing every job), valid for `LECTOR_RESULT_LINK_TTL`.
    /// Before: 202 with the batch, as the result route answers for a running job.
    @Sendable func archive(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let id = try batchID(context)
        for (name, _) in request.uri.queryParameters {
            throw APIError.badRequest(.unknownParameter, "unknown query parameter '\(name.prefix(64))'; this route takes none")
        }
        let record = try await load(id, ownerID: user.id)
        var headers = HTTPFields()
        guard record.ended else {
            headers[.retryAfter] = "\(dependencies.settings.retryAfter)"
            return try jobs.json(BatchView(record), status: .accepted, headers: headers)
        }
        headers[.location] = ArchiveLink.link(batch: id, signer: dependencies.signer)
        headers[.cacheControl] = "no-store"
        return Response(status: .found, headers: headers)
    }

    // MARK: GET /archives/{id}.zip?expires=&signature=

    /// The archive, streamed: built from storage as it is sent, one result file in memory at a time.
    @Sendable func download(_ request: Request, context: LectorRequestContext) async throws -> Response {
        let file = context.parameters.get("file") ?? ""
        guard file.hasSuffix(".zip"), let id = UUID(uuidString: String(file.dropLast(4))),
            request.uri.path == "/archives/\(id.uuidString.lowercased()).zip"
        else {
            throw APIError(.notFound, .notFound, "no such archive")
        }
        let query = request.uri.queryParameters
        switch ArchiveLink.verify(batch: id, expires: query.get("expires"), signature: query.get("signature"), signer: dependencies.signer) {
        case .valid: break
        case .expired: throw APIError(.forbidden, .linkExpired, "this archive link has expired; ask the archive route for a new one")
        case .invalid: throw APIError(.forbidden, .invalidSignature, "this archive link is not valid")
        }
        guard let pass = dependencies.archiveStreams.enter() else {
            var error = APIError(.serviceUnavailable, .tooManyArchives,
                "this server is streaming \(dependencies.archiveStreams.limit) archives already; try again shortly")
            error.headers[.retryAfter] = "2"
            throw error
        }
        let holder = UploadGate.Holder(pass)
        // The link was signed for the owner's request; the batch is read without an owner.
        guard let record = try await jobs.database({ [store = dependencies.jobs] in try await store.batch(id, ownerID: nil) }) else {
            throw APIError(.notFound, .notFound, "no such archive")
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/zip"
        headers[.contentDisposition] = "attachment; filename=\"batch-\(id.uuidString.lowercased()).zip\""
        headers[.cacheControl] = "private, no-store"
        let storage = dependencies.storage
        let logger = context.logger
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            // The place is given back when the body is done with (or dropped).
            _ = holder
            var zip = ZipArchive()
            var manifest: [JSONValue] = []
            for job in record.jobs {
                let folder = String(format: "%04ld-", job.position) + Self.entryName(job.documentName)
                var files: [JSONValue] = []
                if job.status == .finished, !job.deleted {
                    for name in [ResultFormat.txt.fileName, ResultFormat.json.fileName] {
                        do {
                            guard let data = try await storage.readResult(id: job.id, fileName: name) else { continue }
                            try await writer.write(try zip.entry(name: "\(folder)/\(name)", contents: data))
                            files.append(.string("\(folder)/\(name)"))
                        } catch let error as ZipArchive.Overflow {
                            throw error
                        } catch {
                            // A result that cannot be read now is missing from the archive, and the manifest says so.
                            logger.warning("an archive left out a result", metadata: [
                                "job_id": "\(job.id.uuidString.lowercased())", "file": "\(name)", "error": "\(String(reflecting: error))",
                            ])
                        }
                    }
                }
                var entry: [String: JSONValue] = [
                    "id": .string(job.id.uuidString.lowercased()),
                    "position": .integer(Int64(job.position)),
                    "documentName": .string(job.documentName),
                    "status": .string(job.deleted ? "DELETED" : job.status.rawValue),
                    "files": .array(files),
                ]
                if let reason = job.reason, job.status == .failure { entry["reason"] = .string(reason) }
                manifest.append(.object(entry))
            }
            let manifestJSON: JSONValue = .object([
                "batch": .string(id.uuidString.lowercased()),
                "createdAt": .string(ISO8601DateFormatter().string(from: record.createdAt)),
                "jobs": .array(manifest),
            ])
            try await writer.write(try zip.entry(name: "manifest.json", contents: Data(manifestJSON.jsonString().utf8)))
            try await writer.write(zip.finish())
            try await writer.finish(nil)
        })
    }

    /// A document name as a folder name in the archive: no path separators, no control characters, no dot
    /// names, at most 100 characters (`sanitizeFileName` has dropped directories already).
    static func entryName(_ name: String) -> String {
        let cleaned = String(name.unicodeScalars.map { scalar -> Character in
            "/\\:<>\"|?*".unicodeScalars.contains(scalar) || CharacterSet.controlCharacters.contains(scalar) ? "_" : Character(scalar)
        }.prefix(100))
        let trimmed = cleaned.trimmingCharacters(in: CharacterSet(charactersIn: ". "))
        return trimmed.isEmpty ? "document" : trimmed
    }

    // MARK: helpers

    static let notFound = APIError(.notFound, .batchNotFound, "no such batch")

    private func load(_ id: UUID, ownerID: Int64) async throws -> BatchRecord {
        guard let record = try await jobs.database({ [store = dependencies.jobs] in try await store.batch(id, ownerID: ownerID) }) else {
            throw Self.notFound
        }
        return record
    }

    private func batchID(_ context: LectorRequestContext) throws -> UUID {
        guard let raw = context.parameters.get("id"), let id = UUID(uuidString: raw) else {
            throw APIError.badRequest(.invalidBatchId, "the batch id must be a UUID")
        }
        return id
    }
}

/// Signed links to batch archives: `/archives/<batch>.zip?expires=<unix seconds>&signature=<hex HMAC-SHA256>`, with
/// the result-link key in a domain of its own (`lector-archive-v1`), so no result link or upload id is an archive
/// link.
enum ArchiveLink {
    static let domain = "lector-archive-v1"

    static func link(batch: UUID, signer: ResultLinkSigner, now: Date = Date()) -> String {
        let (expires, signature) = signer.sign(domain: domain, batch.uuidString.lowercased(), now: now)
        return "/archives/\(batch.uuidString.lowercased()).zip?expires=\(expires)&signature=\(signature)"
    }

    static func verify(batch: UUID, expires: String?, signature: String?, signer: ResultLinkSigner, now: Date = Date()) -> ResultLinkSigner.Verdict {
        signer.verify(domain: domain, batch.uuidString.lowercased(), expires: expires, signature: signature, now: now)
    }
}

/// The body of 202 on `POST /v1/batches`.
struct SubmittedBatch: Encodable {
    struct Job: Encodable {
        let id: String
        let documentName: String
        /// `QUEUED`, or `FINISHED` when an identical job's results were reused.
        let status: JobStatus
        let reusedFrom: String?
        let links: JobLinks
    }

    let id: String
    let createdAt: Date
    let jobs: [Job]
    let links: BatchLinks
}

struct BatchLinks: Encodable {
    let `self`: String
    let archive: String
    let cancel: String

    init(id: UUID) {
        let base = "/v1/batches/\(id.uuidString.lowercased())"
        self.`self` = base
        self.archive = "\(base)/archive"
        self.cancel = "\(base)/cancel"
    }
}

/// The body of `GET /v1/batches/{id}`.
struct BatchView: Encodable {
    struct Job: Encodable {
        let id: String
        let position: Int
        let documentName: String
        /// The job's status, or `DELETED`.
        let status: String
        let reason: String?
        let pagesDone: Int?
        let pagesTotal: Int?
        let links: JobLinks
    }

    let id: String
    let createdAt: Date
    /// `ENDED` when every job has ended (or was deleted), else `RUNNING`.
    let status: String
    let total: Int
    /// Jobs by status (`QUEUED`, `IN_PROGRESS`, `FINISHED`, `FAILURE`, `DELETED`), each present.
    let counts: [String: Int]
    /// Pages read so far, over every job.
    let pagesDone: Int
    let jobs: [Job]
    let links: BatchLinks

    init(_ record: BatchRecord) {
        id = record.id.uuidString.lowercased()
        createdAt = record.createdAt
        status = record.ended ? "ENDED" : "RUNNING"
        total = record.jobs.count
        var counts = Dictionary(uniqueKeysWithValues: (JobStatus.allCases.map(\.rawValue) + ["DELETED"]).map { ($0, 0) })
        for job in record.jobs { counts[job.deleted ? "DELETED" : job.status.rawValue, default: 0] += 1 }
        self.counts = counts
        pagesDone = record.jobs.reduce(0) { $0 + ($1.deleted ? 0 : ($1.pagesDone ?? 0)) }
        jobs = record.jobs.map { job in
            Job(id: job.id.uuidString.lowercased(), position: job.position, documentName: job.documentName,
                status: job.deleted ? "DELETED" : job.status.rawValue, reason: job.status == .failure ? job.reason : nil,
                pagesDone: job.pagesDone, pagesTotal: job.pagesTotal, links: JobLinks(id: job.id))
        }
        links = BatchLinks(id: record.id)
    }
}
