//! The data and its rules, free of storage and threads: entities and their reserved
//! fields, ids, the clock, partitions (canonical form, hashes), metadata, queries and
//! key strategies.

pub mod clock;
pub mod entity;
pub mod id;
pub mod meta;
pub mod partition;
pub mod query;
pub mod split;
pub mod strategy;
pub mod summary;
