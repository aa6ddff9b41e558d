import Foundation

/// Claims for many slots of one process in few transactions: `GroupCommit` applied to the claim.
///
/// A slot that wants a job while no claim is in flight claims at once, for itself and for every slot that asked
/// meanwhile (up to `maxBatch`), in one `WorkQueue.claimBatch` call; slots that ask while a claim is in flight
/// share the next one. So a lone slot claims exactly as before (one job, no added delay), and slots that become
/// idle together, as under a backlog or when a job is queued to a waiting fleet, share one transaction. Each job
/// keeps the lease of the slot it was claimed for. A failed claim fails every slot of its batch.
public final class ClaimBatcher: Sendable {
    private let batches: GroupCommit<String, ClaimedJob?>

    public init(queue: any WorkQueue, leaseDuration: Duration, strategy: ClaimStrategy, maxBatch: Int) {
        self.batches = GroupCommit(maxBatch: min(maxBatch, JobStore.maxClaimBatch)) { workers in
            // Slot names are unique in a process, and a slot claims one job at a time: a name twice would leave
            // the second job leased to nobody until the rescuer.
            precondition(Set(workers).count == workers.count, "a claim batch names each slot once")
            do {
                let jobs = try await queue.claimBatch(workers: workers, leaseDuration: leaseDuration, strategy: strategy, now: nil)
                let byWorker = Dictionary(jobs.map { ($0.lease.worker, $0) }, uniquingKeysWith: { first, _ in first })
                return workers.map { .success(byWorker[$0]) }
            } catch {
                return workers.map { _ in .failure(error) }
            }
        }
    }

    public var maxBatch: Int { batches.maxBatch }

    /// How many slots wait for the claim in flight.
    public var waiting: Int { batches.waiting }

    /// The next claimable job for `worker` (a slot's name), or nil when none is claimable.
    public func claim(worker: String) async throws -> ClaimedJob? {
        try await batches.submit(worker)
    }
}
