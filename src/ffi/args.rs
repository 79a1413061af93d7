//! Checks of what a C caller passes: null pointers, UTF-8, lengths. Every pointer an entry point
//! reads goes through one of these first.

use std::ffi::{c_char, CStr};
use std::time::Duration;

use super::status::Failure;

/// `ptr` as a `&str`; `what` names the argument in the error.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string that stays valid and unchanged for `'a`.
pub(super) unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::InvalidArgument(format!("{what} is null")));
    }
    // SAFETY: non-null, and the caller guarantees a NUL-terminated string valid for 'a.
    let cstr = unsafe { CStr::from_ptr(ptr) };
    cstr.to_str()
        .map_err(|e| Failure::InvalidArgument(format!("{what} is not UTF-8: {e}")))
}

/// Like [`text`], but null means "not set".
///
/// # Safety
/// As for [`text`].
pub(super) unsafe fn optional_text<'a>(
    ptr: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: the caller's guarantee is passed on.
        unsafe { text(ptr, what) }.map(Some)
    }
}

/// `len` bytes at `ptr` as a slice; `ptr` may be null only when `len` is 0.
///
/// # Safety
/// When `len > 0`, `ptr` points to `len` readable bytes that stay unchanged for `'a`.
pub(super) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::InvalidArgument(format!(
            "{what} is null but its length is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Failure::InvalidArgument(format!(
            "{what} length {len} is impossible"
        )));
    }
    // SAFETY: non-null, len fits a slice, and the caller guarantees len readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A pointer the call writes its result through; null is an invalid argument.
pub(super) fn out<T>(ptr: *mut T, what: &str) -> Result<*mut T, Failure> {
    if ptr.is_null() {
        Err(Failure::InvalidArgument(format!("{what} is null")))
    } else {
        Ok(ptr)
    }
}

/// Milliseconds from C, 0 meaning "none" (the default).
pub(super) fn ttl(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}
