// The idiomatic Kotlin layer over the generated bindings (package datasync.ffi):
// entities as JsonObject, observers as Flow, host policies as Kotlin interfaces,
// blocking calls also as suspend functions, instances as AutoCloseable.
package datasync

import com.sun.jna.Memory
import com.sun.jna.Native
import com.sun.jna.Pointer
import datasync.ffi.CandidateKeys
import datasync.ffi.ChangeObserver
import datasync.ffi.ChangeSetHandle
import datasync.ffi.DataSync
import datasync.ffi.DataSyncException
import datasync.ffi.DateGranularity
import datasync.ffi.EntityBatch
import datasync.ffi.EntityBatchObserver
import datasync.ffi.HostConflictResolver
import datasync.ffi.HostKeyStrategy
import datasync.ffi.HostPersistence
import datasync.ffi.MemoryTier
import datasync.ffi.OpenOptions
import datasync.ffi.PendingWrites
import datasync.ffi.Query
import datasync.ffi.QueryObserver
import datasync.ffi.Repository
import datasync.ffi.SlotState
import datasync.ffi.SortField
import datasync.ffi.Status
import datasync.ffi.StatusObserver
import datasync.ffi.StrategySpec
import datasync.ffi.Subscription
import datasync.ffi.SyncStats
import datasync.ffi.TierKind
import datasync.ffi.TierSpec
import datasync.ffi.directError
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.withContext
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.jsonArray
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.boolean
import kotlinx.serialization.json.int
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.long
import kotlin.concurrent.withLock

/** Opens instances. */
object Datasync {
    /**
     * Opens an instance. [local] and [cloud] are optional tiers (see [Tier]);
     * [strategy] groups entities into partitions (see [Strategy]; global when null);
     * [resolver] replaces last-writer-wins. [configure] may change the remaining
     * options (timings in milliseconds, `syncOnOpen`); each one left null keeps the
     * library's default, which `datasync.ffi.defaultOptions(prefix)` reports.
     */
    fun open(
        prefix: String,
        local: TierSpec? = null,
        cloud: TierSpec? = null,
        strategy: StrategySpec? = null,
        resolver: ConflictResolver? = null,
        configure: OpenOptions.() -> Unit = {},
    ): Instance {
        val options = OpenOptions(
            prefix = prefix,
            local = local,
            cloud = cloud,
            strategy = strategy,
            resolver = resolver?.let(::ResolverBridge),
        )
        options.configure()
        return Instance(DataSync.open(options))
    }
}

/** The tiers an instance may keep below its in-memory store. */
object Tier {
    /** A shareable in-memory tier (pass the same [MemoryTier] to several instances). */
    fun memory(tier: MemoryTier = MemoryTier()): TierSpec = TierSpec.Memory(tier)

    /** The crash-safe directory store; [durable] syncs files to disk before a write counts as done. */
    fun directory(path: String, durable: Boolean = true): TierSpec = TierSpec.Directory(path, durable)

    /**
     * The sync server (`datasync-server`) at [url], authenticated by the bearer [token];
     * timeouts in milliseconds, null for 5 s to connect and 30 s per read. A partition the
     * token may not touch is left out of syncs (`keysRefused`); an unreachable server
     * makes the instance offline.
     */
    fun http(
        url: String,
        token: String,
        connectTimeoutMs: Long? = null,
        readTimeoutMs: Long? = null,
    ): TierSpec = TierSpec.Http(url, token, connectTimeoutMs?.toULong(), readTimeoutMs?.toULong())

    /** A tier the app implements. */
    fun host(adapter: HostPersistence): TierSpec = TierSpec.Host(adapter)
}

/** One entity's state as a [ConflictResolver] sees it. */
sealed interface Side {
    data class Active(val entity: JsonObject) : Side
    /** Deleted at this instant (`YYYY-MM-DDTHH:MM:SS.sssZ`). */
    data class Deleted(val at: String) : Side
}

/**
 * Chooses between two different states of one entity during sync. Must be
 * deterministic and symmetric (`resolve(a, b) == resolve(b, a)`); a merge must keep
 * the id. When it throws or returns something unusable, last-writer-wins decides.
 */
fun interface ConflictResolver {
    fun resolve(entityName: String, a: Side, b: Side): Side
}

private fun side(state: SlotState): Side = when (state) {
    is SlotState.Active -> Side.Active(parseEntity(state.entityJson))
    is SlotState.Deleted -> Side.Deleted(state.deletedAt)
}

private class ResolverBridge(val host: ConflictResolver) : HostConflictResolver {
    override fun resolve(entityName: String, a: SlotState, b: SlotState): SlotState =
        when (val winner = host.resolve(entityName, side(a), side(b))) {
            is Side.Active -> SlotState.Active(winner.entity.toString())
            is Side.Deleted -> SlotState.Deleted(winner.at)
        }
}

/** The partitions a query reads, as a [KeyStrategy] reports them. */
sealed interface Candidates {
    /** Exactly these partition keys. */
    data class Keys(val keys: List<String>) : Candidates
    /** Every known partition key that starts with [prefix]. */
    data class Prefix(val prefix: String) : Candidates
}

/** A custom key strategy: which partition an entity goes to, which partitions a query reads. */
interface KeyStrategy {
    /** One character, not a letter, digit, `_` or `-`; read once, when the instance opens. Null: the library's default. */
    val separator: String? get() = null
    /** Length of the random part of new ids, 8..=64; read once. Null: the library's default. */
    val idLength: Int? get() = null

    /** The partition (without prefix) of an entity about to be saved. Must be pure. */
    fun logicalKey(entityName: String, entity: JsonObject): String

    /** The partitions a query over [entityName] reads: only those the caller may read. */
    fun candidateKeys(prefix: String, entityName: String, filter: JsonElement?): Candidates
}

private class StrategyBridge(val host: KeyStrategy) : HostKeyStrategy {
    override fun logicalKey(entityName: String, entityJson: String): String =
        host.logicalKey(entityName, parseEntity(entityJson))

    override fun candidateKeys(prefix: String, entityName: String, filterJson: String?): CandidateKeys =
        when (val c = host.candidateKeys(prefix, entityName, filterJson?.let(Json::parseToJsonElement))) {
            is Candidates.Keys -> CandidateKeys.Keys(c.keys)
            is Candidates.Prefix -> CandidateKeys.Prefix(c.prefix)
        }
}

/** How entities are grouped into partitions. */
object Strategy {
    /** One partition per entity name (the default). */
    val global: StrategySpec get() = StrategySpec.Global

    /** By the year, month or day of `createdAt`; query with `filter = mapOf("from" to ..., "to" to ...)`. */
    fun date(granularity: DateGranularity = DateGranularity.MONTH): StrategySpec = StrategySpec.Date(granularity)

    /** By the value of one field; query with `filter = mapOf("values" to listOf(...))`. */
    fun field(name: String): StrategySpec = StrategySpec.Field(name)

    /** A strategy the app implements. */
    fun custom(strategy: KeyStrategy): StrategySpec {
        val idLength = strategy.idLength
        require(idLength == null || idLength > 0) { "idLength must be positive, not $idLength" }
        return StrategySpec.Host(StrategyBridge(strategy), strategy.separator, idLength?.toUInt())
    }
}

/**
 * An open instance, usable from any thread. [close] shuts it down (flushes, runs
 * queued observer calls, joins its threads) and frees the handle. Blocking calls
 * have `suspend` twins under [suspending], which run them on [Dispatchers.IO].
 */
class Instance internal constructor(val handle: DataSync) : AutoCloseable {
    fun repo(name: String): Repo = Repo(handle.repo(name), this)

    // The instance's entity observers, made at the first `observe`: the deliveries
    // of one dispatcher round cross the binding in one call.
    internal val entityBatch: EntityBatchSink by lazy {
        EntityBatchSink().also { it.native = handle.entityBatch(it) }
    }

    /** Runs the whole sync chain; an unreachable cloud shows in `offline` / `errors`. */
    fun syncNow(): SyncStats = handle.syncNow()

    /** Returns once every earlier write is durable in the tier below the store. */
    fun flush() = handle.flush()

    /** Returns once observers have been called for every earlier change. */
    fun drainEvents() = handle.drainEvents()

    val status: Status get() = handle.status()

    /**
     * The writes not yet durable locally (`local`) and those durable locally but not
     * yet in the cloud (`cloud`), oldest first. Kept in memory: writes made before
     * this instance was opened are not listed.
     */
    fun pendingWrites(): PendingWrites = handle.pendingWrites()

    /**
     * Waits up to [timeoutMs] milliseconds until the latest write of entity [id] of
     * [name] is in the cloud: true when it is (at once when nothing of it is pending),
     * false when the time ran out. It only waits ([syncNow] hurries it). Throws
     * `DataSyncException.WouldDeadlock` from an observer or adapter callback and
     * `DataSyncException.InvalidConfig` without a cloud tier.
     */
    fun waitInCloud(name: String, id: String, timeoutMs: Long): Boolean {
        require(timeoutMs >= 0) { "timeoutMs must be 0 or more, not $timeoutMs" }
        return handle.waitInCloud(name, id, timeoutMs.toULong())
    }

    /** Waits up to [timeoutMs] milliseconds until every earlier write is in the cloud; as [waitInCloud]. */
    fun waitAllInCloud(timeoutMs: Long): Boolean {
        require(timeoutMs >= 0) { "timeoutMs must be 0 or more, not $timeoutMs" }
        return handle.waitAllInCloud(timeoutMs.toULong())
    }

    /**
     * Calls [listener] with the current status, then the new one after every chain
     * sync and after a store sync that changed `pendingCloud`, on the dispatcher thread.
     */
    fun observeStatus(listener: (Status) -> Unit): Subscription =
        handle.observeStatus(object : StatusObserver {
            override fun onStatus(status: Status) = listener(status)
        })

    /** The status as a cold [Flow]: the current one, then one after every chain sync. */
    fun statuses(): Flow<Status> = callbackFlow {
        val sub = observeStatus { trySend(it) }
        awaitClose { sub.unsubscribe(); sub.close() }
    }.buffer(Channel.UNLIMITED)

    fun tierKeys(tier: TierKind): List<String> = handle.tierKeys(tier)

    fun audit(): List<String> = handle.audit()

    /** Shuts down without freeing the handle; later calls throw `DataSyncException.Closed`. */
    fun shutdown() = handle.shutdown()

    /** The blocking calls as `suspend` functions on [Dispatchers.IO]. */
    val suspending: SuspendingInstance get() = SuspendingInstance(this)

    override fun close() {
        try {
            handle.shutdown()
        } finally {
            handle.close()
        }
    }
}

/** [Instance]'s blocking calls as `suspend` functions, each run on [Dispatchers.IO]. */
class SuspendingInstance internal constructor(private val instance: Instance) {
    suspend fun syncNow(): SyncStats = withContext(Dispatchers.IO) { instance.syncNow() }
    suspend fun flush() = withContext(Dispatchers.IO) { instance.flush() }
    suspend fun drainEvents() = withContext(Dispatchers.IO) { instance.drainEvents() }
    suspend fun audit(): List<String> = withContext(Dispatchers.IO) { instance.audit() }
    suspend fun waitInCloud(name: String, id: String, timeoutMs: Long): Boolean =
        withContext(Dispatchers.IO) { instance.waitInCloud(name, id, timeoutMs) }
    suspend fun waitAllInCloud(timeoutMs: Long): Boolean =
        withContext(Dispatchers.IO) { instance.waitAllInCloud(timeoutMs) }
    suspend fun shutdown() = withContext(Dispatchers.IO) { instance.shutdown() }
}

/** A sort field: ascending unless [descending]. */
data class Sort(val field: String, val descending: Boolean = false)

/**
 * The entity observers of one instance. The library hands each dispatcher round's
 * deliveries over in one call (a JSON array of `[handle, entity]` pairs), and this
 * calls the listeners in that order. A listener runs under [lock], which [remove]
 * takes too: once removed (from another thread, or from inside a listener) it is
 * not called again. A listener that throws does not stop the others; the first
 * failure is rethrown at the end, for the library to log.
 */
internal class EntityBatchSink : EntityBatchObserver {
    private val lock = java.util.concurrent.locks.ReentrantLock()
    private val listeners = HashMap<Long, (JsonObject?) -> Unit>()
    private var next = 0L
    lateinit var native: EntityBatch

    fun add(listener: (JsonObject?) -> Unit): Long = lock.withLock {
        next += 1
        listeners[next] = listener
        next
    }

    fun remove(handle: Long) {
        lock.withLock { listeners.remove(handle) }
    }

    /** How many rounds crossed the binding (for tests of the cost). */
    val calls = java.util.concurrent.atomic.AtomicLong()

    override fun onEntities(batchJson: String) {
        calls.incrementAndGet()
        var failed: Throwable? = null
        for (item in Json.parseToJsonElement(batchJson).jsonArray) {
            val pair = item.jsonArray
            val handle = pair[0].jsonPrimitive.long
            val value = pair[1].let { if (it is JsonNull) null else it.jsonObject }
            lock.withLock {
                val listener = listeners[handle] ?: return@withLock
                try {
                    listener(value)
                } catch (e: Throwable) {
                    if (failed == null) failed = e
                }
            }
        }
        failed?.let { throw it }
    }
}

/**
 * A live entity observer. [unsubscribe] (idempotent) or [close] stops it: once that
 * returns, the listener is not called again.
 */
class EntitySubscription internal constructor(
    private val native: Subscription,
    private val batch: EntityBatchSink,
    private val handle: Long,
) : AutoCloseable {
    fun unsubscribe() {
        native.unsubscribe()
        batch.remove(handle)
    }

    fun isActive(): Boolean = native.isActive()

    override fun close() {
        unsubscribe()
        native.close()
    }
}

/** The entities of one name, as [JsonObject]s. Blocking calls have `suspend` twins under [suspending]. */
class Repo internal constructor(val handle: Repository, private val owner: Instance) {
    val name: String get() = handle.name()

    // Taken on the first save/get/delete: a repository used only for queries costs no handle.
    private val direct: DirectHandle? by lazy { if (Direct.available) DirectHandle(handle) else null }

    /** Saves an entity and returns its id (generated when absent). */
    fun save(entity: JsonObject): String {
        val d = direct ?: return handle.save(entity.toString())
        return Direct.call(d, utf8(entity.toString()), Direct::datasync_direct_save)!!.decodeToString()
    }

    /** Saves an entity given as a map of JSON-like values. */
    fun save(entity: Map<String, Any?>): String = save(toJson(entity).jsonObject)

    /** Saves several entities at once (all or none); the batch crosses as one JSON array each way. */
    fun saveMany(entities: List<JsonObject>): List<String> {
        val batch = JsonArray(entities).toString()
        val d = direct
        val ids = if (d == null) handle.saveManyJson(batch) else Direct.call(d, utf8(batch), Direct::datasync_direct_save_many)!!.decodeToString()
        return Json.parseToJsonElement(ids).jsonArray.map { it.jsonPrimitive.content }
    }

    fun get(id: String): JsonObject? {
        val d = direct ?: return handle.get(id)?.let(::parseEntity)
        return Direct.call(d, utf8(id), Direct::datasync_direct_get)?.let { parseEntity(it.decodeToString()) }
    }

    fun delete(id: String): Boolean {
        val d = direct ?: return handle.delete(id)
        return Direct.delete(d, utf8(id))
    }

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
    fun observe(id: String, listener: (JsonObject?) -> Unit): EntitySubscription {
        val batch = owner.entityBatch
        val h = batch.add(listener)
        val native = try {
            handle.observeBatched(id, batch.native, h.toULong())
        } catch (e: Throwable) {
            batch.remove(h)
            throw e
        }
        return EntitySubscription(native, batch, h)
    }

    /** Calls [listener] with the list matching the query options, then the new list after changes. */
    fun observeAll(
        where: Map<String, Any?>? = null,
        sort: List<Sort> = emptyList(),
        limit: Int? = null,
        offset: Int? = null,
        ids: List<String>? = null,
        filter: Any? = null,
        listener: (List<JsonObject>) -> Unit,
    ): Subscription = handle.observeAll(buildQuery(where, sort, limit, offset, ids, filter), object : QueryObserver {
        override fun onResults(entitiesJson: String) =
            listener(Json.parseToJsonElement(entitiesJson).jsonArray.map { it.jsonObject })
    })

    /** The entity as a cold [Flow]: the current value, then every change; unsubscribes when collection stops. */
    fun changes(id: String): Flow<JsonObject?> = callbackFlow {
        val sub = observe(id) { trySend(it) }
        awaitClose { sub.unsubscribe(); sub.close() }
    }.buffer(Channel.UNLIMITED)

    /** The query's results as a cold [Flow]. */
    fun changesAll(
        where: Map<String, Any?>? = null,
        sort: List<Sort> = emptyList(),
        limit: Int? = null,
        offset: Int? = null,
        ids: List<String>? = null,
        filter: Any? = null,
    ): Flow<List<JsonObject>> = callbackFlow {
        val sub = observeAll(where, sort, limit, offset, ids, filter) { trySend(it) }
        awaitClose { sub.unsubscribe(); sub.close() }
    }.buffer(Channel.UNLIMITED)

    /**
     * Calls [listener] with the query's change sets on the dispatcher thread: first
     * [Changes.Initial] (the whole list), then [Changes.Delta]s (only what changed;
     * bursts coalesced). Here [Changes.list] works only during the call: the result
     * it reads is released when [listener] returns, so keeping nothing costs nothing.
     */
    fun observeChanges(
        where: Map<String, Any?>? = null,
        sort: List<Sort> = emptyList(),
        limit: Int? = null,
        offset: Int? = null,
        ids: List<String>? = null,
        filter: Any? = null,
        listener: (Changes) -> Unit,
    ): Subscription = handle.observeChanges(buildQuery(where, sort, limit, offset, ids, filter), object : ChangeObserver {
        override fun onChanges(changesJson: String, changes: ChangeSetHandle) =
            changes.use { listener(Changes.parse(changesJson, it)) }
    })

    /**
     * The query's change sets as a cold [Flow]: [Changes.Initial], then
     * [Changes.Delta]s. A [Changes.Delta.list] may be called later; until its
     * handle is collected, the next emission copies the result's list of references
     * once (never the entities).
     */
    fun changeSets(
        where: Map<String, Any?>? = null,
        sort: List<Sort> = emptyList(),
        limit: Int? = null,
        offset: Int? = null,
        ids: List<String>? = null,
        filter: Any? = null,
    ): Flow<Changes> = callbackFlow {
        val sub = handle.observeChanges(buildQuery(where, sort, limit, offset, ids, filter), object : ChangeObserver {
            override fun onChanges(changesJson: String, changes: ChangeSetHandle) {
                trySend(Changes.parse(changesJson, changes))
            }
        })
        awaitClose { sub.unsubscribe(); sub.close() }
    }.buffer(Channel.UNLIMITED)

    /** The blocking calls as `suspend` functions on [Dispatchers.IO]. */
    val suspending: SuspendingRepo get() = SuspendingRepo(this)
}

/**
 * An entity inserted or updated at [position] of the sorted result; [inPlace]: it was
 * in the previous list and kept its place, so applying by position replaces the entry
 * at [position] instead of inserting it.
 */
data class Upsert(val position: Int, val entity: JsonObject, val inPlace: Boolean = false)

/**
 * One emission of a change-set observer ([Repo.observeChanges], [Repo.changeSets]).
 * To apply a [Delta] to the previous list by position ([applyTo] does this; the cost
 * follows the change, not the list): remove the entries at the indexes
 * [Delta.removedAt] (from the last), then for each upsert in the order given replace
 * the entry at its position when it is [Upsert.inPlace], else insert it there. By id
 * gives the same list: remove every entity whose id is in [Delta.removed] or among
 * the upserts, then insert each upsert at its position, in the order given.
 */
sealed class Changes {
    /** How many entities the result has now. */
    abstract val count: Int

    /** The whole result at this emission. */
    abstract fun list(): List<JsonObject>

    /** Changes [previous] (the list after the last emission) into this one's list. */
    abstract fun applyTo(previous: MutableList<JsonObject>)

    /** The first emission: the whole result. */
    class Initial(val entities: List<JsonObject>) : Changes() {
        override val count: Int get() = entities.size
        override fun list(): List<JsonObject> = entities
        override fun applyTo(previous: MutableList<JsonObject>) {
            previous.clear()
            previous.addAll(entities)
        }
    }

    /** What changed since the last emission; [list] reads the whole result, once, when asked. */
    class Delta internal constructor(
        val removed: List<String>,
        /** Indexes in the previous list of the entries that leave their place (the removed ones and the upserts that moved), ascending. */
        val removedAt: List<Int>,
        val upserted: List<Upsert>,
        override val count: Int,
        private val handle: ChangeSetHandle,
    ) : Changes() {
        private val whole by lazy {
            Json.parseToJsonElement(handle.listJson()).jsonArray.map { it.jsonObject }
        }

        override fun list(): List<JsonObject> = whole

        override fun applyTo(previous: MutableList<JsonObject>) {
            for (i in removedAt.indices.reversed()) {
                val at = removedAt[i]
                if (at < previous.size) previous.removeAt(at)
            }
            for (u in upserted) {
                if (u.inPlace && u.position < previous.size) previous[u.position] = u.entity
                else previous.add(minOf(u.position, previous.size), u.entity)
            }
        }

        override fun toString() = "Changes.Delta(removed=${removed.size}, removedAt=${removedAt.size}, upserted=${upserted.size}, count=$count)"
    }

    internal companion object {
        fun parse(text: String, handle: ChangeSetHandle): Changes {
            val doc = Json.parseToJsonElement(text).jsonObject
            val upserted = doc["upserted"]!!.jsonArray.map {
                val u = it.jsonObject
                Upsert(u["position"]!!.jsonPrimitive.int, u["entity"]!!.jsonObject, u["inPlace"]?.jsonPrimitive?.boolean ?: false)
            }
            if (doc["initial"]!!.jsonPrimitive.content == "true") {
                handle.close()
                return Initial(upserted.map { it.entity })
            }
            val removed = doc["removed"]!!.jsonArray.map { it.jsonPrimitive.content }
            val removedAt = doc["removedAt"]!!.jsonArray.map { it.jsonPrimitive.int }
            return Delta(removed, removedAt, upserted, doc["count"]!!.jsonPrimitive.int, handle)
        }
    }
}

/** [Repo]'s blocking calls as `suspend` functions, each run on [Dispatchers.IO]. */
class SuspendingRepo internal constructor(private val repo: Repo) {
    suspend fun save(entity: JsonObject): String = withContext(Dispatchers.IO) { repo.save(entity) }
    suspend fun save(entity: Map<String, Any?>): String = withContext(Dispatchers.IO) { repo.save(entity) }
    suspend fun saveMany(entities: List<JsonObject>): List<String> = withContext(Dispatchers.IO) { repo.saveMany(entities) }
    suspend fun get(id: String): JsonObject? = withContext(Dispatchers.IO) { repo.get(id) }
    suspend fun delete(id: String): Boolean = withContext(Dispatchers.IO) { repo.delete(id) }
    suspend fun deleteMany(ids: List<String>): Long = withContext(Dispatchers.IO) { repo.deleteMany(ids) }
    suspend fun query(
        where: Map<String, Any?>? = null,
        sort: List<Sort> = emptyList(),
        limit: Int? = null,
        offset: Int? = null,
        ids: List<String>? = null,
        filter: Any? = null,
    ): List<JsonObject> = withContext(Dispatchers.IO) { repo.query(where, sort, limit, offset, ids, filter) }
}

private fun parseEntity(text: String): JsonObject = Json.parseToJsonElement(text).jsonObject

/**
 * A repository's handle for the library's direct calls (`datasync_direct_*`),
 * released once, when it becomes unreachable (its [Repo] with it).
 */
private class DirectHandle(repository: Repository) {
    val value: Long = repository.directHandle().toLong()

    init {
        val value = value
        // The action must not hold this object, or it would never become unreachable.
        Direct.cleaner.register(this) { Direct.datasync_direct_release(value) }
    }
}

/** One thread's native buffers for direct calls: the answer, its length (or the delete flag), the argument. */
private class DirectBuffers {
    val answer = Memory(Direct.ANSWER)
    val answerAt = Pointer.nativeValue(answer)
    val length = Memory(8)
    val lengthAt = Pointer.nativeValue(length)
    var argument = Memory(Direct.ANSWER)

    /** In a call: a callback on this thread (a host strategy or tier) calling again gets buffers of its own. */
    var busy = false

    /** [bytes] in native memory: the argument buffer (grown up to [Direct.KEPT]), or a new one the caller closes. */
    fun argument(bytes: ByteArray): Memory {
        var into = argument
        if (bytes.size > into.size()) {
            into = Memory(bytes.size.toLong())
            if (bytes.size <= Direct.KEPT) {
                argument.close()
                argument = into
            }
        }
        into.write(0, bytes, 0, bytes.size)
        return into
    }

    fun close() {
        answer.close()
        length.close()
        argument.close()
    }
}

/**
 * Repo's hot calls (save, saveMany, get, delete) as one JNA direct-mapped call each
 * into the library the generated code loads, instead of the generated method's
 * several calls with RustBuffer structures. Pointers and `size_t` cross as `Long`
 * addresses of per-thread native buffers: with only primitive arguments JNA copies
 * just the bytes written and read, where a `ByteArray` argument would be copied
 * whole both ways. That needs 64-bit pointers and `size_t`; elsewhere [available]
 * is false and Repo keeps the generated methods.
 */
@Suppress("FunctionName")
private object Direct {
    const val OK = 0
    const val WAITING = 2
    const val ABSENT = 3

    /** The answer buffer's size; a longer answer waits in the library for `take`. */
    const val ANSWER = 64 * 1024L

    /** The largest argument buffer a thread keeps between calls. */
    const val KEPT = 1 shl 20

    val available = Native.POINTER_SIZE == 8 && Native.SIZE_T_SIZE == 8

    val cleaner: java.lang.ref.Cleaner by lazy { java.lang.ref.Cleaner.create() }

    // The library keeps a failed call's error and a long answer per thread: they are
    // read right after the call, on its thread, as the buffers are.
    private val buffers = ThreadLocal.withInitial { DirectBuffers() }

    init {
        // The generated code's library name and override, so both load the same file.
        val name = System.getProperty("uniffi.component.datasync.libraryOverride") ?: "datasync"
        Native.register(Direct::class.java, name)
    }

    external fun datasync_direct_save(handle: Long, json: Long, len: Long, out: Long, cap: Long, outLen: Long): Int
    external fun datasync_direct_save_many(handle: Long, json: Long, len: Long, out: Long, cap: Long, outLen: Long): Int
    external fun datasync_direct_get(handle: Long, id: Long, len: Long, out: Long, cap: Long, outLen: Long): Int
    external fun datasync_direct_delete(handle: Long, id: Long, len: Long, existed: Long): Int
    external fun datasync_direct_take(out: Long, cap: Long, outLen: Long): Int
    external fun datasync_direct_release(handle: Long)

    /** This thread's buffers, or new ones when a call on this thread is still using them. */
    fun acquire(): DirectBuffers {
        val kept = buffers.get()
        val b = if (kept.busy) DirectBuffers() else kept
        b.busy = true
        return b
    }

    fun release(b: DirectBuffers, arg: Memory, handle: DirectHandle) {
        if (arg !== b.argument) arg.close()
        b.busy = false
        if (b !== buffers.get()) b.close()
        // The cleaner must not release the handle while the library uses it.
        java.lang.ref.Reference.reachabilityFence(handle)
    }

    /** Calls [f] (save, saveMany or get) with [input]: the answer's bytes, null when absent. */
    inline fun call(handle: DirectHandle, input: ByteArray, f: (Long, Long, Long, Long, Long, Long) -> Int): ByteArray? {
        val b = acquire()
        val arg = b.argument(input)
        try {
            return when (val code = f(handle.value, Pointer.nativeValue(arg), input.size.toLong(), b.answerAt, ANSWER, b.lengthAt)) {
                OK -> b.answer.getByteArray(0, b.length.getLong(0).toInt())
                ABSENT -> null
                WAITING -> take(b)
                else -> failed(code)
            }
        } finally {
            release(b, arg, handle)
        }
    }

    fun delete(handle: DirectHandle, id: ByteArray): Boolean {
        val b = acquire()
        val arg = b.argument(id)
        try {
            val code = datasync_direct_delete(handle.value, Pointer.nativeValue(arg), id.size.toLong(), b.lengthAt)
            if (code != OK) failed(code)
            return b.length.getByte(0).toInt() != 0
        } finally {
            release(b, arg, handle)
        }
    }

    /** The answer that did not fit: it waits in the library, `length` bytes long. */
    private fun take(b: DirectBuffers): ByteArray {
        val size = b.length.getLong(0)
        Memory(size).use { whole ->
            val code = datasync_direct_take(Pointer.nativeValue(whole), size, b.lengthAt)
            if (code != OK) failed(code)
            return whole.getByteArray(0, b.length.getLong(0).toInt())
        }
    }

    /** Throws the error the library kept for this thread, as the generated methods would. */
    fun failed(code: Int): Nothing {
        directError()
        throw DataSyncException.Internal("a direct call answered $code without an error")
    }
}

/** [text] as UTF-8; a lone surrogate throws, as the generated code's conversion does, instead of becoming '?'. */
private fun utf8(text: String): ByteArray {
    val bytes = text.encodeToByteArray()
    // The strict (slower) encoder only when a '?' might be a replaced surrogate.
    if (bytes.contains('?'.code.toByte())) text.encodeToByteArray(0, text.length, throwOnInvalidSequence = true)
    return bytes
}

private fun count(value: Int?, what: String): ULong? {
    require(value == null || value >= 0) { "$what must be 0 or more, not $value" }
    return value?.toULong()
}

private fun buildQuery(where: Map<String, Any?>?, sort: List<Sort>, limit: Int?, offset: Int?, ids: List<String>?, filter: Any?) = Query(
    ids = ids,
    whereJson = where?.let { toJson(it).toString() },
    sort = sort.map { SortField(it.field, it.descending) },
    limit = count(limit, "limit"),
    offset = count(offset, "offset"),
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
