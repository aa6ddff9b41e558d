import Foundation
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import LectorOCR
import LectorWorker
import Logging
import NIOCore
import PostgresNIO

/// A fresh database, a temporary storage root, and the API's and worker's dependencies built on them.
struct TestHarness: Sendable {
    let client: PostgresClient
    let jobs: JobStore
    let keys: KeyStore
    let storage: FileStorage
    let settings: Settings
    let dependencies: APIDependencies
    let engines: TesseractEngineFactory

    static let languages: Set<String> = {
        (try? TesseractEngineFactory(dataPath: nil, limits: OCRLimits(maxPagePixels: 1, maxPages: 1)).availableLanguages()) ?? []
    }()

    static func run<T: Sendable>(
        environment: [String: String] = [:], _ body: @Sendable (TestHarness) async throws -> T
    ) async throws -> T {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("lector-test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        return try await TestDatabase.withFreshDatabase { client, _ in
            var env = environment
            env["LECTOR_STORAGE_ROOT"] = env["LECTOR_STORAGE_ROOT"] ?? root.path
            env["LECTOR_WORKER_POLL_INTERVAL"] = env["LECTOR_WORKER_POLL_INTERVAL"] ?? "0.2"
            let settings = Settings(environment: env)
            let logger = TestDatabase.logger
            let storage = try FileStorage(settings: settings)
            let engines = TesseractEngineFactory(
                dataPath: nil, limits: OCRLimits(maxPagePixels: settings.maxPagePixels, maxPages: settings.maxPages, maxDocumentPixels: settings.maxDocumentPixels, maxDocumentTime: .milliseconds(Int64(settings.maxDocumentSeconds * 1000))))
            let jobs = JobStore(client: client, logger: logger)
            let keys = KeyStore(client: client, logger: logger)
            let dependencies = APIDependencies(
                jobs: jobs, keys: keys, storage: storage,
                signer: ResultLinkSigner(key: Array("test-signing-key-0123456789abcdef".utf8), ttl: settings.resultLinkTTL),
                waiters: WaitRegistry(), settings: settings, supportedTypes: engines.supportedTypes,
                availableLanguages: languages)
            let harness = TestHarness(
                client: client, jobs: jobs, keys: keys, storage: storage, settings: settings,
                dependencies: dependencies, engines: engines)
            return try await body(harness)
        }
    }

    /// A new user with a key; returns the bearer header value.
    func newUser(_ name: String = "user-\(UUID().uuidString.prefix(6))") async throws -> (token: String, keyID: Int64) {
        let (id, key) = try await keys.createKey(forUser: name)
        return (key.token, id)
    }

    /// The worker's services as `lector work` wires them (`buildWorkerServices`), on this harness's settings,
    /// queue and storage, with the Tesseract engine unless `engines` is given; `configure` adjusts the worker.
    func workerServices(
        id: String = "test-worker", engines: (any OCREngineFactory)? = nil, configure: (inout WorkerConfiguration) -> Void = { _ in }
    ) -> WorkerServices {
        var configuration = WorkerConfiguration(settings: settings, workerID: id)
        configure(&configuration)
        return buildWorkerServices(
            settings: settings, jobs: jobs, storage: storage, engines: engines ?? self.engines, configuration: configuration,
            logger: TestDatabase.logger)
    }

    /// Runs a worker and its two listeners (from `workerServices`) while `body` runs.
    func withWorker<T: Sendable>(concurrency: Int = 1, _ body: @Sendable () async throws -> T) async throws -> T {
        let services = workerServices { $0.concurrency = concurrency }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            for service in [services.queuedListener, services.cancelListener, services.worker].compactMap({ $0 }) {
                group.addTask {
                    try await service.run()
                    return nil
                }
            }
            defer { group.cancelAll() }
            return try await body()
        }
    }

    /// The API application with its LISTEN service, for `app.test(.router)`.
    func application() -> some ApplicationProtocol {
        buildApplication(dependencies: dependencies, logger: TestDatabase.logger)
    }
}

/// Builds multipart/form-data bodies.
struct Multipart {
    let boundary = "lector-test-\(UUID().uuidString)"
    private(set) var body = ByteBuffer()

    var contentType: String { "multipart/form-data; boundary=\(boundary)" }

    mutating func add(name: String, filename: String? = nil, contentType: String? = nil, data: Data) {
        var header = "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\""
        if let filename { header += "; filename=\"\(filename)\"" }
        header += "\r\n"
        if let contentType { header += "Content-Type: \(contentType)\r\n" }
        header += "\r\n"
        body.writeString(header)
        body.writeBytes(data)
        body.writeString("\r\n")
    }

    mutating func add(name: String, json: String) {
        add(name: name, contentType: "application/json", data: Data(json.utf8))
    }

    func finished() -> ByteBuffer {
        var copy = body
        copy.writeString("--\(boundary)--\r\n")
        return copy
    }
}

/// Test images rendered here, by ImageMagick from Debian (not the /usr/local/bin stand-in).
enum TestImages {
    static let convert = "/usr/bin/convert"

    /// A white page with each line of `lines` in black DejaVu Sans.
    static func render(_ lines: [String], width: Int = 1200, format: String = "png") throws -> Data {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).\(format)")
        defer { try? FileManager.default.removeItem(at: output) }
        var arguments = ["-size", "\(width)x\(100 * lines.count + 60)", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "44", "-fill", "black"]
        for (index, line) in lines.enumerated() {
            arguments += ["-annotate", "+40+\(100 * index + 90)", line]
        }
        // 8 bits per sample: ImageMagick's default grey TIFF is 16-bit, which Leptonica 1.82 does not decode.
        arguments += ["-depth", "8", "\(format):\(output.path)"]
        try runTool(convert, arguments)
        return try Data(contentsOf: output)
    }

    /// A tool's standard output.
    static func output(_ path: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    static func runTool(_ path: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("\(path) \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension TestResponse {
    /// The body parsed as a JSON object.
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] ?? [:]
    }

    /// `error.code` of a JSON error body.
    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
}
