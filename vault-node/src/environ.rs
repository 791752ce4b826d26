//! Secrets given to the node in its environment leave it once read.
//!
//! The environment of a running process stays readable (`/proc/<pid>/environ`, to its user and
//! root) and is what a crash reporter or a child would inherit. `unsetenv` alone is not enough:
//! it drops the variable from the process's list, but `/proc/<pid>/environ` shows the block the
//! process was started with, where the value still sits. So the value is overwritten in place
//! first, then the variable is removed.

use std::ffi::CString;

/// Overwrites and removes each of `names` that is set. Call it before any other thread starts:
/// nothing may read the environment meanwhile.
pub fn scrub<'a>(names: impl IntoIterator<Item = &'a str>) {
    for name in names {
        let Ok(c_name) = CString::new(name) else { continue };
        // SAFETY: the process has a single thread here (see above), so no one reads or changes
        // the environment while this runs. `getenv` returns a pointer to the value's
        // NUL-terminated bytes, which stay valid until the variable is changed, and which are
        // writable: either in the block the kernel set up at exec, or in memory `setenv`
        // allocated.
        unsafe {
            let value = libc::getenv(c_name.as_ptr());
            if !value.is_null() {
                let len = libc::strlen(value);
                for i in 0..len {
                    std::ptr::write_volatile(value.add(i), b'*' as libc::c_char);
                }
            }
        }
        std::env::remove_var(name);
    }
}
