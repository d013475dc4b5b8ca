//! A bounded memo from short byte strings to small `Copy` values, for the content scoring's
//! per-thread scratch.
//!
//! Its keys are stored end to end in one buffer, and the table holds only their place,
//! length and hash. The values it remembers are mostly the same few (`page=1`), but a
//! good share of keys are seen once (an order id in a path): a map of boxed keys spent
//! an allocation on each of those, and freed them all again each time it started over.
//! Here a new key is an append to the buffer, and starting over is a reset of two
//! lengths; the memory stays for the next round.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::Fast;

/// One remembered key: where it lies in the key buffer, and its hash (kept so the table
/// can grow without reading the keys again).
#[derive(Debug, Clone, Copy)]
struct Entry<V> {
    hash: u64,
    at: u32,
    len: u32,
    value: V,
}

/// Remembers up to `capacity` keys, then starts over (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct BytesMemo<V> {
    table: HashTable<Entry<V>>,
    keys: Vec<u8>,
    hasher: Fast,
    capacity: usize,
}

impl<V: Copy> BytesMemo<V> {
    /// An empty memo that starts over once it holds `capacity` keys.
    pub(super) fn new(capacity: usize) -> Self {
        BytesMemo {
            table: HashTable::new(),
            keys: Vec::new(),
            hasher: Fast::default(),
            capacity,
        }
    }

    /// The hash under which `key` is looked up and remembered.
    pub(super) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The value remembered for `key`, whose hash is `hash`.
    pub(super) fn get(&self, hash: u64, key: &[u8]) -> Option<V> {
        let keys = &self.keys;
        self.table
            .find(hash, |e| {
                e.hash == hash && keys[e.at as usize..(e.at + e.len) as usize] == *key
            })
            .map(|e| e.value)
    }

    /// Remembers `value` for `key` (not already there), whose hash is `hash`. A full memo
    /// forgets everything first.
    pub(super) fn insert(&mut self, hash: u64, key: &[u8], value: V) {
        // Offsets are u32: a buffer that would pass 4 GiB starts over too (it cannot at
        // the sizes the callers allow, but the bound costs nothing).
        if self.table.len() >= self.capacity || self.keys.len() + key.len() > u32::MAX as usize {
            self.clear();
        }
        let at = self.keys.len() as u32;
        self.keys.extend_from_slice(key);
        let entry = Entry {
            hash,
            at,
            len: key.len() as u32,
            value,
        };
        self.table.insert_unique(hash, entry, |e| e.hash);
    }

    /// Forgets every key, keeping the memory.
    pub(super) fn clear(&mut self) {
        self.table.clear();
        self.keys.clear();
    }

    /// Keys remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(m: &mut BytesMemo<u32>, key: &[u8], v: u32) {
        let h = m.hash(key);
        assert_eq!(m.get(h, key), None, "{key:?} was not there yet");
        m.insert(h, key, v);
    }

    fn get(m: &BytesMemo<u32>, key: &[u8]) -> Option<u32> {
        m.get(m.hash(key), key)
    }

    #[test]
    fn remembers_each_key_apart() {
        let mut m = BytesMemo::new(100);
        // Prefixes of one another, and the empty key: only whole keys match.
        put(&mut m, b"page=1", 1);
        put(&mut m, b"page=10", 2);
        put(&mut m, b"page=", 3);
        put(&mut m, b"", 4);
        assert_eq!(get(&m, b"page=1"), Some(1));
        assert_eq!(get(&m, b"page=10"), Some(2));
        assert_eq!(get(&m, b"page="), Some(3));
        assert_eq!(get(&m, b""), Some(4));
        assert_eq!(get(&m, b"page=100"), None);
        assert_eq!(get(&m, b"age=1"), None);
        // Enough keys to make the table grow several times: every one still found.
        for i in 0..90u32 {
            put(&mut m, format!("id={i}").as_bytes(), 100 + i);
        }
        for i in 0..90u32 {
            assert_eq!(get(&m, format!("id={i}").as_bytes()), Some(100 + i));
        }
        assert_eq!(m.len(), 94);
    }

    #[test]
    fn starts_over_when_full() {
        let mut m = BytesMemo::new(3);
        put(&mut m, b"a", 1);
        put(&mut m, b"b", 2);
        put(&mut m, b"c", 3);
        assert_eq!(m.len(), 3);
        put(&mut m, b"d", 4);
        assert_eq!(m.len(), 1);
        assert_eq!(get(&m, b"a"), None);
        assert_eq!(get(&m, b"d"), Some(4));
        m.clear();
        assert_eq!(m.len(), 0);
        assert_eq!(get(&m, b"d"), None);
    }
}
