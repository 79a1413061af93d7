//! The C ABI (feature `ffi`): a distributed cache of byte values for C and anything that speaks
//! the C ABI. `include/distcache.h` declares exactly what this module exports (a test compares
//! the two); the README's "C API" section has the rules in short.
//!
//! - [`handle`]: open, the reads and writes, metrics, close.
//! - [`config`]: the `DistcacheConfig` struct `distcache_open` reads.
//! - [`status`]: the integer codes, the thread-local last-error message, and the guard every
//!   entry point runs in (no panic crosses the boundary).
//! - [`buffer`]: values handed to the caller, and the one function that frees them.
//! - `args`: checks of the pointers a caller passes (null, UTF-8).
//!
//! Values are stored with [`Codec::Raw`](crate::Codec::Raw): the bytes in Redis are the bytes the
//! caller passed, so a Rust `DistributedCache<String>` or `DistributedCache<Vec<u8>>` with that
//! codec shares them.

mod args;
pub mod buffer;
pub mod config;
pub mod handle;
pub mod status;

pub use buffer::distcache_buffer_free;
pub use config::DistcacheConfig;
pub use handle::*;
pub use status::*;
