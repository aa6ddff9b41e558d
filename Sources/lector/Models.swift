import ArgumentParser
import LectorCore
import LectorModel
import LectorOCR

struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Models that are not shipped with Lector.", subcommands: [Fetch.self, List.self])

    struct Fetch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download a model, check its published SHA-1, install it.",
            discussion: "east: OpenCV's EAST text detector (~96 MB) into deploy/models/east/ (or LECTOR_EAST_MODEL).")

        @Argument(help: "The model: east.") var name: String
        @Option(help: "Install from an archive downloaded by hand instead of downloading it.") var archive: String?

        func run() async throws {
            guard name == "east" else { throw ValidationError("unknown model \"\(name)\"; known: east") }
            let settings = Runtime.settings()
            let destination = settings.eastModel ?? DetectorModels.eastRelativePath
            let installer = ModelInstaller(model: ModelInstaller.east)
            do {
                try installer.install(to: destination, archive: archive)
            } catch {
                throw CommandFailure(description: "\(error)\nDownload \(ModelInstaller.east.url) by hand and run: lector models fetch east --archive FILE")
            }
            print("installed \(destination) (archive SHA-1 \(ModelInstaller.east.archiveSHA1) checked)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show where each detector's model is and whether it is installed.")

        func run() async throws {
            let settings = Runtime.settings()
            let models = DetectorModels.discover(db: settings.dbModel, east: settings.eastModel)
            let available = models.available
            for kind in DetectorKind.allCases {
                let path = kind == .db ? models.db : models.east
                print("\(kind.rawValue)\t\(available.contains(kind) ? "installed" : "missing")\t\(path ?? "-")")
            }
        }
    }
}
