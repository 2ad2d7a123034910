//! The modules of the `datasync` command (not part of the library).

pub mod bench;
pub mod bench_edit;
pub mod bench_latency;
pub mod bench_pieces;
pub mod bench_server;
pub mod crash;
pub mod demo;
pub mod inspect;
pub mod ops;
pub mod serve;
pub mod sync;

/// What a command returns: an exit code, or an error printed as one line.
pub type CliResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Fails unless `dir` is an existing directory (commands that only read never create one).
pub fn existing_dir(dir: &std::path::Path) -> CliResult<()> {
    if !dir.exists() {
        return Err(format!("no such directory: {}", dir.display()).into());
    }
    if !dir.is_dir() {
        return Err(format!("not a directory: {}", dir.display()).into());
    }
    Ok(())
}

/// Fails unless `dir` is an existing directory tier. Nothing is created or changed
/// when it is not (opening a directory as a tier would create `blobs/` and a lock).
pub fn existing_tier(dir: &std::path::Path) -> CliResult<()> {
    existing_dir(dir)?;
    if !dir.join("blobs").is_dir() {
        return Err(format!(
            "{} is not a datasync tier (it has no blobs/ directory)",
            dir.display()
        )
        .into());
    }
    Ok(())
}
