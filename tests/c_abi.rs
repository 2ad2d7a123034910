//! Checks on the C ABI as a whole: the committed header is current, every export
//! goes through the boundary and documents its contract, and a panic becomes a status.

use std::ffi::CStr;
use std::fs;
use std::path::{Path, PathBuf};

#[cfg(feature = "debug-panic")]
use datasync::ffi::c::boundary::{datasync_debug_panic, datasync_error_message};
use datasync::ffi::c::status::datasync_code;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The status enum as plain Rust: the body of the `status_codes!` invocation in
/// `src/ffi/c/status.rs`. cbindgen does not expand macros, so it gets this text as
/// one more source file.
fn status_enum_source() -> String {
    let text = fs::read_to_string(root().join("src/ffi/c/status.rs")).unwrap();
    let marker = "\nstatus_codes! {";
    let at = text.find(marker).expect("status.rs invokes status_codes!") + marker.len() - 1;
    let close = matching(text.as_bytes(), at);
    text[at + 1..close].to_string()
}

fn generate_header() -> String {
    let root = root();
    let config =
        cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let dir = std::env::temp_dir().join(format!("datasync-header-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let codes = dir.join("codes.rs");
    fs::write(&codes, status_enum_source()).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/c/mod.rs"))
        .with_src(&codes)
        .generate()
        .expect("cbindgen generates the header");
    fs::remove_dir_all(&dir).unwrap();
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

/// Fails when `include/datasync.h` differs from what cbindgen makes of the sources.
/// `DATASYNC_BLESS=1 cargo test --test c_abi` rewrites it, and then still checks
/// what is on disk against a fresh generation; under `CI` blessing is refused, so a
/// stale header always fails there.
#[test]
fn committed_header_is_current() {
    let path = root().join("include/datasync.h");
    let generated = generate_header();
    let committed = fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        return;
    }
    let bless = std::env::var_os("DATASYNC_BLESS").is_some();
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        bless && !ci,
        "include/datasync.h is out of date; regenerate it with DATASYNC_BLESS=1 cargo test --test c_abi{}",
        if ci { " (blessing is off under CI)" } else { "" }
    );
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &generated).unwrap();
    let on_disk = fs::read_to_string(&path).unwrap();
    assert!(
        on_disk == generate_header(),
        "include/datasync.h was rewritten, but a second generation differs from it"
    );
    eprintln!("include/datasync.h was out of date and has been rewritten; commit it");
}

/// One exported function, as found in the source text.
struct Export {
    file: String,
    name: String,
    docs: String,
    body: String,
}

/// Skips a string, raw string or char literal starting at `i`; returns the index after it.
fn skip_literal(s: &[u8], i: usize) -> Option<usize> {
    match s[i] {
        b'"' => {
            let mut j = i + 1;
            while j < s.len() {
                match s[j] {
                    b'\\' => j += 2,
                    b'"' => return Some(j + 1),
                    _ => j += 1,
                }
            }
            Some(s.len())
        }
        b'r' if s.get(i + 1) == Some(&b'#') || s.get(i + 1) == Some(&b'"') => {
            let hashes = s[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if s.get(i + 1 + hashes) != Some(&b'"') {
                return None;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let start = i + 2 + hashes;
            let end = s[start..]
                .windows(close.len())
                .position(|w| w == close.as_slice())?;
            Some(start + end + close.len())
        }
        b'\'' if s.get(i + 1) == Some(&b'\\') => s[i + 2..]
            .iter()
            .position(|&c| c == b'\'')
            .map(|p| i + 3 + p),
        b'\'' if s.get(i + 2) == Some(&b'\'') => Some(i + 3),
        _ => None,
    }
}

/// Index of the bracket closing the one at `open`, skipping literals and comments.
fn matching(s: &[u8], open: usize) -> usize {
    let (o, c) = (s[open], if s[open] == b'(' { b')' } else { b'}' });
    let mut depth = 0;
    let mut i = open;
    while i < s.len() {
        if s[i] == b'/' && s.get(i + 1) == Some(&b'/') {
            i += s[i..]
                .iter()
                .position(|&ch| ch == b'\n')
                .unwrap_or(s.len() - i);
            continue;
        }
        if let Some(next) = skip_literal(s, i) {
            i = next;
            continue;
        }
        if s[i] == o {
            depth += 1;
        } else if s[i] == c {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
        i += 1;
    }
    panic!("unbalanced brackets");
}

fn exports_in(path: &Path) -> Vec<Export> {
    let text = fs::read_to_string(path).unwrap();
    let bytes = text.as_bytes();
    let marker = "extern \"C\" fn ";
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(marker) {
        let start = from + at;
        from = start + marker.len();
        let rest = &text[from..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue; // a function pointer type, not a definition
        }
        let params = from + name.len() + rest[name.len()..].find('(').unwrap();
        let after_params = matching(bytes, params);
        let open = after_params + text[after_params..].find('{').unwrap();
        let close = matching(bytes, open);
        let line_start = text[..start].rfind('\n').map_or(0, |p| p + 1);
        let docs: Vec<&str> = text[..line_start]
            .lines()
            .rev()
            .take_while(|l| l.trim_start().starts_with("///") || l.trim_start().starts_with("#["))
            .collect();
        found.push(Export {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            name,
            docs: docs.into_iter().rev().collect::<Vec<_>>().join("\n"),
            body: text[open + 1..close].to_string(),
        });
    }
    found
}

fn all_exports() -> Vec<Export> {
    let dir = root().join("src/ffi/c");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files.iter().flat_map(|p| exports_in(p)).collect()
}

/// The body of every `extern "C" fn` is a single call to `boundary(...)`.
#[test]
fn every_export_goes_through_the_boundary() {
    let exports = all_exports();
    assert!(
        exports.len() >= 40,
        "found only {} exports; is the parser broken?",
        exports.len()
    );
    let mut wrong = Vec::new();
    for e in &exports {
        let body = e.body.trim();
        let ok = body.starts_with("boundary(") && {
            let bytes = body.as_bytes();
            let open = body.find('(').unwrap();
            matching(bytes, open) == bytes.len() - 1
        };
        if !ok {
            wrong.push(format!("{}: {}", e.file, e.name));
        }
        assert!(
            e.docs.contains("#[no_mangle]"),
            "{}: {} is not #[no_mangle]",
            e.file,
            e.name
        );
        assert!(
            e.name.starts_with("datasync_"),
            "{}: {} lacks the datasync_ prefix",
            e.file,
            e.name
        );
    }
    assert!(
        wrong.is_empty(),
        "exports whose body is not one boundary(...) call: {wrong:?}"
    );
}

/// The checker itself catches an export that skips the boundary.
#[test]
fn the_boundary_check_can_fail() {
    let dir = std::env::temp_dir().join(format!("datasync-c-abi-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.rs");
    fs::write(
        &file,
        "/// x\n#[no_mangle]\npub extern \"C\" fn datasync_bad(p: Option<extern \"C\" fn(u8)>) -> u32 { let _ = p; boundary(|| Ok(())); 7 }\n\
         /// y\n#[no_mangle]\npub extern \"C\" fn datasync_good() -> u32 {\n    boundary(|| { let s = \"}{)(\"; Ok(s.len()) })\n}\n",
    )
    .unwrap();
    let found = exports_in(&file);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 2);
    let passes = |e: &Export| {
        let body = e.body.trim();
        body.starts_with("boundary(")
            && matching(body.as_bytes(), body.find('(').unwrap()) == body.len() - 1
    };
    assert!(!passes(&found[0]));
    assert!(passes(&found[1]));
}

/// Every export states its ownership and thread rules (they end up in the header).
#[test]
fn every_export_documents_ownership_and_threads() {
    for e in all_exports() {
        assert!(
            e.docs.contains("/// Ownership:"),
            "{}: {} has no \"Ownership:\" paragraph",
            e.file,
            e.name
        );
        assert!(
            e.docs.contains("/// Threads:"),
            "{}: {} has no \"Threads:\" paragraph",
            e.file,
            e.name
        );
    }
}

/// A panic inside the library comes back as DATASYNC_PANIC with its message.
/// `cargo test` builds the crate with `debug-panic` (the crate is its own
/// dev-dependency with that feature), so this always runs there.
#[cfg(feature = "debug-panic")]
#[test]
fn a_panic_becomes_the_panic_status() {
    let status = unsafe { datasync_debug_panic(c"boom from the test".as_ptr()) };
    assert_eq!(status, datasync_code::DATASYNC_PANIC);
    let message = unsafe { CStr::from_ptr(datasync_error_message()) }
        .to_str()
        .unwrap();
    assert!(message.contains("boom from the test"), "{message}");
}

/// The `NAME = value` lines of the enum `enum_name` in a C header.
fn header_enum(header: &str, enum_name: &str) -> Vec<(String, u32)> {
    let start = header
        .find(&format!("enum {enum_name}"))
        .unwrap_or_else(|| panic!("the header declares no enum {enum_name}"));
    let open = start + header[start..].find('{').unwrap();
    let close = open + header[open..].find("};").unwrap();
    let mut codes = Vec::new();
    let mut in_comment = false;
    for line in header[open + 1..close].lines() {
        let line = line.trim();
        if line.starts_with("/*") {
            in_comment = !line.ends_with("*/");
            continue;
        }
        if in_comment {
            in_comment = !line.ends_with("*/");
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .trim_end_matches(',')
            .split_once('=')
            .unwrap_or_else(|| panic!("not a NAME = value line: {line:?}"));
        let value = value.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
        codes.push((name.trim().to_string(), value));
    }
    codes
}

/// Every status constant of the committed header is in the Rust list with the same
/// value, and every code of the list is in the header.
#[test]
fn header_codes_match_the_list() {
    let header = fs::read_to_string(root().join("include/datasync.h")).unwrap();
    let in_header = header_enum(&header, "datasync_code");
    let in_rust: Vec<(String, u32)> = datasync_code::ALL
        .iter()
        .map(|c| (c.name().trim_end_matches('\0').to_string(), *c as u32))
        .collect();
    for code in &in_header {
        assert!(
            in_rust.contains(code),
            "the header has {code:?}, the Rust list does not"
        );
    }
    for code in &in_rust {
        assert!(
            in_header.contains(code),
            "the Rust list has {code:?}, the header does not"
        );
    }
    assert!(in_rust.contains(&("DATASYNC_FORBIDDEN".to_string(), 110)));
    // The parser sees a changed value.
    let tampered = header.replace("DATASYNC_FORBIDDEN = 110", "DATASYNC_FORBIDDEN = 111");
    assert!(!header_enum(&tampered, "datasync_code").contains(&("DATASYNC_FORBIDDEN".into(), 110)));
}

/// Export names follow `datasync_<object>_<verb>`, with one of the objects the
/// header's conventions list (and `datasync_version`).
#[test]
fn export_names_follow_the_scheme() {
    let objects = [
        "instance",
        "entity",
        "config",
        "memory",
        "subscription",
        "logger",
        "bytes_sink",
        "string",
        "error",
        "code",
        "debug",
    ];
    for e in all_exports() {
        if e.name == "datasync_version" {
            continue;
        }
        let rest = e.name.strip_prefix("datasync_").unwrap_or_default();
        let verb = objects
            .iter()
            .find_map(|o| rest.strip_prefix(o).and_then(|r| r.strip_prefix('_')));
        assert!(
            verb.is_some_and(|v| !v.is_empty()),
            "{}: {} is not datasync_<object>_<verb> with a known object",
            e.file,
            e.name
        );
    }
}
