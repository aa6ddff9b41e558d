import ArgumentParser
import Foundation
import LectorCore
import LectorModel

struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Look at the queue.", subcommands: [Stats.self])

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts by status, the oldest queued job's age, expired leases, jobs waiting to retry.")

        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.jobs", settings: settings)
            let stats = try await Runtime.withClient(settings, logger: logger) { client in
                try await JobStore(client: client, logger: logger).stats()
            }
            let counts = Dictionary(uniqueKeysWithValues: JobStatus.allCases.map { ($0.rawValue, stats.counts[$0] ?? 0) })
            if json {
                var object: [String: Any] = counts
                object["oldestQueuedSeconds"] = stats.oldestQueuedAge.map { ($0 * 10).rounded() / 10 } ?? NSNull()
                object["expiredLeases"] = stats.expiredLeases
                object["waitingForRetry"] = stats.waitingForRetry
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                for status in JobStatus.allCases { print("\(status.rawValue)\t\(counts[status.rawValue] ?? 0)") }
                print("oldest queued\t\(stats.oldestQueuedAge.map { String(format: "%.1f s", $0) } ?? "-")")
                print("expired leases\t\(stats.expiredLeases)")
                print("waiting to retry\t\(stats.waitingForRetry)")
            }
        }
    }
}
