//! Memory hints for the entity state: cache prefetches and huge pages.
//!
//! At 100,000 clients the client and pair state is hundreds of MiB and nearly every
//! lookup misses the caches and the TLB. Two hints help, and neither changes anything the
//! program computes:
//!
//! - **prefetch**: the stage asks for the lines an event will need a chunk of events
//!   ahead, so they arrive while the chunk before it is being computed. A wrong guess (a
//!   slot reused in the meantime) costs a wasted line, not a wrong value.
//! - **huge pages**: the large state vectors are grown into fresh allocations that are
//!   marked for transparent huge pages (Linux `madvise(MADV_HUGEPAGE)`) before they are
//!   first written, so one TLB entry covers 2 MiB of state instead of 4 KiB. Where the
//!   kernel does not support it, the call fails and nothing else happens.
//!
//! This module may use `unsafe` for two things: the x86-64 prefetch instruction, which
//! Rust exposes only as an `unsafe` intrinsic, and the `madvise` system call. Elsewhere
//! both hints do nothing. The only other `unsafe` in the crate is the SSE2 sketch merge
//! in [`crate::hll`], which computes on values only.

#![allow(unsafe_code)]

/// Bytes per cache line.
const LINE: usize = 64;

/// Allocations from this size up are marked for huge pages (smaller ones would not fill
/// one).
const HUGE_FROM: usize = 4 << 20;

/// Asks for the cache line holding `p` (any address; nothing is read from it).
#[inline(always)]
fn line(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    // SAFETY: `prefetcht0` is a hint: it does not fault on any address (it is dropped when
    // the address is unmapped), does not write, and makes no value visible to the program.
    // The only requirement of the intrinsic is the `sse` target feature, which the `cfg`
    // above guarantees is enabled for this build.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = p;
}

/// Asks for the line holding `s[i]`, when `i` is in bounds.
#[inline(always)]
pub fn prefetch<T>(s: &[T], i: usize) {
    if let Some(v) = s.get(i) {
        line((v as *const T).cast());
    }
}

/// Asks for every line of `s[start..start + len]`, when the range is in bounds.
#[inline(always)]
pub fn prefetch_span<T>(s: &[T], start: usize, len: usize) {
    let Some(part) = s.get(start..start + len) else {
        return;
    };
    let bytes = std::mem::size_of_val(part);
    if bytes == 0 {
        return;
    }
    let base = part.as_ptr().cast::<u8>();
    // From the start of the line holding the first byte, one address per line.
    let skew = base as usize & (LINE - 1);
    let mut off = 0;
    while off < skew + bytes {
        line(base.wrapping_sub(skew).wrapping_add(off));
        off += LINE;
    }
}

/// `v.resize(len, fill)`, except that when `v` must grow past its capacity into a large
/// allocation, the new allocation (at least twice the old capacity, so growth stays
/// amortised O(1)) is marked for huge pages before anything is written to it, and the old
/// elements are copied over.
pub fn resize<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if len > v.capacity() {
        let cap = len.max(v.capacity() * 2);
        if cap.saturating_mul(std::mem::size_of::<T>()) >= HUGE_FROM {
            let mut fresh: Vec<T> = Vec::with_capacity(cap);
            advise_huge(fresh.as_ptr().cast(), cap * std::mem::size_of::<T>());
            fresh.extend_from_slice(v);
            *v = fresh;
        }
    }
    v.resize(len, fill);
}

/// Marks the whole pages within `bytes` bytes from `p` for transparent huge pages.
fn advise_huge(p: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        const MADV_HUGEPAGE: i32 = 14;
        unsafe extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let start = (p as usize).next_multiple_of(PAGE);
        let end = (p as usize + bytes) & !(PAGE - 1);
        if end > start {
            // SAFETY: the range is the whole pages inside an allocation this process owns
            // (the spare capacity of a `Vec`, nothing written there yet). MADV_HUGEPAGE
            // only sets a flag on the mapping: it neither moves nor changes nor frees
            // memory, so no reference anywhere is affected. Its result is ignored: a
            // kernel without transparent huge pages refuses it and nothing changes.
            unsafe {
                madvise(
                    p.wrapping_add(start - p as usize).cast_mut().cast(),
                    end - start,
                    MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_accept_any_range_and_change_nothing() {
        let v: Vec<u64> = (0..100).collect();
        prefetch(&v, 0);
        prefetch(&v, 99);
        prefetch(&v, 100);
        prefetch_span(&v, 0, 100);
        prefetch_span(&v, 3, 0);
        prefetch_span(&v, 90, 20);
        prefetch_span::<u64>(&[], 0, 0);
        assert_eq!(v, (0..100).collect::<Vec<u64>>());
    }

    #[test]
    fn resize_keeps_the_elements_and_grows_like_vec() {
        let mut v: Vec<u32> = Vec::new();
        for len in [1usize, 10, 1 << 20, (1 << 21) + 3, 5, 3 << 21] {
            let before: Vec<u32> = v.iter().copied().take(len).collect();
            resize(&mut v, len, len as u32);
            assert_eq!(v.len(), len);
            assert_eq!(&v[..before.len()], &before[..]);
            assert!(v[before.len()..].iter().all(|&x| x == len as u32));
        }
    }
}
