import Foundation
import Logging
import PostgresNIO

/// Applies the numbered SQL files of `db/` in order and records each in `schema_migrations`.
///
/// Each file runs in one transaction, under an advisory lock, so two processes migrating at once apply each
/// file exactly once. PostgresNIO speaks the extended protocol (one statement per query), so files are split
/// into statements by `SQLStatementSplitter`, which understands quotes, dollar quotes and comments.
public struct Migrator: Sendable {
    public struct Migration: Sendable, Equatable {
        public let version: Int
        public let name: String
        public let sql: String
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private static let advisoryLockKey: Int64 = 0x4C45_4354_4F52  // "LECTOR"

    /// The newest migration this build's SQL relies on. `serve` and `work` refuse to start on an older schema:
    /// a prepared statement whose function is missing would fail on that connection for good.
    public static let requiredVersion = 14

    /// The newest migration applied to the database, or 0 when none is.
    public static func appliedVersion(client: PostgresClient, logger: Logger) async throws -> Int {
        do {
            let rows = try await client.query("SELECT coalesce(max(version), 0) FROM schema_migrations", logger: logger)
            var version = 0
            for try await applied in rows.decode(Int.self) { version = applied }
            return version
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42P01" {
            return 0  // no schema_migrations table: nothing was ever migrated
        }
    }

    public let migrations: [Migration]

    public init(migrations: [Migration]) {
        self.migrations = migrations.sorted { $0.version < $1.version }
    }

    /// Reads `NNN_name.sql` files from a folder.
    public init(directory: String) throws {
        let url = URL(fileURLWithPath: directory, isDirectory: true)
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: url.path)
        } catch {
            throw Failure(description: "cannot read the migrations folder \(directory): \(error.localizedDescription)")
        }
        var migrations: [Migration] = []
        for name in names where name.hasSuffix(".sql") {
            guard let version = Int(name.prefix { $0.isNumber }) else {
                throw Failure(description: "migration file \(name) does not start with a number")
            }
            let sql = try String(contentsOf: url.appendingPathComponent(name), encoding: .utf8)
            migrations.append(Migration(version: version, name: name, sql: sql))
        }
        let versions = migrations.map(\.version)
        guard Set(versions).count == versions.count else {
            throw Failure(description: "two migration files share a number in \(directory)")
        }
        self.init(migrations: migrations)
    }

    /// Applies what is missing; returns the versions applied now.
    @discardableResult
    public func migrate(client: PostgresClient, logger: Logger) async throws -> [Int] {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.advisoryLockKey))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                """,
                logger: logger
            )
        }
        var applied: [Int] = []
        for migration in migrations {
            let didApply = try await client.withTransaction(logger: logger) { connection -> Bool in
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.advisoryLockKey))", logger: logger)
                let rows = try await connection.query(
                    "SELECT 1 FROM schema_migrations WHERE version = \(migration.version)", logger: logger)
                for try await _ in rows { return false }
                for statement in SQLStatementSplitter.split(migration.sql) {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger)
                return true
            }
            if didApply {
                logger.info("applied migration", metadata: ["migration": "\(migration.name)"])
                applied.append(migration.version)
            }
        }
        return applied
    }
}

/// Splits a SQL script into statements at top-level semicolons.
public enum SQLStatementSplitter {
    public static func split(_ script: String) -> [String] {
        var statements: [String] = []
        var current = ""
        let chars = Array(script)
        var i = 0
        var dollarTag: String?  // inside $tag$ ... $tag$
        var inSingleQuote = false
        var inDoubleQuote = false
        while i < chars.count {
            let c = chars[i]
            let next: Character? = i + 1 < chars.count ? chars[i + 1] : nil
            if let tag = dollarTag {
                if c == "$", String(chars[i..<min(chars.count, i + tag.count)]) == tag {
                    current += tag
                    i += tag.count
                    dollarTag = nil
                    continue
                }
            } else if inSingleQuote {
                if c == "'" { inSingleQuote = false }
            } else if inDoubleQuote {
                if c == "\"" { inDoubleQuote = false }
            } else if c == "-", next == "-" {
                while i < chars.count, chars[i] != "\n" { i += 1 }
                continue
            } else if c == "/", next == "*" {
                i += 2
                while i + 1 < chars.count, !(chars[i] == "*" && chars[i + 1] == "/") { i += 1 }
                i += 2
                continue
            } else if c == "'" {
                inSingleQuote = true
            } else if c == "\"" {
                inDoubleQuote = true
            } else if c == "$" {
                var j = i + 1
                while j < chars.count, chars[j].isLetter || chars[j].isNumber || chars[j] == "_" { j += 1 }
                if j < chars.count, chars[j] == "$" {
                    let tag = String(chars[i...j])
                    current += tag
                    i = j + 1
                    dollarTag = tag
                    continue
                }
            } else if c == ";" {
                let trimmed = current.trimmingCharacters(in: .whitespacesAndNewlines)
                if !trimmed.isEmpty { statements.append(trimmed) }
                current = ""
                i += 1
                continue
            }
            current.append(c)
            i += 1
        }
        let trimmed = current.trimmingCharacters(in: .whitespacesAndNewlines)
        if !trimmed.isEmpty { statements.append(trimmed) }
        return statements
    }
}
