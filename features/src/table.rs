//! Bounded entity index: maps a 64-bit key hash to a dense slot, with eviction of idle
//! entities (TTL first, then least recently seen) so that a flood of new keys cannot grow
//! memory past the cap.
//!
//! Eviction is O(1) per event: a sweep cursor visits a couple of slots per call and drops
//! those idle for longer than the TTL (and only moves on, without reading them, while the
//! table knows that no entity is that idle); when the table is full, an eviction hand looks at
//! the next few adjacent slots and the least recently seen of them goes. Everything is a
//! function of the event sequence, so features do not depend on batch boundaries.
//!
//! Why adjacent slots rather than random ones: a slot's position says nothing about how
//! recently its entity was seen (a freed slot goes to the next new entity, wherever it
//! is), so a run of slots is as good a sample as random draws, and it is four adjacent
//! cache lines the hardware fetches in order instead of eight scattered misses. Each
//! window the hand passes loses one entity and gains the newcomer, so after a full turn
//! every window holds one entity younger than a turn and the oldest of the rest goes: a
//! clock over the slots that evicts by recency within each window.
//!
//! Layout, for speed at hundreds of thousands of entities, where every lookup misses the
//! cache: the index is an open-addressing array of `(key, slot)` pairs probed linearly, so a
//! lookup usually costs one cache line rather than a control-byte group and then a bucket;
//! and a slot's bookkeeping (key, first and last seen, liveness) sits together in one
//! 32-byte record, so a touch reads one line and an eviction window (eight slots) four
//! adjacent ones.
//!
//! Keys are hashes of what clients send (IP addresses, client ids, paths) under public
//! seeds, so anyone can work out keys that would share a home position and make one long
//! probe run that every lookup walks. Each index therefore places keys by the key mixed
//! with a secret of its own, drawn when the table is made. Only index positions depend
//! on it: slots, eviction and sweeps follow the slots and the event sequence, so the
//! features do not.

use crate::mem;

/// Adjacent slots the eviction hand compares when the table is full.
const SAMPLE: usize = 8;
/// Slots the TTL sweep visits per event.
const SWEEP: usize = 2;
/// Marks an empty index position.
const VACANT: u32 = u32::MAX;
/// Odd multiplier of the home position (2^64 / golden ratio): the product's upper half,
/// from which the position is taken, depends on every bit of the key below it.
const HOME_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Dense slot of the entity.
    pub slot: usize,
    /// True when the entity was just created (its state must be reset).
    pub fresh: bool,
}

/// An entity a table dropped, as its eviction hook gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Its key.
    pub key: u64,
    /// When it was first seen, µs.
    pub first_seen: i64,
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
pub(crate) struct Index {
    /// `(key, slot)`; `slot == VACANT` marks an empty position.
    cells: Vec<(u64, u32)>,
    len: usize,
    /// Mixed into every home position, so that which keys collide cannot be known
    /// outside this process.
    secret: u64,
}

impl Index {
    pub(crate) fn new() -> Self {
        use std::hash::BuildHasher;
        // `RandomState` is the standard library's source of per-process random keys (each
        // new one differs), so no dependency is needed for 64 secret bits.
        let secret = std::collections::hash_map::RandomState::new().hash_one(HOME_MUL);
        Self::with_secret(secret)
    }

    fn with_secret(secret: u64) -> Self {
        Self {
            cells: Vec::new(),
            len: 0,
            secret,
        }
    }

    /// An index that holds `entries` keys without growing.
    pub(crate) fn with_room(entries: usize) -> Self {
        let mut idx = Self::new();
        // `insert` grows once a key would take it past 3/4 full.
        let cells = (entries * 4).div_ceil(3).next_power_of_two().max(16);
        mem::resize(&mut idx.cells, cells, (0, VACANT));
        idx
    }

    /// Keys held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the position array.
    pub(crate) fn bytes(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<(u64, u32)>()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.cells.len() - 1
    }

    /// Where the probe for `key` starts: one multiply, not a full hash, since it is paid
    /// on every lookup. The table never holds more than `u32::MAX` positions, so the
    /// product's upper half is enough.
    #[inline]
    fn home(&self, key: u64) -> usize {
        ((key ^ self.secret).wrapping_mul(HOME_MUL) >> 32) as usize & self.mask()
    }

    /// Position of `key` in the index, if present.
    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        if self.cells.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
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
    pub(crate) fn get(&self, key: u64) -> Option<u32> {
        self.find(key).map(|i| self.cells[i].1)
    }

    /// Maps `key`, present or not, to `slot`.
    pub(crate) fn set(&mut self, key: u64, slot: u32) {
        match self.find(key) {
            Some(i) => self.cells[i].1 = slot,
            None => self.insert(key, slot),
        }
    }

    /// Inserts `key` (not present) → `slot`.
    fn insert(&mut self, key: u64, slot: u32) {
        if (self.len + 1) * 4 > self.cells.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(key);
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
    pub(crate) fn remove(&mut self, key: u64) {
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
            let home = self.home(k);
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
    /// A time at or before the last-seen time of every live entity: while the TTL cutoff
    /// is at or before it, a sweep would drop nothing, so it only moves its cursor.
    floor: i64,
    /// The least last-seen time the sweep has met in its current turn (and of entities
    /// created since the turn began); it becomes `floor` when the turn ends.
    turn_floor: i64,
    /// First slot of the next eviction's window (`SAMPLE` slots from here, wrapping).
    hand: usize,
    /// Slots from the hand on already asked for from the cache, for a table of
    /// `ahead_n` slots (see [`Table::prefetch_evictions`]).
    prefetched: usize,
    ahead_n: usize,
    /// Evictions from the hand on whose victims are already predicted.
    victims_ahead: usize,
    evictions: u64,
    /// Of `evictions`, those made to free room in a full table (the rest were idle past
    /// the TTL): a steady stream of these means the cap is below the live set.
    capacity_evictions: u64,
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
            floor: i64::MAX,
            turn_floor: i64::MAX,
            hand: 0,
            prefetched: 0,
            ahead_n: 0,
            victims_ahead: 0,
            evictions: 0,
            capacity_evictions: 0,
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

    /// Of [`evictions`](Self::evictions), those that made room in a full table (the
    /// others dropped entities idle past the TTL).
    pub fn capacity_evictions(&self) -> u64 {
        self.capacity_evictions
    }

    /// The most entities the table holds.
    pub fn cap(&self) -> usize {
        self.cap
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

    /// Sets the first-seen time of the entity in `slot` (one seen before it was last
    /// evicted, say).
    pub fn set_first_seen(&mut self, slot: usize, t_us: i64) {
        self.meta[slot].first_seen = t_us;
    }

    /// What an eviction hands on about the entity in `slot`.
    fn evicted(&self, slot: usize) -> Evicted {
        let m = &self.meta[slot];
        Evicted {
            key: m.key,
            first_seen: m.first_seen,
        }
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
        self.touch_noting_evictions(key, t_us, |_, _| {})
    }

    /// [`touch`](Self::touch), handing each entity it evicts to `evicted` (its key and
    /// slot, whose first-seen time and the caller's state for it are still readable). The
    /// hook costs nothing unless an entity is evicted (it is a type parameter, so the
    /// plain `touch` has no call to skip).
    #[inline]
    pub fn touch_noting_evictions(
        &mut self,
        key: u64,
        t_us: i64,
        mut evicted: impl FnMut(Evicted, usize),
    ) -> Found {
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
            self.evict_one(&mut evicted);
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
        self.floor = self.floor.min(t_us);
        self.turn_floor = self.turn_floor.min(t_us);
        self.index.insert(key, slot as u32);
        Found { slot, fresh: true }
    }

    fn remove(&mut self, slot: usize) {
        self.index.remove(self.meta[slot].key);
        self.meta[slot].live = false;
        self.free.push(slot as u32);
        self.evictions += 1;
    }

    fn evict_one(&mut self, evicted: &mut impl FnMut(Evicted, usize)) {
        let n = self.meta.len();
        if n == 0 {
            return;
        }
        if self.ahead_n == n {
            self.prefetched = self.prefetched.saturating_sub(SAMPLE);
            self.victims_ahead = self.victims_ahead.saturating_sub(1);
        } else {
            self.prefetched = 0;
            self.victims_ahead = 0;
        }
        // The hand's window, then the next ones while a window holds only free slots (the
        // table is full, so some slot is live).
        for _ in 0..n.div_ceil(SAMPLE) {
            let victim = oldest(&self.meta, self.hand % n);
            self.hand = (self.hand % n + SAMPLE) % n;
            if let Some(v) = victim {
                self.remove(v);
                self.capacity_evictions += 1;
                evicted(self.evicted(v), v);
                return;
            }
        }
    }

    /// Drops entities idle since before `cutoff_us`, visiting a few slots per call.
    ///
    /// Most of the time nothing is that idle: while `cutoff_us` is at or before `floor`
    /// (no live entity was last seen before it), the cursor moves on without reading the
    /// slots it passes, which are left exactly as a visit would leave them. `floor` only
    /// decreases as entities are created, so it is raised at the end of every turn the
    /// sweep makes to the least last-seen time met in that turn: an entity seen since its
    /// visit was seen later, and one created since is counted when it is created.
    #[inline]
    pub fn sweep(&mut self, cutoff_us: i64) {
        self.sweep_noting_evictions(cutoff_us, |_, _| {});
    }

    /// [`sweep`](Self::sweep), handing each entity it drops to `evicted` (as
    /// [`touch_noting_evictions`](Self::touch_noting_evictions) does).
    #[inline]
    pub fn sweep_noting_evictions(
        &mut self,
        cutoff_us: i64,
        mut evicted: impl FnMut(Evicted, usize),
    ) {
        let n = self.meta.len();
        if n == 0 {
            return;
        }
        let steps = SWEEP.min(n);
        if cutoff_us <= self.floor {
            // A skipped slot's last-seen time is at least `floor`, which is what it adds
            // to the turn's least.
            self.turn_floor = self.turn_floor.min(self.floor);
            let next = self.sweep + steps;
            if next >= n {
                // The steps past the last slot are the next turn's.
                self.end_turn();
                self.turn_floor = self.floor;
            }
            self.sweep = next % n;
            return;
        }
        for _ in 0..steps {
            self.sweep += 1;
            if self.sweep >= n {
                self.sweep = 0;
                self.end_turn();
            }
            let s = self.sweep;
            let m = &self.meta[s];
            if m.live {
                if m.last_seen < cutoff_us {
                    self.remove(s);
                    evicted(self.evicted(s), s);
                } else {
                    self.turn_floor = self.turn_floor.min(m.last_seen);
                }
            }
        }
    }

    /// The sweep's cursor has passed the last slot: every live entity was visited (or
    /// created) in this turn, so the least last-seen time it met is a floor for all.
    fn end_turn(&mut self) {
        self.floor = self.turn_floor;
        self.turn_floor = i64::MAX;
    }

    /// True when the next sweeps will read the slots they pass (see [`sweep`](Self::sweep))
    /// at the cutoff `cutoff_us`.
    #[inline]
    pub fn sweeps_read(&self, cutoff_us: i64) -> bool {
        cutoff_us > self.floor
    }

    /// Asks the cache for the index position where a lookup of `key` starts, so that a
    /// lookup a little later finds it there (see the crate's `mem` module).
    #[inline]
    pub fn prefetch_key(&self, key: u64) {
        if !self.index.cells.is_empty() {
            mem::prefetch(&self.index.cells, self.index.home(key));
        }
    }

    /// The slot of `key`, if tracked, with its bookkeeping asked for from the cache.
    #[inline]
    pub fn prefetch_slot(&self, key: u64) -> Option<usize> {
        let slot = self.get(key)?;
        mem::prefetch(&self.meta, slot);
        Some(slot)
    }

    /// Asks the cache for the slots that the next `evictions` evictions will compare if
    /// the table is full, beyond those already asked for. Nothing observable changes.
    pub fn prefetch_evictions(&mut self, evictions: usize) {
        let n = self.meta.len();
        if self.index.len < self.cap || n == 0 {
            return;
        }
        if self.ahead_n != n {
            self.ahead_n = n;
            self.prefetched = 0;
            self.victims_ahead = 0;
        }
        let want = (evictions * SAMPLE).min(n);
        if self.prefetched >= want {
            return;
        }
        self.prefetch_slots((self.hand + self.prefetched) % n, want - self.prefetched);
        self.prefetched = want;
    }

    /// Predicts the victims of the next `evictions` evictions if the table is full (beyond
    /// those already predicted), from their windows' bookkeeping as it stands now, asks
    /// the cache for the index position each victim's removal will start at, and hands
    /// each victim's slot to `f`, for the caller's state of that slot (which the new
    /// entity will reset). A prediction can be wrong (an entity of the window seen again
    /// in the meantime); that only wastes lines. Only windows already asked for by
    /// [`prefetch_evictions`](Self::prefetch_evictions) are read: called a while after it,
    /// they are in the cache by then.
    pub fn prefetch_victims(&mut self, evictions: usize, mut f: impl FnMut(usize)) {
        let n = self.meta.len();
        if self.ahead_n != n || n == 0 {
            return;
        }
        let ready = (self.prefetched / SAMPLE).min(evictions);
        while self.victims_ahead < ready {
            let start = (self.hand + self.victims_ahead * SAMPLE) % n;
            if let Some(v) = oldest(&self.meta, start) {
                self.prefetch_key(self.meta[v].key);
                f(v);
            }
            self.victims_ahead += 1;
        }
    }

    /// Asks the cache for the slots the TTL sweep of the next `events` events will visit,
    /// when the sweeps at about `cutoff_us` will read them (see [`sweep`](Self::sweep)).
    pub fn prefetch_sweep(&self, events: usize, cutoff_us: i64) {
        if !self.sweeps_read(cutoff_us) {
            return;
        }
        let n = self.meta.len();
        self.prefetch_slots((self.sweep + 1) % n.max(1), (events * SWEEP).min(n));
    }

    /// Asks the cache for the bookkeeping of `len` slots from `start` (`< n`, or 0 with no
    /// slots), wrapping past the last slot to the first; `len` is at most the slot count.
    fn prefetch_slots(&self, start: usize, len: usize) {
        let head = len.min(self.meta.len() - start);
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

/// The least recently seen live slot of the `SAMPLE` slots from `start` (wrapping), the
/// first of them on a tie.
#[inline]
fn oldest(meta: &[Meta], start: usize) -> Option<usize> {
    let n = meta.len();
    let mut best: Option<(usize, i64)> = None;
    for i in 0..SAMPLE.min(n) {
        // `start < n` and `i < n`: one subtraction wraps it.
        let s = if start + i >= n {
            start + i - n
        } else {
            start + i
        };
        let m = &meta[s];
        if m.live && best.is_none_or(|(_, t)| m.last_seen < t) {
            best = Some((s, m.last_seen));
        }
    }
    best.map(|(s, _)| s)
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
        // No sweep ran: every eviction made room.
        assert_eq!(t.capacity_evictions(), t.evictions());
        assert_eq!(t.cap(), 100);
    }

    #[test]
    fn evictions_are_handed_on_with_the_evicted_keys() {
        // Capacity evictions and TTL sweeps hand on each key they drop; the table behaves
        // exactly as one that is not asked for them.
        let (mut noted, mut plain) = (Table::new(30), Table::new(30));
        let mut evicted = Vec::new();
        for i in 0..2_000u64 {
            let k = crate::hash::mix(i % 97);
            let live: Vec<_> = noted.iter().map(|(_, k)| k).collect();
            let before = evicted.len();
            let f = noted.touch_noting_evictions(k, i as i64, |e, _| evicted.push(e.key));
            assert_eq!(f, plain.touch(k, i as i64));
            noted.sweep_noting_evictions(i as i64 - 40, |e, _| evicted.push(e.key));
            plain.sweep(i as i64 - 40);
            for e in &evicted[before..] {
                assert!(live.contains(e) && noted.get(*e).is_none(), "step {i}");
            }
        }
        assert_eq!(evicted.len() as u64, noted.evictions());
        assert!(noted.evictions() > 1_000);
        assert_eq!(
            noted.iter().collect::<Vec<_>>(),
            plain.iter().collect::<Vec<_>>()
        );
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
        // Idle past the cutoff, not crowded out: none of the 49 counts against the cap.
        assert_eq!((t.evictions(), t.capacity_evictions()), (49, 0));
        let again = t.touch(3, 2_000);
        assert!(again.fresh);
        assert_eq!(t.first_seen(again.slot), 2_000);
    }

    #[test]
    fn sweeps_that_skip_slots_drop_what_visiting_every_slot_drops() {
        // The same operations on two tables; the second is made to read every slot its
        // sweeps pass. Keys come back now and then, times jitter backwards (late events),
        // the TTL cutoff creeps forward and sometimes jumps, and the tables fill and evict.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for cap in [3usize, 40, 500] {
            let (mut fast, mut slow) = (Table::new(cap), Table::new(cap));
            let mut t = 1_000_000i64;
            let mut skipped = 0;
            for step in 0..20_000 {
                let r = next();
                t += (r % 50) as i64;
                let at = t - ((r >> 8) % 3_000) as i64;
                let key = crate::hash::mix((r >> 20) % (cap as u64 * 3));
                assert_eq!(fast.touch(key, at), slow.touch(key, at), "step {step}");
                let ttl = [100, 1_000, 2_000, 4_000][((r >> 40) % 4) as usize];
                let cutoff = t - ttl;
                skipped += usize::from(!fast.sweeps_read(cutoff));
                fast.sweep(cutoff);
                slow.floor = i64::MIN;
                slow.sweep(cutoff);
                assert_eq!(
                    (fast.len(), fast.sweep, fast.hand, fast.evictions()),
                    (slow.len(), slow.sweep, slow.hand, slow.evictions()),
                    "step {step}"
                );
            }
            let live = |t: &Table| t.iter().collect::<Vec<_>>();
            assert_eq!(live(&fast), live(&slow));
            assert!(skipped > 100, "cap {cap}: only {skipped} sweeps skipped");
            assert!(fast.evictions() > 0);
        }
    }

    #[test]
    fn prefetching_reads_any_table_size_without_changing_it() {
        for cap in 1..6usize {
            let mut t = Table::new(cap);
            t.prefetch_sweep(16, i64::MAX);
            t.prefetch_evictions(16);
            t.prefetch_victims(8, |_| {});
            t.prefetch_key(1);
            assert_eq!(t.prefetch_slot(1), None);
            for i in 0..10u64 {
                let k = crate::hash::mix(i);
                t.touch(k, i as i64);
                let (len, hand, sweep) = (t.len(), t.hand, t.sweep);
                t.prefetch_sweep(16, i64::MAX);
                t.prefetch_evictions(16);
                let slots = t.slots();
                t.prefetch_victims(8, |s| assert!(s < slots));
                t.prefetch_key(k);
                assert_eq!(t.prefetch_slot(k), t.get(k));
                assert_eq!((t.len(), t.hand, t.sweep), (len, hand, sweep));
            }
        }
    }

    #[test]
    fn predicted_victims_are_the_evicted_ones() {
        // With nothing touched in between, the predicted victim is the evicted one (its
        // slot is the one the new entity gets), and the table gives the same slots as one
        // never prefetched. 53 slots: windows of 8 straddle the end of the slots.
        let mut t = Table::new(53);
        let mut plain = Table::new(53);
        let mut predicted_evictions = 0;
        for i in 0..5_000u64 {
            if i % 7 == 0 {
                t.prefetch_evictions(3);
            }
            let mut predicted = None;
            t.prefetch_victims(1, |s| predicted = Some(s));
            let k = crate::hash::mix(i);
            let f = t.touch(k, i as i64);
            assert_eq!(plain.touch(k, i as i64), f);
            if let Some(p) = predicted {
                assert_eq!(f.slot, p);
                predicted_evictions += 1;
            }
        }
        assert_eq!(t.hand, plain.hand);
        assert!(t.evictions() > 4_000);
        assert!(predicted_evictions > 1_000, "{predicted_evictions}");
    }

    #[test]
    fn eviction_takes_the_least_recently_seen_of_the_hands_window() {
        let mut t = Table::new(16);
        // Slots 0..16, seen at times that make slot 5 the oldest of the first window and
        // slot 9 the oldest of the second.
        let seen = |s: u64| match s {
            5 => 1,
            9 => 2,
            _ => 100 + s as i64,
        };
        for s in 0..16u64 {
            assert_eq!(t.touch(s, seen(s)).slot, s as usize);
        }
        let f = t.touch(100, 200);
        assert_eq!(f.slot, 5, "the oldest of slots 0..8 goes");
        assert_eq!(t.get(5), None);
        let f = t.touch(101, 201);
        assert_eq!(f.slot, 9, "the oldest of slots 8..16 goes");
        // Back to the first window, where the newcomer in slot 5 is now the youngest.
        let f = t.touch(102, 202);
        assert_eq!(f.slot, 0);
        assert_eq!(t.get(100), Some(5));
    }

    #[test]
    fn an_entity_seen_again_is_not_evicted_before_idle_ones() {
        // A flood of one-off keys against a small table: the steady entities, seen again
        // every few events, always outlive the idle ones of their window.
        let mut t = Table::new(64);
        let steady: Vec<u64> = (0..8).map(|i| u64::MAX - i).collect();
        for i in 0..20_000u64 {
            if i % 4 == 0 {
                for (j, &k) in steady.iter().enumerate() {
                    if (i / 4) % 8 == j as u64 {
                        t.touch(k, i as i64);
                    }
                }
            }
            t.touch(crate::hash::mix(i), i as i64);
        }
        for k in steady {
            assert!(t.get(k).is_some(), "steady entity {k:x} was evicted");
        }
    }

    /// The inverse of `HOME_MUL` modulo 2^64 (Newton's iteration; each step doubles the
    /// correct low bits, from 3 to more than 64).
    const HOME_MUL_INV: u64 = {
        let mut inv = HOME_MUL;
        let mut i = 0;
        while i < 5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(HOME_MUL.wrapping_mul(inv)));
            i += 1;
        }
        inv
    };

    /// A key that `idx` mixes into `mixed`, whose upper half gives its home position.
    fn key_mixing_to(idx: &Index, mixed: u64) -> u64 {
        mixed.wrapping_mul(HOME_MUL_INV) ^ idx.secret
    }

    /// How far each key sits from its home position.
    fn displacements(idx: &Index, keys: &[u64]) -> Vec<usize> {
        keys.iter()
            .map(|&k| idx.find(k).unwrap().wrapping_sub(idx.home(k)) & idx.mask())
            .collect()
    }

    #[test]
    fn keys_made_to_collide_without_the_secret_spread_out() {
        // Keys an attacker would pick to share a home position if it were read off the
        // key's bits: the same upper half, only the lower one differs.
        let keys: Vec<u64> = (0..1_000u64).map(|i| (0xABCD_0123 << 32) | i).collect();
        let mut idx = Index::new();
        for (s, &k) in keys.iter().enumerate() {
            idx.insert(k, s as u32);
        }
        let d = displacements(&idx, &keys);
        let mean = d.iter().sum::<usize>() as f64 / d.len() as f64;
        let max = d.iter().max().copied().unwrap_or(0);
        assert!(
            mean < 3.0 && max < 100,
            "probe runs: mean {mean}, longest {max}"
        );
        for (s, &k) in keys.iter().enumerate() {
            assert_eq!(idx.get(k), Some(s as u32));
        }
    }

    #[test]
    fn the_secret_decides_where_a_key_goes_and_nothing_else() {
        let (mut a, mut b) = (Index::with_secret(1), Index::with_secret(2));
        let keys: Vec<u64> = (0..100u64).map(crate::hash::mix).collect();
        for (s, &k) in keys.iter().enumerate() {
            a.insert(k, s as u32);
            b.insert(k, s as u32);
        }
        let moved = keys.iter().filter(|&&k| a.find(k) != b.find(k)).count();
        assert!(moved > 90, "only {moved} of 100 keys placed differently");
        // Two tables (each with a secret of its own) under the same churn and evictions
        // give the same slots and evict the same entities.
        let (mut x, mut y) = (Table::new(50), Table::new(50));
        assert_ne!(x.index.secret, y.index.secret);
        for i in 0..5_000u64 {
            let k = crate::hash::mix(i % 400);
            assert_eq!(x.touch(k, i as i64), y.touch(k, i as i64));
            x.sweep(i as i64 - 300);
            y.sweep(i as i64 - 300);
        }
        assert!(x.evictions() > 1_000);
        assert_eq!(x.iter().collect::<Vec<_>>(), y.iter().collect::<Vec<_>>());
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
            let key = key_mixing_to(&idx, k | ((0xFFFF_FFC0 + k % 61) << 32));
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
