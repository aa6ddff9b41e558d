import ArgumentParser
import Foundation

/// `lector`: one binary, a subcommand per role. It only wires the library targets together.
@main
struct Lector: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lector",
        abstract: "Lector: an OCR job service.",
        discussion: "Every setting comes from a LECTOR_* environment variable; see README.md.",
        subcommands: [Serve.self, Work.self, Migrate.self, Keys.self, Jobs.self, OCR.self, Models.self, Submit.self, Watch.self]
    )

    static func main() async {
        Runtime.ensureSingleThreadedOpenMP()
        Runtime.runConcurrencyOnEventLoops()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // The client commands promise exit status 2 for a usage error (ArgumentParser's own is 64).
            if ["submit", "watch"].contains(CommandLine.arguments.dropFirst().first ?? ""),
                exitCode(for: error) == .validationFailure
            {
                printError(fullMessage(for: error))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
