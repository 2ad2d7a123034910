//! The UniFFI bindings generator, pinned to the uniffi version the library uses.
//!
//! `cargo run --features uniffi-cli --bin uniffi-bindgen -- generate --library
//! target/debug/libdatasync.so --language kotlin --out-dir <dir>`

fn main() {
    uniffi::uniffi_bindgen_main()
}
