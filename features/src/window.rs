//! Event-time windows as rings of time buckets, stored flat for a whole entity table.
//!
//! Every entity of a table has, for every configured span, a ring of `n` buckets of
//! `span / n` each, and the bucket index of its newest event (the head). A window covers
//! the `n` buckets ending at the head. An event in bucket `b`:
//!
//! - moves the head to `b` when `b` is newer, clearing the buckets that fall out (at most
//!   `n`, so an event costs O(n) only when it jumps buckets and O(1) otherwise);
//! - is added to bucket `b` when `b` is still in the ring, else it is too old to count.
//!
//! Buckets are plain `Copy` structs of counters; distinct counts use one packed
//! HyperLogLog per bucket plus a merged sketch for the whole window (see [`crate::hll`]).
//! Storage is two `Vec`s for the whole table (counters, and heads, owner words, sketches and
//! estimates), indexed by slot, so there is no allocation per entity and the memory per
//! entity is a fixed, known number of bytes.

use crate::{hll, mem};

/// Head value of a ring that has never seen an event.
const EMPTY: i64 = i64::MIN;

/// Window geometry shared by every table: bucket width per span and buckets per span.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// Bucket width per span, microseconds.
    pub width_us: Vec<i64>,
    /// Buckets per span.
    pub n: usize,
}

impl Geometry {
    /// Number of spans.
    pub fn spans(&self) -> usize {
        self.width_us.len()
    }

    /// Bucket index of `t_us` in span `s`.
    #[inline]
    pub fn bucket(&self, s: usize, t_us: i64) -> i64 {
        t_us.div_euclid(self.width_us[s])
    }
}

/// Where an event lands in one span of one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// In the ring at this position.
    At(usize),
    /// Older than the ring: not counted in this span.
    TooOld,
}

/// The rings of one entity table: `B` counters and `k` distinct-count sketches per bucket.
///
/// Per slot, the heads, the estimates and the sketches sit together in one block of
/// words, and the counters in one block of `B`s: an entity's state is two runs of
/// adjacent lines, not four scattered ones.
#[derive(Debug, Clone)]
pub struct Rings<B> {
    n: usize,
    spans: usize,
    k: usize,
    /// Words per slot the owner keeps its own per-entity values in (see
    /// [`Rings::with_words`]).
    extra: usize,
    /// Words per slot in `words`.
    stride: usize,
    /// Per slot: the head of every span (an `i64` as its bits), then the owner's `extra`
    /// words, then the estimate of every (span, sketch) window (two `f32`s per word, as
    /// bits), then per (span, sketch) its `n` bucket sketches and the merged window sketch.
    words: Vec<u64>,
    buckets: Vec<B>,
}

impl<B: Copy + Default> Rings<B> {
    /// Empty storage for `geometry` with `k` sketches per bucket.
    pub fn new(geometry: &Geometry, k: usize) -> Self {
        Self::with_words(geometry, k, 0)
    }

    /// [`new`](Self::new), plus `extra` words per slot for the owner's own per-entity
    /// values ([`word_mut`](Self::word_mut)), zeroed by [`reset`](Self::reset). They sit
    /// next to the heads, which every event reads, so they cost no cache line of their own.
    pub fn with_words(geometry: &Geometry, k: usize, extra: usize) -> Self {
        let (n, spans) = (geometry.n, geometry.spans());
        Self {
            n,
            spans,
            k,
            extra,
            stride: spans + extra + (spans * k).div_ceil(2) + spans * k * (n + 1),
            words: Vec::new(),
            buckets: Vec::new(),
        }
    }

    /// Bytes of window state per entity.
    pub fn bytes_per_entity(&self) -> usize {
        self.stride * 8 + self.spans * self.n * std::mem::size_of::<B>()
    }

    /// Makes `slot` exist and empties it (a new entity, or a reused slot).
    pub fn reset(&mut self, slot: usize) {
        let need = slot + 1;
        if self.words.len() < need * self.stride {
            mem::resize(&mut self.words, need * self.stride, 0);
            mem::resize(&mut self.buckets, need * self.spans * self.n, B::default());
        }
        let w0 = slot * self.stride;
        let words = &mut self.words[w0..w0 + self.stride];
        // Zero sketches and estimates (0.0 is all zero bits), no heads.
        words.fill(0);
        words[..self.spans].fill(EMPTY as u64);
        let b0 = slot * self.spans * self.n;
        self.buckets[b0..b0 + self.spans * self.n].fill(B::default());
    }

    /// Word index of the head of span `s`.
    #[inline]
    fn hd(&self, slot: usize, s: usize) -> usize {
        slot * self.stride + s
    }

    /// Word index of the estimate of sketch `f` of span `s`, and its shift in the word.
    #[inline]
    fn est(&self, slot: usize, s: usize, f: usize) -> (usize, u32) {
        let e = s * self.k + f;
        (
            slot * self.stride + self.spans + self.extra + e / 2,
            32 * (e as u32 & 1),
        )
    }

    #[inline]
    fn set_estimate(&mut self, slot: usize, s: usize, f: usize, v: f32) {
        let (w, shift) = self.est(slot, s, f);
        let word = &mut self.words[w];
        *word = (*word & !(0xFFFF_FFFFu64 << shift)) | (u64::from(v.to_bits()) << shift);
    }

    /// Word index of the first bucket sketch of sketch `f` of span `s`.
    #[inline]
    fn sk(&self, slot: usize, s: usize, f: usize) -> usize {
        slot * self.stride
            + self.spans
            + self.extra
            + (self.spans * self.k).div_ceil(2)
            + (s * self.k + f) * (self.n + 1)
    }

    /// The owner's word `j` of `slot` (zero after [`reset`](Self::reset)).
    #[inline]
    pub fn word_mut(&mut self, slot: usize, j: usize) -> &mut u64 {
        debug_assert!(j < self.extra);
        &mut self.words[slot * self.stride + self.spans + j]
    }

    /// The head (newest) bucket of span `s`, if the entity has one.
    #[inline]
    pub fn head(&self, slot: usize, s: usize) -> Option<i64> {
        let h = self.words[self.hd(slot, s)] as i64;
        (h != EMPTY).then_some(h)
    }

    /// True when an event in bucket `b` would close the current head bucket of span `s`
    /// (the entity has a head and `b` is newer).
    #[inline]
    pub fn closes(&self, slot: usize, s: usize, b: i64) -> bool {
        let h = self.words[self.hd(slot, s)] as i64;
        h != EMPTY && b > h
    }

    /// Moves the head of span `s` to `b` when newer and says where `b` lands.
    #[inline]
    pub fn land(&mut self, slot: usize, s: usize, b: i64) -> Landing {
        self.land_at(slot, s, b, b.rem_euclid(self.n as i64) as usize)
    }

    /// [`land`](Self::land) with `pos`, the ring position of `b` (`b` modulo the buckets
    /// per span), already worked out: it is the same for every entity an event touches.
    #[inline]
    pub fn land_at(&mut self, slot: usize, s: usize, b: i64, pos: usize) -> Landing {
        let n = self.n as i64;
        debug_assert_eq!(pos as i64, b.rem_euclid(n));
        let hi = self.hd(slot, s);
        let head = self.words[hi] as i64;
        if head == EMPTY {
            // A ring without a head was emptied by `reset` and has not been written since
            // (nothing lands before a head is set): there is nothing to clear.
            self.words[hi] = b as u64;
            Landing::At(pos)
        } else if b > head {
            let clear = (b - head).min(n) as usize;
            if clear == self.n {
                self.empty_ring(slot, s);
                self.words[hi] = b as u64;
                return Landing::At(pos);
            }
            let base = (slot * self.spans + s) * self.n;
            // Positions `pos`, `pos - 1`, … (modulo n): the buckets that leave the window.
            let mut p = pos;
            for _ in 0..clear {
                self.buckets[base + p] = B::default();
                p = if p == 0 { self.n - 1 } else { p - 1 };
            }
            for f in 0..self.k {
                let k0 = self.sk(slot, s, f);
                // The window's sketch is the merge of its buckets' sketches: it changes
                // only when a bucket that leaves held something (often none did: the
                // entity was quiet).
                let mut gone = 0u64;
                let mut p = pos;
                for _ in 0..clear {
                    gone |= std::mem::take(&mut self.words[k0 + p]);
                    p = if p == 0 { self.n - 1 } else { p - 1 };
                }
                if gone != 0 {
                    self.rebuild(slot, s, f);
                }
            }
            self.words[hi] = b as u64;
            Landing::At(pos)
        } else if b > head - n {
            Landing::At(pos)
        } else {
            Landing::TooOld
        }
    }

    /// Empties every bucket of span `s` (the event is a whole window after the head): the
    /// window's sketches become empty without merging their buckets again. An entity
    /// seen less often than once a window (most of them, for the shortest span) lands here.
    fn empty_ring(&mut self, slot: usize, s: usize) {
        let base = (slot * self.spans + s) * self.n;
        self.buckets[base..base + self.n].fill(B::default());
        for f in 0..self.k {
            let k0 = self.sk(slot, s, f);
            let ring = &mut self.words[k0..=k0 + self.n];
            // The merged sketch (the last word) is empty exactly when every bucket was.
            if ring[self.n] != 0 {
                ring.fill(0);
                self.set_estimate(slot, s, f, hll::estimate(0));
            }
        }
    }

    fn rebuild(&mut self, slot: usize, s: usize, f: usize) {
        let base = self.sk(slot, s, f);
        let merged = hll::merge_all(&self.words[base..base + self.n]);
        if merged != self.words[base + self.n] {
            self.words[base + self.n] = merged;
            self.set_estimate(slot, s, f, hll::estimate(merged));
        }
    }

    /// The counters of bucket `pos` of span `s`, for updating.
    #[inline]
    pub fn bucket_mut(&mut self, slot: usize, s: usize, pos: usize) -> &mut B {
        &mut self.buckets[(slot * self.spans + s) * self.n + pos]
    }

    /// Adds an item hash to sketch `f` of bucket `pos` of span `s`.
    #[inline]
    pub fn insert(&mut self, slot: usize, s: usize, pos: usize, f: usize, hash: u64) {
        let (idx, rank) = hll::index_rank(hash);
        let base = self.sk(slot, s, f);
        let b = &mut self.words[base + pos];
        *b = hll::insert(*b, idx, rank);
        let m = self.words[base + self.n];
        let m2 = hll::insert(m, idx, rank);
        if m2 != m {
            self.words[base + self.n] = m2;
            self.set_estimate(slot, s, f, hll::estimate(m2));
        }
    }

    /// Estimated distinct items of sketch `f` over the window of span `s`.
    #[inline]
    pub fn distinct(&self, slot: usize, s: usize, f: usize) -> f32 {
        let (w, shift) = self.est(slot, s, f);
        f32::from_bits((self.words[w] >> shift) as u32)
    }

    /// Asks the cache for every line of `slot`'s state (see the crate's `mem` module); nothing
    /// changes.
    #[inline]
    pub fn prefetch(&self, slot: usize) {
        mem::prefetch_span(&self.words, slot * self.stride, self.stride);
        mem::prefetch_span(
            &self.buckets,
            slot * self.spans * self.n,
            self.spans * self.n,
        );
    }

    /// The buckets of span `s` (ring order, not time order).
    #[inline]
    pub fn buckets(&self, slot: usize, s: usize) -> &[B] {
        let b = (slot * self.spans + s) * self.n;
        &self.buckets[b..b + self.n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        Geometry {
            width_us: vec![10, 100],
            n: 4,
        }
    }

    fn total(r: &Rings<u32>, slot: usize, s: usize) -> u32 {
        r.buckets(slot, s).iter().sum()
    }

    fn add(r: &mut Rings<u32>, g: &Geometry, slot: usize, t: i64) {
        for s in 0..g.spans() {
            if let Landing::At(p) = r.land(slot, s, g.bucket(s, t)) {
                *r.bucket_mut(slot, s, p) += 1;
            }
        }
    }

    #[test]
    fn windows_slide_and_expire() {
        let g = geo();
        let mut r: Rings<u32> = Rings::new(&g, 0);
        r.reset(0);
        r.reset(1);
        for t in [0, 5, 15, 25, 35] {
            add(&mut r, &g, 0, t);
        }
        // Span 0: buckets 0..=3 → all five events.
        assert_eq!(total(&r, 0, 0), 5);
        add(&mut r, &g, 0, 41); // bucket 4: bucket 0 (two events) leaves
        assert_eq!(total(&r, 0, 0), 4);
        assert_eq!(total(&r, 0, 1), 6);
        // A late event within the ring counts; one older than the ring does not.
        add(&mut r, &g, 0, 12);
        assert_eq!(total(&r, 0, 0), 5);
        assert_eq!(r.land(0, 0, 0), Landing::TooOld);
        // A long gap clears everything.
        add(&mut r, &g, 0, 10_000);
        assert_eq!(total(&r, 0, 0), 1);
        assert_eq!(total(&r, 0, 1), 1);
        // The other slot is untouched.
        assert_eq!(total(&r, 1, 0), 0);
        r.reset(0);
        assert_eq!(total(&r, 0, 1), 0);
        assert!(!r.closes(0, 0, 5));
    }

    #[test]
    fn owner_words_are_zeroed_by_reset_and_apart_from_the_windows() {
        let g = geo();
        let mut plain: Rings<u32> = Rings::new(&g, 2);
        let mut with: Rings<u32> = Rings::with_words(&g, 2, 2);
        for r in [&mut plain, &mut with] {
            r.reset(0);
            r.reset(1);
        }
        for slot in 0..2 {
            *with.word_mut(slot, 0) = u64::MAX;
            *with.word_mut(slot, 1) = u64::MAX;
        }
        // The same events into both: the words change no head, bucket or estimate.
        for (t, item) in [(0i64, 1u64), (15, 2), (27, 3), (150, 4), (160, 5)] {
            for r in [&mut plain, &mut with] {
                for s in 0..g.spans() {
                    if let Landing::At(p) = r.land(1, s, g.bucket(s, t)) {
                        *r.bucket_mut(1, s, p) += 1;
                        r.insert(1, s, p, 0, crate::hash::mix(item));
                        r.insert(1, s, p, 1, crate::hash::mix(item + 100));
                    }
                }
            }
        }
        for s in 0..g.spans() {
            assert_eq!(plain.head(1, s), with.head(1, s));
            assert_eq!(plain.buckets(1, s), with.buckets(1, s));
            for f in 0..2 {
                assert_eq!(plain.distinct(1, s, f), with.distinct(1, s, f));
            }
        }
        assert_eq!(*with.word_mut(1, 1), u64::MAX);
        assert_eq!(with.bytes_per_entity(), plain.bytes_per_entity() + 16);
        with.reset(1);
        assert_eq!((*with.word_mut(1, 0), *with.word_mut(1, 1)), (0, 0));
        // Slot 0's words are untouched by slot 1's events and reset.
        assert_eq!(*with.word_mut(0, 0), u64::MAX);
    }

    #[test]
    fn distinct_counts_expire_with_their_bucket() {
        let g = geo();
        let mut r: Rings<u32> = Rings::new(&g, 1);
        r.reset(0);
        for (t, item) in [(0i64, 1u64), (10, 2), (20, 3), (30, 3)] {
            if let Landing::At(p) = r.land(0, 0, g.bucket(0, t)) {
                *r.bucket_mut(0, 0, p) += 1;
                r.insert(0, 0, p, 0, crate::hash::mix(item));
            }
        }
        let three = r.distinct(0, 0, 0);
        assert!((2.5..3.5).contains(&three), "{three}");
        let _ = r.land(0, 0, g.bucket(0, 45)); // buckets 0 (item 1) leaves
        let two = r.distinct(0, 0, 0);
        assert!((1.5..2.5).contains(&two), "{two}");
        let _ = r.land(0, 0, g.bucket(0, 1000));
        assert_eq!(r.distinct(0, 0, 0), 0.0);
        assert!(r.buckets(0, 0).iter().sum::<u32>() == 0);
        // A ring emptied whole counts afresh, and a later partial clear merges only what
        // is left.
        for (t, item) in [(1000i64, 7u64), (1010, 8)] {
            if let Landing::At(p) = r.land(0, 0, g.bucket(0, t)) {
                r.insert(0, 0, p, 0, crate::hash::mix(item));
            }
        }
        let two = r.distinct(0, 0, 0);
        assert!((1.5..2.5).contains(&two), "{two}");
        let _ = r.land(0, 0, g.bucket(0, 1040)); // bucket of item 7 leaves
        let one = r.distinct(0, 0, 0);
        assert!((0.5..1.5).contains(&one), "{one}");
    }
}
