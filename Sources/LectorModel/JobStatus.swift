/// The closed set of job states, spelled the same in SQL, Swift and the API.
///
/// A job's status is the status of its latest transition in `job_transitions`.
public enum JobStatus: String, Sendable, Codable, CaseIterable {
    case queued = "QUEUED"
    case inProgress = "IN_PROGRESS"
    case finished = "FINISHED"
    case failure = "FAILURE"

    /// Whether the job has ended: no later transition will follow.
    public var isTerminal: Bool {
        switch self {
        case .finished, .failure: true
        case .queued, .inProgress: false
        }
    }
}
