//! Arbitrary bytes as a partition blob: parsing returns Ok or an error, never panics.
//! When the bytes parse, their canonical form parses to the same partition, writes
//! the same bytes again (idempotent), and the trusted fast path agrees with the full
//! parse on it. Parsing the same bytes as trusted must not panic either.
#![no_main]

use datasync::partition::hash_bytes;
use datasync::Partition;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Bytes that claim to be canonical but are not: any outcome but a panic is fine.
    let _ = Partition::parse(data, true);

    let Ok(partition) = Partition::parse(data, false) else {
        return;
    };
    let canonical = partition.to_canonical();
    let again = Partition::parse(&canonical, false)
        .unwrap_or_else(|e| panic!("canonical bytes do not parse: {e}"));
    assert_eq!(again, partition, "canonical form changes the partition");
    assert_eq!(
        again.to_canonical(),
        canonical,
        "canonical form is not idempotent"
    );
    let trusted = Partition::parse(&canonical, true)
        .unwrap_or_else(|e| panic!("canonical bytes do not parse as trusted: {e}"));
    assert_eq!(trusted, partition, "the trusted parse disagrees");
    assert_eq!(trusted.to_canonical(), canonical);
    assert_eq!(partition.counts(), again.counts());
    assert_eq!(hash_bytes(&canonical), hash_bytes(&again.to_canonical()));
    if partition.is_empty() {
        assert_eq!(canonical, b"{}", "an empty partition is not `{{}}`");
    }
});
