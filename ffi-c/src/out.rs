//! Out-parameters of the C ABI: one value computed from an allocator and written to `*out`, and
//! arrays and boxes handed to C and taken back by the matching free function.

use crate::api::{gmlake_allocator, with};
use crate::device::AnyDevice;
use crate::error::{guard, invalid, Failure};
use crate::gmlake_status;
use gmlake_core::Allocator;

/// The body of an entry point `name` that computes one value with `f` under the allocator's lock
/// and writes it to `*out`: a NULL `out` is refused before anything is done.
pub(crate) fn get_into<T>(
    name: &str,
    a: *const gmlake_allocator,
    out: *mut T,
    f: impl FnOnce(&mut Allocator<AnyDevice>) -> Result<T, Failure>,
) -> gmlake_status {
    get_into_or(name, a, out, None, f)
}

/// As [`get_into`], and `*out` holds `cleared` (when given) if `f` fails.
pub(crate) fn get_into_or<T>(
    name: &str,
    a: *const gmlake_allocator,
    out: *mut T,
    cleared: Option<T>,
    f: impl FnOnce(&mut Allocator<AnyDevice>) -> Result<T, Failure>,
) -> gmlake_status {
    guard(name, || {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        if let Some(c) = cleared {
            // SAFETY: checked non-null; the caller's `out` is valid (the header's conventions).
            unsafe { out.write(c) };
        }
        let v = with(a, f)?;
        // SAFETY: checked non-null; the caller's `out` is valid (the header's conventions).
        unsafe { out.write(v) };
        Ok(())
    })
}

/// Gives `v` to C as a pointer and a length; [`free_slice`] takes it back.
pub(crate) fn into_raw_slice<T>(v: Vec<T>) -> (*mut T, usize) {
    let b = v.into_boxed_slice();
    let n = b.len();
    (Box::into_raw(b) as *mut T, n)
}

/// Gives `v` to C through the out-parameters `out` and `count`.
///
/// # Safety
/// `out` and `count` are valid for writes.
pub(crate) unsafe fn write_slice<T>(out: *mut *mut T, count: *mut usize, v: Vec<T>) {
    let (p, n) = into_raw_slice(v);
    // SAFETY: the contract above.
    unsafe { (out.write(p), count.write(n)) };
}

/// Takes back and drops what [`into_raw_slice`] gave. NULL is ignored.
///
/// # Safety
/// `p` is NULL or came from [`into_raw_slice`] with length `n`, and is freed once.
pub(crate) unsafe fn free_slice<T>(p: *mut T, n: usize) {
    if !p.is_null() {
        // SAFETY: the contract above.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) });
    }
}

/// Takes back and drops a value given to C with `Box::into_raw`. NULL is ignored.
///
/// # Safety
/// `p` is NULL or came from `Box::into_raw` of a `Box<T>`, and is freed once.
pub(crate) unsafe fn free_box<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: the contract above.
        drop(unsafe { Box::from_raw(p) });
    }
}
