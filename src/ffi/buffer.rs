//! Values the library hands to C: allocated here, freed here. A buffer returned by a `distcache_*`
//! call is owned by the caller until it passes it, with its length, to [`distcache_buffer_free`].

/// Moves `value` to the caller: its pointer and length. An empty value is a null pointer and 0
/// (nothing to free, though freeing it is harmless).
pub(super) fn into_raw(value: Vec<u8>) -> (*mut u8, usize) {
    if value.is_empty() {
        return (std::ptr::null_mut(), 0);
    }
    let boxed: Box<[u8]> = value.into_boxed_slice();
    let len = boxed.len();
    (Box::into_raw(boxed).cast::<u8>(), len)
}

/// Frees a buffer this library returned (a value from `distcache_get` or `distcache_get_sync`).
/// `len` must be the length returned with it. Null is a no-op.
///
/// # Safety
/// `data` is null or a pointer returned by this library together with `len`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn distcache_buffer_free(data: *mut u8, len: usize) {
    if data.is_null() {
        return;
    }
    // Nothing below panics (dropping a Box<[u8]> only deallocates); the guard is there so that
    // stays true whatever changes.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the caller passes back exactly a (pointer, length) pair `into_raw` made from a
        // Box<[u8]>, once; rebuilding that box and dropping it frees it with the allocator it
        // came from.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, len)) });
    });
}
