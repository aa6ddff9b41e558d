import ArgumentParser
import Foundation
import LectorCore

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage API keys and webhook settings.",
        subcommands: [Create.self, List.self, Revoke.self, Webhook.self, WebhookSecretCommand.self])

    struct Webhook: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a key's default callback URL, used by its submits that name none (--clear removes it).")
        @Option(help: "The key's ID from `keys list`.") var key: Int64
        @Option(help: "An https URL (http and private addresses only with LECTOR_WEBHOOK_ALLOW_PRIVATE=true).") var url: String?
        @Flag(help: "Remove the key's default callback URL.") var clear = false

        func validate() throws {
            guard (url == nil) == clear else { throw ValidationError("give either --url or --clear") }
        }

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let checked: String?
            if let url {
                // The same checks as a submit's callbackUrl, the resolution included (without a time limit here).
                let policy = CallbackURLPolicy(allowPrivate: settings.webhookAllowPrivate)
                do {
                    let target = try policy.check(url)
                    _ = try await policy.resolve(target)
                    checked = target.url
                } catch let error as CallbackURLRefused {
                    throw ValidationError(error.description)
                }
            } else {
                checked = nil
            }
            try await Runtime.withClient(settings, logger: logger) { [key] client in
                try await KeyStore(client: client, logger: logger).setDefaultCallbackURL(keyID: key, url: checked)
            }
            print(checked.map { "key \(key) now calls \($0) when its jobs end" } ?? "key \(key) has no default callback URL")
        }
    }

    struct WebhookSecretCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "webhook-secret",
            abstract: "Create or replace a user's webhook signing secret and print it once (pending deliveries are then signed with the new one).")
        @Option(help: "The user.") var user: String

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let secret = try await Runtime.withClient(settings, logger: logger) { [user] client in
                try await KeyStore(client: client, logger: logger).rotateWebhookSecret(user: user)
            }
            guard let secret else { throw ValidationError("no user named \(user)") }
            print(secret.text)
            FileHandle.standardError.write(Data("webhook secret of \(user) set; it is shown only now\n".utf8))
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; it is printed once.")
        @Option(help: "The user the key belongs to (created when new).") var user: String

        func run() async throws {
            guard !user.isEmpty, user.count <= 200 else { throw ValidationError("--user must be 1 to 200 characters") }
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let (id, key) = try await Runtime.withClient(settings, logger: logger) { [user] client in
                try await KeyStore(client: client, logger: logger).createKey(forUser: user)
            }
            print(key.token)
            FileHandle.standardError.write(Data("key \(id) created for \(user); it is shown only now\n".utf8))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (never their secrets).")

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let keys = try await Runtime.withClient(settings, logger: logger) { client in
                try await KeyStore(client: client, logger: logger).listKeys()
            }
            print("ID\tUSER\tPREFIX\tCREATED\tREVOKED")
            for key in keys {
                print("\(key.id)\t\(key.user)\tlk_\(key.prefix)_…\t\(ISO8601.string(from: key.createdAt))\t\(key.revokedAt.map(ISO8601.string(from:)) ?? "-")")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key at once.")
        @Argument(help: "The key's ID from `keys list`.") var id: Int64

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let revoked = try await Runtime.withClient(settings, logger: logger) { [id] client in
                try await KeyStore(client: client, logger: logger).revokeKey(id: id)
            }
            guard revoked else { throw ValidationError("no live key with ID \(id)") }
            print("key \(id) revoked")
        }
    }
}
