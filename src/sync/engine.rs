//! One sync between two tiers (DESIGN.md §5): compare roots, then per key copy or
//! merge, write back where different, keep both metadata documents true.

use std::collections::BTreeSet;

use crate::clock::{now_millis, Clock};
use crate::error::{ErrorKind, Result};
use crate::meta::{Meta, MetaEntry};
use crate::partition::{hash_bytes, Partition};
use crate::sync::merge::{merge, ConflictResolver, SlotChange};
use crate::tier::{Loaded, Tier};

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncStats {
    /// Partition keys examined.
    pub keys_compared: u64,
    /// Partitions copied whole to the side that lacked them.
    pub keys_copied: u64,
    /// Partitions present on both sides with different hashes, merged.
    pub keys_merged: u64,
    /// Partitions skipped because they changed during the sync (taken next time).
    pub keys_skipped: u64,
    /// Entity slots written (on either side).
    pub entities_changed: u64,
    /// Ids present on both sides with different content. Format 1 only: a format-2
    /// sync moves pieces without comparing ids, and resolves at read (it counts 0).
    pub conflicts: u64,
    /// Partition bytes written.
    pub bytes_written: u64,
    /// Writes into a shared tier that found another writer's update there (the key
    /// was merged again with it and written, or left for the next sync).
    pub write_races: u64,
    /// Partitions left out because the key strategy does not let this instance read
    /// them (partial sync, DESIGN §11).
    pub keys_refused: u64,
    /// Whether a tier could not be reached (the rest kept working).
    pub offline: bool,
    /// Errors met, each naming its tier and key.
    pub errors: Vec<String>,
}

impl SyncStats {
    pub(crate) fn absorb(&mut self, other: SyncStats) {
        self.keys_compared += other.keys_compared;
        self.keys_copied += other.keys_copied;
        self.keys_merged += other.keys_merged;
        self.keys_skipped += other.keys_skipped;
        self.entities_changed += other.entities_changed;
        self.conflicts += other.conflicts;
        self.bytes_written += other.bytes_written;
        self.write_races += other.write_races;
        self.keys_refused += other.keys_refused;
        self.offline |= other.offline;
        self.errors.extend(other.errors);
    }
}

/// Which partitions take part.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Every partition of either side.
    Full,
    /// Only these keys (cache mode: the upper tier's written keys).
    Keys(Vec<String>),
}

/// The result of syncing a pair of tiers.
#[derive(Debug, Default)]
pub(crate) struct PairOutcome {
    pub stats: SyncStats,
    /// Slots the sync changed in the upper tier, per key.
    pub upper_changes: Vec<(String, Vec<SlotChange>)>,
    /// Keys whose content changed in the upper tier.
    pub upper_keys_changed: Vec<String>,
    /// Keys that could not be synced (they stay pending).
    pub failed_keys: Vec<String>,
    /// The first error met on a key (the pair went on with the other keys).
    pub first_error: Option<crate::error::Error>,
}

pub(crate) struct SyncCtx<'a> {
    pub resolver: &'a dyn ConflictResolver,
    pub clock: Option<&'a Clock>,
    /// In a full sync, whether a partition (with the entity names either side
    /// records in it) may be read here; the others are left out.
    pub may_read: Option<&'a dyn ReadFilter>,
    /// The instance's store, whose content the tier right below it reflects: a sync
    /// of that tier with the cloud takes counts from it ([`Tier::sync_pieces`]).
    pub store: Option<&'a Tier>,
}

/// Which partitions a full sync may bring to this instance (DESIGN §11).
pub(crate) trait ReadFilter {
    /// Whether `key`, holding entities of `names`, may be read here.
    fn may_read(&self, key: &str, names: &[&str]) -> bool;
}

/// Syncs `upper` with `lower`. An adapter failure that makes a tier unreachable ends
/// the pair early (`Err`); a corrupt partition is reported in the stats and skipped.
pub(crate) fn sync_pair(
    upper: &Tier,
    lower: &Tier,
    scope: Scope,
    ctx: &SyncCtx,
) -> Result<PairOutcome> {
    let mut out = PairOutcome::default();
    upper.ensure_format()?;
    lower.ensure_format()?;
    let keys: Vec<String> = match scope {
        Scope::Full => {
            // Format 2 roots are the tree's (`crate::summary`); the store tier,
            // which keeps no stored root, answers in the form of the other side.
            let tree = upper.is_pieces() || lower.is_pieces();
            let (ru, rl) = (upper.root_as(tree)?, lower.root_as(tree)?);
            if ru == rl {
                // Nothing to sync, but a tier whose metadata was rebuilt while its
                // root was read (format 2: a damaged top) stores it now, once.
                let now = now_millis();
                upper.persist_meta(now)?;
                lower.persist_meta(now)?;
                return Ok(out);
            }
            let (mu, ml) = (upper.meta_after_root()?, lower.meta_after_root()?);
            let keys = differing_keys(&mu, &ml);
            match ctx.may_read {
                Some(may_read) => readable_keys(keys, &mu, &ml, may_read, &mut out.stats),
                None => keys,
            }
        }
        Scope::Keys(keys) => {
            // Store entries of written keys are stale; `sync_key` hashes them as it
            // loads them, instead of loading every written partition twice.
            lower.meta()?;
            keys
        }
    };
    let result = sync_keys(upper, lower, &keys, ctx, &mut out);
    let now = now_millis();
    let persisted = upper.persist_meta(now).and(lower.persist_meta(now));
    out.stats.write_races += upper.take_races() + lower.take_races();
    result?;
    persisted?;
    Ok(out)
}

fn differing_keys(a: &Meta, b: &Meta) -> Vec<String> {
    let keys: BTreeSet<&String> = a.entries.keys().chain(b.entries.keys()).collect();
    keys.into_iter()
        .filter(|k| a.hash_of(k) != b.hash_of(k))
        .cloned()
        .collect()
}

/// The keys this instance may read; the others are counted as refused.
fn readable_keys(
    keys: Vec<String>,
    a: &Meta,
    b: &Meta,
    filter: &dyn ReadFilter,
    stats: &mut SyncStats,
) -> Vec<String> {
    let (allowed, refused): (Vec<String>, Vec<String>) = keys.into_iter().partition(|key| {
        let names: BTreeSet<&str> = [a.entries.get(key), b.entries.get(key)]
            .into_iter()
            .flatten()
            .flat_map(|e| e.entities.keys().map(String::as_str))
            .collect();
        filter.may_read(key, &names.into_iter().collect::<Vec<_>>())
    });
    if !refused.is_empty() {
        log::info!(target: "datasync::sync", "left out {} partition(s) the key strategy does not let this instance read (first: {:?})", refused.len(), refused[0]);
        stats.keys_refused += refused.len() as u64;
    }
    allowed
}

fn sync_keys(
    upper: &Tier,
    lower: &Tier,
    keys: &[String],
    ctx: &SyncCtx,
    out: &mut PairOutcome,
) -> Result<()> {
    for (i, key) in keys.iter().enumerate() {
        out.stats.keys_compared += 1;
        match sync_key_until_settled(upper, lower, key, ctx, out) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                // The damaged side is marked so that the next sync restores it.
                if let crate::Error::Corrupt { tier, .. } = &e {
                    for side in [upper, lower] {
                        if side.label == tier && !side.is_store() {
                            side.mark_damaged(key, now_millis());
                        }
                    }
                }
                out.first_error.get_or_insert_with(|| e.clone());
                log::error!(target: "datasync::sync", "{e}");
                out.stats.errors.push(e.to_string());
                out.failed_keys.push(key.clone());
            }
            Err(e) if e.kind() == ErrorKind::Forbidden => {
                // A tier refused this key to this device (a partition its token may
                // not touch): left out like a partition the strategy does not let it
                // read; the other keys are synced and the tier stays online.
                log::warn!(target: "datasync::sync", "left out: {e}");
                out.stats.keys_refused += 1;
                out.stats.errors.push(e.to_string());
                out.failed_keys.push(key.clone());
            }
            Err(e) => {
                log::warn!(target: "datasync::sync", "sync {}<->{} stopped: {e}", upper.label, lower.label);
                out.stats.errors.push(e.to_string());
                out.stats.offline = true;
                out.failed_keys.extend(keys[i..].iter().cloned());
                return Err(e);
            }
        }
    }
    Ok(())
}

/// How many times a key is merged again when another writer changed it in the shared
/// tier between our read and our write.
const KEY_ATTEMPTS: usize = 4;

/// Syncs one key; when another writer changed it in the lower (shared) tier after it
/// was read, reads and merges it again, a few times, then leaves it for the next sync.
fn sync_key_until_settled(
    upper: &Tier,
    lower: &Tier,
    key: &str,
    ctx: &SyncCtx,
    out: &mut PairOutcome,
) -> Result<()> {
    for _ in 0..KEY_ATTEMPTS {
        let failed = out.failed_keys.len();
        if sync_key(upper, lower, key, ctx, out)? {
            // Store and tier below now hold the same content: the next flush of the
            // key appends just the slots written after this.
            if upper.is_store()
                && lower.is_pieces()
                && !lower.shared
                && out.failed_keys.len() == failed
                && upper.reflects(key).is_none()
            {
                if let Some(entry) = lower.entry(key) {
                    let vector = lower.pieces_vector(key)?;
                    upper.reflects_after_merge(key, &entry.hash, vector);
                }
            }
            return Ok(());
        }
        out.stats.write_races += 1;
    }
    log::info!(target: "datasync::sync", "{key:?} kept changing in the {} tier; the next sync takes it", lower.label);
    out.stats.keys_skipped += 1;
    out.failed_keys.push(key.to_string());
    Ok(())
}

/// Syncs one key. `Ok(false)`: the lower tier changed after it was read, nothing of
/// the key was written there, and the key must be read again.
fn sync_key(
    upper: &Tier,
    lower: &Tier,
    key: &str,
    ctx: &SyncCtx,
    out: &mut PairOutcome,
) -> Result<bool> {
    let now = now_millis();
    let (eu, el) = (upper.fresh_entry(key), lower.entry(key));
    if let (Some(eu), Some(el)) = (&eu, &el) {
        if eu.hash == el.hash {
            return Ok(true);
        }
    }
    if upper.is_pieces() && lower.is_pieces() {
        sync_pieces_key(upper, lower, key, now, ctx, out)?;
        return Ok(true);
    }
    if upper.is_store() && lower.is_pieces() && !lower.shared {
        if let (Some((hash, known)), Some(el)) = (upper.reflects(key), el.as_ref()) {
            // The tier below is as the store last saw it: append what was written.
            let fast = if el.hash == hash {
                upper.take_written(key).and_then(|written| match written {
                    Some(written) if written.reflects == el.hash => {
                        flush_written(upper, lower, key, el, written, now, out).map(|_| true)
                    }
                    _ => Ok(false),
                })
            } else {
                // It holds more (a cloud sync brought it): apply just that.
                pull_beyond(upper, lower, key, el, &known, ctx, out)
            };
            match fast {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    upper.drop_reflects(key);
                    return Err(e);
                }
            }
        }
    }
    // One side lacks the key and the other's bytes are what its metadata says: copy
    // the bytes as they are, without parsing them.
    if !upper.is_store() && !lower.is_store() {
        match (&eu, &el) {
            (Some(eu), None) if copy_raw(upper, lower, key, eu, now, None, out)? => {
                return Ok(true)
            }
            (None, Some(el)) if copy_raw(lower, upper, key, el, now, ctx.clock, out)? => {
                out.upper_keys_changed.push(key.to_string());
                return Ok(true);
            }
            _ => {}
        }
    }
    // The upper tier may change while we work (saves on the store tier); a write back
    // to it happens only if it did not (step 5 of the algorithm).
    let upper_guard = upper.generation(key);
    let (lu, ll) = load_both(upper, lower, key, eu.as_ref(), el.as_ref())?;
    let guard = lu.as_ref().map_or(upper_guard, |l| l.generation);
    let sides = Sides {
        upper,
        lower,
        key,
        now,
    };
    let Some(resolution) = sides.resolve(eu.as_ref(), el.as_ref(), lu, ll, ctx, out) else {
        return Ok(true);
    };
    sides.write_back(resolution, guard, ctx, out)
}

/// Syncs one key between two tiers in pieces: each gets the pieces it lacks (no
/// partition is read, unless both sides wrote since they last met and the counts
/// must be taken again).
fn sync_pieces_key(
    upper: &Tier,
    lower: &Tier,
    key: &str,
    now: i64,
    ctx: &SyncCtx,
    out: &mut PairOutcome,
) -> Result<()> {
    let synced = upper.sync_pieces(lower, key, now, ctx.store)?;
    let moved = &synced.moved;
    if let (Some(clock), Some(latest)) = (ctx.clock, synced.latest_into) {
        // Writes coming up into an instance: their stamps are adopted, as a merge
        // would.
        clock.observe(latest);
    }
    // Races are counted by the tiers (`Tier::take_races`), index writes among them.
    out.stats.bytes_written += moved.bytes;
    out.stats.entities_changed += moved.a_to_b + moved.b_to_a;
    match (moved.a_to_b > 0, moved.b_to_a > 0) {
        (true, true) => out.stats.keys_merged += 1,
        (false, false) => {}
        _ => out.stats.keys_copied += 1,
    }
    if moved.b_to_a > 0 {
        out.upper_keys_changed.push(key.to_string());
    }
    Ok(())
}

/// Flushes the slots written in the store since its last sync of `key` with the
/// tier below, which holds what the store held then (its entry is `el`): one new
/// piece of those slots; neither side's partition is read. The counts follow from
/// what each slot held before and holds now.
fn flush_written(
    store: &Tier,
    lower: &Tier,
    key: &str,
    el: &MetaEntry,
    written: crate::tier::Written,
    now: i64,
    out: &mut PairOutcome,
) -> Result<()> {
    use crate::partition::Counts;
    use crate::tier::Was;
    let mut counts = el.entities.clone();
    let mut delta = Partition::default();
    for (name, id, was, slot) in written.slots {
        let Some(slot) = slot else { continue };
        let c = counts.entry(name.clone()).or_default();
        match was {
            Was::Active => c.count = c.count.saturating_sub(1),
            Was::Deleted => c.deleted_count = c.deleted_count.saturating_sub(1),
            Was::Absent => {}
        }
        match &slot {
            crate::partition::Slot::Active(_) => c.count += 1,
            crate::partition::Slot::Deleted(_) => c.deleted_count += 1,
        }
        delta.put(&name, &id, slot);
    }
    counts.retain(|_, c| *c != Counts::default());
    let n: usize = delta.names.values().map(|ids| ids.len()).sum();
    if n > 0 {
        let (bytes, vector) = lower.append_slots(key, delta, counts.clone(), now)?;
        out.stats.bytes_written += bytes;
        out.stats.entities_changed += n as u64;
        match lower.entry(key) {
            // A full fold after the append dropped tombstones the store still holds:
            // the next flush merges whole instead of counting from what it held.
            Some(entry) if entry.entities != counts => store.drop_reflects(key),
            Some(entry) => store.update_reflects(key, &entry.hash, vector),
            None => store.drop_reflects(key),
        }
    }
    Ok(())
}

/// Brings into the store the writes the tier below holds beyond those the store
/// reflects (`known`), when the store was not written since: only the pieces holding
/// them are loaded, and each slot goes through the resolver against the store's.
/// `false` when that cannot be done (the store was written, or the tier below does
/// not hold every write the store reflects): then the partitions are merged whole.
fn pull_beyond(
    store: &Tier,
    lower: &Tier,
    key: &str,
    el: &MetaEntry,
    known: &crate::pieces::Vector,
    ctx: &SyncCtx,
    out: &mut PairOutcome,
) -> Result<bool> {
    let Some((slots, vector)) = lower.slots_beyond(key, known)? else {
        return Ok(false);
    };
    let Some(changes) = store.apply_pulled(key, slots, ctx.resolver)? else {
        return Ok(false);
    };
    store.update_reflects(key, &el.hash, vector);
    if changes.is_empty() {
        return Ok(true);
    }
    if let Some(clock) = ctx.clock {
        if let Some(max) = changes.iter().map(|c| c.slot.instant()).max() {
            clock.observe(max);
        }
    }
    out.stats.entities_changed += changes.len() as u64;
    out.upper_keys_changed.push(key.to_string());
    out.upper_changes.push((key.to_string(), changes));
    Ok(true)
}

/// The two tiers of one key's sync.
struct Sides<'a> {
    upper: &'a Tier,
    lower: &'a Tier,
    key: &'a str,
    now: i64,
}

/// What a key's sync decided: the partition both sides end with, and what it changes
/// on each.
struct Resolution {
    merged: Loaded,
    /// The hash each side holds, when its stored bytes are canonical (then no write
    /// is needed where it equals the merged one).
    upper_hash: Option<String>,
    lower_hash: Option<String>,
    changed_upper: Vec<SlotChange>,
    changed_lower: Vec<SlotChange>,
    /// The bytes each side held when read, where a write to it may follow (`None`:
    /// it lacked the key): a shared tier is written only if it still holds them.
    upper_before: Option<Vec<u8>>,
    lower_before: Option<Vec<u8>>,
}

impl Sides<'_> {
    /// Decides the partition of a key both sides hold, or one of them; `None` when
    /// there is nothing to write (the recorded entries are repaired on the way).
    fn resolve(
        &self,
        eu: Option<&MetaEntry>,
        el: Option<&MetaEntry>,
        lu: Option<Loaded>,
        ll: Option<Loaded>,
        ctx: &SyncCtx,
        out: &mut PairOutcome,
    ) -> Option<Resolution> {
        let (key, now) = (self.key, self.now);
        let canonical_hash = |l: &Loaded| (!l.rewrite).then(|| l.hash.clone());
        match (lu, ll) {
            (None, None) => {
                // Recorded but gone on both sides (e.g. a corrupt file moved aside): forget it.
                if eu.is_some() {
                    self.upper.remove_entry(key);
                }
                if el.is_some() {
                    self.lower.remove_entry(key);
                }
                None
            }
            (Some(a), None) => {
                self.upper.repair_entry(key, eu, &a, now);
                out.stats.keys_copied += 1;
                Some(Resolution {
                    upper_hash: canonical_hash(&a),
                    lower_hash: None,
                    changed_upper: Vec::new(),
                    changed_lower: all_slots(&a.partition),
                    // Written back only when not canonical, over what it held.
                    upper_before: a.stored.clone(),
                    lower_before: None,
                    merged: a,
                })
            }
            (None, Some(b)) => {
                self.lower.repair_entry(key, el, &b, now);
                out.stats.keys_copied += 1;
                Some(Resolution {
                    upper_hash: None,
                    lower_hash: canonical_hash(&b),
                    changed_upper: all_slots(&b.partition),
                    changed_lower: Vec::new(),
                    upper_before: None,
                    lower_before: b.stored.clone(),
                    merged: b,
                })
            }
            (Some(a), Some(b)) => {
                self.upper.repair_entry(key, eu, &a, now);
                self.lower.repair_entry(key, el, &b, now);
                if a.hash == b.hash && !a.rewrite && !b.rewrite {
                    return None;
                }
                out.stats.keys_merged += 1;
                let m = merge(&a.partition, &b.partition, ctx.resolver);
                out.stats.conflicts += m.conflicts;
                Some(Resolution {
                    upper_hash: canonical_hash(&a),
                    lower_hash: canonical_hash(&b),
                    merged: Loaded::new(m.partition),
                    changed_upper: m.changed_a,
                    changed_lower: m.changed_b,
                    upper_before: Some(a.into_held()),
                    lower_before: Some(b.into_held()),
                })
            }
        }
    }

    /// Writes the decided partition where it differs: to the lower tier if it still
    /// holds what was read (else `Ok(false)`: read it again), then to the upper one
    /// only if it did not change meanwhile (else the key is skipped, and the next
    /// sync takes it).
    fn write_back(
        &self,
        r: Resolution,
        guard: u64,
        ctx: &SyncCtx,
        out: &mut PairOutcome,
    ) -> Result<bool> {
        let (upper, lower, key, now) = (self.upper, self.lower, self.key, self.now);
        // What we now believe the upper tier holds; a different entry at write time
        // means someone else wrote it meanwhile.
        let upper_seen = upper.entry(key).map(|e| e.hash);
        if r.lower_hash.as_deref() != Some(r.merged.hash.as_str()) {
            if lower.is_pieces() {
                // Only the slots that changed, as one new piece: all of them where
                // the lower tier lacked the key (their canonical form is made already).
                let lacked = r.lower_hash.is_none() && r.lower_before.is_none();
                out.stats.bytes_written += if lacked && !r.merged.bytes.is_empty() {
                    lower.append_whole(key, &r.merged, now)?
                } else {
                    lower.append_changes(key, &r.changed_lower, &r.merged.partition, now)?
                };
            } else {
                let before = r.lower_before.as_deref();
                if !lower.write_partition(key, &r.merged, now, None, before)? {
                    return Ok(false);
                }
                out.stats.bytes_written += r.merged.bytes.len() as u64;
            }
            out.stats.entities_changed += r.changed_lower.len() as u64;
        }
        if r.upper_hash.as_deref() == Some(r.merged.hash.as_str()) {
            return Ok(true);
        }
        let unchanged = upper.is_store() || upper.entry(key).map(|e| e.hash) == upper_seen;
        let before = r.upper_before.as_deref();
        if !unchanged || !upper.write_partition(key, &r.merged, now, Some(guard), before)? {
            out.stats.keys_skipped += 1;
            out.failed_keys.push(key.to_string());
            return Ok(true);
        }
        out.stats.entities_changed += r.changed_upper.len() as u64;
        out.stats.bytes_written += r.merged.bytes.len() as u64;
        if let Some(clock) = ctx.clock {
            if let Some(max) = r.changed_upper.iter().map(|c| c.slot.instant()).max() {
                clock.observe(max);
            }
        }
        out.upper_keys_changed.push(key.to_string());
        out.upper_changes.push((key.to_string(), r.changed_upper));
        Ok(true)
    }
}

/// Copies trusted bytes to a tier that really lacks the key. Returns false (and
/// copies nothing) when the bytes or the destination are not as the metadata says.
/// With a `clock` (bytes coming up into an instance), the latest stamp they hold is
/// adopted into it, as a merge would.
fn copy_raw(
    src: &Tier,
    dst: &Tier,
    key: &str,
    entry: &MetaEntry,
    now: i64,
    clock: Option<&Clock>,
    out: &mut PairOutcome,
) -> Result<bool> {
    let Some(bytes) = src.load(key)? else {
        return Ok(false);
    };
    if hash_bytes(&bytes) != entry.hash {
        return Ok(false);
    }
    // Only into a tier that really lacks the key (a shared one checks as it writes).
    if !dst.shared && dst.load(key)?.is_some() {
        return Ok(false);
    }
    if !dst.put_if(key, None, &bytes)? {
        return Ok(false);
    }
    if let Some(clock) = clock {
        // Canonical bytes (their hash is the recorded one) split without parsing
        // the entities; only their stamps are read.
        if let Ok(partition) = Partition::parse(&bytes, true) {
            let latest = partition
                .names
                .values()
                .flat_map(|ids| ids.values().map(|slot| slot.instant()))
                .max();
            if let Some(latest) = latest {
                clock.observe(latest);
            }
        }
    }
    let entities = entry.entities.clone();
    out.stats.entities_changed += entities
        .values()
        .map(|c| c.count + c.deleted_count)
        .sum::<u64>();
    dst.set_entry(
        key,
        MetaEntry {
            hash: entry.hash.clone(),
            updated_at: now,
            entities,
        },
    );
    out.stats.keys_copied += 1;
    out.stats.bytes_written += bytes.len() as u64;
    Ok(true)
}

/// Below this many bytes on each side, parsing on a second thread costs more than it saves.
const PARALLEL_PARSE_BYTES: usize = 64 * 1024;

/// Reads a key from both tiers (adapter calls on this thread), then parses both sides,
/// at once on two threads when both are large.
fn load_both(
    upper: &Tier,
    lower: &Tier,
    key: &str,
    eu: Option<&MetaEntry>,
    el: Option<&MetaEntry>,
) -> Result<(Option<Loaded>, Option<Loaded>)> {
    let (ru, rl) = (upper.load_raw(key)?, lower.load_raw(key)?);
    let (hu, hl) = (eu.map(|e| e.hash.as_str()), el.map(|e| e.hash.as_str()));
    let finish = |raw: Option<crate::tier::Raw>,
                  tier: &Tier,
                  hash: Option<&str>|
     -> Result<Option<Loaded>> {
        raw.map(|r| r.finish(tier.label, key, hash)).transpose()
    };
    let big = |r: &Option<crate::tier::Raw>| {
        r.as_ref()
            .is_some_and(|r| r.weight() >= PARALLEL_PARSE_BYTES)
    };
    if big(&ru) && big(&rl) {
        return std::thread::scope(|scope| {
            let upper_side = scope.spawn(|| finish(ru, upper, hu));
            let lower_side = finish(rl, lower, hl);
            let upper_side = upper_side
                .join()
                .map_err(|_| crate::Error::Internal("parsing a partition panicked".into()))?;
            Ok((upper_side?, lower_side?))
        });
    }
    Ok((finish(ru, upper, hu)?, finish(rl, lower, hl)?))
}

fn all_slots(partition: &Partition) -> Vec<SlotChange> {
    partition
        .names
        .iter()
        .flat_map(|(name, ids)| {
            ids.iter().map(move |(id, slot)| SlotChange {
                name: name.clone(),
                id: id.clone(),
                slot: slot.clone(),
            })
        })
        .collect()
}

/// Syncs two standalone blob tiers (e.g. two directories) with the full algorithm:
/// both sides' metadata are read from the adapters and written back. Two tiers in
/// format 2 sync by their pieces; where one is in format 2, the other is converted
/// to it first (in place and crash-safely, as opening it with format 2 would).
pub fn sync_tiers(
    mut a: Box<dyn crate::persistence::Persistence>,
    mut b: Box<dyn crate::persistence::Persistence>,
    resolver: std::sync::Arc<dyn ConflictResolver>,
) -> Result<SyncStats> {
    let pieces_a = crate::pieces::is_converted(a.as_mut(), "a")?;
    let pieces_b = crate::pieces::is_converted(b.as_mut(), "b")?;
    if pieces_a != pieces_b {
        let (older, label) = if pieces_a {
            (&mut b, "b")
        } else {
            (&mut a, "a")
        };
        let done = crate::pieces::convert_format1(older.as_mut(), label)?;
        log::info!(target: "datasync::sync", "converted tier {label} to format 2 ({} partitions) to sync it with a tier in format 2", done.partitions);
    }
    let pieces_a = pieces_a || pieces_b;
    let tier = |label, adapter| {
        let tier = Tier::new(label, crate::tier::Adapter::Blobs(adapter), true);
        if pieces_a {
            tier.in_pieces(
                resolver.clone(),
                crate::pieces::Compaction::default(),
                now_millis,
            )
        } else {
            tier
        }
    };
    let (ta, tb) = (tier("a", a), tier("b", b));
    let ctx = SyncCtx {
        resolver: resolver.as_ref(),
        clock: None,
        may_read: None,
        store: None,
    };
    let outcome = sync_pair(&ta, &tb, Scope::Full, &ctx)?;
    Ok(outcome.stats)
}
