import Foundation
import LectorModel
import Logging
import ServiceLifecycle

/// The queue's two protocols, in PostgreSQL: every method is the store's own (all SQL stays in `JobStore`), and
/// the notifications are LISTEN connections on `queuedChannel` and `cancelChannel`.
extension JobStore: WorkQueue, JobQueue {
    public func queuedListener(logger: Logger, onQueued: @escaping @Sendable () -> Void) -> any Service {
        NotificationListener(
            client: client, channel: Self.queuedChannel, logger: logger,
            onListening: onQueued, onNotification: { _ in onQueued() })
    }

    public func cancelListener(
        logger: Logger, onListening: @escaping @Sendable () -> Void, onCancel: @escaping @Sendable (UUID) -> Void
    ) -> any Service {
        NotificationListener(
            client: client, channel: Self.cancelChannel, logger: logger, onListening: onListening,
            onNotification: { payload in
                guard let id = UUID(uuidString: payload) else { return }
                onCancel(id)
            })
    }
}
