package datasync

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import java.io.File
import java.nio.file.Files
import java.util.UUID
import java.util.concurrent.TimeUnit
import kotlinx.serialization.json.jsonPrimitive

/**
 * The HTTP cloud tier: two instances share a real sync server (datasync-server,
 * started here on loopback over a temporary directory; run-tests.sh builds it and
 * names it in DATASYNC_SERVER_BIN) and converge.
 */
class HttpTest {
    private class Server(val url: String, val token: String, private val process: Process, private val work: File) :
        AutoCloseable {
        override fun close() {
            process.destroy()
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly()
                process.waitFor(10, TimeUnit.SECONDS)
            }
            work.deleteRecursively()
        }
    }

    private fun startServer(): Server {
        val binary = System.getenv("DATASYNC_SERVER_BIN")
            ?: File("../../target/debug/datasync-server").absolutePath
        check(File(binary).isFile) { "$binary is missing: build it with `cargo build -p datasync-server` (run-tests.sh does)" }
        val work = Files.createTempDirectory("datasync-http-test").toFile()
        val token = "kt-" + UUID.randomUUID()
        val tokens = File(work, "tokens.jsonl")
        tokens.writeText("""{"token": "$token", "device": "kotlin", "read": ["*"], "write": ["*"]}""" + "\n")
        val process = ProcessBuilder(
            binary, "--listen", "127.0.0.1:0", "--dir", File(work, "cloud").path, "--tokens", tokens.path,
        ).redirectError(ProcessBuilder.Redirect.DISCARD).start()
        var line: String? = null
        val reader = Thread { line = process.inputStream.bufferedReader().readLine() }
        reader.isDaemon = true
        reader.start()
        reader.join(20_000)
        val first = line
        if (first == null || !first.startsWith("listening on ")) {
            process.destroyForcibly()
            work.deleteRecursively()
            error("the server did not start: $first")
        }
        return Server("http://" + first.removePrefix("listening on ").trim(), token, process, work)
    }

    private fun device(server: Server) = Datasync.open(
        "app",
        local = Tier.memory(),
        cloud = Tier.http(server.url, server.token, connectTimeoutMs = 2_000, readTimeoutMs = 5_000),
    ) { cloudSyncIntervalMs = 3_600_000uL; syncOnOpen = false }

    private fun name(ds: Instance, id: String) = ds.repo("User").get(id)?.get("name")?.jsonPrimitive?.content

    @Test
    fun twoDevicesConvergeThroughAServer() {
        startServer().use { server ->
            device(server).use { phone ->
                device(server).use { laptop ->
                    val alice = phone.repo("User").save(mapOf("name" to "Alice"))
                    val stats = phone.syncNow()
                    assertFalse(stats.offline, stats.toString())
                    assertTrue(stats.errors.isEmpty(), stats.toString())
                    laptop.syncNow()
                    assertEquals("Alice", name(laptop, alice))

                    val bob = laptop.repo("User").save(mapOf("name" to "Bob"))
                    laptop.repo("User").save(mapOf("id" to alice, "name" to "Alice L."))
                    repeat(2) {
                        laptop.syncNow()
                        phone.syncNow()
                    }
                    for (ds in listOf(phone, laptop)) {
                        assertEquals("Alice L.", name(ds, alice))
                        assertEquals("Bob", name(ds, bob))
                        assertTrue(ds.status.online)
                        assertEquals(emptyList<String>(), ds.audit())
                    }
                }
            }
        }
    }

    @Test
    fun aBadTokenIsOfflineWithAClearError() {
        startServer().use { server ->
            Datasync.open("app", local = Tier.memory(), cloud = Tier.http(server.url, "not-a-token")) {
                cloudSyncIntervalMs = 3_600_000uL; syncOnOpen = false
            }.use { ds ->
                ds.repo("User").save(mapOf("name" to "x"))
                val stats = ds.syncNow()
                assertTrue(stats.offline)
                assertTrue(stats.errors.any { "the server rejected the token" in it }, stats.errors.toString())
                assertFalse(ds.status.online)
            }
        }
    }
}
