import Foundation
import LectorCore
import LectorModel
import LectorOCR
import Logging

/// Page tasks (db/014; docs/design/queue.md, "Page tasks"): a slot that claims a document of several pages splits
/// it and is free at once; any slot reads its pages (claimed through `claim_work` when no new job waits); the slot
/// that ends the last page receives the job's lease, assembles the parts in page order and ends the job as any
/// job ends.
extension Worker {
    /// What an attempt does with its job.
    enum AttemptMode: Equatable, Sendable {
        /// Read the document (or, for a page's lease, the page).
        case read
        /// Put the parts of a split job's `pages` pages together and end the job.
        case assemble(pages: Int)
    }

    /// Reads one page of a split job (a page task) and leaves its part for the coordinator: `part-NNNNN.json`
    /// (the page, its hOCR, its timing), the one-page PDF when it made one, and the page's preview and
    /// thumbnail, which are result files as they are. The part is complete before the page ends (`recordPage`).
    func readPage(
        _ page: Int, of job: ClaimedJob, document: OCRDocument, options: OCROptions, slot: EngineSlot,
        cancellation: OCRCancellation, facts: AttemptFacts
    ) async throws -> Outcome {
        let called = ContinuousClock.now
        let reading = try await slot.recognizePage(document, index: page - 1, options: options, cancellation: cancellation)
        facts.stages.merge(reading.stages)
        var mark = ContinuousClock.now
        facts.stages.add("return", (mark - called) - .seconds(reading.stages.total))
        facts.pageTimings = [reading.timing]
        var files: [(name: String, contents: Data)] = []
        if let preview = reading.preview {
            files.append((ResultFiles.preview(page: page), preview.image))
            files.append((ResultFiles.thumbnail(page: page), preview.thumbnail))
        }
        if let pdf = reading.pdf { files.append((PagePart.pdfName(page: page), pdf)) }
        files.append((PagePart.jsonName(page: page), try JSONEncoder.lector().encode(PagePart(reading))))
        facts.stages.add("encode", ContinuousClock.now - mark)
        mark = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for file in files {
                group.addTask { [storage] in try await storage.writeResult(id: job.id, fileName: file.name, contents: file.contents) }
            }
            try await group.waitForAll()
        }
        facts.stages.add("stage", ContinuousClock.now - mark)
        return .finished([])
    }

    /// Assembles a split job whose pages are all read (`PageAssembly`): its parts read back in page order, the
    /// results encoded and staged as a whole document's are; `end` commits them under the job's lease.
    func assemble(_ job: ClaimedJob, pages count: Int, options: OCROptions, facts: AttemptFacts) async throws -> Outcome {
        facts.split = count
        facts.pages = count
        var mark = ContinuousClock.now
        let parts = try await readParts(of: job.id, pages: count, name: PagePart.jsonName).map { data in
            try JSONDecoder().decode(PagePart.self, from: data)
        }
        var pdfs: [Data] = []
        if options.wants(.pdf), parts.allSatisfy(\.pdf) {
            pdfs = try await readParts(of: job.id, pages: count, name: PagePart.pdfName)
        }
        facts.stages.add("read", ContinuousClock.now - mark)
        mark = ContinuousClock.now
        var result = try await PageAssembly.assemble(parts: parts, pdfs: pdfs, options: options)
        facts.stages.add("assemble", ContinuousClock.now - mark)
        facts.pageTimings = []
        result.attempt = job.lease.attempt
        // Encoded and staged by the end, as a read job's results are (`Worker.stage`); its pages wrote their pictures.
        facts.unstaged = UnstagedResults(result: result, pictures: false)
        return .finished([])
    }

    /// The parts of pages 1...`pages`, in page order, read side by side. A part that a page read as done has
    /// no longer is a storage failure: the attempt is retried.
    private func readParts(of id: UUID, pages: Int, name: @escaping @Sendable (Int) -> String) async throws -> [Data] {
        try await withThrowingTaskGroup(of: (Int, Data).self) { group in
            var next = 1
            var parts = [Data?](repeating: nil, count: pages)
            func add(_ page: Int) {
                group.addTask { [storage] in
                    guard let data = try await storage.readResult(id: id, fileName: name(page)) else {
                        throw StorageError(description: "the part of page \(page) (\(name(page))) is missing", kind: .unavailable)
                    }
                    return (page, data)
                }
            }
            // Eight reads at a time: an object store's round trips overlap, a filesystem's are short anyway.
            while next <= min(pages, 8) { add(next); next += 1 }
            while let (page, data) = try await group.next() {
                parts[page - 1] = data
                if next <= pages { add(next); next += 1 }
            }
            return parts.map { $0 ?? Data() }
        }
    }

    /// Records a page attempt's outcome, retrying while the database is unreachable (as `record` does for jobs):
    /// read or failed ends the page (a failed page fails the job); a transient failure queues it again with backoff,
    /// or fails it at the attempt limit; a hand-back or a cancel returns it without spending the attempt. The end
    /// of the job's last page brings the job's lease: the job is assembled and ended here.
    func recordPage(_ outcome: Outcome, of claimed: ClaimedJob, page: Int, running: RunningAttempt, logger: Logger) async {
        guard let queue = jobs as? any PageTaskQueue else { return }
        let lease = claimed.lease
        var jobLease: Lease?
        // A page that fails for good fails its job: the pages' parts are then of no use (counted before the end,
        // which drops the unread pages' rows).
        var failing = false
        switch outcome {
        case .failed: failing = true
        case .retry: failing = lease.attempt >= configuration.maxAttempts
        default: break
        }
        let partPages = failing ? ((try? await queue.pageTasks(of: lease.jobID).total) ?? 0) : 0
        _ = await retryingWhileUnreachable("the page's outcome", logger: logger) {
            switch outcome {
            case .finished:
                jobLease = try await queue.endPage(lease, failure: nil, leaseDuration: configuration.leaseDuration)
                stopRenewing(running)
            case .failed(let reason):
                _ = try await queue.endPage(lease, failure: reason, leaseDuration: configuration.leaseDuration)
                await storage.removeResults(id: lease.jobID, fileNames: ResultFiles.pageParts(pages: partPages))
            case .retry(let reason) where lease.attempt >= configuration.maxAttempts:
                _ = try await queue.endPage(
                    lease, failure: "gave up after \(lease.attempt) attempts: \(reason)", leaseDuration: configuration.leaseDuration)
                await storage.removeResults(id: lease.jobID, fileNames: ResultFiles.pageParts(pages: partPages))
            case .retry(let reason):
                let seconds = configuration.retryDelay(afterAttempt: lease.attempt)
                try await queue.requeue(
                    lease, reason: "retrying in \(Int(seconds.rounded(.up))) s: \(reason)",
                    delay: .milliseconds(Int64(seconds * 1000)), countAttempt: true, now: nil)
            case .storageFull(let reason):
                try await queue.requeue(
                    lease, reason: "waiting for storage: \(reason)",
                    delay: .milliseconds(Int64(configuration.retryBase * 1000)), countAttempt: false, now: nil)
            case .handBack, .cancelled:
                try await queue.requeue(lease, reason: "\(outcome)", delay: .zero, countAttempt: false, now: nil)
            case .leaseLost, .split:
                break
            }
        }
        guard let jobLease else { return }
        // The last page: this slot now holds the job (its lease renewed by the lease keeper, as any attempt's).
        let job = ClaimedJob(lease: jobLease, contentType: claimed.contentType, optionsJSON: claimed.optionsJSON)
        let pages: Int
        do {
            pages = try await queue.pageTasks(of: job.id).total
        } catch {
            logger.warning("could not count the pages to assemble; the rescuer will requeue the job", metadata: ["error": "\(String(reflecting: error))"])
            return
        }
        // Not a case the queue allows (the job's pages stay until it ends, and it is this slot's now); an empty
        // result must never be written for it: leave the job to the rescuer.
        guard pages > 0 else {
            logger.error("a job handed over for assembly has no pages; the rescuer will requeue it")
            return
        }
        await end(await process(job, slot: nil, mode: .assemble(pages: pages)))
    }
}
