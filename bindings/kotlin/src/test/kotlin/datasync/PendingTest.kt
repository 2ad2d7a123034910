package datasync

import datasync.ffi.DataSyncException
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import java.util.Collections
import kotlin.concurrent.thread

/** A local memory tier and [cloud]; the store syncs only when flushed, the cloud only when asked. */
private fun manual(cloud: MapCloud) = Datasync.open("app", local = Tier.memory(), cloud = Tier.host(cloud)) {
    storeSyncDelayMs = 3_600_000uL; cloudSyncIntervalMs = 3_600_000uL; retryBaseMs = 3_600_000uL; retryMaxMs = 3_600_000uL
    syncOnOpen = false
}

class PendingTest {
    @Test
    fun aSaveIsPendingLocallyThenForTheCloudThenNotAtAll() = manual(MapCloud()).use { ds ->
        val id = ds.repo("User").save(mapOf("name" to "Ada"))
        var pending = ds.pendingWrites()
        assertEquals(listOf(id), pending.local.map { it.id })
        assertEquals("User", pending.local[0].name)
        assertTrue(pending.local[0].key.startsWith("app.User"))
        assertTrue(pending.cloud.isEmpty())

        ds.flush()
        pending = ds.pendingWrites()
        assertTrue(pending.local.isEmpty())
        assertEquals(listOf(id), pending.cloud.map { it.id })
        assertEquals(1uL, ds.status.pendingCloud)

        ds.syncNow()
        pending = ds.pendingWrites()
        assertTrue(pending.local.isEmpty() && pending.cloud.isEmpty())
        assertEquals(0uL, ds.status.pendingCloud)
        assertTrue(ds.waitInCloud("User", id, 0))
    }

    @Test
    fun deletesArePendingToo() = manual(MapCloud()).use { ds ->
        val users = ds.repo("User")
        val id = users.save(mapOf("name" to "Ada"))
        ds.syncNow()
        users.delete(id)
        assertEquals(listOf(id), ds.pendingWrites().local.map { it.id })
    }

    @Test
    fun waitReturnsOnceAnotherThreadSyncs() = manual(MapCloud()).use { ds ->
        val id = ds.repo("User").save(mapOf("name" to "Ada"))
        val syncing = thread { Thread.sleep(50); ds.syncNow() }
        assertTrue(ds.waitInCloud("User", id, 20_000))
        syncing.join()
        assertTrue(runBlocking { ds.suspending.waitAllInCloud(0) })
    }

    @Test
    fun waitTimesOutWhileTheCloudIsOffline() {
        val cloud = MapCloud()
        manual(cloud).use { ds ->
            val id = ds.repo("User").save(mapOf("name" to "Ada"))
            cloud.failing = true
            assertTrue(ds.syncNow().offline)
            val started = System.nanoTime()
            assertFalse(ds.waitInCloud("User", id, 100))
            assertTrue(System.nanoTime() - started >= 90_000_000)
            assertFalse(runBlocking { ds.suspending.waitInCloud("User", id, 10) })
            assertEquals(listOf(id), ds.pendingWrites().cloud.map { it.id })
            cloud.failing = false
            ds.syncNow()
            assertTrue(ds.waitInCloud("User", id, 0))
            assertThrows<IllegalArgumentException> { ds.waitAllInCloud(-1) }
        }
    }

    @Test
    fun waitingInsideAnObserverIsRefused() = manual(MapCloud()).use { ds ->
        val id = ds.repo("User").save(mapOf("name" to "Ada"))
        val errors = Collections.synchronizedList(mutableListOf<String>())
        val sub = ds.observeStatus {
            try { ds.waitInCloud("User", id, 30_000) } catch (e: DataSyncException.WouldDeadlock) { errors.add(e.call) }
        }
        ds.drainEvents()
        assertEquals(listOf("wait_in_cloud"), errors.toList())
        sub.close()
    }

    @Test
    fun withoutACloudWaitingIsAConfigurationError() {
        Datasync.open("app", local = Tier.memory()).use { ds ->
            val id = ds.repo("User").save(mapOf("name" to "Ada"))
            assertTrue(ds.pendingWrites().cloud.isEmpty())
            assertThrows<DataSyncException.InvalidConfig> { ds.waitInCloud("User", id, 0) }
        }
    }
}
