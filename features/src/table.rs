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
        let old = std::mem::replace(&mut self.cells, vec![(0, VACANT); cap]);
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
                self.meta.push(Meta {
                    key: 0,
                    last_seen: 0,
                    first_seen: 0,
                    live: false,
                });
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

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: deterministic, so eviction is a function of the event sequence.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn evict_one(&mut self) {
        let n = self.meta.len();
        let mut best: Option<(usize, i64)> = None;
        for _ in 0..SAMPLE {
            let s = (self.next_rand() % n as u64) as usize;
            let m = &self.meta[s];
            if m.live && best.is_none_or(|(_, t)| m.last_seen < t) {
                best = Some((s, m.last_seen));
            }
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

    /// Reads the bookkeeping of `slot` and returns a value made from it, so that a caller
    /// can load the slots of several upcoming events in one go (their cache misses then
    /// overlap) before touching them one by one.
    #[inline]
    pub fn warm(&self, slot: usize) -> u64 {
        self.meta.get(slot).map_or(0, |m| m.last_seen as u64)
    }

    /// Like [`warm`](Self::warm), for the slots that the next `events` evictions would
    /// sample if the table is full now (reads only; the generator does not move).
    pub fn warm_evictions(&self, events: usize) -> u64 {
        let n = self.meta.len();
        if self.index.len < self.cap || n == 0 {
            return 0;
        }
        let mut rng = self.rng;
        let mut acc = 0u64;
        for _ in 0..events * SAMPLE {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let s = (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize;
            acc = acc.wrapping_add(self.meta[s].last_seen as u64);
        }
        acc
    }

    /// Like [`warm`](Self::warm), for the slots the TTL sweep of the next `events` events
    /// will visit.
    pub fn warm_sweep(&self, events: usize) -> u64 {
        let n = self.meta.len();
        let mut acc = 0u64;
        let mut s = self.sweep;
        // Two 32-byte records per cache line: every other slot is enough.
        for _ in 0..(events * SWEEP).min(n).div_ceil(2) {
            s = (s + 2) % n;
            acc = acc.wrapping_add(self.meta[s].last_seen as u64);
        }
        acc
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
    fn warming_reads_any_table_size_without_changing_it() {
        for cap in 1..6usize {
            let mut t = Table::new(cap);
            assert_eq!(t.warm_sweep(16) + t.warm_evictions(16) + t.warm(0), 0);
            for i in 0..10u64 {
                t.touch(crate::hash::mix(i), i as i64);
                let (len, rng, sweep) = (t.len(), t.rng, t.sweep);
                t.warm_sweep(16);
                t.warm_evictions(16);
                t.warm(99);
                assert_eq!((t.len(), t.rng, t.sweep), (len, rng, sweep));
            }
        }
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
