//! The modules of the `datasync` command (not part of the library).

pub mod bench;
pub mod crash;
pub mod demo;
pub mod inspect;
pub mod ops;
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
