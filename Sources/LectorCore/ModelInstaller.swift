import Crypto
import Foundation

/// Installs a model that Lector cannot ship: downloads its archive from the canonical address (with `curl`),
/// checks the archive's SHA-1 against the published one, and unpacks the one file needed into place
/// (written beside the destination and renamed, so a failed run leaves nothing half-written).
public struct ModelInstaller: Sendable {
    public struct Model: Sendable {
        public var name: String
        public var url: String
        /// SHA-1 of the archive, as published with it.
        public var archiveSHA1: String
        /// The file to take out of the archive.
        public var member: String

        public init(name: String, url: String, archiveSHA1: String, member: String) {
            self.name = name
            self.url = url
            self.archiveSHA1 = archiveSHA1
            self.member = member
        }
    }

    /// EAST (Zhou et al. 2017), the frozen TensorFlow graph from OpenCV's sample data; the SHA-1 is the one in
    /// opencv_extra's testdata/dnn/download_models.py.
    public static let east = Model(
        name: "east",
        url: "https://www.dropbox.com/s/r2ingd0l3zt8hxs/frozen_east_text_detection.tar.gz?dl=1",
        archiveSHA1: "fffabf5ac36f37bddf68e34e84b45f5c4247ed06",
        member: "frozen_east_text_detection.pb")

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let model: Model

    public init(model: Model) {
        self.model = model
    }

    /// Downloads (unless `archive` names a local copy), checks and installs the model at `destination`.
    public func install(to destination: String, archive: String? = nil) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lector-model-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let archivePath: String
        if let archive {
            archivePath = archive
        } else {
            archivePath = folder.appendingPathComponent("archive.tar.gz").path
            try Self.run("/usr/bin/env", ["curl", "--fail", "--location", "--silent", "--show-error", "--retry", "3",
                                          "--output", archivePath, model.url],
                         failure: "could not download \(model.url)")
        }
        try verify(archive: archivePath)
        try Self.run("/usr/bin/env", ["tar", "-xzf", archivePath, "-C", folder.path, model.member],
                     failure: "the archive does not contain \(model.member)")
        let target = URL(fileURLWithPath: destination)
        try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        let staged = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).partial")
        try? FileManager.default.removeItem(at: staged)
        try FileManager.default.moveItem(at: folder.appendingPathComponent(model.member), to: staged)
        guard rename(staged.path, target.path) == 0 else {
            throw Failure(description: "could not move the model into \(destination): \(String(cString: strerror(errno)))")
        }
    }

    /// Throws unless the file's SHA-1 is the published one.
    public func verify(archive path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw Failure(description: "cannot read \(path)") }
        defer { try? handle.close() }
        var hasher = Insecure.SHA1()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        guard digest == model.archiveSHA1 else {
            throw Failure(description: "checksum mismatch for the \(model.name) archive: SHA-1 \(digest), expected \(model.archiveSHA1); nothing was installed")
        }
    }

    private static func run(_ executable: String, _ arguments: [String], failure: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(failure) (\(arguments[0]) exited with status \(process.terminationStatus))")
        }
    }
}
