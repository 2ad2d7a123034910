import Foundation
import XCTest
@testable import Datasync

/// A dictionary-backed cloud; `failing` makes every call throw.
final class MapCloud: HostPersistence, @unchecked Sendable {
    private let lock = NSLock()
    private var blobs: [String: Data] = [:]
    var failing = false

    struct Down: Error {}

    private func check() throws { if lock.withLock({ failing }) { throw Down() } }
    func load(key: String) throws -> Data? { try check(); return lock.withLock { blobs[key] } }
    func store(key: String, bytes: Data) throws { try check(); lock.withLock { blobs[key] = bytes } }
    func clear(key: String) throws { try check(); lock.withLock { _ = blobs.removeValue(forKey: key) } }
    func keys() throws -> [String]? { try check(); return lock.withLock { blobs.keys.sorted() } }
    /// The conditional write: stores only if `key` holds `expected` (absent when nil).
    func storeIf(key: String, expected: Data?, bytes: Data) throws -> Bool? {
        try check()
        return lock.withLock {
            guard blobs[key] == expected else { return false }
            blobs[key] = bytes
            return true
        }
    }
    func setFailing(_ on: Bool) { lock.withLock { failing = on } }
    func has(_ key: String) -> Bool { lock.withLock { blobs[key] != nil } }
    func seed(_ key: String, _ bytes: Data) { lock.withLock { blobs[key] = bytes } }
    func blob(_ key: String) -> Data? { lock.withLock { blobs[key] } }
}

let uid = "Doc.abcdefghijklmnop"

func doc(_ title: String, _ updatedAt: String, _ version: Int) -> Entity {
    ["id": uid, "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": updatedAt, "version": version, "title": title]
}

// The earlier edit has the greater version and the greater bytes, so only
// last-writer-wins (not the equal-instant tie-break) picks the later one.
let earlier = doc("zz from a", "2026-01-01T00:00:01.000Z", 7)
let later = doc("from b", "2026-01-01T00:00:02.000Z", 2)

/// A canonical partition blob holding one Doc (keys sorted at every depth).
func partition(_ entity: Entity) throws -> Data {
    try JSONSerialization.data(withJSONObject: ["Doc": [uid: entity]], options: [.sortedKeys])
}

func storedTitle(_ tier: MapCloud) -> String? {
    guard let data = tier.blob("app.Doc"),
          let top = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
          let docs = top["Doc"] as? [String: Any], let entity = docs[uid] as? Entity else { return nil }
    return entity["title"] as? String
}

func device(_ cloud: MapCloud) throws -> DataSync {
    try DataSync.open(options: OpenOptions(
        prefix: "app", local: .memory(tier: MemoryTier()), cloud: .host(adapter: cloud),
        cloudSyncIntervalMs: 3_600_000, retryBaseMs: 3_600_000, retryMaxMs: 3_600_000))
}

final class DatasyncTests: XCTestCase {
    func testCrud() throws {
        let ds = try DataSync.open(prefix: "app")
        defer { try? ds.shutdown() }
        let users = try ds.repo(name: "User")
        let id = try users.save(["name": "Alice"])
        XCTAssertTrue(id.hasPrefix("User."))
        XCTAssertEqual(try users.entity(id)?["name"] as? String, "Alice")
        XCTAssertEqual(try users.entity(id)?["version"] as? Int, 1)
        try users.save(["id": id, "name": "Alice 2"])
        XCTAssertEqual(try users.entity(id)?["version"] as? Int, 2)
        XCTAssertTrue(try users.delete(id: id))
        XCTAssertNil(try users.entity(id))
        XCTAssertFalse(try users.delete(id: id))
    }

    func testQueries() throws {
        let ds = try DataSync.open(prefix: "app")
        defer { try? ds.shutdown() }
        let people = try ds.repo(name: "Person")
        try people.save(["name": "Cleo", "team": "web", "age": 41])
        try people.save(["name": "Bob", "team": "core", "age": 25])
        try people.save(["name": "Ann", "team": "core", "age": 30])
        let core = try people.find(where: ["team": "core"], sort: [Sort("name")]).map { $0["name"] as? String }
        XCTAssertEqual(core, ["Ann", "Bob"])
        let oldest = try people.find(sort: [Sort("age", descending: true)], limit: 1).map { $0["name"] as? String }
        XCTAssertEqual(oldest, ["Cleo"])
    }

    func testBadInputAndClosed() throws {
        let ds = try DataSync.open(prefix: "app")
        let users = try ds.repo(name: "User")
        XCTAssertThrowsError(try users.get(id: "nope")) { error in
            guard case DataSyncError.InvalidId(let id, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(id, "nope")
        }
        XCTAssertThrowsError(try users.save(entityJson: "[1,2]"))
        XCTAssertThrowsError(try ds.repo(name: "deleted"))
        XCTAssertThrowsError(try DataSync.open(prefix: ""))
        try ds.shutdown()
        try ds.shutdown()
        XCTAssertThrowsError(try users.save(["x": 1])) { error in
            XCTAssertEqual(error as? DataSyncError, .Closed)
        }
    }

    func testObserverStreamDeliversCurrentThenChanges() async throws {
        let ds = try DataSync.open(prefix: "app")
        defer { try? ds.shutdown() }
        let users = try ds.repo(name: "User")
        let id = try users.save(["name": "a"])
        let stream = try users.changes(id)
        var iterator = stream.makeAsyncIterator()
        let first = await iterator.next()
        XCTAssertEqual(first??["name"] as? String, "a")
        try users.save(["id": id, "name": "b"])
        let second = await iterator.next()
        XCTAssertEqual(second??["name"] as? String, "b")
        _ = try users.delete(id: id)
        let third = await iterator.next()
        XCTAssertNotNil(third)
        XCTAssertNil(third!)
    }

    func testChangeSetStreamAppliesToTheQueryResult() async throws {
        let ds = try DataSync.open(prefix: "app")
        defer { try? ds.shutdown() }
        let users = try ds.repo(name: "User")
        let a = try users.save(["name": "a"])
        try users.save(["name": "c"])
        var iterator = try users.changeSets(sort: [Sort("name")]).makeAsyncIterator()
        var copy: [Entity] = []
        let first = await iterator.next()!
        guard case .initial = first else { return XCTFail("the first emission is the whole list") }
        first.apply(to: &copy)
        XCTAssertEqual(copy.map { $0["name"] as? String }, ["a", "c"])
        try users.save(["name": "b"])
        _ = try users.delete(id: a)
        try ds.drainEvents()
        let expected = try users.find(sort: [Sort("name")]).map { $0["id"] as? String }
        while copy.map({ $0["id"] as? String }) != expected {
            let next = await iterator.next()!
            guard case .delta = next else { return XCTFail("later emissions are deltas") }
            next.apply(to: &copy)
            XCTAssertEqual(copy.count, next.count)
            XCTAssertEqual(next.list().map { $0["id"] as? String }, copy.map { $0["id"] as? String })
        }
    }

    func testReentrantObserver() throws {
        let ds = try DataSync.open(prefix: "app")
        defer { try? ds.shutdown() }
        let users = try ds.repo(name: "User")
        let audit = try ds.repo(name: "Audit")
        final class Writer: QueryObserver, @unchecked Sendable {
            let audit: Repository
            let ds: DataSync
            var refused = 0
            init(_ audit: Repository, _ ds: DataSync) { self.audit = audit; self.ds = ds }
            func onResults(entitiesJson: String) throws {
                _ = try audit.save(["count": EntityCoding.decodeList(entitiesJson).count])
                do { try ds.shutdown() } catch DataSyncError.WouldDeadlock { refused += 1 }
            }
        }
        let writer = Writer(audit, ds)
        let sub = try users.observeAll(query: Query(), observer: writer)
        try ds.drainEvents()
        try users.save(["name": "a"])
        try ds.drainEvents()
        XCTAssertEqual(try audit.find(sort: [Sort("count")]).map { $0["count"] as? Int }, [0, 1])
        XCTAssertEqual(writer.refused, 2)
        sub.unsubscribe()
        sub.unsubscribe()
    }

    func testTwoDevicesThroughASwiftCloud() throws {
        let cloud = MapCloud()
        let a = try device(cloud)
        let b = try device(cloud)
        defer { try? a.shutdown(); try? b.shutdown() }
        let id = try a.repo(name: "User").save(["name": "Alice"])
        XCTAssertFalse(try a.syncNow().offline)
        _ = try b.syncNow()
        XCTAssertEqual(try b.repo(name: "User").entity(id)?["name"] as? String, "Alice")
        XCTAssertEqual(try a.audit(), [])
    }

    func testLaterEditWinsByItsInstant() throws {
        for (mine, theirs) in [(earlier, later), (later, earlier)] {
            let local = MapCloud()
            let cloud = MapCloud()
            local.seed("app.Doc", try partition(mine))
            cloud.seed("app.Doc", try partition(theirs))
            let ds = try DataSync.open(options: OpenOptions(
                prefix: "app", local: .host(adapter: local), cloud: .host(adapter: cloud),
                cloudSyncIntervalMs: 3_600_000))
            for _ in 0..<2 { _ = try ds.syncNow() }
            let winner = try ds.repo(name: "Doc").entity(uid)
            XCTAssertEqual(winner?["title"] as? String, "from b")
            XCTAssertEqual(winner?["version"] as? Int, 2)
            XCTAssertEqual(try ds.audit(), [])
            try ds.shutdown()
            XCTAssertEqual(storedTitle(local), "from b")
            XCTAssertEqual(storedTitle(cloud), "from b")
        }
    }

    func testStatusStreamDeliversCurrentThenEachSync() async throws {
        let cloud = MapCloud()
        let ds = try device(cloud)
        defer { try? ds.shutdown() }
        var statuses = try ds.statuses().makeAsyncIterator()
        let current = await statuses.next()
        XCTAssertEqual(current?.closed, false)
        cloud.setFailing(true)
        _ = try ds.syncNow()
        var sawOffline = false
        while let status = await statuses.next() {
            if !status.online { sawOffline = true; break }
        }
        XCTAssertTrue(sawOffline)
    }

    func testThrowingCloudMeansOffline() throws {
        let cloud = MapCloud()
        let ds = try device(cloud)
        defer { try? ds.shutdown() }
        let id = try ds.repo(name: "User").save(["name": "x"])
        cloud.setFailing(true)
        let stats = try ds.syncNow()
        XCTAssertTrue(stats.offline)
        XCTAssertFalse(ds.status().online)
        XCTAssertEqual(try ds.repo(name: "User").entity(id)?["name"] as? String, "x")
        cloud.setFailing(false)
        XCTAssertFalse(try ds.syncNow().offline)
        XCTAssertTrue(cloud.has("app.User"))
    }

    func testManyThreads() throws {
        let ds = try DataSync.open(prefix: "app")
        defer { try? ds.shutdown() }
        let users = try ds.repo(name: "User")
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for i in 0..<25 { _ = try? users.save(["w": worker, "i": i]) }
        }
        XCTAssertEqual(try users.find().count, 100)
    }
}
