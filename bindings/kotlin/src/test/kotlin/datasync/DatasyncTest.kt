package datasync

import datasync.ffi.DataSyncException
import datasync.ffi.HostPersistence
import datasync.ffi.MemoryTier
import datasync.ffi.TierKind
import datasync.ffi.defaultOptions
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.int
import kotlinx.serialization.json.jsonArray
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.put
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import java.util.Collections
import java.util.concurrent.ConcurrentHashMap
import kotlin.concurrent.thread

/** A map-backed cloud; `failing` makes every call throw. With `conditional` it
 * offers the conditional write (and counts both kinds of write). */
class MapCloud(private val conditional: Boolean = false) : HostPersistence {
    val blobs = ConcurrentHashMap<String, ByteArray>()
    @Volatile var failing = false
    val plainWrites = java.util.concurrent.atomic.AtomicInteger()
    val conditionalWrites = java.util.concurrent.atomic.AtomicInteger()

    private fun check() {
        if (failing) throw java.io.IOException("the network is down")
    }

    override fun load(key: String): ByteArray? { check(); return blobs[key] }
    override fun store(key: String, bytes: ByteArray) {
        check()
        // Format 2's pieces are write-once under their hash, and its format marker is
        // the same bytes from every writer: neither needs the conditional write.
        if (!key.startsWith("!piece:") && key != "!datasync.format") plainWrites.incrementAndGet()
        blobs[key] = bytes
    }
    override fun clear(key: String) { check(); blobs.remove(key) }
    override fun keys(): List<String>? { check(); return blobs.keys.sorted() }
    override fun storeIf(key: String, expected: ByteArray?, bytes: ByteArray): Boolean? {
        if (!conditional) return null
        check()
        conditionalWrites.incrementAndGet()
        synchronized(this) {
            val held = blobs[key]
            val same = if (expected == null) held == null else held != null && held.contentEquals(expected)
            if (same) blobs[key] = bytes
            return same
        }
    }
}

fun device(cloud: HostPersistence, resolver: ConflictResolver? = null, local: HostPersistence? = null) = Datasync.open(
    "app",
    local = local?.let(Tier::host) ?: Tier.memory(),
    cloud = Tier.host(cloud),
    resolver = resolver,
) { cloudSyncIntervalMs = 3_600_000uL; retryBaseMs = 3_600_000uL; retryMaxMs = 3_600_000uL }

const val UID = "Doc.abcdefghijklmnop"

fun doc(title: String, updatedAt: String, version: Int) = buildJsonObject {
    put("id", UID); put("createdAt", "2026-01-01T00:00:00.000Z"); put("updatedAt", updatedAt)
    put("version", version); put("title", title)
}

// The earlier edit has the greater version and the greater bytes, so only
// last-writer-wins (not the equal-instant tie-break) picks the later one.
val EARLIER = doc("zz from a", "2026-01-01T00:00:01.000Z", 7)
val LATER = doc("from b", "2026-01-01T00:00:02.000Z", 2)

/** A canonical partition blob holding one Doc (keys sorted at every depth). */
fun partition(entity: JsonObject): ByteArray =
    JsonObject(mapOf("Doc" to JsonObject(mapOf(UID to JsonObject(entity.toSortedMap()))))).toString().toByteArray()

/** (local, cloud) pairs holding the two edits, each way round. */
fun seededTiers() = listOf(EARLIER to LATER, LATER to EARLIER).map { (mine, theirs) ->
    MapCloud().apply { blobs["app.Doc"] = partition(mine) } to MapCloud().apply { blobs["app.Doc"] = partition(theirs) }
}

/** The Doc as `tier` holds it, read through a fresh instance (so in either format). */
fun stored(tier: MapCloud): JsonObject? =
    Datasync.open("app", local = Tier.host(tier)) { syncOnOpen = false }.use { it.repo("Doc").get(UID) }

/** Whether a tier's keys hold partition `key`: format 1's document, or format 2's index. */
fun holdsPartition(keys: Collection<String>, key: String) = key in keys || "!index:$key" in keys

fun name(e: kotlinx.serialization.json.JsonObject?) = e?.get("name")?.jsonPrimitive?.content

class CrudTest {
    @Test
    fun saveGetDelete() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val id = users.save(mapOf("name" to "Alice", "tags" to listOf("a", "b")))
        assertTrue(id.startsWith("User."))
        val alice = users.get(id)!!
        assertEquals("Alice", name(alice))
        assertEquals(1, alice["version"]!!.jsonPrimitive.int)
        assertEquals(JsonArray(listOf(JsonPrimitive("a"), JsonPrimitive("b"))), alice["tags"])
        users.save(buildJsonObject { put("id", id); put("name", "Alice 2") })
        assertEquals(2, users.get(id)!!["version"]!!.jsonPrimitive.int)
        assertTrue(users.delete(id))
        assertNull(users.get(id))
        assertFalse(users.delete(id))
    }

    @Test
    fun closedInstanceRefusesCalls() {
        val ds = Datasync.open("app")
        val users = ds.repo("User")
        ds.shutdown()
        ds.shutdown()
        assertThrows<DataSyncException.Closed> { users.save(mapOf("x" to 1)) }
        ds.close()
    }

    @Test
    fun queries() = Datasync.open("app").use { ds ->
        val people = ds.repo("Person")
        people.save(mapOf("name" to "Cleo", "team" to "web", "age" to 41))
        people.save(mapOf("name" to "Bob", "team" to "core", "age" to 25))
        people.save(mapOf("name" to "Dan", "team" to "core"))
        people.save(mapOf("name" to "Ann", "team" to "core", "age" to 30))
        assertEquals(listOf("Ann", "Bob", "Dan"), people.query(where = mapOf("team" to "core"), sort = listOf(Sort("name"))).map(::name))
        assertEquals(listOf("Dan", "Bob", "Ann", "Cleo"), people.query(sort = listOf(Sort("age"))).map(::name))
        // Descending: missing values last.
        assertEquals(listOf("Ann", "Bob"), people.query(sort = listOf(Sort("age", descending = true)), limit = 2, offset = 1).map(::name))
    }

    @Test
    fun badInput() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        assertThrows<DataSyncException.InvalidId> { users.get("nope") }.also { assertEquals("nope", it.id) }
        assertThrows<DataSyncException.InvalidJson> { users.handle.save("{not json") }
        assertThrows<DataSyncException.InvalidEntity> { users.handle.save("[1,2]") }
        assertThrows<DataSyncException.InvalidName> { ds.repo("deleted") }
        assertThrows<DataSyncException.InvalidConfig> { Datasync.open("") }
        assertEquals(emptyList<Any>(), users.query())
    }

    @Test
    fun directoryTier(@org.junit.jupiter.api.io.TempDir dir: java.nio.file.Path) {
        val id = Datasync.open("app", local = Tier.directory(dir.toString(), durable = false)).use { it.repo("User").save(mapOf("name" to "kept")) }
        Datasync.open("app", local = Tier.directory(dir.toString())).use { ds ->
            assertEquals("kept", name(ds.repo("User").get(id)))
            assertEquals(emptyList<String>(), ds.audit())
        }
    }
}

class ObserverTest {
    @Test
    fun aBurstOfEntityDeliveriesCrossesTheBindingInFewCalls() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val ids = users.saveMany((0 until 200).map { buildJsonObject { put("n", 0) } })
        val seen = ConcurrentHashMap<String, MutableList<Int>>()
        val subs = ids.map { id ->
            users.observe(id) { e -> seen.getOrPut(id) { Collections.synchronizedList(mutableListOf()) }.add(e!!["n"]!!.jsonPrimitive.int) }
        }
        ds.drainEvents()
        val before = ds.entityBatch.calls.get()
        for (n in 1..5) users.saveMany(ids.map { id -> buildJsonObject { put("id", id); put("n", n) } })
        ds.drainEvents()
        val crossings = ds.entityBatch.calls.get() - before
        for (id in ids) assertEquals(listOf(0, 1, 2, 3, 4, 5), seen[id]!!.toList())
        // 1,000 deliveries, one call across the binding per dispatcher round.
        assertTrue(crossings in 1..10, "$crossings crossings")
        subs.forEach { it.close() }
    }

    @Test
    fun anObserverUnsubscribedMidRoundIsNotCalledAgain() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val id = users.save(mapOf("name" to "a"))
        var first = 0
        var second = 0
        lateinit var other: EntitySubscription
        users.observe(id) {
            first += 1
            // The other observer's delivery of this change is already in the round.
            if (first == 2) other.unsubscribe()
        }
        other = users.observe(id) { second += 1 }
        ds.drainEvents()
        assertEquals(1 to 1, first to second)
        users.save(mapOf("id" to id, "name" to "b"))
        users.save(mapOf("id" to id, "name" to "c"))
        ds.drainEvents()
        assertEquals(3 to 1, first to second)
        assertFalse(other.isActive())
    }

    @Test
    fun observeOnDispatcherThread() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val id = users.save(mapOf("name" to "a"))
        val seen = Collections.synchronizedList(mutableListOf<String?>())
        val threads = Collections.synchronizedSet(mutableSetOf<Long>())
        val sub = users.observe(id) { seen.add(name(it)); threads.add(Thread.currentThread().id) }
        ds.drainEvents()
        users.save(mapOf("id" to id, "name" to "b"))
        users.delete(id)
        ds.drainEvents()
        assertEquals(listOf("a", "b", null), seen.toList())
        // JNA may attach the dispatcher thread anew per callback: only "not this thread" is stable.
        assertFalse(threads.contains(Thread.currentThread().id))
        sub.unsubscribe()
        sub.unsubscribe()
        assertFalse(sub.isActive())
        // The SAME entity again: a broken unsubscribe would deliver it.
        users.save(mapOf("id" to id, "name" to "c"))
        ds.drainEvents()
        assertEquals(listOf("a", "b", null), seen.toList())
        sub.close()
    }

    @Test
    fun reentrantObserverAndDeadlockGuard() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val audit = ds.repo("Audit")
        val errors = Collections.synchronizedList(mutableListOf<String>())
        val sub = users.observeAll { rows ->
            audit.save(mapOf("count" to rows.size))
            try { ds.shutdown() } catch (e: DataSyncException.WouldDeadlock) { errors.add(e.call) }
        }
        ds.drainEvents()
        users.save(mapOf("name" to "a"))
        ds.drainEvents()
        assertEquals(listOf(0, 1), audit.query(sort = listOf(Sort("count"))).map { it["count"]!!.jsonPrimitive.int })
        assertEquals(listOf("close", "close"), errors.toList())
        sub.close()
    }

    @Test
    fun flowsDeliverCurrentThenChanges() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val id = users.save(mapOf("name" to "a"))
        runBlocking {
            assertEquals("a", name(users.changes(id).first()))
            val collected = async(Dispatchers.Default) { users.changes(id).take(2).toList() }
            // Writes until the collector has seen the second value.
            var n = 0
            while (!collected.isCompleted) {
                users.save(mapOf("id" to id, "name" to "v${n++}"))
                ds.drainEvents()
            }
            val values = collected.await()
            assertEquals(2, values.size)
            assertNotEquals(name(values[0]), name(values[1]))
        }
        runBlocking {
            val lists = users.changesAll().first()
            assertEquals(1, lists.size)
        }
    }

    @Test
    fun manyThreads() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val last = java.util.concurrent.atomic.AtomicInteger(-1)
        val sub = users.observeAll { last.set(it.size) }
        val workers = (0 until 4).map { w -> thread { repeat(25) { i -> users.save(mapOf("w" to w, "i" to i)) } } }
        workers.forEach { it.join() }
        ds.drainEvents()
        assertEquals(100, users.query().size)
        assertEquals(100, last.get())
        sub.close()
    }
}

class SyncTest {
    @Test
    fun aCloudWithTheConditionalWriteIsWrittenOnlyThroughIt() {
        val cloud = MapCloud(conditional = true)
        device(cloud).use { a ->
            device(cloud).use { b ->
                val x = a.repo("User").save(mapOf("name" to "from a"))
                a.syncNow()
                val y = b.repo("User").save(mapOf("name" to "from b"))
                b.syncNow()
                a.syncNow()
                assertEquals("from b", name(a.repo("User").get(y)))
                assertEquals("from a", name(b.repo("User").get(x)))
                assertTrue(cloud.conditionalWrites.get() > 0)
                assertEquals(0, cloud.plainWrites.get())
                assertEquals(emptyList<String>(), a.audit() + b.audit())
            }
        }
    }

    @Test
    fun twoDevicesConvergeThroughAKotlinCloud() {
        val cloud = MapCloud()
        device(cloud).use { a ->
            device(cloud).use { b ->
                val id = a.repo("User").save(mapOf("name" to "Alice"))
                val stats = a.syncNow()
                assertFalse(stats.offline)
                assertTrue(stats.keysCopied >= 1uL)
                val seen = Collections.synchronizedList(mutableListOf<String?>())
                val sub = b.repo("User").observe(id) { seen.add(name(it)) }
                b.syncNow()
                b.drainEvents()
                assertEquals("Alice", seen.last())
                assertEquals(a.tierKeys(TierKind.LOCAL), b.tierKeys(TierKind.LOCAL))
                // Delete after edit wins.
                a.repo("User").save(mapOf("id" to id, "name" to "again"))
                b.repo("User").delete(id)
                repeat(2) { a.syncNow(); b.syncNow() }
                assertNull(a.repo("User").get(id))
                assertEquals(emptyList<String>(), a.audit() + b.audit())
                sub.close()
            }
        }
    }

    @Test
    fun laterEditWinsByItsInstant() {
        for ((local, cloud) in seededTiers()) {
            device(cloud, local = local).use { ds ->
                repeat(2) { ds.syncNow() }
                assertEquals(LATER, ds.repo("Doc").get(UID))
                assertEquals(emptyList<String>(), ds.audit())
            }
            assertEquals(LATER, stored(local))
            assertEquals(LATER, stored(cloud))
        }
    }

    @Test
    fun throwingResolverFallsBackToTheLaterEdit() {
        val calls = java.util.concurrent.atomic.AtomicInteger()
        val broken = ConflictResolver { _, _, _ -> calls.incrementAndGet(); throw IllegalStateException("resolver bug") }
        for ((local, cloud) in seededTiers()) {
            device(cloud, broken, local).use { ds ->
                ds.syncNow()
                assertEquals(LATER, ds.repo("Doc").get(UID))
            }
            assertEquals(LATER, stored(local))
            assertEquals(LATER, stored(cloud))
        }
        assertTrue(calls.get() >= 2, "the resolver was asked before the fallback")
    }

    @Test
    fun throwingCloudMeansOffline() {
        val cloud = MapCloud()
        device(cloud).use { ds ->
            val users = ds.repo("User")
            val id = users.save(mapOf("name" to "x"))
            cloud.failing = true
            val stats = ds.syncNow()
            assertTrue(stats.offline)
            assertTrue(stats.errors.any { "network is down" in it })
            assertFalse(ds.status.online)
            assertEquals("x", name(users.get(id)))
            cloud.failing = false
            assertFalse(ds.syncNow().offline)
            assertTrue(holdsPartition(cloud.blobs.keys, "app.User"))
        }
    }

    @Test
    fun customResolverMergesTags() {
        val resolver = ConflictResolver { _, a, b ->
            when {
                a !is Side.Active -> a
                b !is Side.Active -> b
                else -> {
                    val (x, y) = a.entity to b.entity
                    val later = listOf(x, y).maxWith(compareBy<JsonObject>({ it["updatedAt"]!!.jsonPrimitive.content }, { it["version"]!!.jsonPrimitive.int }, { it.toString() }))
                    val tags = (x["tags"]!!.jsonArray + y["tags"]!!.jsonArray).map { it.jsonPrimitive.content }.toSortedSet()
                    Side.Active(JsonObject(later + ("tags" to JsonArray(tags.map(::JsonPrimitive)))))
                }
            }
        }
        val cloud = MapCloud()
        device(cloud, resolver).use { a ->
            device(cloud, resolver).use { b ->
                val id = a.repo("Doc").save(mapOf("tags" to emptyList<String>()))
                a.syncNow(); b.syncNow()
                a.repo("Doc").save(mapOf("id" to id, "tags" to listOf("red")))
                b.repo("Doc").save(mapOf("id" to id, "tags" to listOf("blue")))
                repeat(2) { a.syncNow(); b.syncNow() }
                for (ds in listOf(a, b)) {
                    assertEquals(listOf("blue", "red"), ds.repo("Doc").get(id)!!["tags"]!!.jsonArray.map { it.jsonPrimitive.content })
                }
            }
        }
    }

    @Test
    fun kotlinKeyStrategyAndThrowingStrategy() {
        val byTeam = object : KeyStrategy {
            override val separator = "/"
            override val idLength = 12
            override fun logicalKey(entityName: String, entity: JsonObject): String {
                val team = entity["team"] ?: throw IllegalStateException("no team")
                return "$entityName-${team.jsonPrimitive.content}"
            }
            override fun candidateKeys(prefix: String, entityName: String, filter: JsonElement?): Candidates =
                Candidates.Prefix("$prefix/$entityName-")
        }
        Datasync.open("app", strategy = Strategy.custom(byTeam)).use { ds ->
            val people = ds.repo("Person")
            val id = people.save(mapOf("name" to "a", "team" to "core"))
            assertTrue(id.startsWith("Person-core/"))
            people.save(mapOf("name" to "b", "team" to "web"))
            assertEquals(listOf("app/Person-core", "app/Person-web"), ds.tierKeys(TierKind.STORE).sorted())
            assertEquals(2, people.query().size)
            assertThrows<DataSyncException.Callback> { people.save(mapOf("name" to "no team")) }
        }
    }
}

class KotlinLayerTest {
    @Test
    fun statusFlowDeliversCurrentThenEachSync() {
        val cloud = MapCloud()
        device(cloud).use { ds ->
            runBlocking {
                assertFalse(ds.statuses().first().closed)
                val online = async(Dispatchers.Default) { ds.statuses().map { it.online }.take(3).toList() }
                ds.repo("User").save(mapOf("n" to 1))
                // Each chain sync sends one status; sync until the collector has three.
                withTimeout(30_000) {
                    while (!online.isCompleted) {
                        cloud.failing = !cloud.failing
                        ds.suspending.syncNow()
                        ds.suspending.drainEvents()
                    }
                }
                assertTrue(online.await().contains(false), "a failed sync shows as offline")
            }
        }
    }

    @Test
    fun suspendingCallsRunOnTheIoDispatcher() {
        val threads = Collections.synchronizedList(mutableListOf<String>())
        val recording = object : KeyStrategy {
            override fun logicalKey(entityName: String, entity: JsonObject) = entityName
            override fun candidateKeys(prefix: String, entityName: String, filter: JsonElement?): Candidates {
                threads.add(Thread.currentThread().name)
                return Candidates.Keys(listOf("$prefix.$entityName"))
            }
        }
        Datasync.open("app", local = Tier.memory(), strategy = Strategy.custom(recording)).use { ds ->
            val users = ds.repo("User")
            runBlocking {
                val caller = Thread.currentThread().name
                val id = users.suspending.save(mapOf("name" to "a"))
                assertEquals("a", name(users.suspending.get(id)))
                assertEquals(listOf("a"), users.suspending.query().map(::name))
                assertEquals(listOf(id), users.suspending.saveMany(listOf(users.suspending.get(id)!!)))
                ds.suspending.flush()
                assertEquals(emptyList<String>(), ds.suspending.audit())
                assertTrue(users.suspending.delete(id))
                assertEquals(0L, users.suspending.deleteMany(listOf(id)))
                assertTrue(threads.isNotEmpty())
                assertTrue(threads.none { it == caller }, "ran on $threads, the caller is $caller")
                assertTrue(threads.all { it.startsWith("DefaultDispatcher-worker") }, "$threads")
                // No separator or idLength given: the library's defaults, as for a built-in strategy.
                val builtin = Datasync.open("app").use { it.repo("User").save(mapOf("n" to 1)) }
                assertTrue(id.startsWith("User."))
                assertEquals(builtin.length, id.length)
            }
        }
    }

    @Test
    fun observeAllTakesQueryOptions(): Unit = Datasync.open("app").use { ds ->
        val people = ds.repo("Person")
        for ((n, team) in listOf("Cleo" to "web", "Bob" to "core", "Ann" to "core", "Dan" to "core")) {
            people.save(mapOf("name" to n, "team" to team))
        }
        val lists = Collections.synchronizedList(mutableListOf<List<String?>>())
        val sub = people.observeAll(where = mapOf("team" to "core"), sort = listOf(Sort("name")), limit = 2, offset = 1) { rows ->
            lists.add(rows.map(::name))
        }
        ds.drainEvents()
        assertEquals(listOf("Bob", "Dan"), lists.last())
        people.save(mapOf("name" to "Bea", "team" to "core"))
        ds.drainEvents()
        assertEquals(listOf("Bea", "Bob"), lists.last())
        sub.close()
        runBlocking {
            assertEquals(listOf("Ann"), people.changesAll(sort = listOf(Sort("name")), limit = 1).first().map(::name))
        }
        assertThrows<IllegalArgumentException> { people.query(limit = -1) }
    }

    @Test
    fun partitionsAreBoundedUnlessToldOtherwise() {
        assertEquals(1000uL, defaultOptions("app").partitionBound)
        val users = (0 until 100).map { i -> buildJsonObject { put("n", i) } }
        val open = { bound: ULong -> Datasync.open("app", local = Tier.memory()) { partitionBound = bound; syncOnOpen = false } }
        open(10uL).use { split ->
            open(0uL).use { whole ->
                val ids = split.repo("User").saveMany(users)
                whole.repo("User").saveMany(users)
                assertTrue(ids.any { it.startsWith("User.~") })
                split.flush()
                whole.flush()
                assertTrue(split.tierKeys(TierKind.LOCAL).size > 1)
                assertEquals(listOf("app.User"), whole.tierKeys(TierKind.LOCAL))
                val byN = listOf(Sort("n", descending = true))
                val n = { list: List<JsonObject> -> list.map { it["n"]!!.jsonPrimitive.int } }
                assertEquals((99 downTo 0).toList(), n(split.repo("User").query(sort = byN)))
                assertEquals(n(whole.repo("User").query(sort = byN)), n(split.repo("User").query(sort = byN)))
                assertEquals(ids.last(), split.repo("User").get(ids.last())!!["id"]!!.jsonPrimitive.content)
            }
        }
    }

    @Test
    fun defaultsComeFromTheLibrary() {
        val defaults = defaultOptions("app")
        assertTrue(defaults.retryBaseMs!! <= defaults.retryMaxMs!!)
        assertTrue(defaults.cloudSyncIntervalMs!! > 0uL && defaults.storeSyncDelayMs!! > 0uL)
        assertEquals(2u, defaults.format)
        Datasync.open("app") { retryBaseMs = defaults.retryBaseMs; syncOnOpen = false }.use { assertEquals(emptyList<JsonObject>(), it.repo("User").query()) }
    }
}
