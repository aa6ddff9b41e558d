import ArgumentParser
import Dispatch
import Foundation
import NIOConcurrencyHelpers

/// `lector submit FILE...`: uploads documents to a Lector server (`LECTOR_URL`, `LECTOR_API_KEY`), each with an
/// Idempotency-Key derived from its bytes and options, and with `--wait` (or `--output`) follows them to the
/// end and writes their results. Exit status: 0 all finished, 1 some failed (each reason printed), 2 usage
/// error, 3 the server cannot be reached, 130 interrupted (the submitted job ids are printed; nothing is lost).
struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Submit documents to a Lector server; with --wait, download their results.")

    @Argument(help: "The documents (PNG, JPEG, TIFF, PDF, BMP, WebP, PNM).") var files: [String] = []
    @Flag(help: "Wait for every job to end, then write the results (into --output, default the current folder).") var wait = false
    @Option(help: "Result format: txt, json, hocr or pdf (text is txt).") var format = "txt"
    @Option(help: "Folder for the results (implies --wait).") var output: String?
    @Option(help: "Pipeline: auto, document or scene.") var mode: String?
    @Option(help: "Languages, e.g. eng+deu.") var lang: String?
    @Option(help: "The server (default LECTOR_URL, else http://127.0.0.1:8080).") var url: String?
    @Option(name: .customLong("api-key"), help: "The API key (default LECTOR_API_KEY).") var apiKey: String?

    static let exitFailed: Int32 = 1
    static let exitUsage: Int32 = 2
    static let exitUnreachable: Int32 = 3
    static let exitInterrupted: Int32 = 130

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let format = self.format == "text" ? "txt" : self.format
        guard !files.isEmpty else { usage("name at least one document") }
        guard ["txt", "json", "hocr", "pdf"].contains(format) else { usage("--format must be txt, json, hocr or pdf") }
        if let mode, !["auto", "document", "scene"].contains(mode) { usage("--mode must be auto, document or scene") }
        guard let key = apiKey ?? environment["LECTOR_API_KEY"], !key.isEmpty else { usage("no API key: set LECTOR_API_KEY or --api-key") }
        let urls = files.map { URL(fileURLWithPath: $0) }
        for file in urls where !FileManager.default.isReadableFile(atPath: file.path) { usage("\(file.path) cannot be read") }
        // Results are written as <name>.<format>: two documents of one name would overwrite each other's.
        let stems = urls.map { $0.deletingPathExtension().lastPathComponent }
        if let twice = stems.first(where: { stem in stems.filter { $0 == stem }.count > 1 }), wait || output != nil {
            usage("two documents would both write \(twice).\(format): submit them in separate runs")
        }
        let waiting = wait || output != nil
        let outputFolder = URL(fileURLWithPath: output ?? ".", isDirectory: true)
        if waiting {
            do {
                try FileManager.default.createDirectory(at: outputFolder, withIntermediateDirectories: true)
            } catch {
                usage("cannot create \(outputFolder.path): \(error.localizedDescription)")
            }
        }
        let connection: LectorConnection
        do {
            connection = try LectorConnection(url: url ?? environment["LECTOR_URL"] ?? "http://127.0.0.1:8080", key: key)
        } catch {
            usage("\(error)")
        }
        let options = SubmitOptions(lang: lang, mode: mode, format: format)
        let board = Board(files: urls.map(\.lastPathComponent), live: isatty(2) == 1)
        let interrupt = Interrupt { board.interrupted() }

        // Subscribe before submitting, so no ending is missed; polling catches anything the stream dropped.
        try await withThrowingTaskGroup(of: Void.self) { group in
            if waiting {
                group.addTask {
                    while !Task.isCancelled {
                        do {
                            for try await update in try await connection.events() {
                                if let update { board.update(update) }
                            }
                        } catch {}
                        try await Task.sleep(for: .seconds(1))
                    }
                }
            }
            // A server that does not answer at all is exit status 3, after a few tries.
            var tries = 0
            while await !connection.reachable() {
                tries += 1
                if tries >= 3 {
                    board.finish()
                    printError("lector submit: the server at \(connection.baseURL.absoluteString) cannot be reached")
                    Foundation.exit(Self.exitUnreachable)
                }
                try await Task.sleep(for: .seconds(1))
            }
            for (index, file) in urls.enumerated() {
                var delay = Duration.milliseconds(500)
                var unreachable = 0
                var refusals = 0
                submitting: while true {
                    let key = (try? options.idempotencyKey(for: file)) ?? UUID().uuidString
                    switch await connection.submit(file, options: options, idempotencyKey: key) {
                    case .accepted(let id):
                        board.submitted(index, id: id)
                        break submitting
                    case .refused(let status, let code, let message):
                        board.refused(index, reason: "\(status) \(code): \(message)")
                        break submitting
                    case .retry(let reason):
                        if reason.hasPrefix("the server cannot be reached") {
                            unreachable += 1
                            if unreachable >= 4 {
                                board.finish()
                                printError("lector submit: \(reason)")
                                board.printSubmitted()
                                Foundation.exit(Self.exitUnreachable)
                            }
                        } else {
                            // An overloaded or failing server: a few tries with backoff, then this file fails.
                            refusals += 1
                            if refusals >= 8 {
                                board.refused(index, reason: "gave up after \(refusals) tries: \(reason)")
                                break submitting
                            }
                        }
                        board.note("\(file.lastPathComponent): \(reason); retrying")
                        try await Task.sleep(for: delay)
                        delay = min(delay * 2, .seconds(15))
                    }
                }
            }
            if waiting {
                // Poll the jobs the stream has not ended, every few seconds, until all have; a server that stays
                // away for two minutes is exit 3 (the jobs go on; their ids are printed).
                var lastAnswer = ContinuousClock.now
                while !board.allEnded {
                    for id in board.pending {
                        do {
                            if let job = try await connection.job(id) {
                                board.update(JobUpdate(id: id, status: job.status, reason: job.reason, pagesDone: job.pagesDone, pagesTotal: job.pagesTotal))
                            }
                            lastAnswer = .now
                        } catch {
                            guard ContinuousClock.now - lastAnswer < .seconds(120) else {
                                board.finish()
                                printError("lector submit: the server stopped answering while waiting")
                                board.printSubmitted()
                                Foundation.exit(Self.exitUnreachable)
                            }
                        }
                    }
                    if board.allEnded { break }
                    try await Task.sleep(for: .seconds(2))
                }
                for (index, id) in board.finishedJobs {
                    let stem = urls[index].deletingPathExtension().lastPathComponent
                    let target = outputFolder.appendingPathComponent("\(stem).\(format)")
                    do {
                        try await connection.result(id, format: format).write(to: target, options: .atomic)
                        board.note("\(urls[index].lastPathComponent) → \(target.path)")
                    } catch {
                        board.resultFailed(index, reason: "\(error)")
                    }
                }
            }
            group.cancelAll()
        }
        interrupt.cancel()
        board.finish()
        let failures = board.failures
        for (name, reason) in failures { printError("failed: \(name): \(reason)") }
        if !waiting { board.printSubmitted(to: .standardOutput) }
        if !failures.isEmpty { Foundation.exit(Self.exitFailed) }
    }

    private func usage(_ message: String) -> Never {
        printError("lector submit: \(message)\n\(Self.helpMessage())")
        Foundation.exit(Self.exitUsage)
    }
}

/// Stops waiting on SIGINT: prints the submitted job ids (they go on running on the server) and exits 130.
/// `@unchecked Sendable`: the signal source is set once in `init` and only cancelled afterwards.
final class Interrupt: @unchecked Sendable {
    private let source: any DispatchSourceSignal

    init(_ onInterrupt: @escaping @Sendable () -> Void) {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler {
            onInterrupt()
            Foundation.exit(Submit.exitInterrupted)
        }
        source.resume()
        self.source = source
    }

    func cancel() {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}

/// The state of a submit run, and what is shown of it: a progress line on a terminal, plain lines otherwise.
final class Board: Sendable {
    private struct State {
        var names: [String]
        var ids: [Int: String] = [:]
        var statuses: [String: String] = [:]
        var reasons: [Int: String] = [:]
        var pages: [String: (Int, Int)] = [:]
        var lastDrawn = ContinuousClock.now - .seconds(1)
    }

    private let state: NIOLockedValueBox<State>
    private let live: Bool

    init(files: [String], live: Bool) {
        state = NIOLockedValueBox(State(names: files))
        self.live = live
    }

    func submitted(_ index: Int, id: String) {
        let name = state.withLockedValue { state in
            state.ids[index] = id
            state.statuses[id] = state.statuses[id] ?? "QUEUED"
            return state.names[index]
        }
        note("submitted \(name) → job \(id)")
    }

    func refused(_ index: Int, reason: String) {
        let name = state.withLockedValue { state in
            state.reasons[index] = reason
            return state.names[index]
        }
        note("refused \(name): \(reason)")
    }

    func resultFailed(_ index: Int, reason: String) {
        state.withLockedValue { $0.reasons[index] = reason }
    }

    func update(_ update: JobUpdate) {
        let ended = state.withLockedValue { state -> (String, String)? in
            guard state.ids.values.contains(update.id) else { return nil }
            if let done = update.pagesDone, let total = update.pagesTotal { state.pages[update.id] = (done, total) }
            guard let status = update.status, state.statuses[update.id] != status else { return nil }
            state.statuses[update.id] = status
            if status == "FAILURE", let index = state.ids.first(where: { $0.value == update.id })?.key {
                state.reasons[index] = update.reason ?? "failed"
            }
            guard status == "FINISHED" || status == "FAILURE",
                let index = state.ids.first(where: { $0.value == update.id })?.key
            else { return nil }
            return (state.names[index], status)
        }
        if let (name, status) = ended { note("\(name): \(status)") } else { draw() }
    }

    var pending: [String] {
        state.withLockedValue { state in state.ids.values.filter { !["FINISHED", "FAILURE"].contains(state.statuses[$0] ?? "") } }
    }

    var allEnded: Bool { pending.isEmpty }

    var finishedJobs: [(Int, String)] {
        state.withLockedValue { state in
            state.ids.sorted { $0.key < $1.key }.filter { state.statuses[$0.value] == "FINISHED" }.map { ($0.key, $0.value) }
        }
    }

    var failures: [(String, String)] {
        state.withLockedValue { state in state.reasons.sorted { $0.key < $1.key }.map { (state.names[$0.key], $0.value) } }
    }

    /// A line of news: on a terminal, above the progress line.
    func note(_ line: String) {
        if live { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
        printError(line)
        draw(force: true)
    }

    private func draw(force: Bool = false) {
        guard live else { return }
        let line = state.withLockedValue { state -> String? in
            guard force || ContinuousClock.now - state.lastDrawn > .milliseconds(100) else { return nil }
            state.lastDrawn = .now
            let total = state.names.count
            let uploaded = state.ids.count
            let done = state.statuses.values.filter { $0 == "FINISHED" || $0 == "FAILURE" }.count
            let pagesDone = state.pages.values.reduce(0) { $0 + $1.0 }, pagesTotal = state.pages.values.reduce(0) { $0 + $1.1 }
            let width = 20, filled = total == 0 ? 0 : width * done / total
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            return "[\(bar)] uploaded \(uploaded)/\(total) · done \(done)/\(total)" + (pagesTotal > 0 ? " · pages \(pagesDone)/\(pagesTotal)" : "")
        }
        if let line { FileHandle.standardError.write(Data("\r\u{1B}[2K\(line)".utf8)) }
    }

    func finish() {
        if live { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
    }

    func interrupted() {
        finish()
        printError("interrupted: the jobs submitted go on running on the server:")
        printSubmitted()
    }

    /// `<job id>\t<file>` for every submitted document.
    func printSubmitted(to handle: FileHandle = .standardError) {
        let lines = state.withLockedValue { state in state.ids.sorted { $0.key < $1.key }.map { "\($0.value)\t\(state.names[$0.key])" } }
        handle.write(Data(lines.map { $0 + "\n" }.joined().utf8))
    }
}
