//! Two devices syncing one partition into a shared cloud at the same moment. With a
//! conditional write (store-if-unchanged) no write is lost or hidden: after one more
//! sync of each device, both hold every write either had synced. Without it, a
//! write can be overwritten in the cloud in the window between a read and a write;
//! these tests show it is repaired by later syncs, and count how often it happens.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::manual;
use datasync::{AdapterResult, DataSync, MemoryPersistence, Persistence};
use serde_json::json;

/// Where a device's cloud adapter stops: its first write waits to be released.
#[derive(Default)]
struct Hold {
    armed: AtomicBool,
    reached: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<Option<mpsc::Receiver<()>>>,
}

/// One device's handle on the shared cloud: slow, with or without the conditional
/// write, and able to hold the device at its first write.
#[derive(Clone)]
struct RaceCloud {
    blobs: MemoryPersistence,
    conditional: bool,
    delay: Duration,
    hold: Arc<Hold>,
    stores: Arc<AtomicUsize>,
}

impl RaceCloud {
    fn new(blobs: &MemoryPersistence, conditional: bool, delay: Duration) -> RaceCloud {
        RaceCloud {
            blobs: blobs.clone(),
            conditional,
            delay,
            hold: Arc::new(Hold::default()),
            stores: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Arms the hold; returns (reached, release).
    fn arm(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (reached_tx, reached_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        *self.hold.reached.lock().unwrap() = Some(reached_tx);
        *self.hold.release.lock().unwrap() = Some(release_rx);
        self.hold.armed.store(true, Ordering::SeqCst);
        (reached_rx, release_tx)
    }

    fn before_write(&self) {
        self.stores.fetch_add(1, Ordering::SeqCst);
        if self.hold.armed.swap(false, Ordering::SeqCst) {
            if let Some(tx) = self.hold.reached.lock().unwrap().take() {
                let _ = tx.send(());
            }
            if let Some(rx) = self.hold.release.lock().unwrap().take() {
                let _ = rx.recv_timeout(Duration::from_secs(30));
            }
        }
        std::thread::sleep(self.delay);
    }
}

impl Persistence for RaceCloud {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        std::thread::sleep(self.delay);
        self.blobs.load(key)
    }
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.before_write();
        self.blobs.store(key, bytes)
    }
    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.before_write();
        self.blobs.clear(key)
    }
    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.blobs.keys()
    }
    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        if !self.conditional {
            return Ok(None);
        }
        self.before_write();
        self.blobs.store_if(key, expected, bytes)
    }
}

struct Device {
    ds: DataSync,
    cloud: RaceCloud,
}

fn device(cloud: &MemoryPersistence, conditional: bool, delay: Duration) -> Device {
    let handle = RaceCloud::new(cloud, conditional, delay);
    let config = manual("app")
        .local(MemoryPersistence::new())
        .cloud(handle.clone());
    Device {
        ds: DataSync::open(config).unwrap(),
        cloud: handle,
    }
}

fn holds(d: &Device, id: &str) -> bool {
    d.ds.repo("User").unwrap().get(id).unwrap().is_some()
}

fn save(d: &Device, name: &str) -> String {
    d.ds.repo("User")
        .unwrap()
        .save(&json!({ "name": name }))
        .unwrap()
}

/// How many of `ids` some device lacks.
fn missing(devices: &[&Device], ids: &[String]) -> usize {
    devices
        .iter()
        .map(|d| ids.iter().filter(|id| !holds(d, id)).count())
        .sum()
}

/// A is held at its first write into the cloud, after reading the cloud's state,
/// until B's whole sync is done; then A goes on. Returns A, B and the two writes.
fn forced_schedule(conditional: bool) -> (Device, Device, Vec<String>) {
    let cloud = MemoryPersistence::new();
    let (a, b) = (
        device(&cloud, conditional, Duration::ZERO),
        device(&cloud, conditional, Duration::ZERO),
    );
    // Both devices know the partition already.
    save(&a, "seed");
    a.ds.sync_now().unwrap();
    b.ds.sync_now().unwrap();

    let ids = vec![save(&a, "from a"), save(&b, "from b")];
    let (reached, release) = a.cloud.arm();
    std::thread::scope(|s| {
        let held = s.spawn(|| a.ds.sync_now().unwrap());
        reached
            .recv_timeout(Duration::from_secs(30))
            .expect("A reached its first write into the cloud");
        b.ds.sync_now().unwrap();
        release.send(()).unwrap();
        held.join().unwrap();
    });
    (a, b, ids)
}

/// `rounds` more syncs of each device, A first or B first.
fn sync_each(a: &Device, b: &Device, a_first: bool, rounds: usize) {
    let order: [&Device; 2] = if a_first { [a, b] } else { [b, a] };
    for _ in 0..rounds {
        for d in order {
            d.ds.sync_now().unwrap();
        }
    }
}

#[test]
fn forced_schedule_loses_nothing_with_the_conditional_write() {
    for a_first in [true, false] {
        let (a, b, ids) = forced_schedule(true);
        sync_each(&a, &b, a_first, 1);
        assert_eq!(
            missing(&[&a, &b], &ids),
            0,
            "a write is missing after one more sync of each (A first: {a_first})"
        );
    }
}

#[test]
fn forced_schedule_without_the_conditional_write_is_repaired_by_later_syncs() {
    for a_first in [true, false] {
        let (a, b, ids) = forced_schedule(false);
        sync_each(&a, &b, a_first, 1);
        eprintln!(
            "without the conditional write (A first: {a_first}): {} write(s) missing after one more sync of each",
            missing(&[&a, &b], &ids)
        );
        // Each device's writes are still in its own local tier: another round of
        // syncs brings them back into the cloud and to the other device.
        sync_each(&a, &b, a_first, 1);
        assert_eq!(missing(&[&a, &b], &ids), 0, "A first: {a_first}");
    }
}

/// Rounds of: both devices write the partition, then sync into a slow cloud at the
/// same moment, then one more sync of each (alternating the order). Returns the
/// rounds in which a device lacked a write after that, and every id written.
fn racing_rounds(conditional: bool, rounds: usize) -> (usize, Vec<String>, Device, Device) {
    let cloud = MemoryPersistence::new();
    let delay = Duration::from_micros(200);
    let (a, b) = (
        device(&cloud, conditional, delay),
        device(&cloud, conditional, delay),
    );
    save(&a, "seed");
    a.ds.sync_now().unwrap();
    b.ds.sync_now().unwrap();
    let started = Instant::now();
    let mut lost_rounds = 0;
    let mut all = Vec::new();
    for round in 0..rounds {
        let ids = vec![
            save(&a, &format!("a{round}")),
            save(&b, &format!("b{round}")),
        ];
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let ta = s.spawn(|| {
                barrier.wait();
                a.ds.sync_now().unwrap()
            });
            barrier.wait();
            b.ds.sync_now().unwrap();
            ta.join().unwrap();
        });
        sync_each(&a, &b, round % 2 == 0, 1);
        if missing(&[&a, &b], &ids) > 0 {
            lost_rounds += 1;
        }
        all.extend(ids);
        // Bounded in time as well as in count.
        if started.elapsed() > Duration::from_secs(60) {
            eprintln!("stopped after {} rounds (time bound)", round + 1);
            break;
        }
    }
    (lost_rounds, all, a, b)
}

#[test]
fn racing_syncs_with_the_conditional_write_lose_no_round() {
    let (lost, all, a, b) = racing_rounds(true, 100);
    assert_eq!(
        lost, 0,
        "rounds that missed a write after one more sync of each"
    );
    assert_eq!(missing(&[&a, &b], &all), 0);
    let writes = a.cloud.stores.load(Ordering::SeqCst) + b.cloud.stores.load(Ordering::SeqCst);
    assert!(writes > 0);
}

#[test]
fn racing_syncs_without_the_conditional_write_converge() {
    let (lost, all, a, b) = racing_rounds(false, 100);
    eprintln!("without the conditional write: {lost} of 100 rounds missed a write after one more sync of each");
    sync_each(&a, &b, true, 2);
    assert_eq!(missing(&[&a, &b], &all), 0, "a write was lost for good");
}
