import ArgumentParser
import LectorAPI
import LectorCore
import ServiceLifecycle

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HTTP API.")

    @Option(help: "Address to listen on (LECTOR_HTTP_HOST).") var host: String?
    @Option(help: "Port to listen on (LECTOR_HTTP_PORT).") var port: Int?

    func run() async throws {
        var settings = Runtime.settings()
        if let host { settings.httpHost = host }
        if let port { settings.httpPort = port }
        let logger = Runtime.logger("lector.api", settings: settings)
        try await Runtime.checkSchema(settings, logger: logger)
        let client = try Runtime.postgresClient(settings, logger: logger)
        try await Runtime.withStorage(settings, slots: nil, logger: logger) { storage, storageServices in
            let signingKey = try await Runtime.signingKey(settings, storage: storage)
            let engines = Runtime.engineFactory(settings)
            var dependencies = APIDependencies(
                jobs: JobStore(client: client, logger: logger), keys: KeyStore(client: client, logger: logger),
                storage: storage, signer: ResultLinkSigner(key: signingKey, ttl: settings.resultLinkTTL),
                waiters: WaitRegistry(), settings: settings, supportedTypes: engines.supportedTypes,
                availableLanguages: try engines.availableLanguages(), availableDetectors: engines.models.available)
            dependencies.availableRecognizers = engines.availableRecognizers
            // The store's HTTP client after the database and before its users: it is shut down after them.
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: client)] + storageServices + buildAPIServices(dependencies: dependencies, logger: logger),
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }
}
