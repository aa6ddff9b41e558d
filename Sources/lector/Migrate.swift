import ArgumentParser
import LectorCore

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the SQL migrations in db/.")

    @Option(help: "Folder of numbered .sql files.") var directory = "db"

    func run() async throws {
        let settings = Runtime.settings()
        let logger = Runtime.logger("lector.migrate", settings: settings)
        let migrator = try Migrator(directory: directory)
        let applied = try await Runtime.withClient(settings, logger: logger) { client in
            try await migrator.migrate(client: client, logger: logger)
        }
        print(applied.isEmpty ? "database is up to date" : "applied migrations: \(applied.map(String.init).joined(separator: ", "))")
    }
}
