import ArgumentParser
import Foundation

/// `lector watch IN --output OUT`: a hot folder. Every new file in IN, once it has stopped changing, is submitted
/// with an Idempotency-Key derived from its name, bytes and options; its result lands in OUT and the original
/// moves to `IN/done/`. Answers are sorted as the design says: accepted (then followed to its end), try again
/// (unreachable, timeouts, 429, 5xx: retried with backoff, forever, without holding up other files), stop
/// (other 4xx, or the job failed: the file moves to `IN/failed/` beside a JSON file giving the reason).
///
/// Its state is a journal (`IN/.lector-watch/journal`, JSON lines, each synced before the step it records is
/// taken), so a restart — after a crash or SIGKILL — neither loses nor resubmits a file: a file the journal has
/// as being submitted is submitted again with the same key, which the server answers with the same job. A
/// second watcher on the same folder refuses to start (`flock` on `IN/.lector-watch/lock`).
struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Watch a folder: submit each new file, write its result, sort the originals.")

    @Argument(help: "The folder to watch.") var input: String
    @Option(help: "Folder for the results.") var output: String
    @Option(help: "Result format: txt, json, hocr or pdf.") var format = "txt"
    @Option(help: "Pipeline: auto, document or scene.") var mode: String?
    @Option(help: "Languages, e.g. eng+deu.") var lang: String?
    @Option(help: "Seconds a file must stay unchanged before it is submitted.") var settle: Double = 1
    @Option(help: "The server (default LECTOR_URL, else http://127.0.0.1:8080).") var url: String?
    @Option(name: .customLong("api-key"), help: "The API key (default LECTOR_API_KEY).") var apiKey: String?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let format = self.format == "text" ? "txt" : self.format
        func usage(_ message: String) -> Never {
            printError("lector watch: \(message)")
            Foundation.exit(Submit.exitUsage)
        }
        guard ["txt", "json", "hocr", "pdf"].contains(format) else { usage("--format must be txt, json, hocr or pdf") }
        if let mode, !["auto", "document", "scene"].contains(mode) { usage("--mode must be auto, document or scene") }
        guard let key = apiKey ?? environment["LECTOR_API_KEY"], !key.isEmpty else { usage("no API key: set LECTOR_API_KEY or --api-key") }
        let folder = HotFolder(input: URL(fileURLWithPath: input, isDirectory: true), output: URL(fileURLWithPath: output, isDirectory: true))
        do {
            try folder.prepare()
        } catch {
            usage("\(error)")
        }
        guard folder.lock() else { usage("another watcher is running on \(folder.input.path)") }
        let connection: LectorConnection
        do {
            connection = try LectorConnection(url: url ?? environment["LECTOR_URL"] ?? "http://127.0.0.1:8080", key: key)
        } catch {
            usage("\(error)")
        }
        let options = SubmitOptions(lang: lang, mode: mode, format: format)
        var journal = try Journal(url: folder.control.appendingPathComponent("journal"))
        printError("lector watch: watching \(folder.input.path) → \(folder.output.path) (\(journal.entries.count) files in the journal)")
        var sizes: [String: (size: Int64, modified: Date, since: ContinuousClock.Instant)] = [:]
        var nextTry: [String: (at: ContinuousClock.Instant, delay: Duration)] = [:]
        var nextPoll: [String: ContinuousClock.Instant] = [:]

        while !Task.isCancelled {
            let now = ContinuousClock.now
            // New files (or a name seen before, dropped again after it was done or failed), once unchanged.
            for name in folder.candidates() {
                if let entry = journal.entries[name], entry.state != .done, entry.state != .failed { continue }
                guard let (size, modified) = folder.stat(name) else { continue }
                if let seen = sizes[name], seen.size == size, seen.modified == modified {
                    guard now - seen.since >= .milliseconds(Int64(settle * 1000)) else { continue }
                    sizes[name] = nil
                    do {
                        let idempotencyKey = try options.idempotencyKey(for: folder.input.appendingPathComponent(name), salt: name)
                        try journal.record(Journal.Entry(file: name, key: idempotencyKey, state: .submitting))
                    } catch {
                        // Unreadable (permissions, a file that vanished): set aside with the reason, never a crash.
                        setAside(name, failing: ["message": "the file cannot be read: \(error.localizedDescription)"], journal: &journal)
                    }
                } else {
                    sizes[name] = (size, modified, now)
                }
            }
            // Every file in flight: submit (again), follow, finish.
            for (name, entry) in journal.entries.sorted(by: { $0.key < $1.key }) {
                if let wait = nextTry[name], wait.at > now { continue }
                switch entry.state {
                case .submitting:
                    let file = folder.input.appendingPathComponent(name)
                    guard FileManager.default.fileExists(atPath: file.path) else {
                        // Moved away by a previous run that crashed before it wrote that down.
                        try journal.record(entry.with(state: folder.isDone(name) ? .done : .failed))
                        continue
                    }
                    switch await connection.submit(file, options: options, idempotencyKey: entry.key) {
                    case .accepted(let id):
                        try journal.record(entry.with(state: .accepted, job: id))
                        nextTry[name] = nil
                        printError("submitted \(name) → job \(id)")
                    case .refused(let status, let code, let message):
                        setAside(name, failing: ["status": status, "code": code, "message": message], journal: &journal, entry: entry)
                        printError("refused \(name): \(status) \(code): \(message)")
                    case .retry(let reason):
                        let delay = min((nextTry[name]?.delay ?? .milliseconds(500)) * 2, .seconds(30))
                        nextTry[name] = (now + delay, delay)
                        printError("\(name): \(reason); retrying in \(delay)")
                    }
                case .accepted:
                    guard let id = entry.job else { continue }
                    if let poll = nextPoll[name], poll > now { continue }
                    nextPoll[name] = now + .seconds(1)
                    do {
                        guard let job = try await connection.job(id) else {
                            setAside(name, failing: ["job": id, "message": "the server no longer knows the job"], journal: &journal, entry: entry)
                            continue
                        }
                        switch job.status {
                        case "FINISHED":
                            do {
                                let data = try await connection.result(id, format: format)
                                try folder.finish(name, result: data, format: format)
                                try journal.record(entry.with(state: .done))
                                printError("\(name) → \(folder.output.path)")
                            } catch let error as ResultUnavailable {
                                setAside(name, failing: ["job": id, "message": error.description], journal: &journal, entry: entry)
                            }
                        case "FAILURE":
                            setAside(name, failing: ["job": id, "message": job.reason ?? "the job failed"], journal: &journal, entry: entry)
                            printError("failed \(name): \(job.reason ?? "the job failed")")
                        default:
                            break
                        }
                    } catch {
                        let delay = min((nextTry[name]?.delay ?? .milliseconds(500)) * 2, .seconds(30))
                        nextTry[name] = (now + delay, delay)
                        printError("\(name): \(error); trying again in \(delay)")
                    }
                case .done, .failed:
                    break
                }
            }
            try journal.compactIfLarge()
            try await Task.sleep(for: .milliseconds(250))
        }

        /// Moves a file to `failed/` with its reason and journals it; a file that cannot even be moved (a name
        /// too long for `<name>.json`) is journalled as failed and left where it is, with a line on stderr.
        func setAside(_ name: String, failing reason: [String: Any], journal: inout Journal, entry: Journal.Entry? = nil) {
            do {
                try folder.fail(name, reason: reason)
            } catch {
                printError("\(name): cannot be moved to failed/ (\(error)); left in place")
            }
            let failed = entry?.with(state: .failed) ?? Journal.Entry(file: name, key: "", state: .failed)
            do {
                try journal.record(failed)
            } catch {
                printError("lector watch: the journal cannot be written: \(error)")
                Foundation.exit(1)
            }
        }
    }
}

/// The watched folder's layout: `IN/done/`, `IN/failed/`, `IN/.lector-watch/{journal,lock}`, and `OUT`.
struct HotFolder {
    let input: URL
    let output: URL
    var done: URL { input.appendingPathComponent("done", isDirectory: true) }
    var failed: URL { input.appendingPathComponent("failed", isDirectory: true) }
    var control: URL { input.appendingPathComponent(".lector-watch", isDirectory: true) }

    func prepare() throws {
        for folder in [input, output, done, failed, control] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        }
    }

    /// Takes the folder's lock for the life of the process; false when another watcher holds it.
    func lock() -> Bool {
        let fd = open(control.appendingPathComponent("lock").path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        return flock(fd, LOCK_EX | LOCK_NB) == 0  // the descriptor stays open (and locked) until exit
    }

    /// Regular, visible files directly in IN.
    func candidates() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: input.path)) ?? []
        return names.filter { name in
            guard !name.hasPrefix(".") else { return false }
            // Regular files only: a named pipe would block the hash, a folder is not a document.
            let type = (try? FileManager.default.attributesOfItem(atPath: input.appendingPathComponent(name).path))?[.type] as? FileAttributeType
            return type == .typeRegular
        }.sorted()
    }

    func stat(_ name: String) -> (Int64, Date)? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: input.appendingPathComponent(name).path),
            let size = attributes[.size] as? Int64, let modified = attributes[.modificationDate] as? Date
        else { return nil }
        return (size, modified)
    }

    func isDone(_ name: String) -> Bool { FileManager.default.fileExists(atPath: done.appendingPathComponent(name).path) }

    /// Writes the result (atomically), then moves the original to `done/`.
    func finish(_ name: String, result: Data, format: String) throws {
        // The whole name, then the format (a.png → a.png.txt): two originals never share a result.
        try result.write(to: output.appendingPathComponent("\(name).\(format)"), options: .atomic)
        try move(name, to: done)
    }

    /// Writes `failed/<name>.json` with the reason, then moves the original to `failed/`.
    func fail(_ name: String, reason: [String: Any]) throws {
        let json = try JSONSerialization.data(withJSONObject: reason, options: [.sortedKeys, .prettyPrinted])
        try json.write(to: failed.appendingPathComponent("\(name).json"), options: .atomic)
        try move(name, to: failed)
    }

    private func move(_ name: String, to folder: URL) throws {
        let source = input.appendingPathComponent(name), target = folder.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: source.path) else { return }  // moved by a run that crashed
        guard rename(source.path, target.path) == 0 else { throw CLIFailure("cannot move \(name): errno \(errno)") }
    }
}

/// The watcher's crash-safe state: one JSON object per line, appended and synced before the step it records;
/// the last line about a file is its state.
struct Journal {
    enum State: String, Codable { case submitting, accepted, done, failed }

    struct Entry: Codable {
        var file: String
        var key: String
        var state: State
        var job: String?

        func with(state: State, job: String? = nil) -> Entry {
            Entry(file: file, key: key, state: state, job: job ?? self.job)
        }
    }

    let url: URL
    private(set) var entries: [String: Entry] = [:]
    private var fd: Int32
    private var lines = 0

    init(url: URL) throws {
        self.url = url
        if let text = try? String(contentsOf: url, encoding: .utf8) {
            // A line cut short by a crash is ignored: its step had not been taken.
            for line in text.split(separator: "\n") {
                if let entry = try? JSONDecoder().decode(Entry.self, from: Data(line.utf8)) { entries[entry.file] = entry }
                lines += 1
            }
        }
        fd = open(url.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CLIFailure("cannot open the journal \(url.path): errno \(errno)") }
    }

    mutating func record(_ entry: Entry) throws {
        var line = try JSONEncoder().encode(entry)
        line.append(0x0A)
        try line.withUnsafeBytes { bytes in
            guard write(fd, bytes.baseAddress, bytes.count) == bytes.count, fsync(fd) == 0 else {
                throw CLIFailure("cannot write the journal: errno \(errno)")
            }
        }
        entries[entry.file] = entry
        lines += 1
    }

    /// Rewrites the journal with one line per file when it has grown far beyond that (atomic rename).
    mutating func compactIfLarge() throws {
        guard lines > 1000, lines > entries.count * 4 else { return }
        let temporary = url.appendingPathExtension("tmp")
        var text = Data()
        for entry in entries.values.sorted(by: { $0.file < $1.file }) {
            text.append(try JSONEncoder().encode(entry))
            text.append(0x0A)
        }
        try text.write(to: temporary)
        let handle = try FileHandle(forWritingTo: temporary)
        try handle.synchronize()
        try handle.close()
        guard rename(temporary.path, url.path) == 0 else { throw CLIFailure("cannot compact the journal: errno \(errno)") }
        close(fd)
        fd = open(url.path, O_WRONLY | O_APPEND | O_CLOEXEC, 0o644)
        lines = entries.count
    }
}
