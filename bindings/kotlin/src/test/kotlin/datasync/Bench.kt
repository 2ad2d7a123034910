package datasync

import datasync.ffi.HostPersistence
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.buildJsonArray
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.put
import org.junit.jupiter.api.Tag
import org.junit.jupiter.api.Test
import java.nio.file.Files
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicLong

/**
 * W1 (a save loop and saveMany), W2, W5 (change-set collection observer) and W7
 * through the Kotlin layer, with plain timers; one JSON line per figure. Not part
 * of `mvn test`: run `mvn -Pbench test -Dtest=Bench -Dbench.n=10000,100000`
 * after `cargo build --release --lib`.
 */
@Tag("bench")
class Bench {
    private fun entity(i: Int): JsonObject = buildJsonObject {
        put("name", "User $i")
        put("email", "user$i@example.com")
        put("age", 18 + i % 60)
        put("score", (i * 7919 % 10000) / 100.0)
        put("tags", buildJsonArray { add(kotlinx.serialization.json.JsonPrimitive("tag${i % 10}")); add(kotlinx.serialization.json.JsonPrimitive("tag${i % 3}")) })
    }

    private fun quiet(local: datasync.ffi.TierSpec? = null, cloud: datasync.ffi.TierSpec? = null) =
        Datasync.open("bench", local = local, cloud = cloud) {
            storeSyncDelayMs = 3_600_000uL; cloudSyncIntervalMs = 3_600_000uL; syncOnOpen = false
        }

    private fun report(workload: String, n: Int, seconds: Double, ops: Int, verified: Boolean, extra: String = "") =
        println("""{"workload":"$workload","n":$n,"driver":"kotlin","seconds":$seconds,"ops_per_s":${ops / seconds},"verified":$verified$extra}""")

    private fun w1(n: Int, many: Boolean) {
        val dir = Files.createTempDirectory("bench")
        quiet(local = Tier.directory(dir.toString())).use { ds ->
            val users = ds.repo("User")
            var save = 0L
            for (start in 0 until n step 10_000) {
                val rows = (start until minOf(n, start + 10_000)).map(::entity)
                val t = System.nanoTime()
                if (many) users.saveMany(rows) else rows.forEach { users.save(it) }
                save += System.nanoTime() - t
            }
            ds.flush()
            report(if (many) "W1many" else "W1", n, save / 1e9, n, users.query(limit = n + 1).size == n)
        }
        dir.toFile().deleteRecursively()
    }

    private fun w2(n: Int) {
        val a = datasync.ffi.MemoryTier()
        val b = datasync.ffi.MemoryTier()
        quiet(local = Tier.memory(a)).use { it.repo("User").saveMany((0 until n).map(::entity)) }
        quiet(local = Tier.memory(a), cloud = Tier.memory(b)).use { ds ->
            val t = System.nanoTime()
            val stats = ds.syncNow()
            report("W2", n, (System.nanoTime() - t) / 1e9, n, stats.errors.isEmpty() && stats.keysCopied > 0uL)
        }
    }

    private fun w5(n: Int) = quiet().use { ds ->
        val users = ds.repo("User")
        val ids = users.saveMany((0 until n).map(::entity))
        val lock = Any()
        val lastSeen = HashMap<String, Double>()
        val copy = mutableListOf<JsonObject>()
        val calls = AtomicLong()
        val subs = (0 until minOf(1000, n)).map { i ->
            users.observe(ids[i]) { e -> if (e != null) synchronized(lock) { lastSeen[ids[i]] = e["score"]!!.jsonPrimitive.content.toDouble() } }
        } + users.observeChanges { c -> synchronized(lock) { calls.incrementAndGet(); c.applyTo(copy) } }
        ds.drainEvents()
        calls.set(0)
        val updates = 10_000
        val targets = minOf(2000, n)
        val t = System.nanoTime()
        for (u in 0 until updates) {
            val i = u % targets
            users.save(buildJsonObject { put("id", ids[i]); put("name", "User $i"); put("score", u.toDouble()) })
        }
        ds.drainEvents()
        val secs = (System.nanoTime() - t) / 1e9
        val finals = synchronized(lock) { copy.associate { it["id"]!!.jsonPrimitive.content to it["score"]!!.jsonPrimitive.content.toDouble() } }
        val verified = copy.size == n && (0 until targets).all { i -> finals[ids[i]] == (updates - targets + i).toDouble() } &&
            (0 until minOf(1000, n)).all { i -> lastSeen[ids[i]] == (updates - targets + i).toDouble() }
        subs.forEach { it.close() }
        report("W5changes", n, secs, updates, verified, ""","extra":{"collection_callbacks":${calls.get()}}""")
    }

    /** A map cloud counting the bytes stored and loaded. */
    class CountingCloud : HostPersistence {
        val blobs = ConcurrentHashMap<String, ByteArray>()
        val stored = AtomicLong()
        val loaded = AtomicLong()
        override fun load(key: String): ByteArray? = blobs[key]?.also { loaded.addAndGet(it.size.toLong()) }
        override fun store(key: String, bytes: ByteArray) { stored.addAndGet(bytes.size.toLong()); blobs[key] = bytes }
        override fun clear(key: String) { blobs.remove(key) }
        override fun keys(): List<String>? = blobs.keys.sorted()
        override fun storeIf(key: String, expected: ByteArray?, bytes: ByteArray): Boolean? = null
    }

    private fun w7(n: Int) {
        val cloud = CountingCloud()
        quiet(local = Tier.memory(), cloud = Tier.host(cloud)).use { a ->
            quiet(local = Tier.memory(), cloud = Tier.host(cloud)).use { b ->
                val ids = a.repo("User").saveMany((0 until n).map(::entity))
                a.syncNow()
                b.syncNow()
                var up = 0L
                var down = 0L
                var latency = 0L
                var verified = true
                val rounds = 20
                for (r in 0 until rounds) {
                    val s0 = cloud.stored.get()
                    val t = System.nanoTime()
                    a.repo("User").save(buildJsonObject { put("id", ids[r]); put("name", "edit $r") })
                    a.syncNow()
                    up += cloud.stored.get() - s0
                    val l0 = cloud.loaded.get()
                    b.syncNow()
                    val got = b.repo("User").get(ids[r])
                    latency += System.nanoTime() - t
                    down += cloud.loaded.get() - l0
                    verified = verified && got?.get("name")?.jsonPrimitive?.content == "edit $r"
                }
                report("W7", n, latency / 1e9 / rounds, 1, verified,
                    ""","extra":{"bytes_up_per_edit":${up / rounds},"bytes_down_per_edit":${down / rounds}}""")
            }
        }
    }

    @Test
    fun figures() {
        val sizes = (System.getProperty("bench.n") ?: "10000,100000").split(",").map { it.trim().toInt() }
        val only = System.getProperty("bench.workload")?.split(",")?.toSet()
        for (n in sizes) {
            if (only == null || "W1" in only) w1(n, many = false)
            if (only == null || "W1many" in only) w1(n, many = true)
            if (only == null || "W2" in only) w2(n)
            if (only == null || "W5changes" in only) w5(n)
            if (only == null || "W7" in only) w7(n)
        }
    }
}
