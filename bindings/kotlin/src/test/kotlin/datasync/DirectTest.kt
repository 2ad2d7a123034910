package datasync

import datasync.ffi.DataSyncException
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.JsonUnquotedLiteral
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.int
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.put
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import java.nio.charset.CharacterCodingException
import java.util.Collections
import java.util.concurrent.CyclicBarrier
import kotlin.concurrent.thread

/** Repo's save, saveMany, get and delete, which go through the library's direct calls. */
class DirectTest {
    private fun big(size: Int, seed: Int) = buildString(size) { for (i in 0 until size) append('a' + (i * 31 + seed) % 26) }

    /** What [f] throws, as its class (null when it returns). */
    private fun thrown(f: () -> Unit): Class<*>? = try { f(); null } catch (e: Exception) { e.javaClass }

    @Test
    fun roundTrips() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val id = users.save(mapOf("name" to "Ann", "nested" to mapOf("k" to listOf(1, 2.5, true, null)), "text" to "é ✓ 😀"))
        val ann = users.get(id)!!
        assertEquals(id, ann["id"]!!.jsonPrimitive.content)
        assertEquals("é ✓ 😀", ann["text"]!!.jsonPrimitive.content)
        // The generated method reads what the direct call wrote, and the other way round.
        assertEquals(Json.parseToJsonElement(users.handle.get(id)!!), ann)
        val other = users.handle.save("""{"name":"Bob"}""")
        assertEquals("Bob", name(users.get(other)))
        val ids = users.saveMany((0 until 10).map { buildJsonObject { put("name", "m$it") } })
        assertEquals(10, ids.toSet().size)
        assertEquals((0 until 10).map { "m$it" }, ids.map { name(users.get(it)) })
        assertEquals(emptyList<String>(), users.saveMany(emptyList()))
        assertTrue(users.delete(id))
        assertFalse(users.delete(id))
        assertNull(users.get(id))
        assertNull(users.get("User.abcdefghijklmnop"))
        assertEquals(11, users.query().size)
    }

    @Test
    fun answersAndArgumentsLongerThanTheBuffer() = Datasync.open("app").use { ds ->
        val docs = ds.repo("Doc")
        for (size in listOf(64 * 1024 - 200, 64 * 1024, 200_000, 3_000_000)) {
            val text = big(size, size)
            val id = docs.save(mapOf("body" to text))
            assertEquals(text, docs.get(id)!!["body"]!!.jsonPrimitive.content, "a $size-character body")
        }
        // Ids past the answer buffer: the answer waits in the library for take.
        val ids = docs.saveMany((0 until 5_000).map { buildJsonObject { put("n", it) } })
        assertTrue(JsonArray(ids.map(::JsonPrimitive)).toString().length > 64 * 1024)
        assertEquals(5_000, ids.toSet().size)
        assertEquals(listOf(0, 2_500, 4_999), listOf(0, 2_500, 4_999).map { docs.get(ids[it])!!["n"]!!.jsonPrimitive.int })
        // Small calls after the long ones still use this thread's buffers rightly.
        val small = docs.save(mapOf("body" to "short"))
        assertEquals("short", docs.get(small)!!["body"]!!.jsonPrimitive.content)
    }

    @Test
    fun badInputThrowsWhatTheGeneratedMethodsThrow() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val id = users.save(mapOf("name" to "a"))
        assertThrows<DataSyncException.InvalidId> { users.get("nope") }.also { assertEquals("nope", it.id) }
        assertThrows<DataSyncException.InvalidId> { users.delete("nope") }.also { assertEquals("nope", it.id) }
        val bad = listOf(
            buildJsonObject { put("version", "seven") },
            buildJsonObject { put("id", 12) },
            buildJsonObject { put("id", "Other.abcdefghijklmnop") },
            buildJsonObject { put("createdAt", "yesterday") },
        )
        for (entity in bad) {
            val generated = thrown { users.handle.save(entity.toString()) }
            assertTrue(generated != null && DataSyncException::class.java.isAssignableFrom(generated), "$entity: $generated")
            assertEquals(generated, thrown { users.save(entity) }, "$entity")
            val batch = listOf(buildJsonObject { put("name", "fine") }, entity)
            assertEquals(thrown { users.handle.saveManyJson(JsonArray(batch).toString()) }, thrown { users.saveMany(batch) }, "$entity")
        }
        for (key in listOf("nope", "", "User.", "\uD800")) {
            assertEquals(thrown { users.handle.get(key) }, thrown { users.get(key) }, key)
            assertEquals(thrown { users.handle.delete(key) }, thrown { users.delete(key) }, key)
        }
        assertThrows<CharacterCodingException> { users.save(mapOf("name" to "lone \uDC00 surrogate")) }
        // The error of one failed call is not left over for the next.
        assertEquals("a", name(users.get(id)))
        assertEquals(1, users.saveMany(listOf(buildJsonObject { put("name", "b") })).size)
        assertEquals(2, users.query().size)
    }

    @Test
    fun integersPast64BitsAreRefused() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val huge = JsonUnquotedLiteral("123456789012345678901234567890")
        assertThrows<DataSyncException.InvalidJson> { users.save(JsonObject(mapOf("n" to huge))) }
        assertThrows<DataSyncException.InvalidJson> { users.save(mapOf("n" to java.math.BigInteger("18446744073709551616"))) }
        val parsed = Json.parseToJsonElement("""{"n":{"deep":[-9223372036854775809]}}""").jsonObject
        assertThrows<DataSyncException.InvalidJson> { users.save(parsed) }
        assertThrows<DataSyncException.InvalidJson> { users.saveMany(listOf(buildJsonObject { put("n", 1) }, JsonObject(mapOf("n" to huge)))) }
        assertEquals(0, users.query().size)
        // The 64-bit limits themselves are kept exactly, as are long numbers in strings.
        val id = users.save(Json.parseToJsonElement("""{"a":18446744073709551615,"b":-9223372036854775808,"c":"123456789012345678901234567890"}""").jsonObject)
        val kept = users.get(id)!!
        assertEquals("18446744073709551615", kept["a"]!!.jsonPrimitive.content)
        assertEquals("-9223372036854775808", kept["b"]!!.jsonPrimitive.content)
        assertEquals("123456789012345678901234567890", kept["c"]!!.jsonPrimitive.content)
    }

    @Test
    fun closedInstanceRefusesDirectCalls() {
        val ds = Datasync.open("app")
        val users = ds.repo("User")
        val id = users.save(mapOf("x" to 1))
        ds.shutdown()
        assertThrows<DataSyncException.Closed> { users.save(mapOf("x" to 2)) }
        assertThrows<DataSyncException.Closed> { users.saveMany(listOf(buildJsonObject { put("x", 3) })) }
        assertEquals(thrown { users.handle.get(id) }, thrown { users.get(id) })
        assertEquals(thrown { users.handle.delete(id) }, thrown { users.delete(id) })
        ds.close()
    }

    @Test
    fun fourThreadsKeepTheirOwnAnswers() = Datasync.open("app").use { ds ->
        val users = ds.repo("User")
        val failures = Collections.synchronizedList(mutableListOf<Throwable>())
        val start = CyclicBarrier(4)
        val workers = (0 until 4).map { w ->
            thread {
                try {
                    start.await()
                    repeat(300) { i ->
                        val mark = "w$w-$i"
                        val body = if (i % 50 == 0) big(100_000, w * 1000 + i) else mark
                        val id = users.save(mapOf("mark" to mark, "body" to body))
                        val got = users.get(id)!!
                        check(got["mark"]!!.jsonPrimitive.content == mark && got["body"]!!.jsonPrimitive.content == body) { "$mark read $got" }
                        if (i % 7 == w) {
                            // Another thread's error never answers this one's call.
                            val e = assertThrows<DataSyncException.InvalidId> { users.get("bad-$mark") }
                            check(e.id == "bad-$mark") { "$mark got the error of ${e.id}" }
                        }
                        if (i % 100 == 0) {
                            val ids = users.saveMany((0 until 3_000).map { n -> buildJsonObject { put("mark", "$mark/$n") } })
                            check(ids.size == 3_000 && users.get(ids[2_999])!!["mark"]!!.jsonPrimitive.content == "$mark/2999") { "$mark saveMany" }
                            check(users.delete(ids[0]) && !users.delete(ids[0])) { "$mark delete" }
                        }
                    }
                } catch (e: Throwable) {
                    failures.add(e)
                }
            }
        }
        workers.forEach { it.join() }
        assertEquals(emptyList<Throwable>(), failures.toList())
        assertEquals(4 * 300 + 4 * 3 * 2_999, users.query().size)
    }

    @Test
    fun aCallbackOnTheCallingThreadMayCallAgain() = Datasync.open("side").use { side ->
        // The strategy runs on the saving thread inside its direct call; its own calls must
        // not overwrite (or free) the argument and answer buffers the outer call uses.
        val notes = side.repo("Note")
        val inner = Collections.synchronizedList(mutableListOf<String>())
        val strategy = object : KeyStrategy {
            override fun logicalKey(entityName: String, entity: JsonObject): String {
                if (inner.size >= 3) return "all"
                val id = notes.save(mapOf("body" to big(300_000, inner.size)))
                check(notes.get(id)!!["body"]!!.jsonPrimitive.content.length == 300_000)
                inner.add(id)
                return "all"
            }
            override fun candidateKeys(prefix: String, entityName: String, filter: kotlinx.serialization.json.JsonElement?) =
                Candidates.Keys(listOf("$prefix.all"))
        }
        org.junit.jupiter.api.Assertions.assertTimeoutPreemptively(java.time.Duration.ofSeconds(60)) {
            Datasync.open("app", strategy = Strategy.custom(strategy)).use { ds ->
                val docs = ds.repo("Doc")
                val body = big(100_000, 7)
                val id = docs.save(mapOf("body" to body))
                assertEquals(body, docs.get(id)!!["body"]!!.jsonPrimitive.content)
                val ids = docs.saveMany((0 until 4_000).map { buildJsonObject { put("n", it) } })
                assertEquals(3_999, docs.get(ids.last())!!["n"]!!.jsonPrimitive.int)
            }
        }
        assertTrue(inner.size >= 2)
        assertEquals(inner.size, notes.query().size)
    }

    @Test
    fun repositoriesCollectedAndMadeAgain() = Datasync.open("app").use { ds ->
        // Each Repo holds its own handle, released when it is collected; others go on working.
        val ids = (0 until 2_000).map { ds.repo("User").save(mapOf("n" to it)) }
        repeat(3) { System.gc(); Thread.sleep(20) }
        val users = ds.repo("User")
        assertEquals(1_999, users.get(ids.last())!!["n"]!!.jsonPrimitive.int)
        assertTrue(ids.take(100).all { ds.repo("User").delete(it) })
        assertEquals(1_900, users.query().size)
    }
}
