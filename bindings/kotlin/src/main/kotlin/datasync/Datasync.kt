// The idiomatic Kotlin layer over the generated bindings (package datasync.ffi):
// entities as JsonObject, observers as Flow, instances as AutoCloseable.
package datasync

import datasync.ffi.DataSync
import datasync.ffi.EntityObserver
import datasync.ffi.HostConflictResolver
import datasync.ffi.OpenOptions
import datasync.ffi.Query
import datasync.ffi.QueryObserver
import datasync.ffi.Repository
import datasync.ffi.SortField
import datasync.ffi.Status
import datasync.ffi.StrategySpec
import datasync.ffi.Subscription
import datasync.ffi.SyncStats
import datasync.ffi.TierKind
import datasync.ffi.TierSpec
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.jsonArray
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.jsonObject

/** Opens instances. */
object Datasync {
    /**
     * Opens an instance. [local] and [cloud] are optional tiers
     * (`TierSpec.Memory`, `TierSpec.Directory`, `TierSpec.Host`); [configure] may
     * change the remaining options (timings, `syncOnOpen`).
     */
    fun open(
        prefix: String,
        local: TierSpec? = null,
        cloud: TierSpec? = null,
        strategy: StrategySpec? = null,
        resolver: HostConflictResolver? = null,
        configure: OpenOptions.() -> Unit = {},
    ): Instance {
        val options = OpenOptions(prefix = prefix, local = local, cloud = cloud, strategy = strategy, resolver = resolver)
        options.configure()
        return Instance(DataSync.open(options))
    }
}

/**
 * An open instance, usable from any thread. [close] shuts it down (flushes, runs
 * queued observer calls, joins its threads) and frees the handle.
 */
class Instance internal constructor(val handle: DataSync) : AutoCloseable {
    fun repo(name: String): Repo = Repo(handle.repo(name))

    /** Runs the whole sync chain; an unreachable cloud shows in `offline` / `errors`. */
    fun syncNow(): SyncStats = handle.syncNow()

    /** Returns once every earlier write is durable in the tier below the store. */
    fun flush() = handle.flush()

    /** Returns once observers have been called for every earlier change. */
    fun drainEvents() = handle.drainEvents()

    val status: Status get() = handle.status()

    fun tierKeys(tier: TierKind): List<String> = handle.tierKeys(tier)

    fun audit(): List<String> = handle.audit()

    /** Shuts down without freeing the handle; later calls throw `DataSyncException.Closed`. */
    fun shutdown() = handle.shutdown()

    override fun close() {
        try {
            handle.shutdown()
        } finally {
            handle.close()
        }
    }
}

/** A sort field: ascending unless [descending]. */
data class Sort(val field: String, val descending: Boolean = false)

/** The entities of one name, as [JsonObject]s. */
class Repo internal constructor(val handle: Repository) {
    val name: String get() = handle.name()

    /** Saves an entity and returns its id (generated when absent). */
    fun save(entity: JsonObject): String = handle.save(entity.toString())

    /** Saves an entity given as a map of JSON-like values. */
    fun save(entity: Map<String, Any?>): String = save(toJson(entity).jsonObject)

    fun saveMany(entities: List<JsonObject>): List<String> = handle.saveMany(entities.map { it.toString() })

    fun get(id: String): JsonObject? = handle.get(id)?.let(::parseEntity)

    fun delete(id: String): Boolean = handle.delete(id)

    fun deleteMany(ids: List<String>): Long = handle.deleteMany(ids).toLong()

    fun query(
        where: Map<String, Any?>? = null,
        sort: List<Sort> = emptyList(),
        limit: Int? = null,
        offset: Int? = null,
        ids: List<String>? = null,
        filter: Any? = null,
    ): List<JsonObject> = handle.query(buildQuery(where, sort, limit, offset, ids, filter)).map(::parseEntity)

    /** Calls [listener] with the current value (null if absent), then each change, on the dispatcher thread. */
    fun observe(id: String, listener: (JsonObject?) -> Unit): Subscription =
        handle.observe(id, object : EntityObserver {
            override fun onChange(entityJson: String?) = listener(entityJson?.let(::parseEntity))
        })

    /** Calls [listener] with the matching list, then the new list after changes. */
    fun observeAll(
        where: Map<String, Any?>? = null,
        sort: List<Sort> = emptyList(),
        listener: (List<JsonObject>) -> Unit,
    ): Subscription = handle.observeAll(buildQuery(where, sort, null, null, null, null), object : QueryObserver {
        override fun onResults(entitiesJson: String) =
            listener(Json.parseToJsonElement(entitiesJson).jsonArray.map { it.jsonObject })
    })

    /** The entity as a cold [Flow]: the current value, then every change; unsubscribes when collection stops. */
    fun changes(id: String): Flow<JsonObject?> = callbackFlow {
        val sub = observe(id) { trySend(it) }
        awaitClose { sub.unsubscribe(); sub.close() }
    }.buffer(Channel.UNLIMITED)

    /** The query's results as a cold [Flow]. */
    fun changesAll(where: Map<String, Any?>? = null, sort: List<Sort> = emptyList()): Flow<List<JsonObject>> = callbackFlow {
        val sub = observeAll(where, sort) { trySend(it) }
        awaitClose { sub.unsubscribe(); sub.close() }
    }.buffer(Channel.UNLIMITED)
}

private fun parseEntity(text: String): JsonObject = Json.parseToJsonElement(text).jsonObject

private fun buildQuery(where: Map<String, Any?>?, sort: List<Sort>, limit: Int?, offset: Int?, ids: List<String>?, filter: Any?) = Query(
    ids = ids,
    whereJson = where?.let { toJson(it).toString() },
    sort = sort.map { SortField(it.field, it.descending) },
    limit = limit?.toULong(),
    offset = offset?.toULong(),
    filterJson = filter?.let { toJson(it).toString() },
)

/** Converts JSON-like Kotlin values (maps, lists, strings, numbers, booleans, null) to JSON. */
fun toJson(value: Any?): JsonElement = when (value) {
    null -> JsonNull
    is JsonElement -> value
    is String -> JsonPrimitive(value)
    is Number -> JsonPrimitive(value)
    is Boolean -> JsonPrimitive(value)
    is Map<*, *> -> JsonObject(value.entries.associate { (k, v) -> k.toString() to toJson(v) })
    is Iterable<*> -> JsonArray(value.map(::toJson))
    is Array<*> -> JsonArray(value.map(::toJson))
    else -> throw IllegalArgumentException("not a JSON value: ${value::class}")
}
