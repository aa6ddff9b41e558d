// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "lector",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lector", targets: ["lector"]),
        .executable(name: "lector-bench", targets: ["lector-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.1.4"),
        .package(url: "https://github.com/apple/swift-openapi-runtime.git", from: "1.13.4"),
        .package(url: "https://github.com/swift-server/swift-openapi-async-http-client.git", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CTesseract",
            pkgConfig: "tesseract",
            providers: [.apt(["libtesseract-dev", "libleptonica-dev"])]
        ),
        // OpenCV 4.6 DNN text detection behind a small C API; C++ exceptions never cross into Swift.
        // Built without opencv_imgcodecs (images are decoded by Leptonica): that library alone loads 139
        // shared libraries.
        .target(
            name: "COpenCV",
            path: "Sources/COpenCV",
            cxxSettings: [
                .define("LCV_NO_IMGCODECS"),
                .unsafeFlags(["-I/usr/include/opencv4"]),
            ],
            linkerSettings: [
                .linkedLibrary("opencv_dnn"), .linkedLibrary("opencv_imgproc"), .linkedLibrary("opencv_core"),
                .linkedLibrary("stdc++"), .linkedLibrary("m"),
            ]
        ),
        // Plain value types every other target shares: job status, document type, options, the result schema, the
        // result files, error codes. Foundation only.
        .target(name: "LectorModel"),
        // Sources/LectorAPI/openapi.json compiled into the binary with C23's #embed: 0.05 s to build, where SwiftPM's
        // `embedInCode` took 10 s (debug) and 23 s (release) for its 115 KB array literal, and nothing committed twice.
        .target(name: "CEmbedded"),
        .target(
            name: "LectorOCR",
            dependencies: [
                "LectorModel",
                "CTesseract",
                "COpenCV",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // A small S3 client: SigV4 signer and presigner (checked against botocore by tools/sigv4/check_sigv4.py)
        // and an S3 client over AsyncHTTPClient. No Soto.
        .target(
            name: "S3Kit",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // JSON signing cases on stdin -> S3Kit's signatures on stdout, for tools/sigv4/check_sigv4.py.
        .executableTarget(
            name: "sigv4-cases",
            dependencies: ["S3Kit"]
        ),
        .target(
            name: "LectorCore",
            dependencies: [
                "LectorModel",
                "S3Kit",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "LectorAPI",
            dependencies: [
                "LectorModel",
                "CEmbedded",
                "LectorCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["openapi.json", "Web"]
        ),
        .target(
            name: "LectorWorker",
            dependencies: [
                "LectorModel",
                "LectorCore",
                "LectorOCR",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The typed client of the API, generated from Sources/LectorAPI/openapi.json by `make openapi` (Apple's
        // swift-openapi-generator, built in tools/openapi) and committed: ordinary builds never run the generator.
        .target(
            name: "LectorClient",
            dependencies: [
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "OpenAPIAsyncHTTPClient", package: "swift-openapi-async-http-client"),
            ],
            exclude: ["openapi.sha256"]
        ),
        .executableTarget(
            name: "lector",
            dependencies: [
                "LectorModel",
                "LectorClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                "LectorCore",
                "LectorOCR",
                "LectorAPI",
                "LectorWorker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "lector-bench",
            dependencies: [
                "LectorModel",
                "LectorCore",
                "LectorOCR",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Sources/lector-bench"
        ),
        .testTarget(
            name: "LectorTests",
            dependencies: [
                "LectorModel",
                "LectorCore",
                "LectorOCR",
                "LectorAPI",
                "LectorWorker",
                "LectorClient",
                "S3Kit",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSTesting", package: "hummingbird-websocket"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "S3KitTests",
            dependencies: [
                "S3Kit",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6],
    cxxLanguageStandard: .cxx17
)
