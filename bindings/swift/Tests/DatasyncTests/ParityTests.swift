// The parity scenario through the Swift binding: the same steps as
// examples/parity.rs, printing the same lines; the test compares them with
// tests/parity/expected.txt and, when PARITY_OUT names a file, writes them there
// for tests/parity/run.sh to compare too.
//
// The instance has prefix "app", a host key strategy partitioning notes by their
// "owner" (this device may read and write only "app.alice"), no local tier, and a
// cloud that is a host byte map the scenario can switch offline. Every sync is one
// the scenario asks for (timers and retries are an hour away).
//
// The cloud is seeded with partitions in canonical form whose instants lie far in
// the future (2100): the instance clock never adopts a stamp that far ahead, so an
// edit of a seeded entity is stamped exactly at the entity's own updatedAt (with
// its version + 1), and no printed line depends on the wall clock.
//
// It uses the generated API (save(entityJson:), get(id:), query(query:)) and
// JSONSerialization, not the idiomatic layer, so that it reads every field.
import Foundation
import XCTest
@testable import Datasync

/// The cloud: a byte map that can be switched offline (every call then throws).
final class ParityCloud: HostPersistence, @unchecked Sendable {
    private let lock = NSLock()
    private var blobs: [String: Data] = [:]
    private var offline = false

    struct Down: Error {}

    private func check() throws { if lock.withLock({ offline }) { throw Down() } }
    func load(key: String) throws -> Data? { try check(); return lock.withLock { blobs[key] } }
    func store(key: String, bytes: Data) throws { try check(); lock.withLock { blobs[key] = bytes } }
    func clear(key: String) throws { try check(); lock.withLock { _ = blobs.removeValue(forKey: key) } }
    func keys() throws -> [String]? { try check(); return lock.withLock { blobs.keys.sorted() } }
    func storeIf(key: String, expected: Data?, bytes: Data) throws -> Bool? { nil }
    func setOffline(_ on: Bool) { lock.withLock { offline = on } }

    /// Replaces the content by these partitions, as another device's sync would leave
    /// it, without metadata (the library rebuilds it from the partitions).
    func seed(_ partitions: [String: String]) {
        lock.withLock {
            for key in blobs.keys where key.hasPrefix("!") { blobs.removeValue(forKey: key) }
            for (key, text) in partitions { blobs[key] = Data(text.utf8) }
        }
    }

    func partition(_ key: String) -> [String: Any] {
        guard let data = lock.withLock({ blobs[key] }) else { return [:] }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
    }
}

/// Partitions notes by owner (`app.<owner>`); this device may use only `app.alice`.
final class ParityOwner: HostKeyStrategy, @unchecked Sendable {
    func logicalKey(entityName: String, entityJson: String) throws -> String {
        Parity.object(entityJson)["owner"] as? String ?? "nobody"
    }

    func candidateKeys(prefix: String, entityName: String, filterJson: String?) throws -> CandidateKeys {
        .keys(keys: ["\(prefix).alice"])
    }
}

enum Parity {
    static let base = "2100-01-01T00:00:00.000Z"
    static let later = "2100-01-01T00:00:01.000Z"
    static let earlier = "2099-12-31T23:59:59.000Z"
    static let hour: UInt64 = 3_600_000

    static func object(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// One note as a tier stores it (canonical: keys sorted, no whitespace).
    static func note(_ id: String, _ owner: String, _ title: String, _ at: String, _ version: Int) -> String {
        "\"\(id)\":{\"createdAt\":\"\(base)\",\"id\":\"\(id)\",\"owner\":\"\(owner)\",\"title\":\"\(title)\","
            + "\"updatedAt\":\"\(at)\",\"version\":\(version)}"
    }

    /// A canonical partition holding these notes (given in id order).
    static func partition(_ notes: String...) -> String { "{\"Note\":{" + notes.joined(separator: ",") + "}}" }

    static func describe(_ entity: [String: Any]) -> String {
        "\(entity["title"] as? String ?? "?") v\((entity["version"] as? Int).map(String.init) ?? "?")"
    }

    /// The error kind's name (the case of DataSyncError), or `ok`.
    static func outcome(_ call: () throws -> Void) -> String {
        do {
            try call()
            return "ok"
        } catch let error as DataSyncError {
            // A case with fields reflects as one child labelled with the case's name.
            return Mirror(reflecting: error).children.first?.label ?? String(describing: error)
        } catch {
            return "not a DataSyncError: \(error)"
        }
    }

    static func syncLine(_ stats: SyncStats) -> String {
        "sync offline=\(stats.offline) copied=\(stats.keysCopied) merged=\(stats.keysMerged) "
            + "refused=\(stats.keysRefused) conflicts=\(stats.conflicts)"
    }

    static func json(_ value: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]), as: UTF8.self)
    }

    /// Runs the scenario, handing each line to `out` as it is made.
    static func run(_ out: (String) -> Void) throws {
        let cloud = ParityCloud()
        cloud.seed([
            "app.alice": partition(
                note("alice.c1", "alice", "c1 base", base, 1),
                note("alice.c2", "alice", "c2 base", base, 1),
                note("alice.t1", "alice", "t1 base", base, 1),
                note("alice.t2", "alice", "t2 base", base, 4)),
            "app.bob": partition(note("bob.n9", "bob", "bob's", base, 1)),
        ])
        let ds = try DataSync.open(options: OpenOptions(
            prefix: "app", local: nil, cloud: .host(adapter: cloud),
            strategy: .host(strategy: ParityOwner(), separator: nil, idLength: nil), resolver: nil,
            storeSyncDelayMs: hour, cloudSyncIntervalMs: hour, retryBaseMs: hour, retryMaxMs: hour,
            maxClockSkewMs: nil, syncOnOpen: false,
            // The scenario reads the cloud's partition documents back: format 1.
            format: 1))
        defer { try? ds.shutdown() }
        let notes = try ds.repo(name: "Note")
        func get(_ id: String) throws -> [String: Any]? { try notes.get(id: id).map(object) }
        func save(_ fields: [String: Any]) throws {
            let id = try notes.save(entityJson: try json(fields))
            out("save \(id) v\((try get(id)?["version"] as? Int).map(String.init) ?? "?")")
        }
        func delete(_ id: String) throws { out("delete \(id) existed=\(try notes.delete(id: id))") }

        // Saves with caller-supplied ids, and deletes.
        try save(["id": "alice.n1", "owner": "alice", "title": "n1 first"])
        try save(["id": "alice.n1", "owner": "alice", "title": "n1 second"])
        try save(["id": "alice.n2", "owner": "alice", "title": "n2"])
        try delete("alice.n2")
        out("get alice.n2 -> \(try get("alice.n2").map(describe) ?? "none")")
        try delete("alice.n2")
        // An id the strategy chooses: its partition, not its random part, is printed.
        let fresh = try notes.save(entityJson: try json(["owner": "alice", "title": "fresh"]))
        let dot = fresh.lastIndex(of: ".") ?? fresh.startIndex
        let ident = fresh[fresh.index(after: dot)...]
        out("save new \(fresh[..<dot]).<\(ident.count)> v\((try get(fresh)?["version"] as? Int).map(String.init) ?? "?")")
        out("delete new existed=\(try notes.delete(id: fresh))")

        // Local edits of the seeded notes.
        try save(["id": "alice.c1", "owner": "alice", "title": "c1 local"])
        try save(["id": "alice.c2", "owner": "alice", "title": "c2 local"])
        try delete("alice.t1")
        try save(["id": "alice.t2", "owner": "alice", "title": "t2 local"])

        // Meanwhile another device's edits reached the cloud: c1 newer, c2 older (with a
        // greater version), t1 edited at the instant of the local delete, t2 edited at
        // the instant of the local edit with a smaller version (and greater bytes).
        cloud.seed([
            "app.alice": partition(
                note("alice.c1", "alice", "c1 remote", later, 2),
                note("alice.c2", "alice", "c2 remote", earlier, 9),
                note("alice.t1", "alice", "t1 remote", base, 7),
                note("alice.t2", "alice", "t2 remote", base, 3)),
        ])
        out(syncLine(try ds.syncNow()))
        func winner(_ id: String, _ local: String, _ remote: String) throws -> String {
            guard let entity = try get(id) else { return "deleted" }
            let title = entity["title"] as? String
            let side = title == local ? "local" : title == remote ? "remote" : "neither"
            return "\(side): \(describe(entity))"
        }
        out("conflict alice.c1 newer remote -> \(try winner("alice.c1", "c1 local", "c1 remote"))")
        out("conflict alice.c2 older remote -> \(try winner("alice.c2", "c2 local", "c2 remote"))")
        out("tie alice.t1 delete vs edit -> \(try winner("alice.t1", "t1 local", "t1 remote"))")
        out("tiebreak alice.t2 equal instant -> \(try winner("alice.t2", "t2 local", "t2 remote"))")
        // The merge reached the cloud too.
        var stored = cloud.partition("app.alice")
        for id in ["alice.c1", "alice.c2", "alice.n1", "alice.t1", "alice.t2"] {
            let active = (stored["Note"] as? [String: Any])?[id] as? [String: Any]
            let deleted = ((stored["deleted"] as? [String: Any])?["Note"] as? [String: Any])?[id]
            out("cloud \(id) -> \(active.map(describe) ?? (deleted != nil ? "deleted" : "absent"))")
        }

        // A sorted query, one line per note.
        for text in try notes.query(query: Query(sort: [SortField(field: "title", descending: true)])) {
            let entity = object(text)
            out("query title:desc \(entity["id"] as? String ?? "?") \(describe(entity))")
        }

        // Bob's partition is not this device's: every path refuses it.
        out("get bob.n9 -> \(outcome { _ = try notes.get(id: "bob.n9") })")
        out("save bob.n9 -> \(outcome { _ = try notes.save(entityJson: try json(["id": "bob.n9", "owner": "bob", "title": "taken"])) })")
        out("delete bob.n9 -> \(outcome { _ = try notes.delete(id: "bob.n9") })")

        // Offline: the write waits in the store, the sync says so, and goes through later.
        cloud.setOffline(true)
        try save(["id": "alice.n3", "owner": "alice", "title": "n3 offline"])
        out("sync offline=\(try ds.syncNow().offline)")
        var status = ds.status()
        out("status online=\(status.online) pending=\(status.pendingKeys)")
        cloud.setOffline(false)
        out(syncLine(try ds.syncNow()))
        status = ds.status()
        out("status online=\(status.online) pending=\(status.pendingKeys)")
        stored = cloud.partition("app.alice")
        let n3 = (stored["Note"] as? [String: Any])?["alice.n3"] as? [String: Any]
        out("cloud alice.n3 -> \(n3.map(describe) ?? "absent")")
    }
}

final class ParityTests: XCTestCase {
    func testPrintsTheLinesEveryDoorPrints() throws {
        var lines: [String] = []
        let written = ProcessInfo.processInfo.environment["PARITY_OUT"].map { URL(fileURLWithPath: $0) }
        try Parity.run { line in
            lines.append(line)
            if let written {
                try? (lines.joined(separator: "\n") + "\n").write(to: written, atomically: true, encoding: .utf8)
            }
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let expected = try String(contentsOf: root.appendingPathComponent("tests/parity/expected.txt"), encoding: .utf8)
        XCTAssertEqual(lines.joined(separator: "\n") + "\n", expected)
    }
}
