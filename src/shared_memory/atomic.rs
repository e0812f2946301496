//! Copies in and out of shared memory that other threads and processes may be writing at the
//! same time: every access is a relaxed 8-byte atomic on an aligned word, never a `memcpy`, so
//! a racing writer gives torn data at worst, never undefined behaviour. All accesses are the
//! same size and alignment, so no mixed-size atomics meet: a partial word (the ends of an
//! unaligned range) is written with a compare-exchange on the whole word.

use std::sync::atomic::{AtomicU64, Ordering};

const WORD: usize = 8;

/// The word at `at` (a multiple of 8) of the mapping at `base`.
///
/// # Safety
/// `base` is 8-aligned and the 8 bytes at `at` lie in a mapping that outlives `'a`.
#[inline]
pub(super) unsafe fn word<'a>(base: *mut u8, at: usize) -> &'a AtomicU64 {
    debug_assert!(at.is_multiple_of(WORD));
    // SAFETY: by the contract, the word is mapped, aligned and lives long enough; an atomic
    // may alias memory that other processes write.
    unsafe { AtomicU64::from_ptr(base.add(at).cast()) }
}

/// Copies the bytes at `offset..offset + dst.len()` of the mapping at `base` into `dst`.
///
/// # Safety
/// `base` is page-aligned and the mapping covers the range, so the words that overlap it are
/// mapped too (a mapping is whole pages); it outlives the call.
pub(super) unsafe fn load(base: *mut u8, offset: usize, dst: &mut [u8]) {
    let mut pos = offset;
    let mut done = 0;
    while done < dst.len() {
        let start = pos - pos % WORD;
        let skip = pos - start;
        let n = (WORD - skip).min(dst.len() - done);
        // SAFETY: the word overlaps the range (contract).
        let bytes = unsafe { word(base, start) }.load(Ordering::Relaxed).to_ne_bytes();
        dst[done..done + n].copy_from_slice(&bytes[skip..skip + n]);
        pos += n;
        done += n;
    }
}

/// Copies `src` to `offset..offset + src.len()` of the mapping at `base`.
///
/// # Safety
/// As [`load`].
pub(super) unsafe fn store(base: *mut u8, offset: usize, src: &[u8]) {
    let mut pos = offset;
    let mut done = 0;
    while done < src.len() {
        let start = pos - pos % WORD;
        let skip = pos - start;
        let n = (WORD - skip).min(src.len() - done);
        // SAFETY: the word overlaps the range (contract).
        let w = unsafe { word(base, start) };
        if n == WORD {
            let mut bytes = [0u8; WORD];
            bytes.copy_from_slice(&src[done..done + WORD]);
            w.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        } else {
            // Only our bytes of the word change: its others may be someone else's.
            let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let mut bytes = old.to_ne_bytes();
                bytes[skip..skip + n].copy_from_slice(&src[done..done + n]);
                Some(u64::from_ne_bytes(bytes))
            });
        }
        pos += n;
        done += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Page([u8; 64]);

    #[test]
    fn unaligned_ranges_round_trip_and_leave_neighbours_alone() {
        let mut page = Page([0xAA; 64]);
        let base = page.0.as_mut_ptr();
        for offset in 0..20 {
            for len in 0..30 {
                let src: Vec<u8> = (0..len as u8).map(|b| b.wrapping_add(1)).collect();
                // SAFETY: the range and the words around it lie in `page`, 64-aligned.
                unsafe { store(base, offset, &src) };
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { load(base, offset, &mut back) };
                assert_eq!(back, src);
                let mut all = [0u8; 64];
                // SAFETY: as above.
                unsafe { load(base, 0, &mut all) };
                assert!(all[..offset].iter().all(|&b| b == 0xAA), "{offset} {len}");
                assert!(all[offset + len..].iter().all(|&b| b == 0xAA), "{offset} {len}");
                // SAFETY: as above.
                unsafe { store(base, 0, &[0xAA; 64]) };
            }
        }
    }
}
