//! Integer result codes, the thread-local last-error message, and `guard`: the wrapper every
//! entry point runs its body in, so that a panic becomes `DISTCACHE_ERR_PANIC` instead of
//! unwinding into C (undefined behaviour).
//!
//! Codes: `0` success, `1` "not found" (reads only; not an error), negative values errors, one
//! per [`Error`] variant plus invalid arguments and panics.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::Error;

/// Success.
pub const DISTCACHE_OK: i32 = 0;
/// A read found no value for the key (not an error).
pub const DISTCACHE_NOT_FOUND: i32 = 1;
/// A pointer argument was null where a value is required, a string was not UTF-8, or a length
/// was impossible.
pub const DISTCACHE_ERR_INVALID_ARGUMENT: i32 = -1;
/// Redis or the broker could not be reached ([`Error::Unavailable`]); retrying later may succeed.
pub const DISTCACHE_ERR_UNAVAILABLE: i32 = -2;
/// An operation did not complete within its deadline ([`Error::Timeout`]); it may still complete.
pub const DISTCACHE_ERR_TIMEOUT: i32 = -3;
/// A value or event could not be encoded or decoded ([`Error::Codec`]).
pub const DISTCACHE_ERR_CODEC: i32 = -4;
/// The configuration is invalid ([`Error::Config`]).
pub const DISTCACHE_ERR_CONFIG: i32 = -5;
/// The operation was refused ([`Error::Rejected`]), for example a remote TTL shorter than the
/// local TTL.
pub const DISTCACHE_ERR_REJECTED: i32 = -6;
/// The cache has been shut down ([`Error::Shutdown`]).
pub const DISTCACHE_ERR_SHUTDOWN: i32 = -7;
/// The library panicked (a bug); the call had no effect the caller can rely on.
pub const DISTCACHE_ERR_PANIC: i32 = -8;

/// Why an entry point failed: a bad argument, or the cache's own error.
pub(super) enum Failure {
    InvalidArgument(String),
    Cache(Error),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::Cache(err)
    }
}

impl Failure {
    fn code(&self) -> i32 {
        match self {
            Failure::InvalidArgument(_) => DISTCACHE_ERR_INVALID_ARGUMENT,
            Failure::Cache(err) => match err {
                Error::Unavailable { .. } => DISTCACHE_ERR_UNAVAILABLE,
                Error::Timeout { .. } => DISTCACHE_ERR_TIMEOUT,
                Error::Codec(_) => DISTCACHE_ERR_CODEC,
                Error::Config(_) => DISTCACHE_ERR_CONFIG,
                Error::Rejected(_) => DISTCACHE_ERR_REJECTED,
                Error::Shutdown => DISTCACHE_ERR_SHUTDOWN,
            },
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::InvalidArgument(msg) => format!("invalid argument: {msg}"),
            Failure::Cache(err) => err.to_string(),
        }
    }
}

thread_local! {
    /// The message of the last failed call on this thread. Replaced, never freed by the caller.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    // Interior NULs would cut the C string short; make them visible instead.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

/// Runs an entry point's body: `Ok(code)` is returned as is, a failure or a panic sets the
/// thread's last error and returns its negative code.
pub(super) fn guard(body: impl FnOnce() -> Result<i32, Failure>) -> i32 {
    // AssertUnwindSafe: after a panic the caller only sees an error code; the cache's own state
    // is kept consistent by its locks (parking_lot does not poison, a half-done call is one the
    // cache already tolerates from a thread dying mid-call).
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(code)) => code,
        Ok(Err(failure)) => {
            set_last_error(failure.message());
            failure.code()
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("internal error (panic): {what}"));
            DISTCACHE_ERR_PANIC
        }
    }
}

/// The message of the last call on this thread that returned a negative code, as a
/// NUL-terminated UTF-8 string; `""` when there was none. The library owns the string: it stays
/// valid until the next failing call on the same thread. Never null.
#[no_mangle]
pub extern "C" fn distcache_last_error_message() -> *const c_char {
    // `try_with`: during thread teardown the thread-local may be gone; that reads as "none".
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|last| last.borrow().as_ptr())
            .unwrap_or(c"".as_ptr())
    })
    .unwrap_or(c"".as_ptr())
}

/// A static, NUL-terminated name for a result code (`"DISTCACHE_ERR_TIMEOUT"`, ...);
/// `"DISTCACHE_UNKNOWN"` for a code this library does not return. Never null, never freed.
#[no_mangle]
pub extern "C" fn distcache_code_name(code: i32) -> *const c_char {
    catch_unwind(|| code_name(code).as_ptr()).unwrap_or(c"DISTCACHE_UNKNOWN".as_ptr())
}

fn code_name(code: i32) -> &'static CStr {
    match code {
        DISTCACHE_OK => c"DISTCACHE_OK",
        DISTCACHE_NOT_FOUND => c"DISTCACHE_NOT_FOUND",
        DISTCACHE_ERR_INVALID_ARGUMENT => c"DISTCACHE_ERR_INVALID_ARGUMENT",
        DISTCACHE_ERR_UNAVAILABLE => c"DISTCACHE_ERR_UNAVAILABLE",
        DISTCACHE_ERR_TIMEOUT => c"DISTCACHE_ERR_TIMEOUT",
        DISTCACHE_ERR_CODEC => c"DISTCACHE_ERR_CODEC",
        DISTCACHE_ERR_CONFIG => c"DISTCACHE_ERR_CONFIG",
        DISTCACHE_ERR_REJECTED => c"DISTCACHE_ERR_REJECTED",
        DISTCACHE_ERR_SHUTDOWN => c"DISTCACHE_ERR_SHUTDOWN",
        DISTCACHE_ERR_PANIC => c"DISTCACHE_ERR_PANIC",
        _ => c"DISTCACHE_UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn last_error() -> String {
        // SAFETY: distcache_last_error_message returns a NUL-terminated string that stays valid
        // until the next failing call on this thread.
        unsafe { CStr::from_ptr(distcache_last_error_message()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_an_error_code() {
        assert_eq!(guard(|| panic!("boom in the body")), DISTCACHE_ERR_PANIC);
        assert!(
            last_error().contains("boom in the body"),
            "{}",
            last_error()
        );
        let formatted = 7;
        assert_eq!(
            guard(|| panic!("formatted {formatted}")),
            DISTCACHE_ERR_PANIC
        );
        assert!(last_error().contains("formatted 7"), "{}", last_error());
    }

    #[test]
    fn each_error_variant_has_its_code() {
        let cases = [
            (Error::kafka("down"), DISTCACHE_ERR_UNAVAILABLE),
            (
                Error::Timeout {
                    what: "x".into(),
                    after: std::time::Duration::ZERO,
                },
                DISTCACHE_ERR_TIMEOUT,
            ),
            (Error::codec("bad"), DISTCACHE_ERR_CODEC),
            (Error::Config("c".into()), DISTCACHE_ERR_CONFIG),
            (Error::Rejected("r".into()), DISTCACHE_ERR_REJECTED),
            (Error::Shutdown, DISTCACHE_ERR_SHUTDOWN),
        ];
        for (err, code) in cases {
            let message = err.to_string();
            assert_eq!(guard(|| Err(err.into())), code, "{message}");
            assert_eq!(last_error(), message);
        }
        assert_eq!(guard(|| Ok(DISTCACHE_NOT_FOUND)), DISTCACHE_NOT_FOUND);
        // A message with an interior NUL is kept, visibly.
        let code = guard(|| Err(Failure::InvalidArgument("a\0b".into())));
        assert_eq!(code, DISTCACHE_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error(), "invalid argument: a\\0b");
    }
}
