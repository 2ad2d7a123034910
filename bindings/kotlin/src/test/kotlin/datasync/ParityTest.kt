// The parity scenario through the Kotlin binding: the same steps as
// examples/parity.rs, printing the same lines; the test compares them with
// tests/parity/expected.txt and writes them to target/parity/kotlin.txt, which
// tests/parity/run.sh compares too.
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
package datasync

import datasync.ffi.DataSyncException
import datasync.ffi.HostPersistence
import datasync.ffi.SyncStats
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import java.io.File
import java.util.concurrent.ConcurrentHashMap

private const val PARITY_BASE = "2100-01-01T00:00:00.000Z"
private const val PARITY_LATER = "2100-01-01T00:00:01.000Z"
private const val PARITY_EARLIER = "2099-12-31T23:59:59.000Z"
private const val PARITY_HOUR = 3_600_000uL

/** The cloud: a byte map that can be switched offline (every call then throws). */
class ParityCloud : HostPersistence {
    val blobs = ConcurrentHashMap<String, ByteArray>()
    @Volatile var offline = false

    private fun check() {
        if (offline) throw java.io.IOException("the network is down")
    }

    override fun load(key: String): ByteArray? { check(); return blobs[key] }
    override fun store(key: String, bytes: ByteArray) { check(); blobs[key] = bytes }
    override fun clear(key: String) { check(); blobs.remove(key) }
    override fun keys(): List<String>? { check(); return blobs.keys.sorted() }
    override fun storeIf(key: String, expected: ByteArray?, bytes: ByteArray): Boolean? = null

    /** Replaces the content by these partitions, as another device's sync would leave
     * it, without metadata (the library rebuilds it from the partitions). */
    fun seed(partitions: Map<String, String>) {
        blobs.keys.filter { it.startsWith("!") }.forEach { blobs.remove(it) }
        partitions.forEach { (key, text) -> blobs[key] = text.toByteArray() }
    }

    fun partition(key: String): JsonObject = Json.parseToJsonElement(String(blobs.getValue(key))).jsonObject
}

/** Partitions notes by owner (`app.<owner>`); this device may use only `app.alice`. */
private object Owner : KeyStrategy {
    override fun logicalKey(entityName: String, entity: JsonObject): String =
        entity["owner"]?.jsonPrimitive?.content ?: "nobody"

    override fun candidateKeys(prefix: String, entityName: String, filter: JsonElement?): Candidates =
        Candidates.Keys(listOf("$prefix.alice"))
}

/** One note as a tier stores it (canonical: keys sorted, no whitespace). */
private fun note(id: String, owner: String, title: String, at: String, version: Int) =
    "\"$id\":{\"createdAt\":\"$PARITY_BASE\",\"id\":\"$id\",\"owner\":\"$owner\",\"title\":\"$title\"," +
        "\"updatedAt\":\"$at\",\"version\":$version}"

/** A canonical partition holding these notes (given in id order). */
private fun partitionOf(vararg notes: String) = "{\"Note\":{" + notes.joinToString(",") + "}}"

private fun describe(entity: JsonObject) =
    "${entity.getValue("title").jsonPrimitive.content} v${entity.getValue("version").jsonPrimitive.content}"

/** The error kind's name (the exception's class), or `ok`. */
private fun outcome(call: () -> Unit): String = try {
    call()
    "ok"
} catch (e: DataSyncException) {
    e::class.simpleName ?: "?"
}

private fun syncLine(stats: SyncStats) =
    "sync offline=${stats.offline} copied=${stats.keysCopied} merged=${stats.keysMerged} " +
        "refused=${stats.keysRefused} conflicts=${stats.conflicts}"

/** Runs the scenario, handing each line to [out] as it is made. */
fun parityScenario(out: (String) -> Unit) {
    val cloud = ParityCloud()
    cloud.seed(
        mapOf(
            "app.alice" to partitionOf(
                note("alice.c1", "alice", "c1 base", PARITY_BASE, 1),
                note("alice.c2", "alice", "c2 base", PARITY_BASE, 1),
                note("alice.t1", "alice", "t1 base", PARITY_BASE, 1),
                note("alice.t2", "alice", "t2 base", PARITY_BASE, 4),
            ),
            "app.bob" to partitionOf(note("bob.n9", "bob", "bob's", PARITY_BASE, 1)),
        ),
    )
    Datasync.open("app", cloud = Tier.host(cloud), strategy = Strategy.custom(Owner)) {
        storeSyncDelayMs = PARITY_HOUR; cloudSyncIntervalMs = PARITY_HOUR; retryBaseMs = PARITY_HOUR; retryMaxMs = PARITY_HOUR
        syncOnOpen = false
        format = 1u // the scenario reads the cloud's partition documents back
    }.use { ds ->
        val notes = ds.repo("Note")
        fun save(vararg fields: Pair<String, Any?>) {
            val id = notes.save(mapOf(*fields))
            out("save $id v${notes.get(id)!!.getValue("version").jsonPrimitive.content}")
        }
        fun delete(id: String) = out("delete $id existed=${notes.delete(id)}")

        // Saves with caller-supplied ids, and deletes.
        save("id" to "alice.n1", "owner" to "alice", "title" to "n1 first")
        save("id" to "alice.n1", "owner" to "alice", "title" to "n1 second")
        save("id" to "alice.n2", "owner" to "alice", "title" to "n2")
        delete("alice.n2")
        out("get alice.n2 -> ${notes.get("alice.n2")?.let(::describe) ?: "none"}")
        delete("alice.n2")
        // An id the strategy chooses: its partition, not its random part, is printed.
        val fresh = notes.save(mapOf("owner" to "alice", "title" to "fresh"))
        val logical = fresh.substringBeforeLast('.')
        val ident = fresh.substringAfterLast('.')
        out("save new $logical.<${ident.length}> v${notes.get(fresh)!!.getValue("version").jsonPrimitive.content}")
        out("delete new existed=${notes.delete(fresh)}")

        // Local edits of the seeded notes.
        save("id" to "alice.c1", "owner" to "alice", "title" to "c1 local")
        save("id" to "alice.c2", "owner" to "alice", "title" to "c2 local")
        delete("alice.t1")
        save("id" to "alice.t2", "owner" to "alice", "title" to "t2 local")

        // Meanwhile another device's edits reached the cloud: c1 newer, c2 older (with a
        // greater version), t1 edited at the instant of the local delete, t2 edited at
        // the instant of the local edit with a smaller version (and greater bytes).
        cloud.seed(
            mapOf(
                "app.alice" to partitionOf(
                    note("alice.c1", "alice", "c1 remote", PARITY_LATER, 2),
                    note("alice.c2", "alice", "c2 remote", PARITY_EARLIER, 9),
                    note("alice.t1", "alice", "t1 remote", PARITY_BASE, 7),
                    note("alice.t2", "alice", "t2 remote", PARITY_BASE, 3),
                ),
            ),
        )
        out(syncLine(ds.syncNow()))
        fun winner(id: String, local: String, remote: String): String {
            val entity = notes.get(id) ?: return "deleted"
            val side = when (entity["title"]?.jsonPrimitive?.content) {
                local -> "local"
                remote -> "remote"
                else -> "neither"
            }
            return "$side: ${describe(entity)}"
        }
        out("conflict alice.c1 newer remote -> ${winner("alice.c1", "c1 local", "c1 remote")}")
        out("conflict alice.c2 older remote -> ${winner("alice.c2", "c2 local", "c2 remote")}")
        out("tie alice.t1 delete vs edit -> ${winner("alice.t1", "t1 local", "t1 remote")}")
        out("tiebreak alice.t2 equal instant -> ${winner("alice.t2", "t2 local", "t2 remote")}")
        // The merge reached the cloud too.
        var stored = cloud.partition("app.alice")
        for (id in listOf("alice.c1", "alice.c2", "alice.n1", "alice.t1", "alice.t2")) {
            val active = stored["Note"]?.jsonObject?.get(id)?.jsonObject
            val deleted = stored["deleted"]?.jsonObject?.get("Note")?.jsonObject?.get(id)
            out("cloud $id -> ${active?.let(::describe) ?: if (deleted != null) "deleted" else "absent"}")
        }

        // A sorted query, one line per note.
        for (entity in notes.query(sort = listOf(Sort("title", descending = true)))) {
            out("query title:desc ${entity.getValue("id").jsonPrimitive.content} ${describe(entity)}")
        }

        // Bob's partition is not this device's: every path refuses it.
        out("get bob.n9 -> ${outcome { notes.get("bob.n9") }}")
        out("save bob.n9 -> ${outcome { notes.save(mapOf("id" to "bob.n9", "owner" to "bob", "title" to "taken")) }}")
        out("delete bob.n9 -> ${outcome { notes.delete("bob.n9") }}")

        // Offline: the write waits in the store, the sync says so, and goes through later.
        cloud.offline = true
        save("id" to "alice.n3", "owner" to "alice", "title" to "n3 offline")
        out("sync offline=${ds.syncNow().offline}")
        ds.status.let { out("status online=${it.online} pending=${it.pendingKeys}") }
        cloud.offline = false
        out(syncLine(ds.syncNow()))
        ds.status.let { out("status online=${it.online} pending=${it.pendingKeys}") }
        stored = cloud.partition("app.alice")
        out("cloud alice.n3 -> ${stored["Note"]?.jsonObject?.get("alice.n3")?.jsonObject?.let(::describe) ?: "absent"}")
    }
}

class ParityTest {
    @Test
    fun printsTheLinesEveryDoorPrints() {
        val written = File("target/parity/kotlin.txt").apply { parentFile.mkdirs(); writeText("") }
        val lines = mutableListOf<String>()
        parityScenario { line ->
            lines += line
            written.appendText(line + "\n")
        }
        val expected = File("../../tests/parity/expected.txt").readLines()
        assertEquals(expected.joinToString("\n"), lines.joinToString("\n"))
    }
}
