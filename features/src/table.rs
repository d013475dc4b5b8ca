//! Bounded entity index: maps a 64-bit key hash to a dense slot, with eviction of idle
//! entities (TTL first, then least recently seen) so that a flood of new keys cannot grow
//! memory past the cap.
//!
//! Eviction is O(1) per event: a sweep cursor visits a couple of slots per call and drops
//! those idle for longer than the TTL; when the table is full, a handful of slots picked by
//! a deterministic generator are sampled and the least recently seen goes. Everything is a
//! function of the event sequence, so features do not depend on batch boundaries.
//!
//! Layout, for speed at hundreds of thousands of entities, where every lookup misses the
//! cache: the index is an open-addressing array of `(key, slot)` pairs probed linearly, so a
//! lookup usually costs one cache line rather than a control-byte group and then a bucket;
//! and a slot's bookkeeping (key, first and last seen, liveness) sits together in one
//! 32-byte record, so a touch or an eviction sample reads one line.

use std::collections::VecDeque;

use crate::mem;

/// Slots sampled when the table is full.
const SAMPLE: usize = 8;
/// Slots the TTL sweep visits per event.
const SWEEP: usize = 2;
/// Marks an empty index position.
const VACANT: u32 = u32::MAX;

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Dense slot of the entity.
    pub slot: usize,
    /// True when the entity was just created (its state must be reset).
    pub fresh: bool,
}

/// Bookkeeping of one slot.
#[derive(Debug, Clone, Copy)]
struct Meta {
    key: u64,
    last_seen: i64,
    first_seen: i64,
    live: bool,
}

/// Open-addressing map from key hash to slot: linear probing, deletion by backward shift
/// (no tombstones, so probe lengths do not degrade under churn), at most 3/4 full.
#[derive(Debug)]
struct Index {
    /// `(key, slot)`; `slot == VACANT` marks an empty position.
    cells: Vec<(u64, u32)>,
    len: usize,
}

impl Index {
    fn new() -> Self {
        Self {
            cells: Vec::new(),
            len: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.cells.len() - 1
    }

    /// Position of `key` in the index, if present.
    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        if self.cells.is_empty() {
            return None;
        }
        let mask = self.mask();
        // Keys are already well-mixed 64-bit hashes; the high bits pick the home position
        // (the low bits also pick sketch registers, so they are kept apart).
        let mut i = (key >> 32) as usize & mask;
        loop {
            let (k, s) = self.cells[i];
            if s == VACANT {
                return None;
            }
            if k == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn get(&self, key: u64) -> Option<u32> {
        self.find(key).map(|i| self.cells[i].1)
    }

    /// Inserts `key` (not present) → `slot`.
    fn insert(&mut self, key: u64, slot: u32) {
        if (self.len + 1) * 4 > self.cells.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = (key >> 32) as usize & mask;
        while self.cells[i].1 != VACANT {
            i = (i + 1) & mask;
        }
        self.cells[i] = (key, slot);
        self.len += 1;
    }

    fn grow(&mut self) {
        let cap = (self.cells.len() * 2).max(16);
        let mut cells = Vec::new();
        mem::resize(&mut cells, cap, (0, VACANT));
        let old = std::mem::replace(&mut self.cells, cells);
        self.len = 0;
        for (k, s) in old {
            if s != VACANT {
                self.insert(k, s);
            }
        }
    }

    /// Removes `key` if present.
    fn remove(&mut self, key: u64) {
        let Some(mut hole) = self.find(key) else {
            return;
        };
        let mask = self.mask();
        self.len -= 1;
        // Backward shift: pull later members of the probe run into the hole when the hole
        // lies on their way from their home position.
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let (k, s) = self.cells[i];
            if s == VACANT {
                break;
            }
            let home = (k >> 32) as usize & mask;
            // Distance from home to i, and from home to the hole, along the probe order.
            if (i.wrapping_sub(home) & mask) >= (i.wrapping_sub(hole) & mask) {
                self.cells[hole] = (k, s);
                hole = i;
            }
        }
        self.cells[hole] = (0, VACANT);
    }

    /// Bytes of index per entry at the mean load (between 3/8 and 3/4 full).
    const fn bytes_per_entry() -> usize {
        std::mem::size_of::<(u64, u32)>() * 2
    }
}

/// A bounded map from key hash to slot.
#[derive(Debug)]
pub struct Table {
    index: Index,
    meta: Vec<Meta>,
    free: Vec<u32>,
    cap: usize,
    sweep: usize,
    rng: u64,
    /// Slots of the next eviction samples, drawn ahead of the generator (see
    /// [`Table::prefetch_evictions`]): `queue[i]` is draw `i + 1` after `rng`, modulo
    /// `queue_n`; `queue_rng` is the generator after the last of them.
    queue: VecDeque<u32>,
    queue_rng: u64,
    queue_n: usize,
    /// Evictions at the front of `queue` whose victims are already predicted.
    victims_ahead: usize,
    evictions: u64,
}

impl Table {
    /// An empty table holding at most `cap` entities (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            index: Index::new(),
            meta: Vec::new(),
            free: Vec::new(),
            cap: cap.max(1),
            sweep: 0,
            rng: 0x2545_F491_4F6C_DD1D,
            queue: VecDeque::new(),
            queue_rng: 0,
            queue_n: 0,
            victims_ahead: 0,
            evictions: 0,
        }
    }

    /// Live entities.
    pub fn len(&self) -> usize {
        self.index.len
    }

    /// True when no entity is tracked.
    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    /// Entities evicted so far (TTL or capacity).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes of index and bookkeeping per slot (approximate: the index at its mean load).
    pub fn bytes_per_entity() -> usize {
        Index::bytes_per_entry() + std::mem::size_of::<Meta>()
    }

    /// The slot of `key`, if tracked.
    #[inline]
    pub fn get(&self, key: u64) -> Option<usize> {
        self.index.get(key).map(|s| s as usize)
    }

    /// Time the entity in `slot` was created.
    #[inline]
    pub fn first_seen(&self, slot: usize) -> i64 {
        self.meta[slot].first_seen
    }

    /// Latest event time of the entity in `slot`.
    #[inline]
    pub fn last_seen(&self, slot: usize) -> i64 {
        self.meta[slot].last_seen
    }

    /// True when `slot` holds a live entity.
    #[inline]
    pub fn is_live(&self, slot: usize) -> bool {
        self.meta.get(slot).is_some_and(|m| m.live)
    }

    /// Slots in use or free (the length of per-slot state vectors).
    pub fn slots(&self) -> usize {
        self.meta.len()
    }

    /// Finds or creates the entity `key` seen at `t_us`, evicting if the table is full.
    #[inline]
    pub fn touch(&mut self, key: u64, t_us: i64) -> Found {
        if let Some(s) = self.index.get(key) {
            let m = &mut self.meta[s as usize];
            if t_us > m.last_seen {
                m.last_seen = t_us;
            }
            return Found {
                slot: s as usize,
                fresh: false,
            };
        }
        if self.index.len >= self.cap {
            self.evict_one();
        }
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None => {
                let n = self.meta.len();
                mem::resize(
                    &mut self.meta,
                    n + 1,
                    Meta {
                        key: 0,
                        last_seen: 0,
                        first_seen: 0,
                        live: false,
                    },
                );
                self.meta.len() - 1
            }
        };
        self.meta[slot] = Meta {
            key,
            last_seen: t_us,
            first_seen: t_us,
            live: true,
        };
        self.index.insert(key, slot as u32);
        Found { slot, fresh: true }
    }

    fn remove(&mut self, slot: usize) {
        self.index.remove(self.meta[slot].key);
        self.meta[slot].live = false;
        self.free.push(slot as u32);
        self.evictions += 1;
    }

    fn evict_one(&mut self) {
        let n = self.meta.len();
        let mut best: Option<(usize, i64)> = None;
        let mut consider = |meta: &[Meta], s: usize| {
            let m = &meta[s];
            if m.live && best.is_none_or(|(_, t)| m.last_seen < t) {
                best = Some((s, m.last_seen));
            }
        };
        if self.queue_n == n && self.queue.len() >= SAMPLE {
            // The draws are already made (and their slots in the cache): take them, and
            // move the generator past them.
            for s in self.queue.drain(..SAMPLE) {
                xorshift(&mut self.rng);
                consider(&self.meta, s as usize);
            }
            self.victims_ahead = self.victims_ahead.saturating_sub(1);
        } else {
            for _ in 0..SAMPLE {
                let s = (xorshift(&mut self.rng) % n as u64) as usize;
                consider(&self.meta, s);
            }
            self.queue.clear();
            self.victims_ahead = 0;
        }
        let victim = match best {
            Some((b, _)) => b,
            // Unlucky sample of free slots only: take the first live slot.
            None => match self.meta.iter().position(|m| m.live) {
                Some(s) => s,
                None => return,
            },
        };
        self.remove(victim);
    }

    /// Drops entities idle since before `cutoff_us`, visiting a few slots per call.
    #[inline]
    pub fn sweep(&mut self, cutoff_us: i64) {
        let n = self.meta.len();
        if n == 0 {
            return;
        }
        for _ in 0..SWEEP.min(n) {
            self.sweep += 1;
            if self.sweep >= n {
                self.sweep = 0;
            }
            let s = self.sweep;
            let m = &self.meta[s];
            if m.live && m.last_seen < cutoff_us {
                self.remove(s);
            }
        }
    }

    /// Asks the cache for the index position where a lookup of `key` starts, so that a
    /// lookup a little later finds it there (see the crate's `mem` module).
    #[inline]
    pub fn prefetch_key(&self, key: u64) {
        if !self.index.cells.is_empty() {
            mem::prefetch(&self.index.cells, (key >> 32) as usize & self.index.mask());
        }
    }

    /// The slot of `key`, if tracked, with its bookkeeping asked for from the cache.
    #[inline]
    pub fn prefetch_slot(&self, key: u64) -> Option<usize> {
        let slot = self.get(key)?;
        mem::prefetch(&self.meta, slot);
        Some(slot)
    }

    /// Asks the cache for the slots that the next `evictions` evictions will sample if the
    /// table is full, beyond those already asked for. Nothing observable changes: the
    /// generator itself does not move, only a copy that runs ahead of it.
    pub fn prefetch_evictions(&mut self, evictions: usize) {
        let n = self.meta.len();
        if self.index.len < self.cap || n == 0 {
            return;
        }
        if self.queue_n != n || self.queue.is_empty() {
            self.queue.clear();
            self.queue_rng = self.rng;
            self.queue_n = n;
            self.victims_ahead = 0;
        }
        while self.queue.len() < evictions * SAMPLE {
            let s = (xorshift(&mut self.queue_rng) % n as u64) as usize;
            mem::prefetch(&self.meta, s);
            self.queue.push_back(s as u32);
        }
    }

    /// Predicts the victims of the next `evictions` evictions if the table is full (beyond
    /// those already predicted), from their samples' bookkeeping as it stands now, asks
    /// the cache for the index position each victim's removal will start at, and hands
    /// each victim's slot to `f`, for the caller's state of that slot (which the new
    /// entity will reset). A prediction can be wrong (a sampled entity seen again in the
    /// meantime); that only wastes lines. Only samples already drawn by
    /// [`prefetch_evictions`](Self::prefetch_evictions) are used: called a while after it,
    /// their slots are in the cache by then.
    pub fn prefetch_victims(&mut self, evictions: usize, mut f: impl FnMut(usize)) {
        if self.queue_n != self.meta.len() {
            return;
        }
        let drawn = (self.queue.len() / SAMPLE).min(evictions);
        while self.victims_ahead < drawn {
            let e = self.victims_ahead * SAMPLE;
            let mut best: Option<(usize, i64)> = None;
            for j in e..e + SAMPLE {
                let s = self.queue[j] as usize;
                let m = &self.meta[s];
                if m.live && best.is_none_or(|(_, t)| m.last_seen < t) {
                    best = Some((s, m.last_seen));
                }
            }
            if let Some((v, _)) = best {
                self.prefetch_key(self.meta[v].key);
                f(v);
            }
            self.victims_ahead += 1;
        }
    }

    /// Asks the cache for the slots the TTL sweep of the next `events` events will visit.
    pub fn prefetch_sweep(&self, events: usize) {
        let n = self.meta.len();
        let len = (events * SWEEP).min(n);
        let start = (self.sweep + 1) % n.max(1);
        let head = len.min(n - start);
        mem::prefetch_span(&self.meta, start, head);
        mem::prefetch_span(&self.meta, 0, len - head);
    }

    /// Live slots and their key hashes.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.meta
            .iter()
            .enumerate()
            .filter(|(_, m)| m.live)
            .map(|(s, m)| (s, m.key))
    }
}

/// xorshift64*: deterministic, so eviction is a function of the event sequence.
#[inline]
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_holds_under_a_flood_and_recent_entities_survive() {
        let mut t = Table::new(100);
        // A steady entity touched all the time, and a flood of one-off keys.
        for i in 0..10_000u64 {
            t.touch(u64::MAX, i as i64);
            t.touch(crate::hash::mix(i), i as i64);
            assert!(t.len() <= 100);
        }
        assert!(t.slots() <= 100);
        assert!(t.get(u64::MAX).is_some(), "the active entity was evicted");
        assert!(t.evictions() >= 9_000);
    }

    #[test]
    fn ttl_sweep_drops_idle_entities() {
        let mut t = Table::new(1000);
        for i in 0..50u64 {
            t.touch(i, 0);
        }
        let f = t.touch(7, 1_000);
        assert!(!f.fresh);
        for _ in 0..100 {
            t.sweep(500);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(7), Some(f.slot));
        let again = t.touch(3, 2_000);
        assert!(again.fresh);
        assert_eq!(t.first_seen(again.slot), 2_000);
    }

    #[test]
    fn prefetching_reads_any_table_size_without_changing_it() {
        for cap in 1..6usize {
            let mut t = Table::new(cap);
            t.prefetch_sweep(16);
            t.prefetch_evictions(16);
            t.prefetch_victims(8, |_| {});
            t.prefetch_key(1);
            assert_eq!(t.prefetch_slot(1), None);
            for i in 0..10u64 {
                let k = crate::hash::mix(i);
                t.touch(k, i as i64);
                let (len, rng, sweep) = (t.len(), t.rng, t.sweep);
                t.prefetch_sweep(16);
                t.prefetch_evictions(16);
                let slots = t.slots();
                t.prefetch_victims(8, |s| assert!(s < slots));
                t.prefetch_key(k);
                assert_eq!(t.prefetch_slot(k), t.get(k));
                assert_eq!((t.len(), t.rng, t.sweep), (len, rng, sweep));
            }
        }
    }

    #[test]
    fn prefetched_samples_and_victims_follow_the_generator() {
        // The queued draws must be exactly what the generator will draw, and with nothing
        // touched in between, the predicted victim is the evicted one (its slot is the one
        // the new entity gets). The table gives the same slots as one never prefetched.
        let mut t = Table::new(50);
        let mut plain = Table::new(50);
        for i in 0..5_000u64 {
            if i % 7 == 0 {
                t.prefetch_evictions(3);
            }
            if !t.queue.is_empty() {
                let mut r = t.rng;
                for &q in &t.queue {
                    assert_eq!((xorshift(&mut r) % t.queue_n as u64) as u32, q);
                }
                assert_eq!(r, t.queue_rng);
            }
            let mut predicted = None;
            t.prefetch_victims(1, |s| predicted = Some(s));
            let k = crate::hash::mix(i);
            let f = t.touch(k, i as i64);
            assert_eq!(plain.touch(k, i as i64), f);
            if let Some(p) = predicted {
                assert_eq!(f.slot, p);
            }
        }
        assert_eq!(t.rng, plain.rng);
        assert!(t.evictions() > 4_000);
    }

    #[test]
    fn index_agrees_with_a_std_map_under_churn() {
        use std::collections::HashMap;
        // Colliding home positions on purpose, so probe runs, wrap-around and backward
        // shifts all get exercised.
        let mut idx = Index::new();
        let mut reference: HashMap<u64, u32> = HashMap::new();
        let mut x = 3u64;
        for step in 0..60_000u32 {
            x = crate::hash::mix(x);
            // 1,500 keys with 61 home positions at the end of the array, so runs are long
            // and wrap around to the start.
            let k = x % 1_500;
            let key = k | ((0xFFFF_FFC0 + k % 61) << 32);
            if x.rotate_left(7).is_multiple_of(3) {
                idx.remove(key);
                reference.remove(&key);
            } else if idx.get(key).is_none() {
                idx.insert(key, step);
                reference.insert(key, step);
            }
            assert_eq!(idx.len, reference.len());
            if step % 1000 == 0 {
                for (k, v) in &reference {
                    assert_eq!(idx.get(*k), Some(*v));
                }
            }
            assert_eq!(idx.get(key), reference.get(&key).copied());
        }
    }
}
