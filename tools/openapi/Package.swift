// swift-tools-version:6.0
// Builds Apple's swift-openapi-generator for `make openapi`, which regenerates Sources/LectorClient from
// Sources/LectorAPI/openapi.json. Kept out of the root package so that ordinary builds never compile the
// generator (swift-syntax and friends): the generated code is committed.
import PackageDescription

let package = Package(
    name: "lector-openapi-tools",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-openapi-generator.git", exact: "1.14.3"),
    ],
    targets: []
)
