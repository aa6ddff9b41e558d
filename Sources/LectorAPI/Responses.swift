import Foundation
import LectorCore
import LectorModel

/// Links of a job.
struct JobLinks: Encodable {
    let `self`: String
    let result: String
    /// Server-Sent Events of the job (`/ws` for the same over a WebSocket).
    let events: String

    init(id: UUID) {
        let base = "/v1/jobs/\(id.uuidString.lowercased())"
        self.`self` = base
        self.result = "\(base)/result"
        self.events = "\(base)/events"
    }
}

/// The body of 202 on submit.
struct SubmittedJob: Encodable {
    let id: String
    /// `QUEUED`, or `FINISHED` when an identical job's results were reused.
    let status: JobStatus
    let createdAt: Date
    /// The finished job whose results this one took (absent when none).
    var reusedFrom: String? = nil
    let links: JobLinks
}

/// The body of `GET /v1/jobs/{id}`.
struct JobView: Encodable {
    struct Document: Encodable {
        let name: String
        let contentType: String
        let size: Int64
        let sha256: String
    }

    struct Transition: Encodable {
        let status: JobStatus
        let at: Date
        let reason: String?
    }

    let id: String
    let status: JobStatus
    let createdAt: Date
    let document: Document
    let options: JSONValue
    let metadata: JSONValue
    let history: [Transition]
    /// Page progress of the running (or last) attempt, when known.
    let pagesDone: Int?
    let pagesTotal: Int?
    /// The job this one re-reads (`POST /v1/jobs/{id}/rerun`).
    let rerunOf: String?
    /// 0-9, higher first among the owner's jobs.
    let priority: Int
    /// Jobs this one depends on that have not finished yet (absent when none).
    let waitingFor: [String]?
    /// The batch it belongs to (absent when none).
    let batch: String?
    /// The finished job whose results it took, without reading the document again (absent when none).
    let reusedFrom: String?
    let links: JobLinks

    init(record: JobRecord, history: [JobTransition]) {
        self.batch = record.batchID?.uuidString.lowercased()
        self.reusedFrom = record.reusedFrom?.uuidString.lowercased()
        self.rerunOf = record.rerunOf?.uuidString.lowercased()
        self.priority = record.priority
        self.waitingFor = record.waitingFor.isEmpty ? nil : record.waitingFor.map { $0.uuidString.lowercased() }
        self.id = record.id.uuidString.lowercased()
        self.status = history.last?.status ?? record.status
        self.createdAt = record.createdAt
        self.document = Document(
            name: record.documentName, contentType: record.contentType, size: record.sizeBytes, sha256: record.sha256Hex)
        self.options = JSONValue.parse(Data(record.optionsJSON.utf8)) ?? .object([:])
        self.metadata = JSONValue.parse(Data(record.metadataJSON.utf8)) ?? .object([:])
        self.pagesDone = record.pagesDone
        self.pagesTotal = record.pagesTotal
        self.history = history.map { Transition(status: $0.status, at: $0.at, reason: $0.reason) }
        self.links = JobLinks(id: record.id)
    }
}

/// The body of 202 from the result route while the job runs.
struct PendingResult: Encodable {
    let id: String
    let status: JobStatus
    let links: JobLinks
}

/// The body of `GET /v1/jobs/{id}/deliveries`.
struct DeliveriesView: Encodable {
    let id: String
    let deliveries: [DeliveryView]
}

/// One webhook delivery: its `webhook-id`, what it reports, where it goes, where it stands, and every attempt.
struct DeliveryView: Encodable {
    struct Attempt: Encodable {
        let attempt: Int
        let at: Date
        let durationMs: Double
        let statusCode: Int?
        let error: String?
    }

    let id: String
    /// The job status the delivery reports (`FINISHED` or `FAILURE`).
    let jobStatus: JobStatus
    let url: String
    /// `pending` (an attempt is due at `nextAttemptAt`), `delivered` (a 2xx), or `failed` (retries gave up).
    let state: String
    let createdAt: Date
    let deliveredAt: Date?
    let gaveUpAt: Date?
    let nextAttemptAt: Date?
    let attempts: [Attempt]

    init(_ record: DeliveryRecord) {
        self.id = record.id.uuidString.lowercased()
        self.jobStatus = record.status
        self.url = record.url
        self.state = record.deliveredAt != nil ? "delivered" : record.gaveUpAt != nil ? "failed" : "pending"
        self.createdAt = record.createdAt
        self.deliveredAt = record.deliveredAt
        self.gaveUpAt = record.gaveUpAt
        self.nextAttemptAt = record.nextAttemptAt
        self.attempts = record.attempts.map {
            Attempt(attempt: $0.attempt, at: $0.at, durationMs: ($0.durationMs * 10).rounded() / 10, statusCode: $0.statusCode, error: $0.error)
        }
    }
}

/// The body of `GET /v1/jobs`.
struct JobList: Encodable {
    struct Item: Encodable {
        struct Document: Encodable {
            let name: String
            let contentType: String
            let size: Int64
        }

        let id: String
        let status: JobStatus
        let createdAt: Date
        let startedAt: Date?
        let endedAt: Date?
        let reason: String?
        /// While IN_PROGRESS, once the worker has reported it.
        let progress: Progress?
        let document: Document
        let links: JobLinks

        struct Progress: Encodable {
            let pagesDone: Int
            let pagesTotal: Int
        }

        init(_ job: JobSummary) {
            self.id = job.id.uuidString.lowercased()
            self.status = job.status
            self.createdAt = job.createdAt
            self.startedAt = job.startedAt
            self.endedAt = job.endedAt
            self.reason = job.reason
            self.progress = job.pagesDone.flatMap { done in job.pagesTotal.map { Progress(pagesDone: done, pagesTotal: $0) } }
            self.document = Document(name: job.documentName, contentType: job.contentType, size: job.sizeBytes)
            self.links = JobLinks(id: job.id)
        }
    }

    let jobs: [Item]
    /// Absent on the last page.
    let nextCursor: String?
}
