import Foundation

/// Private temporary folders of the engine (a PDF's rendered pages, the searchable-PDF renderer's output) and of
/// the worker (a document streamed from object storage).
///
/// Each is named `lector-scratch-<pid>-<kind>-<uuid>` in the temporary directory and removed on every normal
/// path, errors included. A process killed meanwhile leaves its folder; `sweep` removes the folders of
/// processes that no longer exist, so a worker restarted after a crash cleans up after its predecessor.
public enum ScratchFolder {
    static let prefix = "lector-scratch-"

    /// Creates a new private folder (mode 0700).
    public static func create(kind: String) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
            "\(prefix)\(getpid())-\(kind)-\(UUID().uuidString.lowercased())", isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        return folder
    }

    /// Removes scratch folders whose process is gone and that are older than `age`; returns how many. Safe
    /// with several processes sweeping at once (a folder removed twice is simply gone).
    @discardableResult
    public static func sweep(olderThan age: TimeInterval, now: Date = Date(), directory: URL = FileManager.default.temporaryDirectory) -> Int {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory.path) else { return 0 }
        var removed = 0
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let pid = rest.split(separator: "-").first.flatMap({ Int32($0) }), pid > 0 else { continue }
            // kill(pid, 0) fails with ESRCH when no such process exists; EPERM means it exists.
            guard pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            let url = directory.appendingPathComponent(name, isDirectory: true)
            guard let modified = (try? fm.attributesOfItem(atPath: url.path))?[.modificationDate] as? Date,
                now.timeIntervalSince(modified) > age
            else { continue }
            if (try? fm.removeItem(at: url)) != nil { removed += 1 }
        }
        return removed
    }
}
