//! The plane's allocator: mimalloc, returning freed pages to the system at once.
//!
//! The plane allocates and frees many small `serde_json::Value` trees per request and watch
//! event; mimalloc costs a fifth less CPU per VM start there than glibc's malloc
//! (docs/PERFORMANCE.md). With its default purge delay (10 ms) it also keeps far more freed
//! memory resident (+124 MiB with 100 VMs); with the delay at 0 it keeps less than glibc. A
//! binary that runs the plane declares
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: kubevirt_local::allocator::Allocator = kubevirt_local::allocator::Allocator;
//! ```
//!
//! and calls [`configure`] first thing in `main`.

use std::ffi::OsStr;

/// The global allocator of the binaries that run the plane (`kubevirt-local`, the benches).
pub use mimalloc::MiMalloc as Allocator;

/// The environment variables by which a user chooses mimalloc's purge delay (milliseconds)
/// instead: its name and its older one, which mimalloc 2 still reads.
pub const PURGE_DELAY_ENV: [&str; 2] = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"];

/// `mi_option_purge_delay` of mimalloc 2's `mi_option_t` (include/mimalloc.h; libmimalloc-sys
/// names only the stable options). Its default there is 10 ms (the test checks both).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay the plane sets unless the user chose one.
const PURGE_DELAY_MS: std::ffi::c_long = 0;

/// The purge delay to set, given the values of [`PURGE_DELAY_ENV`]: `None` leaves the user's.
fn purge_delay(env: &[Option<&OsStr>]) -> Option<std::ffi::c_long> {
    env.iter().all(Option::is_none).then_some(PURGE_DELAY_MS)
}

/// The user's purge delay settings, as [`purge_delay`] takes them.
fn env() -> [Option<std::ffi::OsString>; 2] {
    PURGE_DELAY_ENV.map(std::env::var_os)
}

/// Makes mimalloc return freed memory to the system at once (purge delay 0), unless
/// `MIMALLOC_PURGE_DELAY` (or its older name `MIMALLOC_RESET_DELAY`) is set in the environment:
/// mimalloc itself reads it then.
pub fn configure() {
    let env = env();
    if let Some(ms) = purge_delay(&env.each_ref().map(Option::as_deref)) {
        // SAFETY: `mi_option_set` stores the value in mimalloc's option table, which any thread
        // may do at any time, and MI_OPTION_PURGE_DELAY is an option of the linked mimalloc 2.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
    }
}

/// mimalloc's current purge delay in milliseconds.
pub fn current_purge_delay() -> std::ffi::c_long {
    // SAFETY: `mi_option_get` reads mimalloc's option table (initialising it from the
    // environment on first use); any thread may call it.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_purge_delay_is_kept_else_zero() {
        assert_eq!(purge_delay(&[None, None]), Some(0));
        assert_eq!(purge_delay(&[Some(OsStr::new("250")), None]), None);
        assert_eq!(purge_delay(&[None, Some(OsStr::new("250"))]), None);
        assert_eq!(purge_delay(&[Some(OsStr::new("")), None]), None);
    }

    #[test]
    fn configure_sets_mimallocs_purge_delay_to_zero() {
        if env().iter().any(Option::is_some) {
            eprintln!("{PURGE_DELAY_ENV:?} set: the user's delay is kept, nothing to check");
            return;
        }
        // mimalloc 2's default: the option index names the purge delay.
        assert_eq!(
            current_purge_delay(),
            10,
            "option {MI_OPTION_PURGE_DELAY} is not mimalloc 2's purge delay (default 10 ms)"
        );
        configure();
        assert_eq!(current_purge_delay(), 0);
    }
}
