import Foundation

/// Every setting of a Lector process, read from `LECTOR_*` environment variables.
///
/// The executable passes its environment in; library code never reads `ProcessInfo` itself, so tests build
/// settings from a dictionary. Each setting has a default that makes `make run` work as it is.
public struct Settings: Sendable {
    /// `LECTOR_DATABASE_URL`: `postgres://user[:password]@host[:port]/database`.
    public var databaseURL: String
    /// `LECTOR_DATABASE_POOL_SIZE`: most connections one process opens.
    public var databasePoolSize: Int
    /// `LECTOR_HTTP_HOST` and `LECTOR_HTTP_PORT`: where `lector serve` listens.
    public var httpHost: String
    public var httpPort: Int
    /// `LECTOR_STORAGE_ROOT`: the folder that holds one sub-folder per job (file storage).
    public var storageRoot: String
    /// `LECTOR_STORAGE`: empty or `files` (the default: job folders under `LECTOR_STORAGE_ROOT`), or
    /// `s3://bucket/prefix` for an S3-compatible object store (then the `LECTOR_S3_*` settings apply).
    public var storage: String
    /// `LECTOR_S3_ENDPOINT`: the store's base URL, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:8333` (also the host of the presigned result links clients are sent to).
    public var s3Endpoint: String
    /// `LECTOR_S3_REGION`: the signing region (default `us-east-1`).
    public var s3Region: String
    /// `LECTOR_S3_ACCESS_KEY_ID` and `LECTOR_S3_SECRET_ACCESS_KEY`: static credentials.
    public var s3AccessKeyID: String
    public var s3SecretAccessKey: String
    /// `LECTOR_S3_ADDRESSING`: `path` (default: `endpoint/bucket/key`) or `virtual` (`bucket.endpoint/key`).
    public var s3Addressing: String
    /// `LECTOR_S3_TIMEOUT`: seconds one request to the store may take, body included (default 60).
    public var s3Timeout: Double
    /// `LECTOR_S3_MAX_ATTEMPTS`: attempts per request, retries of 5xx, SlowDown and connection errors included
    /// (default 3, with exponential backoff and full jitter).
    public var s3MaxAttempts: Int
    /// `LECTOR_S3_CONNECTIONS`: connections one process opens to the store at most (further requests wait for
    /// one). Unset: sized to the process (`ObjectStorage.connections(settings:slots:)`).
    public var s3Connections: Int?
    /// `LECTOR_SPOOL_DIR`: where uploads are received before they go to the object store (object storage only;
    /// default `lector-spool` in the temporary folder). File storage spools under its root.
    public var spoolDirectory: String
    /// Whether `LECTOR_STORAGE` names an object store.
    public var usesObjectStorage: Bool { storage.hasPrefix("s3://") }
    /// `LECTOR_MAX_UPLOAD_BYTES`: the largest document accepted (413 above).
    public var maxUploadBytes: Int
    /// `LECTOR_MAX_BATCH_BYTES`: the largest multipart body of `POST /v1/batches` (every document together; each
    /// one is also held to `maxUploadBytes`). Default 500 MB.
    public var maxBatchBytes: Int
    /// `LECTOR_MAX_PAGE_PIXELS`: the most pixels one page may have before decoding is refused.
    public var maxPagePixels: Int
    /// `LECTOR_MAX_PAGES`: the most pages one document may have.
    public var maxPages: Int
    /// `LECTOR_SIGNING_KEY`: secret for result links; when empty, a random key is kept in
    /// `<storage root>/.signing-key` (object storage: the object `<prefix>/.signing-key`) so that every API
    /// process sharing the storage agrees on it.
    public var signingKey: String
    /// `LECTOR_RESULT_LINK_TTL`: seconds a signed result link stays valid.
    public var resultLinkTTL: Int
    /// `LECTOR_UPLOAD_URL_TTL`: seconds a direct upload's presigned PUT stays valid (object storage; default 900).
    /// The upload id then makes a job until as long again after that.
    public var uploadURLTTL: Int
    /// Seconds after which the sweeper removes a direct upload's object: twice the URL's validity (the link, then
    /// the window to submit it) and ten minutes for clocks and requests in flight.
    public var uploadMaxAge: Double { Double(2 * uploadURLTTL + 600) }
    /// `LECTOR_LONG_POLL_MAX`: cap, in seconds, on `?wait=` and `Prefer: wait=`.
    public var longPollMax: Int
    /// `LECTOR_RETRY_AFTER`: the `Retry-After` seconds sent while a job is not done.
    public var retryAfter: Int
    /// `LECTOR_WORKER_CONCURRENCY`: jobs one worker process runs at once (one engine per slot).
    public var workerConcurrency: Int
    /// `LECTOR_WORKER_POLL_INTERVAL`: seconds between claim attempts when no NOTIFY arrives.
    public var workerPollInterval: Double
    /// `LECTOR_LEASE_SECONDS`: how long a claim holds a job without a heartbeat.
    public var leaseSeconds: Int
    /// `LECTOR_HEARTBEAT_SECONDS`: how often a running job renews its lease (default: a quarter of the lease).
    public var heartbeatSeconds: Double
    /// `LECTOR_MAX_JOB_SECONDS`: longest one attempt may run; past it the lease is no longer renewed.
    public var maxJobSeconds: Double
    /// `LECTOR_RETENTION_DAYS`: ended jobs older than this many days are deleted by the workers (0: kept forever).
    public var retentionDays: Int
    /// `LECTOR_MAX_ATTEMPTS`: attempts before a job that keeps losing its worker or hitting transient errors fails.
    public var maxAttempts: Int
    /// `LECTOR_RETRY_BASE_SECONDS` and `LECTOR_RETRY_MAX_SECONDS`: exponential backoff after a transient error.
    public var retryBaseSeconds: Double
    public var retryMaxSeconds: Double
    /// `LECTOR_RESCUE_INTERVAL`: seconds between two passes of a worker's rescuer over expired leases.
    public var rescueInterval: Double
    /// `LECTOR_SHUTDOWN_GRACE`: seconds in-flight jobs get to finish after SIGTERM before they are handed back.
    public var shutdownGrace: Double
    /// `LECTOR_DATABASE_TIMEOUT`: seconds an API request waits for the database before answering 503.
    public var databaseTimeout: Double
    /// `LECTOR_RATE_LIMIT` and `LECTOR_RATE_BURST`: requests per second per API key, and the burst allowed.
    public var rateLimit: Double
    public var rateBurst: Int
    /// `LECTOR_ENGINE`: `tesseract` (default), or `noop` for benchmarks of the queue alone.
    public var engine: String
    /// `LECTOR_CLAIM`: `table-lock` (default; the claim of the design) or `skip-locked` (`FOR UPDATE SKIP
    /// LOCKED`, measured against it in BENCHMARKS.md).
    public var claimStrategy: ClaimStrategy
    /// `LECTOR_WORKER_BATCH`: the most claims, and the most ends, of one worker process written in one
    /// transaction (default 16; 1: each slot claims and ends alone). See `ClaimBatcher` and `JobStore.endBatch`.
    public var workerBatch: Int
    /// `LECTOR_PAGE_TASKS`: documents of at least this many pages are split into page tasks that any free slot of
    /// any worker reads (default 2; 0: documents are read whole by one slot). docs/design/queue.md, "Page tasks".
    public var pageTasks: Int
    /// `LECTOR_WORKER_LISTEN`: whether workers wake on NOTIFY (default) or only poll (for measuring).
    public var workerListen: Bool
    /// `LECTOR_WORKER_ID`: the name a worker writes into its transitions (default: host:pid).
    public var workerID: String?
    /// `LECTOR_TESSDATA`: Tesseract's model folder (default: Tesseract's own).
    public var tessdata: String?
    /// `LECTOR_DEFAULT_LANG`: language when a job names none.
    public var defaultLanguage: String
    /// `LECTOR_PDF_DPI`: resolution PDF pages are rasterised at (72 to 600; default 300).
    public var pdfDPI: Int
    /// `LECTOR_DB_MODEL`: the DB detector's ONNX file (default: the shipped one under deploy/models).
    public var dbModel: String?
    /// `LECTOR_EAST_MODEL`: EAST's frozen TensorFlow graph (default: where `lector models fetch east` puts it).
    public var eastModel: String?
    /// `LECTOR_LOG_LEVEL`: trace, debug, info, notice, warning, error, critical.
    public var logLevel: String
    /// `LECTOR_MAX_UPLOADS_IN_FLIGHT`: uploads one API process receives at once; beyond, 503 with Retry-After.
    public var maxUploadsInFlight: Int
    /// `LECTOR_STORAGE_RESERVE_BYTES` and `LECTOR_STORAGE_RESERVE_INODES`: below this much free space or free
    /// inodes, storage counts as full (submits 507, `/readyz` 503, workers stop claiming).
    public var storageReserveBytes: Int64
    public var storageReserveInodes: Int64
    /// `LECTOR_HTTP_HEADER_TIMEOUT`: seconds a connection may take to send a request's head (and the longest
    /// an idle keep-alive connection stays open).
    public var httpHeaderTimeout: Double
    /// `LECTOR_HTTP_BODY_TIMEOUT`: seconds a request body may take in all.
    public var httpBodyTimeout: Double
    /// `LECTOR_HTTP_MIN_BODY_RATE`: bytes per second a body must average over each `LECTOR_HTTP_RATE_WINDOW`
    /// (10 s) while the server waits for it.
    public var httpMinBodyRate: Int
    public var httpRateWindow: Double
    /// `LECTOR_MAX_DOCUMENT_SECONDS`: the longest the engine may spend on one document (all its pages).
    public var maxDocumentSeconds: Double
    /// `LECTOR_MAX_DOCUMENT_PIXELS`: the most pixels all pages of one document may have together.
    public var maxDocumentPixels: Int
    /// `LECTOR_METRICS_PORT`: where a worker serves `/metrics` and `/healthz` (on `LECTOR_HTTP_HOST`); 0 for none.
    /// The API serves `/metrics` on its own port.
    public var metricsPort: Int
    /// `LECTOR_LOG_FORMAT`: `text` (default) or `json` (one object per line).
    public var logFormat: String
    /// `LECTOR_SWEEP_INTERVAL`: seconds between two passes of the storage sweeper.
    public var sweepInterval: Double
    /// `LECTOR_ABANDONED_AGE`: seconds after which an unfinished upload, staging folder or job folder without a
    /// job is removed by the sweeper.
    public var abandonedAge: Double
    /// `LECTOR_WEBHOOK_ALLOW_PRIVATE`: also allow `http` callback URLs and private, loopback and link-local
    /// targets (tests, closed networks). Off by default.
    public var webhookAllowPrivate: Bool
    /// `LECTOR_WEBHOOK_TIMEOUT`: seconds one delivery attempt may take (connect, send, answer).
    public var webhookTimeout: Double
    /// `LECTOR_WEBHOOK_RETRY_BASE_SECONDS` and `LECTOR_WEBHOOK_RETRY_MAX_SECONDS`: backoff between delivery
    /// attempts, base · 2^(attempt−1) capped, times a jitter in [0.5, 1.5).
    public var webhookRetryBaseSeconds: Double
    public var webhookRetryMaxSeconds: Double
    /// `LECTOR_WEBHOOK_GIVE_UP_SECONDS`: how long after the job's end delivery is retried (24 h).
    public var webhookGiveUpSeconds: Double
    /// `LECTOR_WEBHOOK_POLL_INTERVAL`: seconds between a worker's looks for due deliveries.
    public var webhookPollInterval: Double
    /// `LECTOR_WEBHOOK_CONCURRENCY`: deliveries one worker process makes at once.
    public var webhookConcurrency: Int

    public static let defaults = Settings(environment: [:])

    public init(environment env: [String: String]) {
        func string(_ name: String, _ fallback: String) -> String {
            guard let value = env[name], !value.isEmpty else { return fallback }
            return value
        }
        // Values are clamped to sane ranges so that no setting can overflow arithmetic later.
        func int(_ name: String, _ fallback: Int, max upper: Int = 1 << 40) -> Int {
            guard let value = env[name], let parsed = Int(value), parsed > 0 else { return fallback }
            return min(parsed, upper)
        }
        self.databaseURL = string("LECTOR_DATABASE_URL", "postgres://lector@127.0.0.1:54329/lector")
        self.databasePoolSize = int("LECTOR_DATABASE_POOL_SIZE", 10, max: 1000)
        self.httpHost = string("LECTOR_HTTP_HOST", "127.0.0.1")
        self.httpPort = int("LECTOR_HTTP_PORT", 8080, max: 65535)
        self.storageRoot = string("LECTOR_STORAGE_ROOT", "storage")
        self.storage = string("LECTOR_STORAGE", "files")
        self.s3Endpoint = string("LECTOR_S3_ENDPOINT", "")
        self.s3Region = string("LECTOR_S3_REGION", "us-east-1")
        self.s3AccessKeyID = string("LECTOR_S3_ACCESS_KEY_ID", "")
        self.s3SecretAccessKey = string("LECTOR_S3_SECRET_ACCESS_KEY", "")
        self.s3Addressing = string("LECTOR_S3_ADDRESSING", "path").lowercased()
        self.s3MaxAttempts = int("LECTOR_S3_MAX_ATTEMPTS", 3, max: 20)
        self.s3Connections = env["LECTOR_S3_CONNECTIONS"].flatMap { Int($0) }.flatMap { $0 > 0 ? min($0, 1024) : nil }
        self.spoolDirectory = string(
            "LECTOR_SPOOL_DIR", FileManager.default.temporaryDirectory.appendingPathComponent("lector-spool", isDirectory: true).path)
        self.maxUploadBytes = int("LECTOR_MAX_UPLOAD_BYTES", 50_000_000)
        self.maxBatchBytes = int("LECTOR_MAX_BATCH_BYTES", 500_000_000)
        self.maxPagePixels = int("LECTOR_MAX_PAGE_PIXELS", 36_000_000)
        self.maxPages = int("LECTOR_MAX_PAGES", 200)
        self.signingKey = env["LECTOR_SIGNING_KEY"] ?? ""
        self.resultLinkTTL = int("LECTOR_RESULT_LINK_TTL", 300, max: 7 * 24 * 3600)
        self.uploadURLTTL = max(60, int("LECTOR_UPLOAD_URL_TTL", 900, max: 24 * 3600))
        self.longPollMax = int("LECTOR_LONG_POLL_MAX", 60, max: 3600)
        self.retryAfter = int("LECTOR_RETRY_AFTER", 1, max: 3600)
        self.workerConcurrency = int("LECTOR_WORKER_CONCURRENCY", 1, max: 256)
        self.workerPollInterval = Double(env["LECTOR_WORKER_POLL_INTERVAL"] ?? "")
            .flatMap { $0.isFinite && $0 > 0 ? min(max($0, 0.01), 3600) : nil } ?? 1.0
        func seconds(_ name: String, _ fallback: Double, min lower: Double = 0.01, max upper: Double = 86_400) -> Double {
            guard let value = env[name].flatMap(Double.init), value.isFinite, value > 0 || (lower == 0 && value == 0)
            else { return fallback }
            return Swift.min(Swift.max(value, lower), upper)
        }
        self.s3Timeout = seconds("LECTOR_S3_TIMEOUT", 60, min: 0.1, max: 3600)
        self.leaseSeconds = int("LECTOR_LEASE_SECONDS", 60, max: 86_400)
        // A heartbeat must come well within the lease, or live jobs would be rescued.
        self.heartbeatSeconds = min(seconds("LECTOR_HEARTBEAT_SECONDS", Double(leaseSeconds) / 4), Double(leaseSeconds) / 3)
        self.maxJobSeconds = seconds("LECTOR_MAX_JOB_SECONDS", 1800, min: 1)
        self.maxAttempts = int("LECTOR_MAX_ATTEMPTS", 3, max: 100)
        self.retentionDays = int("LECTOR_RETENTION_DAYS", 0, max: 1_000_000)
        self.retryBaseSeconds = seconds("LECTOR_RETRY_BASE_SECONDS", 2)
        self.retryMaxSeconds = seconds("LECTOR_RETRY_MAX_SECONDS", 300)
        self.rescueInterval = seconds("LECTOR_RESCUE_INTERVAL", 5)
        self.shutdownGrace = seconds("LECTOR_SHUTDOWN_GRACE", 30, min: 0)
        self.databaseTimeout = seconds("LECTOR_DATABASE_TIMEOUT", 5, min: 0.1, max: 600)
        self.rateLimit = seconds("LECTOR_RATE_LIMIT", 20, min: 0.001, max: 1_000_000)
        self.rateBurst = int("LECTOR_RATE_BURST", 40, max: 1_000_000)
        self.engine = string("LECTOR_ENGINE", "tesseract")
        self.claimStrategy = ClaimStrategy(rawValue: env["LECTOR_CLAIM"] ?? "") ?? .tableLock
        self.workerBatch = max(1, int("LECTOR_WORKER_BATCH", 16, max: 256))
        // 0 turns page tasks off; a document of one page is never split.
        self.pageTasks = env["LECTOR_PAGE_TASKS"].flatMap { Int($0) }.map { $0 <= 0 ? 0 : min(max($0, 2), 100_000) } ?? 2
        self.workerListen = (env["LECTOR_WORKER_LISTEN"] ?? "true") != "false"
        self.workerID = env["LECTOR_WORKER_ID"].flatMap { $0.isEmpty ? nil : $0 }
        self.tessdata = env["LECTOR_TESSDATA"].flatMap { $0.isEmpty ? nil : $0 }
        self.defaultLanguage = string("LECTOR_DEFAULT_LANG", "eng")
        self.pdfDPI = max(72, int("LECTOR_PDF_DPI", 300, max: 600))
        self.dbModel = env["LECTOR_DB_MODEL"].flatMap { $0.isEmpty ? nil : $0 }
        self.eastModel = env["LECTOR_EAST_MODEL"].flatMap { $0.isEmpty ? nil : $0 }
        self.logLevel = string("LECTOR_LOG_LEVEL", "info")
        self.maxUploadsInFlight = int("LECTOR_MAX_UPLOADS_IN_FLIGHT", 64, max: 100_000)
        self.storageReserveBytes = Int64(int("LECTOR_STORAGE_RESERVE_BYTES", 256 << 20))
        self.storageReserveInodes = Int64(int("LECTOR_STORAGE_RESERVE_INODES", 1000))
        self.httpHeaderTimeout = seconds("LECTOR_HTTP_HEADER_TIMEOUT", 30, min: 0.1, max: 3600)
        self.httpBodyTimeout = seconds("LECTOR_HTTP_BODY_TIMEOUT", 600, min: 0.1, max: 86_400)
        self.httpMinBodyRate = int("LECTOR_HTTP_MIN_BODY_RATE", 1024, max: 1 << 30)
        self.httpRateWindow = seconds("LECTOR_HTTP_RATE_WINDOW", 10, min: 0.5, max: 3600)
        self.maxDocumentSeconds = seconds("LECTOR_MAX_DOCUMENT_SECONDS", 600, min: 1)
        self.maxDocumentPixels = int("LECTOR_MAX_DOCUMENT_PIXELS", 1_000_000_000)
        self.metricsPort = env["LECTOR_METRICS_PORT"].flatMap(Int.init).map { min(max($0, 0), 65535) } ?? 0
        self.logFormat = string("LECTOR_LOG_FORMAT", "text").lowercased()
        self.sweepInterval = seconds("LECTOR_SWEEP_INTERVAL", 600, min: 1)
        // Never below the longest a body may take, or a slow upload could be swept from under its request.
        self.abandonedAge = max(seconds("LECTOR_ABANDONED_AGE", 3600, min: 60), httpBodyTimeout + 60)
        self.webhookAllowPrivate = (env["LECTOR_WEBHOOK_ALLOW_PRIVATE"] ?? "false").lowercased() == "true"
        self.webhookTimeout = seconds("LECTOR_WEBHOOK_TIMEOUT", 10, min: 0.1, max: 120)
        self.webhookRetryBaseSeconds = seconds("LECTOR_WEBHOOK_RETRY_BASE_SECONDS", 5)
        self.webhookRetryMaxSeconds = seconds("LECTOR_WEBHOOK_RETRY_MAX_SECONDS", 3600)
        self.webhookGiveUpSeconds = seconds("LECTOR_WEBHOOK_GIVE_UP_SECONDS", 86_400, min: 1, max: 30 * 86_400)
        self.webhookPollInterval = seconds("LECTOR_WEBHOOK_POLL_INTERVAL", 1, max: 3600)
        self.webhookConcurrency = int("LECTOR_WEBHOOK_CONCURRENCY", 4, max: 256)
    }
}

/// How a worker claims a job.
public enum ClaimStrategy: String, Sendable, CaseIterable {
    /// `LOCK TABLE job_claim_lock IN EXCLUSIVE MODE`, then the oldest queued job: claimers take turns.
    case tableLock = "table-lock"
    /// `SELECT … FOR UPDATE SKIP LOCKED` on the oldest queued job: claimers skip each other's rows.
    case skipLocked = "skip-locked"
}
