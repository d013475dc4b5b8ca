//! Bounded entity index: maps a 64-bit key hash to a dense slot, with eviction of idle
//! entities (TTL first, then least recently seen) so that a flood of new keys cannot grow
//! memory past the cap.
//!
//! Eviction is O(1) per event: a sweep cursor visits a couple of slots per call and drops
//! those idle for longer than the TTL; when the table is full, a handful of slots picked by
//! a deterministic generator are sampled and the least recently seen goes. Everything is a
//! function of the event sequence, so features do not depend on batch boundaries.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for keys that are already good 64-bit hashes.
#[derive(Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are used; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Index = HashMap<u64, u32, BuildHasherDefault<PreHashed>>;

/// Slots sampled when the table is full.
const SAMPLE: usize = 8;
/// Slots the TTL sweep visits per event.
const SWEEP: usize = 2;

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Dense slot of the entity.
    pub slot: usize,
    /// True when the entity was just created (its state must be reset).
    pub fresh: bool,
}

/// A bounded map from key hash to slot.
#[derive(Debug)]
pub struct Table {
    index: Index,
    keys: Vec<u64>,
    last_seen: Vec<i64>,
    first_seen: Vec<i64>,
    live: Vec<bool>,
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
            index: Index::default(),
            keys: Vec::new(),
            last_seen: Vec::new(),
            first_seen: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            cap: cap.max(1),
            sweep: 0,
            rng: 0x2545_F491_4F6C_DD1D,
            evictions: 0,
        }
    }

    /// Live entities.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no entity is tracked.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Entities evicted so far (TTL or capacity).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes of index and bookkeeping per slot (approximate, including hash-map overhead).
    pub fn bytes_per_entity() -> usize {
        // Index entry (key + slot + control byte, at ~7/8 load) and the per-slot vectors.
        (8 + 4 + 1) * 8 / 7 + 8 + 8 + 8 + 1
    }

    /// The slot of `key`, if tracked.
    #[inline]
    pub fn get(&self, key: u64) -> Option<usize> {
        self.index.get(&key).map(|&s| s as usize)
    }

    /// Time the entity in `slot` was created.
    #[inline]
    pub fn first_seen(&self, slot: usize) -> i64 {
        self.first_seen[slot]
    }

    /// Latest event time of the entity in `slot`.
    #[inline]
    pub fn last_seen(&self, slot: usize) -> i64 {
        self.last_seen[slot]
    }

    /// True when `slot` holds a live entity.
    #[inline]
    pub fn is_live(&self, slot: usize) -> bool {
        self.live.get(slot).copied().unwrap_or(false)
    }

    /// Slots in use or free (the length of per-slot state vectors).
    pub fn slots(&self) -> usize {
        self.keys.len()
    }

    /// Finds or creates the entity `key` seen at `t_us`, evicting if the table is full.
    #[inline]
    pub fn touch(&mut self, key: u64, t_us: i64) -> Found {
        if let Some(&s) = self.index.get(&key) {
            let s = s as usize;
            if t_us > self.last_seen[s] {
                self.last_seen[s] = t_us;
            }
            return Found {
                slot: s,
                fresh: false,
            };
        }
        if self.index.len() >= self.cap {
            self.evict_one();
        }
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None => {
                self.keys.push(0);
                self.last_seen.push(0);
                self.first_seen.push(0);
                self.live.push(false);
                self.keys.len() - 1
            }
        };
        self.keys[slot] = key;
        self.last_seen[slot] = t_us;
        self.first_seen[slot] = t_us;
        self.live[slot] = true;
        self.index.insert(key, slot as u32);
        Found { slot, fresh: true }
    }

    fn remove(&mut self, slot: usize) {
        self.index.remove(&self.keys[slot]);
        self.live[slot] = false;
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
        let n = self.keys.len();
        let mut best: Option<usize> = None;
        for _ in 0..SAMPLE {
            let s = (self.next_rand() % n as u64) as usize;
            if self.live[s] && best.is_none_or(|b| self.last_seen[s] < self.last_seen[b]) {
                best = Some(s);
            }
        }
        let victim = match best {
            Some(b) => b,
            // Unlucky sample of free slots only: take the first live slot.
            None => match self.live.iter().position(|&l| l) {
                Some(s) => s,
                None => return,
            },
        };
        self.remove(victim);
    }

    /// Drops entities idle since before `cutoff_us`, visiting a few slots per call.
    #[inline]
    pub fn sweep(&mut self, cutoff_us: i64) {
        let n = self.keys.len();
        if n == 0 {
            return;
        }
        for _ in 0..SWEEP.min(n) {
            self.sweep = (self.sweep + 1) % n;
            let s = self.sweep;
            if self.live[s] && self.last_seen[s] < cutoff_us {
                self.remove(s);
            }
        }
    }

    /// Live slots and their key hashes.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.keys
            .iter()
            .enumerate()
            .filter(|(s, _)| self.live[*s])
            .map(|(s, &k)| (s, k))
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
}
