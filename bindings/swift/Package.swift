// swift-tools-version:5.9
// The Swift package of datasync: the generated bindings (Sources/Datasync/Datasync.swift,
// Sources/datasyncFFI/include), a thin idiomatic layer, and an XCTest suite.
// Build the Rust library first (`cargo build` at the repository root); set
// DATASYNC_LIB_DIR to link against another build directory.
import PackageDescription
import Foundation

let libDir = ProcessInfo.processInfo.environment["DATASYNC_LIB_DIR"]
    ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../target/debug").standardized.path

let package = Package(
    name: "Datasync",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [.library(name: "Datasync", targets: ["Datasync"])],
    targets: [
        .target(
            name: "datasyncFFI",
            path: "Sources/datasyncFFI",
            linkerSettings: [
                .linkedLibrary("datasync"),
                .unsafeFlags(["-L\(libDir)", "-Xlinker", "-rpath", "-Xlinker", libDir]),
            ]
        ),
        .target(name: "Datasync", dependencies: ["datasyncFFI"], path: "Sources/Datasync"),
        .testTarget(name: "DatasyncTests", dependencies: ["Datasync"], path: "Tests/DatasyncTests"),
    ]
)
