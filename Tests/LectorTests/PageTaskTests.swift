import Foundation
import LectorCore
import LectorModel
import LectorOCR
import LectorWorker
import NIOConcurrencyHelpers
import PostgresNIO
import Testing

/// Page tasks (db/014; docs/design/queue.md, "Page tasks"): the queue's rules on PostgreSQL, then real workers
/// reading one document's pages side by side.
@Suite("Page tasks", .serialized)
struct PageTaskTests {
    static let t0 = QueueConformanceTests.t0
    static let lease = Duration.seconds(60)

    static func withStore(_ body: @Sendable (JobStore, PostgresClient, Int64) async throws -> Void) async throws {
        try await TestDatabase.withFreshDatabase { client, _ in
            let store = JobStore(client: client, logger: TestDatabase.logger)
            let rows = try await client.query("INSERT INTO users (name) VALUES ('pages') RETURNING id")
            var owner: Int64 = 0
            for try await id in rows.decode(Int64.self) { owner = id }
            try await body(store, client, owner)
        }
    }

    static func pagesDone(_ client: PostgresClient, _ id: UUID) async throws -> (Int?, Int?) {
        let rows = try await client.query("SELECT pages_done, pages_total FROM jobs WHERE id = \(id)")
        for try await row in rows.decode((Int?, Int?).self) { return row }
        throw TestFailure("no job \(id)")
    }

    static func claim(_ store: JobStore, _ workers: [String], now: Date? = nil) async throws -> [ClaimedJob] {
        try await store.claimBatch(workers: workers, leaseDuration: Self.lease, strategy: .tableLock, now: now)
    }

    @Test("split under the job's lease only; new jobs are claimed before pages; pages are claimed, ended and fenced like jobs; the last page's end hands over the job")
    func claimsAndFencing() async throws {
        try await Self.withStore { store, client, owner in
            let split = QueueTests.makeJob(owner: owner, index: 1)
            try await store.create(split)
            let first = try #require(try await store.claimNext(worker: "a/1", leaseDuration: Self.lease))
            #expect(try await store.split(Lease(jobID: split.id, worker: "a/1", attempt: 2), pages: 3) == .lost)
            #expect(try await store.pageTasks(of: split.id).total == 0)
            #expect(try await store.split(first.lease, pages: 3) == .split)
            #expect(try await Self.pagesDone(client, split.id) == (0, 3))
            // The job's lease is its pages' now: the slot that split it holds nothing.
            #expect(try await store.renew(first.lease, duration: Self.lease) == false)

            // A job queued after the split still goes first; the slots left over get pages, in page order.
            let later = QueueTests.makeJob(owner: owner, index: 2)
            try await store.create(later)
            let claims = try await Self.claim(store, ["b/1", "b/2", "b/3"])
            #expect(claims.map(\.id) == [later.id, split.id, split.id])
            #expect(claims.map(\.lease.page) == [nil, 1, 2])
            #expect(claims[1].contentType == split.contentType && claims[1].optionsJSON.contains("eng"))
            let third = try #require(try await Self.claim(store, ["a/1"]).first)
            #expect(third.lease.page == 3 && third.lease.attempt == 1)
            #expect(try await Self.claim(store, ["c/1"]).isEmpty)

            // Fencing: another worker's or another attempt's end of a page is refused; the holder's counts, once.
            await #expect(throws: TransitionRefused.self) {
                try await store.endPage(Lease(jobID: split.id, worker: "b/3", attempt: 1, page: 1), failure: nil, leaseDuration: Self.lease)
            }
            await #expect(throws: TransitionRefused.self) {
                try await store.endPage(Lease(jobID: split.id, worker: "b/2", attempt: 2, page: 1), failure: nil, leaseDuration: Self.lease)
            }
            #expect(try await store.endPage(claims[1].lease, failure: nil, leaseDuration: Self.lease) == nil)
            // The same end again (its answer lost) is answered as the first; a failure after it is refused.
            #expect(try await store.endPage(claims[1].lease, failure: nil, leaseDuration: Self.lease) == nil)
            await #expect(throws: TransitionRefused.self) {
                try await store.endPage(claims[1].lease, failure: "late", leaseDuration: Self.lease)
            }
            #expect(try await Self.pagesDone(client, split.id) == (1, 3))
            #expect(try await store.renew(claims[2].lease, duration: Self.lease))
            #expect(try await store.renew(claims[1].lease, duration: Self.lease) == false)
            // A page's progress is the count of pages read, never the page attempt's own report.
            #expect(try await store.reportProgress(claims[2].lease, done: 7, total: 9))
            #expect(try await Self.pagesDone(client, split.id) == (1, 3))

            // A transient failure queues the page again, with its retry time; the next claim is attempt 2.
            try await store.requeue(claims[2].lease, reason: "retrying", delay: .seconds(3600), countAttempt: true, now: nil)
            #expect(try await Self.claim(store, ["c/1"]).isEmpty)
            let retried = try #require(try await Self.claim(store, ["c/1"], now: Date().addingTimeInterval(7200)).first)
            #expect(retried.lease.page == 2 && retried.lease.attempt == 2)
            var tasks = try await store.pageTasks(of: split.id)
            #expect((tasks.total, tasks.done, tasks.running, tasks.queued) == (3, 1, 2, 0))

            // The last page's end gives its reader the job's lease (the same attempt), and the job ends with it.
            #expect(try await store.endPage(retried.lease, failure: nil, leaseDuration: Self.lease) == nil)
            let handed = try #require(try await store.endPage(third.lease, failure: nil, leaseDuration: Self.lease))
            #expect(handed.jobID == split.id && handed.worker == "a/1" && handed.attempt == 1 && handed.page == nil)
            let again = try await store.endPage(third.lease, failure: nil, leaseDuration: Self.lease)
            #expect(again?.jobID == split.id && again?.worker == "a/1" && again?.attempt == 1, "the hand-over, answered again")
            #expect(try await store.renew(handed, duration: Self.lease))
            try await store.end(handed, as: .finished)
            #expect(try await store.history(of: split.id).map(\.status) == [.queued, .inProgress, .finished])
            tasks = try await store.pageTasks(of: split.id)
            #expect((tasks.total, tasks.done) == (3, 3))
        }
    }

    @Test("a page claimable for longer than a minute goes before new jobs; workers of the previous release never get a page")
    func waitingPagesGoFirst() async throws {
        try await Self.withStore { store, client, owner in
            let split = QueueTests.makeJob(owner: owner, index: 1)
            try await store.create(split)
            let claimed = try #require(try await store.claimNext(worker: "a/1", leaseDuration: Self.lease))
            #expect(try await store.split(claimed.lease, pages: 2) == .split)
            let fresh = QueueTests.makeJob(owner: owner, index: 2)
            try await store.create(fresh)
            // Now the new job goes first; two minutes on, both pages have waited longer than a minute and go first.
            let later = Date().addingTimeInterval(120)
            let claims = try await Self.claim(store, ["b/1", "b/2", "b/3"], now: later)
            #expect(claims.map(\.lease.page) == [1, 2, nil])
            #expect(claims[2].id == fresh.id)
            // A page queued again just now waits behind a new job again; and db/013's claim_jobs, which workers of
            // the previous release call, still serves jobs only.
            let other = QueueTests.makeJob(owner: owner, index: 3)
            try await store.create(other)
            try await store.requeue(claims[1].lease, reason: "retrying", delay: .zero, countAttempt: true, now: nil)
            let rows = try await client.query("SELECT job_id, page FROM claim_work(ARRAY['c/1'], 60, NULL, false)")
            var served: [(UUID, Int?)] = []
            for try await row in rows.decode((UUID, Int?).self) { served.append(row) }
            #expect(served.count == 1 && served[0].0 == other.id && served[0].1 == nil)
            let old = try await client.query("SELECT job_id FROM claim_jobs(ARRAY['c/2', 'c/3'], 60, NULL, false)")
            var oldServed: [UUID] = []
            for try await id in old.decode(UUID.self) { oldServed.append(id) }
            #expect(oldServed.isEmpty, "a page went to a claim_jobs caller")
        }
    }

    @Test("a failed page fails the job, naming it, and drops the pages not read; a cancel ends a split job at once, and one requested before the split stops it")
    func failureAndCancel() async throws {
        try await Self.withStore { store, _, owner in
            let job = QueueTests.makeJob(owner: owner)
            try await store.create(job)
            let claimed = try #require(try await store.claimNext(worker: "a/1", leaseDuration: Self.lease))
            #expect(try await store.split(claimed.lease, pages: 3) == .split)
            let pages = try await Self.claim(store, ["a/1", "b/1"])
            #expect(pages.map(\.lease.page) == [1, 2])
            #expect(try await store.endPage(pages[1].lease, failure: "page 2 is torn", leaseDuration: Self.lease) == nil)
            let last = try #require(try await store.history(of: job.id).last)
            #expect(last.status == .failure && last.reason == "page 2: page 2 is torn")
            // Nothing of it is claimable or renewable after.
            #expect(try await store.renew(pages[0].lease, duration: Self.lease) == false)
            #expect(try await Self.claim(store, ["c/1"]).isEmpty)
            #expect(try await store.pageTasks(of: job.id).total == 0)

            let other = QueueTests.makeJob(owner: owner, index: 1)
            try await store.create(other)
            let second = try #require(try await store.claimNext(worker: "a/1", leaseDuration: Self.lease))
            #expect(try await store.split(second.lease, pages: 2) == .split)
            let reading = try #require(try await Self.claim(store, ["b/1"]).first)
            #expect(try await store.cancel(other.id, ownerID: owner) == .cancelled)
            let cancelled = try #require(try await store.history(of: other.id).last)
            #expect(cancelled.status == .failure && cancelled.reason == JobStore.cancelledReason)
            await #expect(throws: TransitionRefused.self) {
                try await store.endPage(reading.lease, failure: nil, leaseDuration: Self.lease)
            }

            // A cancel requested before the split is the holder's: nothing is split, and it ends the job.
            let third = QueueTests.makeJob(owner: owner, index: 2)
            try await store.create(third)
            let holder = try #require(try await store.claimNext(worker: "a/1", leaseDuration: Self.lease))
            #expect(try await store.cancel(third.id, ownerID: owner) == .requested)
            #expect(try await store.split(holder.lease, pages: 2) == .cancelled)
            #expect(try await store.pageTasks(of: third.id).total == 0)
            try await store.end(holder.lease, as: .failure, reason: JobStore.cancelledReason)
        }
    }

    @Test("a lost page is rescued like a job, and fails the job at the attempt limit; a lost assembler's job is rescued and assembled by the next claim")
    func rescue() async throws {
        try await Self.withStore { store, client, owner in
            let job = QueueTests.makeJob(owner: owner)
            try await store.create(job)
            let first = try #require(try await store.claimNext(worker: "a/1", leaseDuration: Self.lease))
            #expect(try await store.split(first.lease, pages: 2) == .split)
            let one = try #require(try await Self.claim(store, ["a/1"]).first)
            #expect(try await store.endPage(one.lease, failure: nil, leaseDuration: Self.lease) == nil)
            _ = try #require(try await Self.claim(store, ["b/1"]).first)

            // Page 2's reader is lost: the page is queued again; the split job itself is never rescued whole.
            let report = try await store.rescueExpired(maxAttempts: 2, grace: .zero, now: Date().addingTimeInterval(3600), limit: 500)
            #expect(report.requeued == 0 && report.failed == 0 && report.pagesRequeued == 1 && report.pagesFailed == 0)
            var tasks = try await store.pageTasks(of: job.id)
            #expect((tasks.done, tasks.queued) == (1, 1))
            let again = try #require(try await Self.claim(store, ["c/1"]).first)
            #expect(again.lease.page == 2 && again.lease.attempt == 2)

            // Lost again, at its last attempt: the page fails, and so does the job, saying why.
            let final = try await store.rescueExpired(maxAttempts: 2, grace: .zero, now: Date().addingTimeInterval(7200), limit: 500)
            #expect(final.pagesFailed == 1)
            let last = try #require(try await store.history(of: job.id).last)
            #expect(last.status == .failure && last.reason == "page 2: worker lost: gave up after 2 attempts", "\(last)")
            tasks = try await store.pageTasks(of: job.id)
            #expect((tasks.total, tasks.done) == (1, 1))

            // A job whose assembler is lost is rescued as a job; its next claim finds every page read.
            let other = QueueTests.makeJob(owner: owner, index: 1)
            try await store.create(other)
            let claimed = try #require(try await store.claimNext(worker: "a/1", leaseDuration: Self.lease))
            #expect(try await store.split(claimed.lease, pages: 1) == .split)
            let only = try #require(try await Self.claim(store, ["d/1"]).first)
            let handed = try #require(try await store.endPage(only.lease, failure: nil, leaseDuration: Self.lease))
            #expect(handed.worker == "d/1")
            let rescued = try await store.rescueExpired(maxAttempts: 3, grace: .zero, now: Date().addingTimeInterval(3600), limit: 500)
            #expect(rescued.requeued == 1)
            let next = try #require(try await store.claimNext(worker: "e/1", leaseDuration: Self.lease))
            #expect(next.id == other.id && next.lease.attempt == 2)
            #expect(try await store.split(next.lease, pages: 1) == .complete)
            #expect(try await Self.pagesDone(client, other.id) == (1, 1))
            try await store.end(next.lease, as: .finished)
        }
    }

    @Test("two workers read a three-page TIFF's pages; the result is the whole document's, with hOCR and one PDF")
    func realDocument() async throws {
        try await TestHarness.run { harness in
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: folder) }
            let lines = ["first page of the letter", "second page of the letter", "third page signed here"]
            var paths: [String] = []
            for (index, line) in lines.enumerated() {
                let file = folder.appendingPathComponent("\(index).png")
                try TestImages.render([line]).write(to: file)
                paths.append(file.path)
            }
            let tiff = folder.appendingPathComponent("letter.tiff")
            try TestImages.runTool(TestImages.convert, paths + [tiff.path])
            let document = try Data(contentsOf: tiff)

            let owner = try await QueueTests.owner(harness)
            var job = QueueTests.makeJob(owner: owner)
            job.contentType = "image/tiff"
            job.optionsJSON = #"{"lang":"eng","mode":"document","formats":["json","txt","hocr","pdf"]}"#
            try await harness.storage.createJobFolder(
                id: job.id, documentFileName: DocumentType.tiff.storedFileName, document: document, metadataJSON: Data("{}".utf8))
            try await harness.jobs.create(job)
            let queued = job
            try await Self.withWorkers(harness, ["a", "b"]) {
                try await QueueConformanceTests.eventually(timeout: .seconds(60)) {
                    try await harness.jobs.history(of: queued.id).last?.status.isTerminal == true
                }
                // The parts go right after the end (their removal follows the commit), while the workers run.
                try await QueueConformanceTests.eventually(timeout: .seconds(10)) {
                    for page in 1...3 where try await harness.storage.readResult(id: queued.id, fileName: PagePart.jsonName(page: page)) != nil {
                        return false
                    }
                    return true
                }
            }
            let history = try await harness.jobs.history(of: job.id)
            #expect(history.map(\.status) == [.queued, .inProgress, .finished], "\(history)")

            let json = try #require(try await harness.storage.readResult(id: job.id, fileName: ResultFormat.json.fileName))
            let result = try JSONDecoder().decode(OCRResult.self, from: json)
            #expect(result.pages.map(\.number) == [1, 2, 3])
            // The same text as the engine reads from the whole document at once.
            let whole = try harness.engines.makeEngine().recognize(
                OCRDocument(data: document, type: .tiff), options: OCROptions(lang: "eng", mode: .document), cancellation: OCRCancellation())
            #expect(result.pages.map(\.text) == whole.pages.map(\.text))
            #expect(result.text == whole.text)
            for (page, line) in zip(result.pages, lines) { #expect(page.text.contains(line), "\(page.text)") }
            let hocr = String(decoding: try #require(try await harness.storage.readResult(id: job.id, fileName: ResultFormat.hocr.fileName)), as: UTF8.self)
            #expect(hocr.contains("id='page_3'") && hocr.contains(">signed</span>") && hocr.components(separatedBy: "class='ocr_page'").count == 4)
            let pdf = try #require(try await harness.storage.readResult(id: job.id, fileName: ResultFormat.pdf.fileName))
            let pdfFile = folder.appendingPathComponent("result.pdf")
            try pdf.write(to: pdfFile)
            let info = try TestImages.output("/usr/bin/pdfinfo", [pdfFile.path])
            #expect(info.contains { _ in true } && info.split(separator: "\n").contains { $0.hasPrefix("Pages:") && $0.hasSuffix(" 3") }, "\(info)")
            let text = try TestImages.output("/usr/bin/pdftotext", [pdfFile.path, "-"])
            #expect(text.contains("first page of the letter") && text.contains("third page signed"), "\(text)")

            // Each page's pictures are results; the parts are gone; every page was read once, and recorded.
            for page in 1...3 {
                #expect(try await harness.storage.hasResult(id: job.id, fileName: ResultFiles.preview(page: page)))
            }

            let rows = try await harness.client.query("SELECT page, state, attempts FROM page_tasks WHERE job_id = \(job.id) ORDER BY page")
            var states: [String] = []
            for try await (page, state, attempts) in rows.decode((Int, String, Int).self) { states.append("\(page) \(state) \(attempts)") }
            #expect(states == ["1 done 1", "2 done 1", "3 done 1"])
            #expect(try await Self.pagesDone(harness.client, job.id) == (3, 3))
        }
    }

    @Test("the engine reads one page of a TIFF or a PDF alone, as it reads it within the whole; a page that is not there is refused")
    func enginePage() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        var paths: [String] = []
        for (index, line) in ["alpha page here", "bravo page here", "charlie page here"].enumerated() {
            let file = folder.appendingPathComponent("\(index).png")
            try TestImages.render([line]).write(to: file)
            paths.append(file.path)
        }
        let tiffFile = folder.appendingPathComponent("three.tiff")
        try TestImages.runTool(TestImages.convert, paths + [tiffFile.path])
        let tiff = try Data(contentsOf: tiffFile)
        let engine = try PipelineTests.engine()
        let options = OCROptions(lang: "eng", mode: .document, formats: [.pdf])
        let whole = try engine.recognize(OCRDocument(data: tiff, type: .tiff), options: options, cancellation: OCRCancellation())
        let pdf = try #require(whole.renderings.pdf)
        #expect(try engine.pageCount(OCRDocument(data: tiff, type: .tiff)) == 3)
        #expect(try engine.pageCount(OCRDocument(data: pdf, type: .pdf)) == 3)
        for document in [OCRDocument(data: tiff, type: .tiff), OCRDocument(data: pdf, type: .pdf)] {
            let page = try engine.recognizePage(document, index: 1, options: options, cancellation: OCRCancellation())
            #expect(page.page.number == 2 && page.page.text.contains("bravo page here"), "\(page.page.text)")
            #expect(page.pdf?.starts(with: Data("%PDF-".utf8)) == true)
            #expect(throws: OCRError.self) {
                try engine.recognizePage(document, index: 5, options: options, cancellation: OCRCancellation())
            }
        }
        #expect(try engine.recognizePage(OCRDocument(data: tiff, type: .tiff), index: 1, options: options, cancellation: OCRCancellation())
            .page.text == whole.pages[1].text)
    }

    @Test("pages go to every idle worker; a page that cannot be read fails the job and names the page")
    func pagedEngine() async throws {
        try await TestHarness.run(environment: ["LECTOR_MAX_ATTEMPTS": "2", "LECTOR_RETRY_BASE_SECONDS": "0.05"]) { harness in
            let owner = try await QueueTests.owner(harness)
            let engine = PagedEngineFactory(pages: 6, each: .milliseconds(300), failing: [])
            let good = try await Self.submitTIFF(harness, owner: owner)
            try await Self.withWorkers(harness, ["a", "b"], engines: engine) {
                try await QueueConformanceTests.eventually(timeout: .seconds(30)) {
                    try await harness.jobs.history(of: good).last?.status.isTerminal == true
                }
            }
            #expect(try await harness.jobs.history(of: good).last?.status == .finished)
            let rows = try await harness.client.query("SELECT DISTINCT split_part(worker, '/', 1) FROM page_tasks WHERE job_id = \(good)")
            var workers: Set<String> = []
            for try await worker in rows.decode(String.self) { workers.insert(worker) }
            #expect(workers == ["a", "b"], "both workers read pages: \(workers)")
            let json = try #require(try await harness.storage.readResult(id: good, fileName: ResultFormat.json.fileName))
            #expect(try JSONDecoder().decode(OCRResult.self, from: json).pages.map(\.text) == (1...6).map { "page \($0)" })

            let failing = PagedEngineFactory(pages: 4, each: .milliseconds(50), failing: [3])
            let bad = try await Self.submitTIFF(harness, owner: owner)
            try await Self.withWorkers(harness, ["c"], engines: failing) {
                try await QueueConformanceTests.eventually(timeout: .seconds(30)) {
                    try await harness.jobs.history(of: bad).last?.status.isTerminal == true
                }
                // Pages 1 and 2 were read; their parts go with the failure.
                try await QueueConformanceTests.eventually(timeout: .seconds(10)) {
                    let first = try await harness.storage.readResult(id: bad, fileName: PagePart.jsonName(page: 1))
                    let second = try await harness.storage.readResult(id: bad, fileName: PagePart.jsonName(page: 2))
                    return first == nil && second == nil
                }
            }
            let last = try #require(try await harness.jobs.history(of: bad).last)
            #expect(last.status == .failure && last.reason == "page 3: page 3 is torn", "\(last)")
            #expect(try await Self.pagesDone(harness.client, bad) == (2, 4))
        }
    }

    @Test("the slot that split a job reads one of its pages every other claim, new jobs queued meanwhile between")
    func splitterKeepsReading() async throws {
        try await TestHarness.run { harness in
            let owner = try await QueueTests.owner(harness)
            let engine = PagedEngineFactory(pages: 3, each: .milliseconds(100), failing: [])
            let long = try await Self.submitTIFF(harness, owner: owner)
            var singles: [UUID] = []
            for index in 0..<3 {
                var job = QueueTests.makeJob(owner: owner, index: index)
                job.contentType = "image/png"
                try await harness.storage.createJobFolder(
                    id: job.id, documentFileName: DocumentType.png.storedFileName, document: Data([0x89, 0x50]), metadataJSON: Data("{}".utf8))
                try await harness.jobs.create(job)
                singles.append(job.id)
            }
            let all = singles + [long]
            try await Self.withWorkers(harness, ["a"], engines: engine) {
                try await QueueConformanceTests.eventually(timeout: .seconds(30)) {
                    for id in all where try await harness.jobs.history(of: id).last?.status.isTerminal != true { return false }
                    return true
                }
            }
            #expect(try await harness.jobs.history(of: long).last?.status == .finished)
            // One slot: the split, then a page, a new job, a page, a new job, a page, a new job. (Without the turns,
            // new jobs go first and the pages come last; reading its own pages only, the slot would keep every new
            // job waiting for the whole document.)
            var claims: [(Date, String)] = []
            let rows = try await harness.client.query("SELECT claimed_at FROM page_tasks WHERE job_id = \(long)")
            for try await at in rows.decode(Date.self) { claims.append((at, "page")) }
            for id in singles {
                let claimed = try #require(try await harness.jobs.history(of: id).first { $0.status == .inProgress })
                claims.append((claimed.at, "job"))
            }
            #expect(claims.sorted { $0.0 < $1.0 }.map(\.1) == ["page", "job", "page", "job", "page", "job"])
        }
    }

    @Test("a cancel through the API ends a split job at once and removes its pages' parts")
    func cancelThroughTheAPI() async throws {
        try await TestHarness.run { harness in
            let token = try await harness.newUser().token
            let owner = try #require(try await harness.keys.authenticate(token: token)).id
            let engine = PagedEngineFactory(pages: 6, each: .milliseconds(300), failing: [])
            let id = try await Self.submitTIFF(harness, owner: owner)
            try await Self.withWorkers(harness, ["a"], engines: engine) {
                try await QueueConformanceTests.eventually(timeout: .seconds(20)) {
                    try await harness.storage.readResult(id: id, fileName: PagePart.jsonName(page: 1)) != nil
                }
                try await harness.application().test(.router) { client in
                    let answer = try await EngineTests.post(client, "/v1/jobs/\(id)/cancel", token: token)
                    #expect(answer.status == .ok)
                    #expect(answer.json["status"] as? String == "FAILURE")
                }
                let last = try #require(try await harness.jobs.history(of: id).last)
                #expect(last.status == .failure && last.reason == JobStore.cancelledReason)
                #expect(try await harness.storage.readResult(id: id, fileName: PagePart.jsonName(page: 1)) == nil)
                // The page being read when the cancel came is not read on: its lease went with the job.
                try await Task.sleep(for: .milliseconds(800))
                #expect(try await harness.jobs.history(of: id).count == 3)
            }
        }
    }

    @Test("a worker stopped hard in the middle loses only its page, which another worker reads")
    func workerKilled() async throws {
        try await TestHarness.run(environment: [
            "LECTOR_LEASE_SECONDS": "2", "LECTOR_HEARTBEAT_SECONDS": "0.3", "LECTOR_RESCUE_INTERVAL": "0.3",
        ]) { harness in
            let owner = try await QueueTests.owner(harness)
            let engine = PagedEngineFactory(pages: 4, each: .milliseconds(600), failing: [])
            let id = try await Self.submitTIFF(harness, owner: owner)
            try await Self.withWorkers(harness, ["a"], engines: engine) {
                // Worker a has claimed and split the job before b starts.
                try await QueueConformanceTests.eventually(timeout: .seconds(20)) {
                    try await harness.jobs.pageTasks(of: id).total == 4
                }
                // Worker b takes a page, then stops hard (its task cancelled: no end, no hand-back).
                try await Self.withWorkers(harness, ["b"], engines: engine) {
                    try await QueueConformanceTests.eventually(timeout: .seconds(20)) {
                        let rows = try await harness.client.query(
                            "SELECT count(*)::int8 FROM page_tasks WHERE job_id = \(id) AND worker LIKE 'b/%' AND state = 'running'")
                        for try await count in rows.decode(Int.self) { return count > 0 }
                        return false
                    }
                }
                try await QueueConformanceTests.eventually(timeout: .seconds(30)) {
                    try await harness.jobs.history(of: id).last?.status.isTerminal == true
                }
            }
            #expect(try await harness.jobs.history(of: id).map(\.status) == [.queued, .inProgress, .finished])
            let rows = try await harness.client.query("SELECT max(attempts)::int8 FROM page_tasks WHERE job_id = \(id)")
            for try await attempts in rows.decode(Int.self) { #expect(attempts == 2, "the lost page was read again") }
            let json = try #require(try await harness.storage.readResult(id: id, fileName: ResultFormat.json.fileName))
            #expect(try JSONDecoder().decode(OCRResult.self, from: json).pages.map(\.text) == (1...4).map { "page \($0)" })
        }
    }

    // MARK: helpers

    /// A queued TIFF job (the paged engine reads no pixels: any bytes do).
    static func submitTIFF(_ harness: TestHarness, owner: Int64) async throws -> UUID {
        var job = QueueTests.makeJob(owner: owner)
        job.contentType = "image/tiff"
        try await harness.storage.createJobFolder(
            id: job.id, documentFileName: DocumentType.tiff.storedFileName, document: Data("II*\0".utf8), metadataJSON: Data("{}".utf8))
        try await harness.jobs.create(job)
        return job.id
    }

    /// Runs one single-slot worker (with its listeners and rescuer) per name while `body` runs; stops them hard
    /// after.
    static func withWorkers(
        _ harness: TestHarness, _ names: [String], engines: (any OCREngineFactory)? = nil, _ body: @Sendable () async throws -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for name in names {
                let services = harness.workerServices(id: name, engines: engines) { configuration in
                    configuration.concurrency = 1
                    configuration.pollInterval = .milliseconds(100)
                }
                for service in [services.queuedListener, services.cancelListener, services.worker, services.rescuer].compactMap({ $0 }) {
                    group.addTask { try await service.run() }
                }
            }
            defer { group.cancelAll() }
            try await body()
        }
    }
}

/// An engine that reads any document as `pages` pages, each taking `each` and reading "page N" (the pages in
/// `failing` are torn: a permanent error), to drive page tasks through the real queue, storage and workers.
struct PagedEngineFactory: OCREngineFactory {
    let pages: Int
    let each: Duration
    let failing: Set<Int>

    var supportedTypes: Set<DocumentType> { Set(DocumentType.allCases) }
    func availableLanguages() throws(OCRError) -> Set<String> { ["eng"] }
    func makeEngine() throws(OCRError) -> any OCREngine { PagedEngine(factory: self) }
}

final class PagedEngine: OCREngine {
    let factory: PagedEngineFactory

    init(factory: PagedEngineFactory) { self.factory = factory }

    func recognize(_ document: OCRDocument, options: OCROptions, cancellation: OCRCancellation) throws(OCRError) -> OCRResult {
        var pages: [OCRPage] = []
        for index in 0..<factory.pages { pages.append(try recognizePage(document, index: index, options: options, cancellation: cancellation).page) }
        return OCRResult(engine: "paged", language: options.lang, pages: pages)
    }

    func pageCount(_ document: OCRDocument) throws(OCRError) -> Int? { factory.pages }

    func recognizePage(_ document: OCRDocument, index: Int, options: OCROptions, cancellation: OCRCancellation) throws(OCRError) -> PageReading {
        let end = ContinuousClock.now + factory.each
        while ContinuousClock.now < end {
            if cancellation.isCancelled { throw OCRError(.cancelled, "recognition was cancelled") }
            usleep(10_000)
        }
        if factory.failing.contains(index + 1) { throw OCRError(.unreadableDocument, "page \(index + 1) is torn") }
        let text = "page \(index + 1)"
        let page = OCRPage(number: index + 1, width: 10, height: 10, mode: .document, lines: [], text: text)
        return PageReading(
            engine: "paged", page: page, hocr: nil, pdf: nil, preview: nil, timing: PageTiming(mode: .document, duration: factory.each),
            stages: StageTimes())
    }
}
