//! The simulator's agenda: which actor acts next, by simulated time.
//!
//! A min-heap with four children per node. A busy simulation keeps hundreds of thousands
//! of sessions waiting (up to 250,000), and a binary heap's pop then walks up to eighteen
//! levels, the deeper ones far apart in memory. Four children halve the levels, and a node's four children lie next
//! to each other in memory (96 bytes). Keys are unique (a time and a sequence number), so
//! this pops exactly the order any correct priority queue would: the simulator's output
//! does not depend on which one it uses.

/// When an actor is due, the order it was queued in (ties on time go first-in, first-out),
/// and its slot among the actors.
pub(crate) type Entry = (i64, u64, u32);

const ARITY: usize = 4;

/// Entries kept so that the least `(time, sequence)` is always first.
#[derive(Debug, Default)]
pub(crate) struct Agenda {
    items: Vec<Entry>,
}

fn key(e: &Entry) -> (i64, u64) {
    (e.0, e.1)
}

impl Agenda {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        // Sift up through a hole: each parent that is later moves down one level.
        let mut i = self.items.len();
        self.items.push(entry);
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if key(&self.items[parent]) <= key(&entry) {
                break;
            }
            self.items[i] = self.items[parent];
            i = parent;
        }
        self.items[i] = entry;
    }

    /// The earliest entry, removed.
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let last = self.items.pop()?;
        let Some(&first) = self.items.first() else {
            return Some(last);
        };
        // The last entry goes into the root's hole and sinks to where it belongs.
        let n = self.items.len();
        let mut i = 0;
        loop {
            let child = i * ARITY + 1;
            if child >= n {
                break;
            }
            let end = (child + ARITY).min(n);
            let mut least = child;
            for c in child + 1..end {
                if key(&self.items[c]) < key(&self.items[least]) {
                    least = c;
                }
            }
            if key(&self.items[least]) >= key(&last) {
                break;
            }
            self.items[i] = self.items[least];
            i = least;
        }
        self.items[i] = last;
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    /// The agenda pops what the standard library's binary heap pops, for mixes of pushes
    /// and pops at many sizes, times that collide, and a queue emptied and refilled.
    #[test]
    fn pops_in_the_order_of_a_binary_heap() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for round in 0..200u64 {
            let mut agenda = Agenda::default();
            let mut heap = BinaryHeap::new();
            let mut seq = 0u64;
            // Few distinct times in some rounds, so ties on time are common.
            let spread: i64 = if round % 2 == 0 { 5 } else { 1_000_000 };
            let steps = rng.random_range(0..3_000);
            for _ in 0..steps {
                if rng.random_bool(0.55) {
                    seq += 1;
                    let e = (rng.random_range(0..spread), seq, rng.random::<u32>());
                    agenda.push(e);
                    heap.push(Reverse(e));
                } else {
                    assert_eq!(agenda.pop(), heap.pop().map(|Reverse(e)| e));
                }
                assert_eq!(agenda.len(), heap.len());
            }
            while let Some(Reverse(e)) = heap.pop() {
                assert_eq!(agenda.pop(), Some(e));
            }
            assert_eq!(agenda.pop(), None);
        }
    }
}
