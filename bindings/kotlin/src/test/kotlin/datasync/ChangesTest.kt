package datasync

import datasync.ffi.ChangeObserver
import datasync.ffi.ChangeSetHandle
import datasync.ffi.Query
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.jsonPrimitive
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import java.util.Collections
import kotlin.random.Random

/**
 * The other documented rule, by id: remove every entity whose id is in `removed` or
 * among the upserts, then insert each upsert at its position, in the order given.
 */
fun applyById(changes: Changes, previous: MutableList<JsonObject>) {
    if (changes !is Changes.Delta) return changes.applyTo(previous)
    val gone = HashSet<String>(changes.removed)
    changes.upserted.mapTo(gone) { it.entity["id"]!!.jsonPrimitive.content }
    previous.removeAll { it["id"]!!.jsonPrimitive.content in gone }
    for (u in changes.upserted) previous.add(u.position, u.entity)
}

/** A list kept by applying change sets, by position ([Changes.applyTo]) and by id: both must agree. */
class Copy {
    val rows = mutableListOf<JsonObject>()
    val byId = mutableListOf<JsonObject>()
    val emissions = Collections.synchronizedList(mutableListOf<Changes>())

    @Synchronized
    fun apply(changes: Changes) {
        changes.applyTo(rows)
        applyById(changes, byId)
        assertEquals(changes.count, rows.size)
        assertEquals(byId, rows, "$changes applied by position and by id")
        emissions.add(changes)
    }
}

class ChangesTest {
    @Test
    fun initialThenDeltas() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val ids = (0 until 5).map { users.save(mapOf("name" to "u$it")) }
        val copy = Copy()
        val lists = mutableListOf<List<JsonObject>>()
        val sub = users.observeChanges(sort = listOf(Sort("name"))) { copy.apply(it); lists.add(it.list()) }
        ds.drainEvents()
        val first = copy.emissions[0]
        assertTrue(first is Changes.Initial)
        assertEquals((0 until 5).map { "u$it" }, first.list().map { name(it) })
        users.save(mapOf("id" to ids[2], "name" to "u2 again"))
        users.delete(ids[0])
        ds.drainEvents()
        assertTrue(copy.emissions.drop(1).all { it is Changes.Delta })
        assertEquals(users.query(sort = listOf(Sort("name"))), copy.rows)
        assertEquals(copy.rows, lists.last())
        sub.close()
    }

    @Test
    fun byPositionAndByIdGiveTheSameList() = Datasync.open("app").use { ds ->
        val tasks = ds.repo("Task")
        val ids = (0 until 8).map { tasks.save(mapOf("name" to "t$it", "rank" to it)) }
        val sorted = { tasks.query(sort = listOf(Sort("rank"), Sort("name"))) }
        val copy = Copy()
        val sub = tasks.observeChanges(sort = listOf(Sort("rank"), Sort("name"))) { copy.apply(it) }
        ds.drainEvents()
        val steps: List<() -> Unit> = listOf(
            { tasks.save(mapOf("id" to ids[3], "name" to "t3", "rank" to 3, "note" to "same place")) },
            { tasks.save(mapOf("id" to ids[1], "name" to "t1", "rank" to 100)) },
            { tasks.save(mapOf("id" to ids[6], "name" to "t6", "rank" to -1)) },
            { tasks.delete(ids[0]); tasks.delete(ids[7]) },
            { tasks.save(mapOf("name" to "new", "rank" to 4)); tasks.save(mapOf("id" to ids[2], "name" to "t2", "rank" to 5)) },
            { tasks.deleteMany(ids.subList(2, 6)); tasks.save(mapOf("id" to ids[1], "name" to "t1", "rank" to 100, "note" to "x")) },
        )
        for ((i, step) in steps.withIndex()) {
            step()
            ds.drainEvents()
            assertEquals(sorted(), copy.rows, "step $i")
        }
        val deltas = copy.emissions.filterIsInstance<Changes.Delta>()
        assertTrue(deltas[0].upserted.single().inPlace)
        assertEquals(listOf(1), deltas[1].removedAt)
        assertFalse(deltas[1].upserted.single().inPlace)
        sub.close()
    }

    @Test
    fun flowOfChangeSets() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        users.save(mapOf("name" to "a"))
        runBlocking {
            val collected = async(Dispatchers.Default) { users.changeSets().take(2).toList() }
            while (!collected.isCompleted) {
                users.save(mapOf("name" to "b"))
                ds.drainEvents()
            }
            val (first, second) = collected.await()
            // The loop may have saved before the subscription began: the first is the whole list then.
            assertTrue(first is Changes.Initial && first.count >= 1 && first.count == first.list().size)
            assertTrue(second is Changes.Delta && second.upserted.isNotEmpty())
            // The Flow's Delta keeps its handle: the whole list on demand, later.
            assertEquals(second.count, second.list().size)
        }
    }

    @Test
    fun randomBurstsFromTwoDevicesMatchAFreshQuery() {
        val rng = Random(14)
        val cloud = MapCloud()
        device(cloud).use { here ->
            device(cloud).use { there ->
                val mine = here.repo("Task")
                val theirs = there.repo("Task")
                val queries: List<(Repo) -> List<JsonObject>> = listOf(
                    { it.query() },
                    { it.query(sort = listOf(Sort("rank", descending = true), Sort("name"))) },
                    { it.query(where = mapOf("team" to "core"), sort = listOf(Sort("rank")), limit = 7) },
                    { it.query(sort = listOf(Sort("name")), limit = 5, offset = 3) },
                )
                val copies = queries.map { Copy() }
                val subs = listOf(
                    mine.observeChanges { copies[0].apply(it) },
                    mine.observeChanges(sort = listOf(Sort("rank", descending = true), Sort("name"))) { copies[1].apply(it) },
                    mine.observeChanges(where = mapOf("team" to "core"), sort = listOf(Sort("rank")), limit = 7) { copies[2].apply(it) },
                    mine.observeChanges(sort = listOf(Sort("name")), limit = 5, offset = 3) { copies[3].apply(it) },
                )
                val known = mutableListOf<String>()
                repeat(25) { burst ->
                    repeat(rng.nextInt(1, 13)) {
                        val who = if (rng.nextDouble() < 0.7) mine else theirs
                        val roll = rng.nextDouble()
                        val entity = mapOf(
                            "name" to "n${rng.nextInt(0, 41)}",
                            "rank" to rng.nextInt(0, 10),
                            "team" to listOf("core", "web")[rng.nextInt(2)],
                        )
                        when {
                            roll < 0.5 || known.isEmpty() -> known.add(who.save(entity))
                            roll < 0.8 -> who.save(entity + ("id" to known[rng.nextInt(known.size)]))
                            else -> who.delete(known[rng.nextInt(known.size)])
                        }
                    }
                    if (rng.nextDouble() < 0.5) {
                        there.syncNow()
                        here.syncNow()
                    }
                    here.drainEvents()
                    for ((i, q) in queries.withIndex()) {
                        assertEquals(q(mine), copies[i].rows, "burst $burst, query $i")
                    }
                }
                assertTrue(copies.all { it.emissions.size > 1 })
                // Both kinds of upsert and removals by index were applied (and agreed with the rule by id).
                val deltas = copies.flatMap { it.emissions }.filterIsInstance<Changes.Delta>()
                assertTrue(deltas.any { d -> d.upserted.any { it.inPlace } })
                assertTrue(deltas.any { d -> d.upserted.any { !it.inPlace } && d.removedAt.isNotEmpty() })
                subs.forEach { it.close() }
            }
        }
    }

    @Test
    fun oneUpdateIn100kCarriesOneEntity() = Datasync.open("app").use { ds ->
        val items = ds.repo("Item")
        val ids = items.saveMany((0 until 100_000).map { toJson(mapOf("n" to it, "label" to "item $it")) as JsonObject })
        val sizes = Collections.synchronizedList(mutableListOf<Int>())
        val counts = Collections.synchronizedList(mutableListOf<Long>())
        // The door's callback itself: the bytes of the JSON text handed across.
        val sub = items.handle.observeChanges(Query(null, null, emptyList(), null, null, null), object : ChangeObserver {
            override fun onChanges(changesJson: String, changes: ChangeSetHandle) {
                sizes.add(changesJson.toByteArray().size)
                counts.add(changes.count().toLong())
                changes.close()
            }
        })
        ds.drainEvents()
        assertEquals(listOf(100_000L), counts.toList())
        assertTrue(sizes[0] > 1_000_000)
        items.save(mapOf("id" to ids[50_000], "n" to -1, "label" to "changed"))
        ds.drainEvents()
        assertEquals(listOf(100_000L, 100_000L), counts.toList())
        assertTrue(sizes[1] < 1024, "one update handed ${sizes[1]} bytes to the callback")
        sub.close()
        val last = mutableListOf<Changes>()
        items.observeChanges { last.add(it) }.use {
            ds.drainEvents()
            items.save(mapOf("id" to ids[7], "n" to -2))
            ds.drainEvents()
        }
        val delta = last.last() as Changes.Delta
        assertEquals(1, delta.upserted.size)
        // An update that keeps its place replaces the entry; nothing leaves.
        assertTrue(delta.upserted[0].inPlace)
        assertEquals(emptyList<Int>(), delta.removedAt)
        assertEquals(ids[7], delta.upserted[0].entity["id"]!!.jsonPrimitive.content)
        assertEquals(100_000, delta.count)
    }
}
