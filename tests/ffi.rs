//! The C ABI (feature `ffi`): `include/distcache.h` agrees with `src/ffi`, every entry point checks
//! its arguments, and a C and a Python (ctypes) core node share values with a Rust core node through
//! a real redis-server, a real broker and a state node.
//!
//! The C libraries are built here with `cargo rustc --lib --features ffi --crate-type
//! cdylib,staticlib` (a no-op when fresh); the C core node is compiled with `cc -Wall -Wextra
//! -Werror` against the header and linked against the static library (a missing symbol fails the
//! link), the Python one loads the shared library.

mod support;

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;
use std::sync::OnceLock;
use std::time::Duration;

use distcache::ffi::*;
use support::{python3, run_with_timeout, wait_until, CoreNodeProcess};
use support::{Deployment, WAIT};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

// ---- header ↔ Rust -------------------------------------------------------------------------

/// `/* */` and `//` comments removed.
fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
            out.push(' ');
        } else if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// A C type with its spelling normalised: no spaces at all (`const char *` → `constchar*`).
fn squash(ty: &str) -> String {
    ty.split_whitespace().collect()
}

/// A Rust FFI type as C spells it (the subset `src/ffi` uses), squashed.
fn rust_to_c(ty: &str) -> String {
    let ty = ty.trim();
    // `*const X` points to a const X: `const X *` in C, or `X const *` when X is itself a pointer.
    if let Some(inner) = ty.strip_prefix("*const ") {
        let inner_c = rust_to_c(inner);
        return if inner_c.ends_with('*') {
            format!("{inner_c}const*")
        } else {
            format!("const{inner_c}*")
        };
    }
    if let Some(inner) = ty.strip_prefix("*mut ") {
        return format!("{}*", rust_to_c(inner));
    }
    match ty {
        "c_char" => "char".into(),
        "u8" => "uint8_t".into(),
        "i32" => "int32_t".into(),
        "u64" => "uint64_t".into(),
        "usize" => "size_t".into(),
        "" => "void".into(),
        other => other.into(),
    }
}

/// A function's return type and argument types, squashed C spellings.
type Signature = (String, Vec<String>);

/// Every `extern "C"` function, `pub const` and `#[repr(C)]` struct in `src/ffi`.
struct RustSide {
    functions: BTreeMap<String, Signature>,
    constants: BTreeMap<String, i64>,
    structs: BTreeMap<String, Vec<(String, String)>>,
}

fn rust_side() -> RustSide {
    let mut side = RustSide {
        functions: BTreeMap::new(),
        constants: BTreeMap::new(),
        structs: BTreeMap::new(),
    };
    let dir = Path::new(ROOT).join("src/ffi");
    for entry in std::fs::read_dir(&dir).expect("src/ffi") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read src/ffi file");
        let text = strip_comments(&text);
        // Functions: `extern "C" fn NAME(ARGS) -> RET {`.
        let mut rest = text.as_str();
        while let Some(i) = rest.find("extern \"C\" fn ") {
            rest = &rest[i + "extern \"C\" fn ".len()..];
            let open = rest.find('(').expect("(");
            let name = rest[..open].trim().to_string();
            let close = rest.find(')').expect(")");
            let args = rest[open + 1..close]
                .split(',')
                .filter(|a| !a.trim().is_empty())
                .map(|a| rust_to_c(a.split_once(':').expect("name: type").1))
                .collect();
            let body = rest.find('{').expect("{");
            let ret = rest[close + 1..body].trim().trim_start_matches("->");
            side.functions.insert(name, (rust_to_c(ret), args));
            rest = &rest[body..];
        }
        for line in text.lines() {
            // Constants: `pub const NAME: i32 = VALUE;`.
            if let Some(decl) = line.trim().strip_prefix("pub const ") {
                let (name, value) = decl.split_once(": i32 = ").expect("an i32 constant");
                let value = value.trim_end_matches(';').parse().expect("a literal");
                side.constants.insert(name.to_string(), value);
            }
        }
        // Structs: `#[repr(C)] … pub struct NAME { pub field: Type, … }`.
        let mut rest = text.as_str();
        while let Some(i) = rest.find("#[repr(C)]") {
            rest = &rest[i..];
            let s = rest.find("pub struct ").expect("pub struct") + "pub struct ".len();
            let open = rest.find('{').expect("{");
            let close = rest.find('}').expect("}");
            let name = rest[s..open].trim().to_string();
            let fields = rest[open + 1..close]
                .split(',')
                .filter(|f| !f.trim().is_empty())
                .map(|f| {
                    let (n, t) = f
                        .trim()
                        .trim_start_matches("pub ")
                        .split_once(':')
                        .expect("field");
                    (n.trim().to_string(), rust_to_c(t))
                })
                .collect();
            side.structs.insert(name, fields);
            rest = &rest[close..];
        }
    }
    side
}

/// The same from `include/distcache.h`.
fn header_side() -> RustSide {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("include/distcache.h")).expect("header");
    let text = strip_comments(&text);
    let mut side = RustSide {
        functions: BTreeMap::new(),
        constants: BTreeMap::new(),
        structs: BTreeMap::new(),
    };
    for line in text.lines() {
        if let Some(def) = line.trim().strip_prefix("#define DISTCACHE_") {
            let Some((name, value)) = def.split_once(' ') else {
                continue; // the include guard
            };
            let value = value.trim().trim_start_matches('(').trim_end_matches(')');
            side.constants.insert(
                format!("DISTCACHE_{name}"),
                value.parse().expect("a number"),
            );
        }
    }
    // Structs: `typedef struct NAME { TYPE field; … } NAME;`, then cut out of the text.
    let mut prototypes = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("typedef struct ") {
        prototypes.push_str(&rest[..i]);
        rest = &rest[i + "typedef struct ".len()..];
        let end = rest.find(';').expect(";");
        match rest[..end].find('{') {
            Some(open) => {
                let close = rest.find('}').expect("}");
                let name = rest[..open].trim().to_string();
                let fields = rest[open + 1..close]
                    .split(';')
                    .filter(|f| !f.trim().is_empty())
                    .map(c_field)
                    .collect();
                side.structs.insert(name, fields);
                rest = &rest[close..];
                rest = &rest[rest.find(';').expect(";") + 1..];
            }
            None => rest = &rest[end + 1..], // an opaque `typedef struct X X;`
        }
    }
    prototypes.push_str(rest);
    for statement in prototypes.split(';') {
        let statement = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ");
        // Prototypes: `RET distcache_NAME(TYPE name, …)`.
        let Some(at) = statement.find("distcache_") else {
            continue;
        };
        let open = statement.find('(').expect("(");
        let ret = statement[..at]
            .trim()
            .rsplit('{')
            .next()
            .unwrap_or_default();
        let name = statement[at..open].trim().to_string();
        let args = statement[open + 1..statement.rfind(')').expect(")")]
            .split(',')
            .map(str::trim)
            .filter(|a| *a != "void" && !a.is_empty())
            .map(|a| c_field(a).1)
            .collect();
        side.functions.insert(name, (squash(ret), args));
    }
    side
}

/// `TYPE name` → (name, squashed type).
fn c_field(decl: &str) -> (String, String) {
    let decl = decl.trim();
    let cut = decl
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    (decl[cut..].to_string(), squash(&decl[..cut]))
}

#[test]
fn header_matches_the_rust_side() {
    let rust = rust_side();
    let header = header_side();
    assert!(
        rust.functions.len() >= 15,
        "parsed {:?}",
        rust.functions.keys()
    );
    assert_eq!(
        header.functions.keys().collect::<Vec<_>>(),
        rust.functions.keys().collect::<Vec<_>>(),
        "functions declared in include/distcache.h vs exported by src/ffi"
    );
    for (name, (ret, args)) in &rust.functions {
        let (h_ret, h_args) = &header.functions[name];
        assert_eq!(h_ret, ret, "{name}: return type (header vs Rust)");
        assert_eq!(h_args, args, "{name}: argument types (header vs Rust)");
    }
    assert_eq!(
        header.constants, rust.constants,
        "constants (header vs Rust)"
    );
    assert_eq!(header.structs, rust.structs, "structs (header vs Rust)");
    // Layout: the struct sizes C computes are these (every field is 8 bytes on 64-bit targets).
    assert_eq!(std::mem::size_of::<DistcacheConfig>(), 11 * 8);
    assert_eq!(
        std::mem::size_of::<DistcacheMetrics>(),
        rust.structs["DistcacheMetrics"].len() * 8
    );
}

// ---- argument checks, in process -----------------------------------------------------------

fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string valid until the next failing call.
    unsafe { CStr::from_ptr(distcache_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

fn code_name(code: i32) -> String {
    // SAFETY: static NUL-terminated strings.
    unsafe { CStr::from_ptr(distcache_code_name(code)) }
        .to_string_lossy()
        .into_owned()
}

fn config(brokers: &CStr, redis: &CStr, ns: &CStr) -> DistcacheConfig {
    DistcacheConfig {
        brokers: brokers.as_ptr(),
        redis_url: redis.as_ptr(),
        namespace_name: ns.as_ptr(),
        key_prefix: ptr::null(),
        local_capacity: 0,
        local_ttl_ms: 0,
        wait_timeout_ms: 0,
        node_id: 0,
        kafka_setting_keys: ptr::null(),
        kafka_setting_values: ptr::null(),
        kafka_settings_len: 0,
    }
}

#[test]
fn bad_arguments_are_error_codes_with_a_message() {
    assert_eq!(code_name(DISTCACHE_ERR_TIMEOUT), "DISTCACHE_ERR_TIMEOUT");
    assert_eq!(code_name(12345), "DISTCACHE_UNKNOWN");
    let mut cache: *mut DistcacheCache = ptr::NonNull::dangling().as_ptr();
    // SAFETY (every call below): the pointers are null, valid, or deliberately wrong only in
    // ways the API documents as checked (null, non-UTF-8, a null array with a non-zero length).
    unsafe {
        assert_eq!(
            distcache_open(ptr::null(), &mut cache),
            DISTCACHE_ERR_INVALID_ARGUMENT
        );
        assert!(cache.is_null(), "a failed open leaves a null handle");
        assert!(last_error().contains("config is null"), "{}", last_error());
        assert_eq!(
            distcache_open(ptr::null(), ptr::null_mut()),
            DISTCACHE_ERR_INVALID_ARGUMENT
        );

        let mut cfg = config(c"127.0.0.1:1", c"redis://127.0.0.1:1/", c"ns");
        cfg.brokers = ptr::null();
        assert_eq!(
            distcache_open(&cfg, &mut cache),
            DISTCACHE_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("config.brokers is null"),
            "{}",
            last_error()
        );

        let bad_utf8 = [b'n', 0xff, 0];
        let mut cfg = config(c"127.0.0.1:1", c"redis://127.0.0.1:1/", c"ns");
        cfg.namespace_name = bad_utf8.as_ptr().cast::<c_char>();
        assert_eq!(
            distcache_open(&cfg, &mut cache),
            DISTCACHE_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("not UTF-8"), "{}", last_error());

        let mut cfg = config(c"127.0.0.1:1", c"redis://127.0.0.1:1/", c"ns");
        cfg.kafka_settings_len = 1;
        assert_eq!(
            distcache_open(&cfg, &mut cache),
            DISTCACHE_ERR_INVALID_ARGUMENT
        );

        let cfg = config(c"127.0.0.1:1", c"not a url", c"ns");
        let code = distcache_open(&cfg, &mut cache);
        assert!(code < 0, "open with a bad Redis URL: {}", code_name(code));
        assert!(!last_error().is_empty());

        let v = b"v";
        assert_eq!(
            distcache_set(ptr::null(), c"k".as_ptr(), v.as_ptr(), 1, 0),
            DISTCACHE_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("cache is null"), "{}", last_error());
        let (mut data, mut len) = (ptr::null_mut(), 0);
        assert_eq!(
            distcache_get(ptr::null(), c"k".as_ptr(), &mut data, &mut len),
            DISTCACHE_ERR_INVALID_ARGUMENT
        );
        let mut metrics = DistcacheMetrics::default();
        assert_eq!(
            distcache_metrics(ptr::null(), &mut metrics),
            DISTCACHE_ERR_INVALID_ARGUMENT
        );
        distcache_close(ptr::null_mut());
        distcache_buffer_free(ptr::null_mut(), 0);
    }
    // The message is per thread.
    let other = std::thread::spawn(last_error).join().expect("thread");
    assert_eq!(other, "");
    assert!(!last_error().is_empty());
}

// ---- C and Python core nodes against a Rust one --------------------------------------------

/// `target/…/libdistcache.so` and `.a`, built with the ffi feature (once per test process).
fn c_libraries() -> (PathBuf, PathBuf) {
    static LIBS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    LIBS.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "rustc",
            "--lib",
            "--features",
            "ffi",
            "--crate-type",
            "cdylib,staticlib",
        ])
        .args([
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(Path::new(ROOT).join("Cargo.toml"));
        let out = run_with_timeout(&mut cmd, Duration::from_secs(900))
            .unwrap_or_else(|e| panic!("cannot build the C libraries: {e}"));
        let files: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "distcache")
            .flat_map(|m| {
                m["filenames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(PathBuf::from))
                    .collect::<Vec<_>>()
            })
            .collect();
        let find = |ext: &str| {
            files
                .iter()
                .find(|f| f.extension().is_some_and(|e| e == ext))
                .cloned()
                .unwrap_or_else(|| panic!("cargo rustc named no .{ext} among {files:?}"))
        };
        (find("so"), find("a"))
    })
    .clone()
}

/// `examples/c/core_node.c` compiled with warnings as errors and linked against the static library.
fn c_core_node() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let (_, staticlib) = c_libraries();
        let bin = staticlib.with_file_name("distcache_c_core_node");
        let mut cc = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
        cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(Path::new(ROOT).join("include"))
            .arg(Path::new(ROOT).join("examples/c/core_node.c"))
            .arg(&staticlib)
            // What librdkafka (zlib) and Rust's std need from the system.
            .args(["-lz", "-lpthread", "-ldl", "-lm", "-lrt", "-o"])
            .arg(&bin);
        run_with_timeout(&mut cc, Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("examples/c/core_node.c did not build: {e}"));
        bin
    })
    .clone()
}

/// The protocol's arguments for core node `node` of `dep`.
fn node_args(dep: &Deployment, node: u64) -> Vec<String> {
    let mut args = dep.core_node_args(&dep.ns);
    args.extend(["--node-id".into(), node.to_string()]);
    args
}

fn wait_value(node: &CoreNodeProcess, cmd: &str, key: &str, want: Option<&str>) {
    let mut last = String::new();
    let seen = wait_until(WAIT, || {
        last = node.request(&format!("{cmd} {key}"));
        match want {
            Some(v) => last == format!("VALUE {v}"),
            None => last == "NIL",
        }
    });
    assert!(
        seen,
        "{}: `{cmd} {key}` answered {last:?}, want {want:?}",
        node.label()
    );
}

/// `foreign` (the C or Python node) and a Rust core node (`--codec raw`) see each other's writes.
fn shares_values_with_a_rust_node(dep: &Deployment, foreign: &CoreNodeProcess) {
    let rust = dep.core_node_process_as(0x2, &["--codec", "raw"]);
    let other = foreign.label();

    // Foreign → Rust, through Redis and through the done topic.
    assert_eq!(foreign.request("set-sync k1 from-foreign"), "OK", "{other}");
    wait_value(&rust, "get-sync", "k1", Some("from-foreign"));
    wait_value(&rust, "get", "k1", Some("from-foreign"));
    // Rust → foreign.
    rust.ok("set-sync k2 from-rust");
    wait_value(foreign, "get", "k2", Some("from-rust"));
    wait_value(foreign, "get-sync", "k2", Some("from-rust"));
    // Local-only writes and deletes replicate too; Redis keeps k2's value.
    assert_eq!(foreign.request("set k2 local-only"), "OK");
    wait_value(&rust, "get", "k2", Some("local-only"));
    assert_eq!(foreign.request("del k1"), "OK");
    wait_value(&rust, "get", "k1", None);
    // The waits report the state node's verdict; a deletion reaches Redis.
    assert_eq!(foreign.request("set-sync-wait k3 v3"), "OK applied");
    wait_value(&rust, "get-sync", "k3", Some("v3"));
    assert_eq!(foreign.request("set-wait k4 v4"), "OK applied");
    assert_eq!(foreign.request("del-sync-wait k3"), "OK applied");
    rust.ok("del k3");
    wait_value(&rust, "get-sync", "k3", None);
    // Errors come back as codes with a message.
    let reply = foreign.request("get-sync");
    assert!(reply.starts_with("ERR"), "{other}: {reply}");
    // Metrics count what happened.
    let metrics = foreign.metrics();
    assert!(metrics["writes"] >= 6, "{other}: {metrics:?}");
    assert!(metrics["events_applied"] >= 1, "{other}: {metrics:?}");
    assert_eq!(foreign.request("quit"), "OK");
}

#[test]
fn c_core_node_shares_values_with_a_rust_core_node() {
    let bin = c_core_node();
    let dep = Deployment::named("ffi-c");
    let _state = dep.state_node_with(|b| b.redis_workers(2));
    let mut cmd = Command::new(bin);
    cmd.args(node_args(&dep, 0x1));
    let c = CoreNodeProcess::start_command("c core node", cmd, WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", dep.logs()));
    shares_values_with_a_rust_node(&dep, &c);
}

#[test]
fn python_core_node_shares_values_with_a_rust_core_node() {
    let (cdylib, _) = c_libraries();
    let dep = Deployment::named("ffi-py");
    let _state = dep.state_node_with(|b| b.redis_workers(2));
    let mut cmd = python3();
    cmd.arg(Path::new(ROOT).join("examples/python/core_node.py"))
        .arg("--lib")
        .arg(cdylib)
        .args(node_args(&dep, 0x1));
    let py = CoreNodeProcess::start_command("python core node", cmd, WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", dep.logs()));
    shares_values_with_a_rust_node(&dep, &py);
}

// ---- the handle in process: threads, buffers, argument checks --------------------------------

/// Opens a handle on `dep` through the C ABI.
fn open(dep: &Deployment) -> *mut DistcacheCache {
    let c = |s: String| std::ffi::CString::new(s).expect("no NUL");
    let (brokers, redis, ns, prefix) = (
        c(dep.broker.bootstrap()),
        c(dep.redis.url()),
        c(dep.ns.clone()),
        c(dep.prefix.clone()),
    );
    let (key, value) = (c"client.id".as_ptr(), c"ffi-test".as_ptr());
    let mut cfg = config(&brokers, &redis, &ns);
    cfg.key_prefix = prefix.as_ptr();
    cfg.wait_timeout_ms = WAIT.as_millis() as u64;
    cfg.kafka_setting_keys = &key;
    cfg.kafka_setting_values = &value;
    cfg.kafka_settings_len = 1;
    let mut cache = ptr::null_mut();
    // SAFETY: every pointer in cfg is valid for the call; cache is writable.
    let code = unsafe { distcache_open(&cfg, &mut cache) };
    assert_eq!(code, DISTCACHE_OK, "open: {}\n{}", last_error(), dep.logs());
    assert!(!cache.is_null());
    cache
}

/// `distcache_get` (or `_get_sync`), the buffer copied and freed.
fn get(cache: *const DistcacheCache, key: &CStr, sync: bool) -> (i32, Option<Vec<u8>>) {
    let (mut data, mut len) = (ptr::null_mut(), usize::MAX);
    // SAFETY: a live handle, a NUL-terminated key, writable outputs; the buffer is read within
    // its length and freed once.
    unsafe {
        let code = if sync {
            distcache_get_sync(cache, key.as_ptr(), 0, &mut data, &mut len)
        } else {
            distcache_get(cache, key.as_ptr(), &mut data, &mut len)
        };
        let value = match code {
            DISTCACHE_OK if len == 0 => {
                assert!(data.is_null(), "an empty value is a null buffer");
                Some(Vec::new())
            }
            DISTCACHE_OK => Some(std::slice::from_raw_parts(data, len).to_vec()),
            _ => {
                assert!(data.is_null() && len == 0, "no value: null and 0");
                None
            }
        };
        distcache_buffer_free(data, len);
        (code, value)
    }
}

#[test]
fn one_handle_serves_many_threads_and_checks_its_arguments() {
    let dep = Deployment::named("ffi-inproc");
    let _state = dep.state_node_with(|b| b.redis_workers(2));
    let cache = open(&dep);
    let shared = cache as usize; // the handle is thread-safe; usize to move it into threads

    std::thread::scope(|s| {
        for t in 0..4u8 {
            s.spawn(move || {
                let cache = shared as *const DistcacheCache;
                for i in 0..25u8 {
                    let key = std::ffi::CString::new(format!("t{t}-{i}")).expect("key");
                    let value = [t, i, 0, 255];
                    // SAFETY: live handle, NUL-terminated key, 4 readable bytes.
                    let code =
                        unsafe { distcache_set_sync(cache, key.as_ptr(), value.as_ptr(), 4, 0, 0) };
                    assert_eq!(code, DISTCACHE_OK, "{}", last_error());
                    assert_eq!(
                        get(cache, &key, false),
                        (DISTCACHE_OK, Some(value.to_vec()))
                    );
                }
            });
        }
    });
    // Every write reaches Redis, stored as the caller's bytes (Codec::Raw).
    let raw_value = |key: &str| {
        dep.with_redis(|c| {
            redis::cmd("HGET")
                .arg(dep.redis_key(key))
                .arg("v")
                .query::<Option<Vec<u8>>>(c)
        })
    };
    for (t, i) in [(0u8, 0u8), (1, 7), (2, 13), (3, 24)] {
        let key = format!("t{t}-{i}");
        let mut last = None;
        let stored = wait_until(WAIT, || {
            last = raw_value(&key);
            last.as_deref() == Some(&[t, i, 0, 255][..])
        });
        assert!(stored, "redis {key}: {last:?}");
    }
    let mut outcome = 0;
    // SAFETY: live handle, NUL-terminated keys, writable outcome; value null with length 0.
    unsafe {
        assert_eq!(
            distcache_set_sync_and_wait(
                cache,
                c"empty".as_ptr(),
                ptr::null(),
                0,
                0,
                0,
                &mut outcome
            ),
            DISTCACHE_OK,
            "{}",
            last_error()
        );
        assert_eq!(outcome, DISTCACHE_OUTCOME_APPLIED);
        assert_eq!(distcache_delete(cache, c"t3-24".as_ptr()), DISTCACHE_OK);
    }
    assert_eq!(
        get(cache, c"empty", false),
        (DISTCACHE_OK, Some(Vec::new()))
    );
    assert_eq!(get(cache, c"t3-24", false), (DISTCACHE_NOT_FOUND, None));
    assert_eq!(
        get(cache, c"never-written", true),
        (DISTCACHE_NOT_FOUND, None)
    );
    let mut metrics = DistcacheMetrics::default();
    // SAFETY: live handle, writable struct.
    assert_eq!(
        unsafe { distcache_metrics(cache, &mut metrics) },
        DISTCACHE_OK
    );
    assert!(metrics.writes >= 102, "{metrics:?}");

    // Arguments the API documents as checked.
    let bad_key = [b'k', 0xfe, 0];
    let (mut data, mut len) = (ptr::null_mut(), 0);
    // SAFETY: the pointers are valid or null; bad_key is NUL-terminated.
    unsafe {
        let code = distcache_set(cache, bad_key.as_ptr().cast(), b"v".as_ptr(), 1, 0);
        assert_eq!(code, DISTCACHE_ERR_INVALID_ARGUMENT);
        assert!(
            last_error().contains("key is not UTF-8"),
            "{}",
            last_error()
        );
        let code = distcache_set(cache, c"k".as_ptr(), ptr::null(), 3, 0);
        assert_eq!(code, DISTCACHE_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("value is null"), "{}", last_error());
        let code = distcache_set(cache, ptr::null(), b"v".as_ptr(), 1, 0);
        assert_eq!(code, DISTCACHE_ERR_INVALID_ARGUMENT);
        let code = distcache_get(cache, c"k".as_ptr(), ptr::null_mut(), &mut len);
        assert_eq!(code, DISTCACHE_ERR_INVALID_ARGUMENT);
        let code = distcache_get_sync(cache, c"k".as_ptr(), 0, &mut data, ptr::null_mut());
        assert_eq!(code, DISTCACHE_ERR_INVALID_ARGUMENT);
        // A remote TTL shorter than the local one is refused, with the library's message.
        let code = distcache_set_sync(cache, c"k".as_ptr(), b"v".as_ptr(), 1, 5_000, 1_000);
        assert_eq!(code, DISTCACHE_ERR_REJECTED);
        assert!(
            last_error().contains("shorter than local TTL"),
            "{}",
            last_error()
        );
        distcache_close(cache);
    }
}
