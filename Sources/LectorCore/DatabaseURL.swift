import Foundation
import PostgresNIO

/// Turns `LECTOR_DATABASE_URL` into a `PostgresClient.Configuration`.
///
/// Accepted: `postgres://user[:password]@host[:port]/database`, and `?host=/socket/dir` for a Unix socket
/// (`postgres://user@/database?host=/run/postgresql&port=5432`). `sslmode`: `disable` (default), `prefer`,
/// `require`; `verify-ca` and `verify-full` require TLS with certificate and host-name verification, which is
/// what the client configuration does for any TLS connection.
public enum DatabaseURL {
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public static func configuration(from string: String) throws -> PostgresClient.Configuration {
        guard let url = URLComponents(string: string), url.scheme == "postgres" || url.scheme == "postgresql" else {
            throw Invalid(description: "LECTOR_DATABASE_URL must look like postgres://user@host:port/database")
        }
        let query = Dictionary((url.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        let user = url.percentEncodedUser?.removingPercentEncoding ?? "postgres"
        let password = url.percentEncodedPassword?.removingPercentEncoding
        var database = url.path
        if database.hasPrefix("/") { database.removeFirst() }
        let port = url.port ?? query["port"].flatMap(Int.init) ?? 5432
        if let socketDirectory = query["host"], socketDirectory.hasPrefix("/") {
            return PostgresClient.Configuration(
                unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(port)",
                username: user, password: password, database: database.isEmpty ? nil : database
            )
        }
        guard let host = url.host, !host.isEmpty else {
            throw Invalid(description: "LECTOR_DATABASE_URL has no host")
        }
        let tls: PostgresClient.Configuration.TLS
        switch query["sslmode"] ?? "disable" {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        case let other: throw Invalid(description: "LECTOR_DATABASE_URL has an unknown sslmode '\(other)'")
        }
        return PostgresClient.Configuration(
            host: host, port: port, username: user, password: password,
            database: database.isEmpty ? nil : database, tls: tls
        )
    }

    /// The same URL with another database name (tests and `make` use it to reach the maintenance database).
    public static func replacingDatabase(in string: String, with database: String) -> String {
        guard var url = URLComponents(string: string) else { return string }
        url.path = "/" + database
        return url.string ?? string
    }
}
