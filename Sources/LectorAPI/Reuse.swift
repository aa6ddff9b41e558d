import Foundation
import LectorCore
import LectorModel
import Logging

/// Reuse of identical work (db/011): a new job of the same owner, with the same document and options as a
/// finished job made by the fleet's current engine, is finished at once with a copy of that job's results,
/// unless its options say `reuse: false`. Copies, never links: deleting either job leaves the other whole.
extension JobsController {
    /// The finished job whose results a new job may take, or nil. A job with dependencies never reuses (it is meant
    /// to wait for them, and to fail with them); a failed look-up is no reason to refuse the submit (nil).
    func reusableResult(
        user: AuthenticatedUser, sha256: [UInt8], optionsJSON: String, reuse: Bool, dependsOn: [UUID], logger: Logger
    ) async -> ReusableResult? {
        guard reuse, dependsOn.isEmpty else { return nil }
        let retention = dependencies.settings.retentionDays
        do {
            return try await database { [jobs = dependencies.jobs] in
                try await jobs.reusableJob(
                    ownerID: user.id, sha256: sha256, optionsJSON: optionsJSON, maxAgeDays: retention > 0 ? retention : nil)
            }
        } catch {
            logger.warning("the look-up for reusable results failed; the job is read", metadata: ["error": "\(String(reflecting: error))"])
            return nil
        }
    }

    /// Copies a finished job's result files (every format it has, and its page pictures) into a new job's folder,
    /// before the new job's row exists. False when they could not all be copied (the source was deleted
    /// meanwhile, or storage failed): the new job is then queued and read as any other, and its worker's results
    /// replace whatever was copied (the same document and options make the same files).
    func copyResults(of source: ReusableResult, to id: UUID, logger: Logger) async -> Bool {
        do {
            // result.json first: it is in every finished job (without it the source is gone), and it counts the pages.
            guard let json = try await dependencies.storage.readResult(id: source.jobID, fileName: ResultFormat.json.fileName) else { return false }
            var pages = source.pages ?? 1
            if case .object(let members)? = JSONValue.parse(json), case .array(let list)? = members["pages"] { pages = list.count }
            try await dependencies.storage.writeResult(id: id, fileName: ResultFormat.json.fileName, contents: json)
            var names = ResultFormat.allCases.filter { $0 != .json }.map(\.fileName)
            for page in 1...max(1, pages) {
                names += [ResultFiles.preview(page: page), ResultFiles.thumbnail(page: page)]
            }
            for name in names {
                guard let data = try await dependencies.storage.readResult(id: source.jobID, fileName: name) else {
                    if name == ResultFormat.txt.fileName { return false }
                    continue
                }
                try await dependencies.storage.writeResult(id: id, fileName: name, contents: data)
            }
            return true
        } catch {
            logger.warning("reusable results could not be copied; the job is read", metadata: [
                "source": "\(source.jobID.uuidString.lowercased())", "error": "\(String(reflecting: error))",
            ])
            return false
        }
    }
}
