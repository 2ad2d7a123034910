// The idiomatic layer over the generated bindings: entities as `[String: Any]`
// dictionaries (JSON objects), observers as `AsyncStream`s, `Sendable` values.
import Foundation

/// An entity: a JSON object with the reserved fields id, createdAt, updatedAt, version.
public typealias Entity = [String: Any]

/// A sort field of a query.
public struct Sort: Sendable, Hashable {
    public var field: String
    public var descending: Bool
    public init(_ field: String, descending: Bool = false) {
        self.field = field
        self.descending = descending
    }
}

enum EntityCoding {
    static func encode(_ value: Any) throws -> String {
        guard JSONSerialization.isValidJSONObject(value) else {
            throw DataSyncError.InvalidEntity(reason: "not representable as a JSON object")
        }
        let data = try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    static func decode(_ text: String) -> Entity {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? Entity ?? [:]
    }

    /// A JSON array of entities, as the query observer delivers it.
    static func decodeList(_ text: String) -> [Entity] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [Entity] ?? []
    }
}

extension DataSync {
    /// Opens an instance with the given tiers; every other option keeps its default.
    public static func open(
        prefix: String,
        local: TierSpec? = nil,
        cloud: TierSpec? = nil,
        strategy: StrategySpec? = nil,
        resolver: HostConflictResolver? = nil
    ) throws -> DataSync {
        try DataSync.open(options: OpenOptions(prefix: prefix, local: local, cloud: cloud, strategy: strategy, resolver: resolver))
    }
}

private final class StatusStreamObserver: StatusObserver, @unchecked Sendable {
    let continuation: AsyncStream<Status>.Continuation
    init(_ continuation: AsyncStream<Status>.Continuation) { self.continuation = continuation }
    func onStatus(status: Status) throws {
        continuation.yield(status)
    }
}

extension DataSync {
    /// The sync status: the current one, then the new one after every chain sync
    /// (success or failure). Values are produced on the dispatcher thread; the
    /// stream ends the subscription when it terminates.
    public func statuses() throws -> AsyncStream<Status> {
        var continuation: AsyncStream<Status>.Continuation!
        let stream = AsyncStream<Status> { continuation = $0 }
        let subscription = try observeStatus(observer: StatusStreamObserver(continuation))
        continuation.onTermination = { _ in subscription.unsubscribe() }
        return stream
    }
}

private final class EntityStreamObserver: EntityObserver, @unchecked Sendable {
    let continuation: AsyncStream<Entity?>.Continuation
    init(_ continuation: AsyncStream<Entity?>.Continuation) { self.continuation = continuation }
    func onChange(entityJson: String?) throws {
        continuation.yield(entityJson.map(EntityCoding.decode))
    }
}

private final class QueryStreamObserver: QueryObserver, @unchecked Sendable {
    let continuation: AsyncStream<[Entity]>.Continuation
    init(_ continuation: AsyncStream<[Entity]>.Continuation) { self.continuation = continuation }
    func onResults(entitiesJson: String) throws {
        continuation.yield(EntityCoding.decodeList(entitiesJson))
    }
}

extension Repository {
    /// Saves an entity and returns its id (generated when absent).
    @discardableResult
    public func save(_ entity: Entity) throws -> String {
        try save(entityJson: EntityCoding.encode(entity))
    }

    /// The entity with this id, or nil.
    public func entity(_ id: String) throws -> Entity? {
        try get(id: id).map(EntityCoding.decode)
    }

    /// The entities matching shallow field equality `where`, sorted and paged.
    public func find(where filter: Entity? = nil, sort: [Sort] = [], limit: UInt64? = nil, offset: UInt64? = nil) throws -> [Entity] {
        let whereJson = try filter.map { try EntityCoding.encode($0) }
        let q = Query(ids: nil, whereJson: whereJson, sort: sort.map { SortField(field: $0.field, descending: $0.descending) },
                      limit: limit, offset: offset, filterJson: nil)
        return try query(query: q).map(EntityCoding.decode)
    }

    /// The entity's current value, then every change (nil when absent or deleted).
    /// Values are produced on the dispatcher thread; the stream ends the
    /// subscription when it terminates.
    public func changes(_ id: String) throws -> AsyncStream<Entity?> {
        var continuation: AsyncStream<Entity?>.Continuation!
        let stream = AsyncStream<Entity?> { continuation = $0 }
        let subscription = try observe(id: id, observer: EntityStreamObserver(continuation))
        continuation.onTermination = { _ in subscription.unsubscribe() }
        return stream
    }

    /// The query's full result list, then the new list after changes.
    public func changes(where filter: Entity? = nil, sort: [Sort] = []) throws -> AsyncStream<[Entity]> {
        var continuation: AsyncStream<[Entity]>.Continuation!
        let stream = AsyncStream<[Entity]> { continuation = $0 }
        let whereJson = try filter.map { try EntityCoding.encode($0) }
        let q = Query(ids: nil, whereJson: whereJson, sort: sort.map { SortField(field: $0.field, descending: $0.descending) },
                      limit: nil, offset: nil, filterJson: nil)
        let subscription = try observeAll(query: q, observer: QueryStreamObserver(continuation))
        continuation.onTermination = { _ in subscription.unsubscribe() }
        return stream
    }
}

/// One emission of a change-set stream (`Repository.changeSets`). To apply a
/// `.delta` to the previous list: remove every entity whose id is in `removed` or
/// among the upserts, then insert each upsert at its position, in the order given
/// (`apply(to:)` does this).
public enum Changes: @unchecked Sendable {
    /// The first emission: the whole result.
    case initial([Entity])
    /// What changed since the last emission, and the new count.
    case delta(removed: [String], upserted: [(position: Int, entity: Entity)], count: Int, handle: ChangeSetHandle)

    /// How many entities the result has now.
    public var count: Int {
        switch self {
        case .initial(let list): return list.count
        case .delta(_, _, let count, _): return count
        }
    }

    /// The whole result at this emission; for a `.delta` it is read only now.
    public func list() -> [Entity] {
        switch self {
        case .initial(let list): return list
        case .delta(_, _, _, let handle): return EntityCoding.decodeList(handle.listJson())
        }
    }

    /// Changes `previous` (the list after the last emission) into this one's list.
    public func apply(to previous: inout [Entity]) {
        switch self {
        case .initial(let list):
            previous = list
        case .delta(let removed, let upserted, _, _):
            var gone = Set(removed)
            for u in upserted { if let id = u.entity["id"] as? String { gone.insert(id) } }
            if !gone.isEmpty { previous.removeAll { gone.contains($0["id"] as? String ?? "") } }
            for u in upserted { previous.insert(u.entity, at: min(u.position, previous.count)) }
        }
    }

    static func parse(_ text: String, _ handle: ChangeSetHandle) -> Changes {
        let doc = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        let upserted: [(position: Int, entity: Entity)] = (doc["upserted"] as? [[String: Any]] ?? []).map {
            (position: ($0["position"] as? NSNumber)?.intValue ?? 0, entity: $0["entity"] as? Entity ?? [:])
        }
        if doc["initial"] as? Bool == true {
            return .initial(upserted.map { $0.entity })
        }
        return .delta(removed: doc["removed"] as? [String] ?? [], upserted: upserted,
                      count: (doc["count"] as? NSNumber)?.intValue ?? 0, handle: handle)
    }
}

private final class ChangeStreamObserver: ChangeObserver, @unchecked Sendable {
    let continuation: AsyncStream<Changes>.Continuation
    init(_ continuation: AsyncStream<Changes>.Continuation) { self.continuation = continuation }
    func onChanges(changesJson: String, changes: ChangeSetHandle) throws {
        continuation.yield(Changes.parse(changesJson, changes))
    }
}

extension Repository {
    /// The query's change sets: `.initial` (the whole list), then `.delta`s (only
    /// what changed; bursts coalesced, the last leaves an applied copy at the final
    /// state). Values are produced on the dispatcher thread; the stream ends the
    /// subscription when it terminates. The full-list form is `changes(where:sort:)`.
    public func changeSets(where filter: Entity? = nil, sort: [Sort] = [], limit: UInt64? = nil, offset: UInt64? = nil) throws -> AsyncStream<Changes> {
        var continuation: AsyncStream<Changes>.Continuation!
        let stream = AsyncStream<Changes> { continuation = $0 }
        let whereJson = try filter.map { try EntityCoding.encode($0) }
        let q = Query(ids: nil, whereJson: whereJson, sort: sort.map { SortField(field: $0.field, descending: $0.descending) },
                      limit: limit, offset: offset, filterJson: nil)
        let subscription = try observeChanges(query: q, observer: ChangeStreamObserver(continuation))
        continuation.onTermination = { _ in subscription.unsubscribe() }
        return stream
    }
}
