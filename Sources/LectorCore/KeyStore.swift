import Foundation
import Logging
import PostgresNIO

/// The authenticated caller of a request.
public struct AuthenticatedUser: Sendable, Equatable {
    public let id: Int64
    public let name: String
    public let keyID: Int64
    /// The key's default callback URL (`lector keys webhook`), used when a submit names none.
    public var defaultCallbackURL: String? = nil
    /// Whether the user has a webhook signing secret (a submit with a callback URL needs one).
    public var hasWebhookSecret: Bool = false

    public init(id: Int64, name: String, keyID: Int64, defaultCallbackURL: String? = nil, hasWebhookSecret: Bool = false) {
        self.id = id
        self.name = name
        self.keyID = keyID
        self.defaultCallbackURL = defaultCallbackURL
        self.hasWebhookSecret = hasWebhookSecret
    }
}

/// One API key as `lector keys list` shows it (never the secret).
public struct APIKeyInfo: Sendable {
    public let id: Int64
    public let user: String
    public let prefix: String
    public let createdAt: Date
    public let revokedAt: Date?
}

/// Users and API keys. All user and key SQL of the product lives in this file.
public struct KeyStore: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger.clampedForDatabase()
    }

    /// Creates a key for `user` (creating the user when new) and returns it: the only time the secret exists
    /// outside the client's hands.
    public func createKey(forUser user: String) async throws -> (id: Int64, key: APIKey) {
        let key = APIKey.generate()
        let id = try await client.withTransaction(logger: logger) { connection -> Int64 in
            let users = try await connection.query(
                """
                INSERT INTO users (name) VALUES (\(user))
                ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
                RETURNING id
                """,
                logger: logger
            )
            var userID: Int64?
            for try await id in users.decode(Int64.self) { userID = id }
            guard let userID else { throw KeyStoreError(description: "could not create user \(user)") }
            let keys = try await connection.query(
                """
                INSERT INTO api_keys (user_id, prefix, secret_hash)
                VALUES (\(userID), \(key.prefix), \(ByteBuffer(bytes: key.secretDigest)))
                RETURNING id
                """,
                logger: logger
            )
            for try await id in keys.decode(Int64.self) { return id }
            throw KeyStoreError(description: "could not create a key for \(user)")
        }
        return (id, key)
    }

    /// The user a token belongs to, or nil when the token is malformed, unknown or revoked.
    /// The digest comparison runs in constant time.
    public func authenticate(token: String) async throws -> AuthenticatedUser? {
        guard let key = APIKey(token: token) else { return nil }
        let rows = try await client.execute(AuthenticateStatement(prefix: key.prefix), logger: logger)
        let digest = key.secretDigest
        for try await (keyID, stored, userID, name, webhookURL, hasSecret) in rows {
            guard constantTimeEquals(stored.readableBytesView, digest) else { return nil }
            return AuthenticatedUser(
                id: userID, name: name, keyID: keyID, defaultCallbackURL: webhookURL, hasWebhookSecret: hasSecret)
        }
        return nil
    }

    public func listKeys() async throws -> [APIKeyInfo] {
        let rows = try await client.query(
            """
            SELECT k.id, u.name, k.prefix, k.created_at, k.revoked_at
            FROM api_keys k JOIN users u ON u.id = k.user_id ORDER BY k.id
            """,
            logger: logger
        )
        var keys: [APIKeyInfo] = []
        for try await row in rows.decode((Int64, String, String, Date, Date?).self) {
            keys.append(APIKeyInfo(id: row.0, user: row.1, prefix: row.2, createdAt: row.3, revokedAt: row.4))
        }
        return keys
    }

    /// Creates or replaces the user's webhook signing secret and returns it: the only time it is shown. Stored
    /// as it is (Lector signs with it); nil when the user does not exist.
    public func rotateWebhookSecret(user: String) async throws -> WebhookSecret? {
        let secret = WebhookSecret.generate()
        let rows = try await client.query(
            "UPDATE users SET webhook_secret = \(secret.text) WHERE name = \(user) RETURNING id", logger: logger)
        for try await _ in rows { return secret }
        return nil
    }

    /// Sets (or, with nil, clears) a live key's default callback URL. The caller checks the URL first
    /// (`CallbackURLPolicy`). `KeyStoreError` when the key is unknown or revoked, or its user has no webhook
    /// secret yet (nothing could be signed).
    public func setDefaultCallbackURL(keyID: Int64, url: String?) async throws {
        let rows = try await client.query(
            """
            UPDATE api_keys k SET webhook_url = \(url)
            FROM users u
            WHERE k.id = \(keyID) AND k.revoked_at IS NULL AND u.id = k.user_id
              AND (u.webhook_secret IS NOT NULL OR \(url)::text IS NULL)
            RETURNING k.id
            """,
            logger: logger)
        for try await _ in rows { return }
        throw KeyStoreError(description:
            "no live key with ID \(keyID), or its user has no webhook secret yet (lector keys webhook-secret --user NAME)")
    }

    /// Revokes a key; returns false when no live key has that id.
    public func revokeKey(id: Int64) async throws -> Bool {
        let rows = try await client.query(
            "UPDATE api_keys SET revoked_at = now() WHERE id = \(id) AND revoked_at IS NULL RETURNING id",
            logger: logger
        )
        for try await _ in rows { return true }
        return false
    }
}

public struct KeyStoreError: Error, CustomStringConvertible {
    public let description: String
}

extension Logger {
    /// A copy that logs at `.info` or above: PostgresNIO logs every backend message (rows included, such as
    /// key digests) at `trace`, and those must never reach the logs whatever `LECTOR_LOG_LEVEL` says.
    public func clampedForDatabase() -> Logger {
        var copy = self
        if copy.logLevel < .info { copy.logLevel = .info }
        return copy
    }
}

/// A database error for the logs: its SQLSTATE and the server's message, never the detail or context
/// (which can quote row values) nor the query's bound values.
public func describeDatabaseError(_ error: any Error) -> String {
    if let error = error as? PSQLError {
        let state = error.serverInfo?[.sqlState] ?? "-"
        let message = error.serverInfo?[.message] ?? "\(error.code)"
        return "PSQLError \(error.code) sqlstate=\(state): \(message)"
    }
    if let error = error as? PostgresTransactionError {
        let inner = error.closureError ?? error.commitError ?? error.beginError ?? error.rollbackError
        return "transaction failed: " + (inner.map(describeDatabaseError) ?? "unknown")
    }
    if error is PostgresDecodingError { return "PostgresDecodingError (row values withheld)" }
    return String(describing: type(of: error)) + ": " + String(describing: error)
}
