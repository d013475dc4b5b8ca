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
//! Storage is one `Vec` per kind for the whole table, indexed by slot, so there is no
//! allocation per entity and the memory per entity is a fixed, known number of bytes.

use crate::hll;

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
#[derive(Debug, Clone)]
pub struct Rings<B> {
    n: usize,
    spans: usize,
    k: usize,
    heads: Vec<i64>,
    buckets: Vec<B>,
    /// Per (slot, span, sketch): `n` bucket sketches then the merged window sketch.
    sketches: Vec<u64>,
    /// Per (slot, span, sketch): the estimate of the merged sketch.
    estimates: Vec<f32>,
}

impl<B: Copy + Default> Rings<B> {
    /// Empty storage for `geometry` with `k` sketches per bucket.
    pub fn new(geometry: &Geometry, k: usize) -> Self {
        Self {
            n: geometry.n,
            spans: geometry.spans(),
            k,
            heads: Vec::new(),
            buckets: Vec::new(),
            sketches: Vec::new(),
            estimates: Vec::new(),
        }
    }

    /// Bytes of window state per entity.
    pub fn bytes_per_entity(&self) -> usize {
        self.spans * (8 + self.n * std::mem::size_of::<B>() + self.k * ((self.n + 1) * 8 + 4))
    }

    /// Makes `slot` exist and empties it (a new entity, or a reused slot).
    pub fn reset(&mut self, slot: usize) {
        let need = slot + 1;
        if self.heads.len() < need * self.spans {
            self.heads.resize(need * self.spans, EMPTY);
            self.buckets
                .resize(need * self.spans * self.n, B::default());
            self.sketches
                .resize(need * self.spans * self.k * (self.n + 1), 0);
            self.estimates.resize(need * self.spans * self.k, 0.0);
        }
        for s in 0..self.spans {
            self.heads[slot * self.spans + s] = EMPTY;
        }
        let b0 = slot * self.spans * self.n;
        self.buckets[b0..b0 + self.spans * self.n].fill(B::default());
        let k0 = slot * self.spans * self.k * (self.n + 1);
        self.sketches[k0..k0 + self.spans * self.k * (self.n + 1)].fill(0);
        let e0 = slot * self.spans * self.k;
        self.estimates[e0..e0 + self.spans * self.k].fill(0.0);
    }

    /// True when an event in bucket `b` would close the current head bucket of span `s`
    /// (the entity has a head and `b` is newer).
    #[inline]
    pub fn closes(&self, slot: usize, s: usize, b: i64) -> bool {
        let h = self.heads[slot * self.spans + s];
        h != EMPTY && b > h
    }

    /// Moves the head of span `s` to `b` when newer and says where `b` lands.
    #[inline]
    pub fn land(&mut self, slot: usize, s: usize, b: i64) -> Landing {
        let n = self.n as i64;
        let hi = slot * self.spans + s;
        let head = self.heads[hi];
        if head == EMPTY || b > head {
            let clear = if head == EMPTY { n } else { (b - head).min(n) };
            let base = hi * self.n;
            for j in 0..clear {
                let pos = (b - j).rem_euclid(n) as usize;
                self.buckets[base + pos] = B::default();
                for f in 0..self.k {
                    let at = self.sk(slot, s, f) + pos;
                    self.sketches[at] = 0;
                }
            }
            for f in 0..self.k {
                self.rebuild(slot, s, f);
            }
            self.heads[hi] = b;
            Landing::At(b.rem_euclid(n) as usize)
        } else if b > head - n {
            Landing::At(b.rem_euclid(n) as usize)
        } else {
            Landing::TooOld
        }
    }

    #[inline]
    fn sk(&self, slot: usize, s: usize, f: usize) -> usize {
        ((slot * self.spans + s) * self.k + f) * (self.n + 1)
    }

    fn rebuild(&mut self, slot: usize, s: usize, f: usize) {
        let base = self.sk(slot, s, f);
        let merged = self.sketches[base..base + self.n]
            .iter()
            .fold(0, |a, &b| hll::merge(a, b));
        if merged != self.sketches[base + self.n] {
            self.sketches[base + self.n] = merged;
            self.estimates[(slot * self.spans + s) * self.k + f] = hll::estimate(merged);
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
        let b = &mut self.sketches[base + pos];
        *b = hll::insert(*b, idx, rank);
        let m = self.sketches[base + self.n];
        let m2 = hll::insert(m, idx, rank);
        if m2 != m {
            self.sketches[base + self.n] = m2;
            self.estimates[(slot * self.spans + s) * self.k + f] = hll::estimate(m2);
        }
    }

    /// Estimated distinct items of sketch `f` over the window of span `s`.
    #[inline]
    pub fn distinct(&self, slot: usize, s: usize, f: usize) -> f32 {
        self.estimates[(slot * self.spans + s) * self.k + f]
    }

    /// Reads every cache line of `slot`'s state and returns a value made from it (see
    /// [`Table::warm`](crate::table::Table::warm)); nothing changes.
    pub fn warm(&self, slot: usize) -> u64 {
        let mut acc = 0u64;
        let h = slot * self.spans;
        if let Some(v) = self.heads.get(h) {
            acc = acc.wrapping_add(*v as u64);
        }
        let per_line = (64 / std::mem::size_of::<B>().max(1)).max(1);
        let b0 = h * self.n;
        if let Some(bs) = self.buckets.get(b0..b0 + self.spans * self.n) {
            for b in bs.iter().step_by(per_line) {
                std::hint::black_box(*b);
            }
        }
        let k0 = h * self.k * (self.n + 1);
        if let Some(ks) = self
            .sketches
            .get(k0..k0 + self.spans * self.k * (self.n + 1))
        {
            for w in ks.iter().step_by(8) {
                acc = acc.wrapping_add(*w);
            }
        }
        if let Some(e) = self.estimates.get(h * self.k) {
            acc = acc.wrapping_add(u64::from(e.to_bits()));
        }
        acc
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
    fn distinct_counts_expire_with_their_bucket() {
        let g = geo();
        let mut r: Rings<u32> = Rings::new(&g, 1);
        r.reset(0);
        for (t, item) in [(0i64, 1u64), (10, 2), (20, 3), (30, 3)] {
            if let Landing::At(p) = r.land(0, 0, g.bucket(0, t)) {
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
    }
}
