import Logging
import PostgresNIO
import ServiceLifecycle

/// A `Service` that holds one connection LISTENing on a channel and hands each payload to a closure.
///
/// When the connection drops (the database restarted), it reconnects with a capped backoff and calls
/// `onListening` again once LISTEN is back, so that waiters recheck what they may have missed.
public struct NotificationListener: Service {
    public let client: PostgresClient
    public let channel: String
    public let logger: Logger
    public let onListening: @Sendable () -> Void
    public let onNotification: @Sendable (String) -> Void

    public init(
        client: PostgresClient, channel: String, logger: Logger,
        onListening: @escaping @Sendable () -> Void = {},
        onNotification: @escaping @Sendable (String) -> Void
    ) {
        self.client = client
        self.channel = channel
        self.logger = logger
        self.onListening = onListening
        self.onNotification = onNotification
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var delay = Duration.milliseconds(100)
            while !Task.isCancelled {
                do {
                    try await client.withConnection { connection in
                        try await connection.listen(on: channel) { notifications in
                            logger.debug("listening", metadata: ["channel": "\(channel)"])
                            delay = .milliseconds(100)
                            onListening()
                            for try await notification in notifications {
                                onNotification(notification.payload)
                            }
                        }
                    }
                } catch {
                    if Task.isCancelled { break }
                    logger.warning(
                        "LISTEN connection lost; reconnecting",
                        metadata: ["channel": "\(channel)", "error": "\(String(reflecting: error))"])
                }
                // Waiters recheck on their own timeouts meanwhile; signal them so none waits for a lost NOTIFY.
                onListening()
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }
}
