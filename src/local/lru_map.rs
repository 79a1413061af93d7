//! [`LruMap`]: the map inside each shard, an LRU list over a hash table that takes the key's hash
//! from the caller.
//!
//! Why not `lru::LruCache`: it hashes the key again inside the map (the cache already hashed it
//! to pick the shard), allocates one node per entry and one more for the key, and follows two
//! pointers before it can compare a key. Here the hash is computed once per operation, entries
//! live in one slab indexed by `u32`, and keys of up to [`INLINE_KEY`] bytes are stored in the
//! node itself, so a lookup touches the table's control bytes, one bucket and one node.
//!
//! Why nodes do not store their hash: 8 bytes an entry, needed only when an entry is removed or
//! the table grows, and both can hash the key again. The map owns a copy of the cache's
//! [`KeyHasher`] for that.
//!
//! Why the list links live apart from the nodes (`links`, parallel to `nodes`): exact LRU order
//! means every hit relinks its entry, which writes the links of its two list neighbours, and
//! those are random entries. In the nodes (~90 bytes each, megabytes for a large cache) that is
//! two cache misses per hit; in a dense array of 8-byte links (800 KB for 100k entries) it is
//! two accesses that stay in the core's L2 cache. A lookup still reads one node, a hit then
//! writes only `links`.
//!
//! Invariants:
//! - `nodes` and `links` have the same length; `links[i]` is the list position of `nodes[i]`;
//! - `table` holds exactly the indices `0..nodes.len()`, each under its key's hash by `hasher`;
//! - the `prev`/`next` links form one list over all nodes, `head` the most recently used end,
//!   `tail` the least recently used, both [`NIL`] when the map is empty;
//! - removal moves the last node into the freed index (`swap_remove`) and repoints its table
//!   bucket and neighbours, so the slab stays dense and needs no free list;
//! - `nodes` and `links` never grow past `max_len` slots (the most entries the shard can hold at
//!   once), so a full shard carries no spare capacity from doubling.
//!
//! A [`Slot`] found by [`LruMap::find`] stays valid until the next insertion or removal.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

/// Hashes keys: one per cache, cloned into every shard's map so that the map can hash a stored
/// key again and get the hash the cache looked it up with.
#[derive(Clone, Debug)]
pub(super) struct KeyHasher(foldhash::fast::FixedState);

impl KeyHasher {
    /// A hasher with a seed of its own.
    pub(super) fn new() -> Self {
        KeyHasher::with_seed(rand::random())
    }

    pub(super) fn with_seed(seed: u64) -> Self {
        KeyHasher(foldhash::fast::FixedState::with_seed(seed))
    }

    /// The hash of a key's bytes (one `write`: a key is never part of a longer hashed
    /// sequence, so it needs no terminator as `str`'s `Hash` adds).
    #[inline]
    pub(super) fn hash(&self, key: &[u8]) -> u64 {
        let mut hasher = self.0.build_hasher();
        hasher.write(key);
        hasher.finish()
    }
}

/// Keys up to this many bytes live inside the node; longer ones on the heap.
pub(super) const INLINE_KEY: usize = 22;

/// "No node": the end of the list.
const NIL: u32 = u32::MAX;

/// A map key, inline when short. Compared as bytes; never turned back into a `&str` (the
/// caller always has the key it asked for).
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(key: &str) -> Self {
        let src = key.as_bytes();
        if src.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..src.len()].copy_from_slice(src);
            Key::Inline {
                len: src.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(src.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }

    /// Whether this is `key`. A key of up to [`INLINE_KEY`] bytes is always stored inline and
    /// a longer one never, so the length check settles every mixed case.
    #[inline]
    fn is(&self, key: &[u8]) -> bool {
        match self {
            Key::Inline { len, bytes } => usize::from(*len) == key.len() && same_short(key, bytes),
            Key::Heap(stored) => **stored == *key,
        }
    }
}

/// Whether `probe` equals the first `probe.len()` bytes of `stored`, for a probe of at most
/// [`INLINE_KEY`] bytes: two or three overlapping word reads on each side, as foldhash reads
/// short strings, instead of a call to `memcmp` for a slice of unknown length. (An earlier
/// version copied the probe into a zero-padded array on the stack and compared arrays: the
/// wide loads that read the copy back could not be forwarded from the narrow stores that wrote
/// it, and that stall was a third of a hit's time with a small, cached working set.)
#[inline]
fn same_short(probe: &[u8], stored: &[u8; INLINE_KEY]) -> bool {
    let n = probe.len();
    let Some(stored) = stored.get(..n) else {
        return false;
    };
    let w8 = |s: &[u8], at: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let w4 = |s: &[u8], at: usize| u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]);
    match n {
        0 => true,
        1..=3 => {
            probe[0] == stored[0] && probe[n / 2] == stored[n / 2] && probe[n - 1] == stored[n - 1]
        }
        4..=7 => (w4(probe, 0) ^ w4(stored, 0)) | (w4(probe, n - 4) ^ w4(stored, n - 4)) == 0,
        8..=15 => (w8(probe, 0) ^ w8(stored, 0)) | (w8(probe, n - 8) ^ w8(stored, n - 8)) == 0,
        _ => {
            (w8(probe, 0) ^ w8(stored, 0))
                | (w8(probe, 8) ^ w8(stored, 8))
                | (w8(probe, n - 8) ^ w8(stored, n - 8))
                == 0
        }
    }
}

/// What a lookup reads: the key to compare, and the value. `repr(C)` keeps them in this order,
/// so that a hit reads one contiguous run of bytes: the key and the start of `value` (where the
/// shard keeps what a hit needs, see `shard::Entry`).
#[repr(C)]
struct Node<V> {
    key: Key,
    value: V,
}

/// A node's place in the LRU list: what a hit writes.
#[derive(Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
}

/// The position of an entry, from [`LruMap::find`]; valid until the next insert or remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot(u32);

/// An LRU-ordered map from string keys to `V`, hashed by the caller.
pub(super) struct LruMap<V> {
    table: HashTable<u32>,
    nodes: Vec<Node<V>>,
    links: Vec<Links>,
    head: u32,
    tail: u32,
    /// The most entries the map holds at once; the slabs never allocate beyond it.
    max_len: usize,
    hasher: KeyHasher,
}

impl<V> LruMap<V> {
    /// An empty map that will never hold more than `max_len` entries at once, for keys hashed
    /// by `hasher`. Nothing is allocated until the first insertion.
    pub(super) fn new(max_len: usize, hasher: KeyHasher) -> Self {
        LruMap {
            table: HashTable::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            head: NIL,
            tail: NIL,
            max_len: max_len.clamp(1, NIL as usize),
            hasher,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The entry stored under `key`; `hash` must be its hash by the map's [`KeyHasher`].
    ///
    /// Always inlined: it is most of a hit, and a call costs a hit ~15 instructions of register
    /// saves and restores that the compiler would not otherwise spend.
    #[inline(always)]
    pub(super) fn find(&self, hash: u64, key: &str) -> Option<Slot> {
        let nodes = &self.nodes;
        let key = key.as_bytes();
        self.table
            .find(hash, |&i| {
                let node = &nodes[i as usize];
                node.key.is(key)
            })
            .map(|&i| Slot(i))
    }

    #[inline]
    pub(super) fn get(&self, slot: Slot) -> &V {
        &self.nodes[slot.0 as usize].value
    }

    #[inline]
    pub(super) fn get_mut(&mut self, slot: Slot) -> &mut V {
        &mut self.nodes[slot.0 as usize].value
    }

    /// Marks the entry most recently used.
    #[inline]
    pub(super) fn touch(&mut self, slot: Slot) {
        if self.head != slot.0 {
            self.unlink(slot.0);
            self.push_front(slot.0);
        }
    }

    /// Inserts `key` (which must not be present) as the most recently used entry.
    ///
    /// # Panics
    /// When the map already holds `max_len` entries (a bug in the caller).
    pub(super) fn insert(&mut self, hash: u64, key: &str, value: V) -> Slot {
        debug_assert!(self.find(hash, key).is_none(), "key inserted twice");
        assert!(
            self.nodes.len() < self.max_len,
            "LruMap holds at most max_len entries"
        );
        let i = self.nodes.len() as u32;
        if self.nodes.len() == self.nodes.capacity() {
            // Double as `Vec` would, but never past `max_len`.
            let grow = self
                .nodes
                .capacity()
                .max(4)
                .min(self.max_len - self.nodes.len());
            self.nodes.reserve_exact(grow);
            self.links
                .reserve_exact(self.nodes.capacity() - self.links.len());
        }
        self.nodes.push(Node {
            key: Key::new(key),
            value,
        });
        self.links.push(Links {
            prev: NIL,
            next: NIL,
        });
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.table
            .insert_unique(hash, i, |&j| hasher.hash(nodes[j as usize].key.bytes()));
        self.push_front(i);
        Slot(i)
    }

    /// Removes the entry and returns its value. Invalidates every other [`Slot`].
    pub(super) fn remove(&mut self, slot: Slot) -> V {
        let i = slot.0;
        let hash = self.hash_of(i);
        self.unlink(i);
        self.table
            .find_entry(hash, |&j| j == i)
            .expect("every node is in the table")
            .remove();
        let last = (self.nodes.len() - 1) as u32;
        let node = self.nodes.swap_remove(i as usize);
        self.links.swap_remove(i as usize);
        if i != last {
            // The last node moved into `i`: repoint its bucket and its neighbours.
            let moved_hash = self.hash_of(i);
            let Links { prev, next } = self.links[i as usize];
            *self
                .table
                .find_mut(moved_hash, |&j| j == last)
                .expect("every node is in the table") = i;
            match prev {
                NIL => self.head = i,
                p => self.links[p as usize].next = i,
            }
            match next {
                NIL => self.tail = i,
                n => self.links[n as usize].prev = i,
            }
        }
        node.value
    }

    /// The least recently used entry.
    pub(super) fn lru(&self) -> Option<Slot> {
        (self.tail != NIL).then_some(Slot(self.tail))
    }

    pub(super) fn clear(&mut self) {
        self.table.clear();
        self.nodes.clear();
        self.links.clear();
        self.head = NIL;
        self.tail = NIL;
    }

    /// The hash node `i` is filed under in `table`.
    fn hash_of(&self, i: u32) -> u64 {
        self.hasher.hash(self.nodes[i as usize].key.bytes())
    }

    #[inline]
    fn unlink(&mut self, i: u32) {
        let Links { prev, next } = self.links[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.links[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.links[n as usize].prev = prev,
        }
    }

    #[inline]
    fn push_front(&mut self, i: u32) {
        let old_head = self.head;
        self.links[i as usize] = Links {
            prev: NIL,
            next: old_head,
        };
        match old_head {
            NIL => self.tail = i,
            h => self.links[h as usize].prev = i,
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn hash(key: &str) -> u64 {
        KeyHasher::with_seed(1).hash(key.as_bytes())
    }

    fn new_map(max_len: usize) -> LruMap<u32> {
        LruMap::new(max_len, KeyHasher::with_seed(1))
    }

    /// Keys from least to most recently used, walking the links both ways.
    fn order(map: &LruMap<u32>) -> Vec<u32> {
        let mut forward = Vec::new();
        let mut i = map.tail;
        while i != NIL {
            forward.push(map.nodes[i as usize].value);
            i = map.links[i as usize].prev;
        }
        let mut backward = Vec::new();
        let mut i = map.head;
        while i != NIL {
            backward.push(map.nodes[i as usize].value);
            i = map.links[i as usize].next;
        }
        backward.reverse();
        assert_eq!(forward, backward, "links disagree");
        assert_eq!(forward.len(), map.len());
        assert_eq!(map.links.len(), map.len());
        assert_eq!(map.table.len(), map.len());
        forward
    }

    fn insert(map: &mut LruMap<u32>, key: &str, value: u32) {
        map.insert(hash(key), key, value);
    }

    fn remove(map: &mut LruMap<u32>, key: &str) -> Option<u32> {
        let slot = map.find(hash(key), key)?;
        Some(map.remove(slot))
    }

    #[test]
    fn keeps_lru_order_through_touches_and_removals() {
        let mut map = new_map(1 << 20);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            insert(&mut map, k, i as u32);
        }
        assert_eq!(order(&map), [0, 1, 2, 3]);
        let b = map.find(hash("b"), "b").unwrap();
        map.touch(b);
        assert_eq!(order(&map), [0, 2, 3, 1]);
        assert_eq!(remove(&mut map, "a"), Some(0)); // the last node moves into slot 0
        assert_eq!(order(&map), [2, 3, 1]);
        assert_eq!(*map.get(map.find(hash("d"), "d").unwrap()), 3);
        assert_eq!(remove(&mut map, "b"), Some(1));
        assert_eq!(remove(&mut map, "b"), None);
        assert_eq!(order(&map), [2, 3]);
        let lru = map.lru().unwrap();
        assert_eq!(map.remove(lru), 2);
        assert_eq!(remove(&mut map, "d"), Some(3));
        assert_eq!(order(&map), Vec::<u32>::new());
        assert_eq!(map.lru(), None);
        insert(&mut map, "e", 4);
        assert_eq!(order(&map), [4]);
        map.clear();
        assert_eq!(order(&map), Vec::<u32>::new());
    }

    #[test]
    fn short_and_long_keys_are_found_and_not_confused() {
        let mut map = new_map(1 << 20);
        let long = "x".repeat(INLINE_KEY + 1);
        let edge = "y".repeat(INLINE_KEY);
        for (i, k) in ["", "k", edge.as_str(), long.as_str()].iter().enumerate() {
            insert(&mut map, k, i as u32);
        }
        for (i, k) in ["", "k", edge.as_str(), long.as_str()].iter().enumerate() {
            let slot = map.find(hash(k), k).expect("present");
            assert_eq!(*map.get(slot), i as u32);
        }
        assert!(map.find(hash("kk"), "kk").is_none());
        // Same hash, different key: the key comparison decides.
        assert!(map.find(hash("k"), "j").is_none());
    }

    #[test]
    fn keys_that_differ_only_in_trailing_zero_bytes_are_distinct() {
        // Inline keys are zero-padded: the length must take part in the comparison.
        let mut map = new_map(16);
        let keys = ["a", "a\0", "a\0\0", "", "\0"];
        for (i, k) in keys.iter().enumerate() {
            insert(&mut map, k, i as u32);
        }
        for (i, k) in keys.iter().enumerate() {
            // The same hash for every probe: only the key comparison tells them apart.
            let slot = map.find(hash(k), k).expect("present");
            assert_eq!(*map.get(slot), i as u32, "{k:?}");
        }
        let same_hash = hash("a");
        assert!(map.find(same_hash, "a\0").is_none());
    }

    #[test]
    fn short_keys_compare_equal_exactly_when_every_byte_is_equal() {
        let text = b"abcdefghijklmnopqrstuvwxyz";
        for len in 0..=INLINE_KEY {
            let src = &text[..len];
            let mut stored = [0; INLINE_KEY];
            stored[..len].copy_from_slice(src);
            assert!(same_short(src, &stored), "length {len}");
            for at in 0..len {
                let mut other = src.to_vec();
                other[at] ^= 0x20;
                assert!(!same_short(&other, &stored), "length {len}, byte {at}");
            }
        }
        assert!(!same_short(&[0; INLINE_KEY + 1], &[0; INLINE_KEY]));
    }

    #[test]
    fn a_full_map_carries_no_spare_capacity() {
        for max_len in [1, 5, 1000, 1563] {
            let mut map = new_map(max_len);
            for i in 0..max_len {
                insert(&mut map, &format!("key-{i}"), i as u32);
            }
            assert_eq!(map.nodes.capacity(), max_len, "nodes, max_len {max_len}");
            assert_eq!(map.links.capacity(), max_len, "links, max_len {max_len}");
            // Removing and inserting at the bound reuses the slots.
            let lru = map.lru().unwrap();
            map.remove(lru);
            insert(&mut map, "another", 0);
            assert_eq!(map.nodes.capacity(), max_len);
            order(&map);
        }
    }

    #[test]
    fn keys_are_found_after_growth_and_churn_without_stored_hashes() {
        // Removal and table growth hash the stored key again: short (inline) and long (heap)
        // keys must come back to the hash they were inserted with.
        let mut map = new_map(3000);
        let key = |i: u32| {
            if i.is_multiple_of(2) {
                format!("k{i}")
            } else {
                format!("a-key-longer-than-twenty-two-bytes-{i}")
            }
        };
        for i in 0..3000 {
            insert(&mut map, &key(i), i);
        }
        for round in 0..4u32 {
            for i in (round..3000).step_by(4) {
                assert_eq!(remove(&mut map, &key(i)), Some(i));
            }
            for i in (round..3000).step_by(4) {
                insert(&mut map, &key(i), i);
            }
        }
        for i in 0..3000 {
            let slot = map.find(hash(&key(i)), &key(i)).expect("present");
            assert_eq!(*map.get(slot), i);
        }
        order(&map);
    }

    #[test]
    fn a_node_is_its_key_slot_and_its_value() {
        assert_eq!(std::mem::size_of::<Node<u64>>(), 24 + 8);
    }

    #[test]
    fn random_operations_match_a_vec_model() {
        let mut map = new_map(1 << 20);
        let mut model: Vec<(String, u32)> = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = format!("key-{}", state % 64);
            match (state >> 32) % 3 {
                0 => match map.find(hash(&key), &key) {
                    Some(slot) => {
                        map.touch(slot);
                        *map.get_mut(slot) = step;
                        let pos = model.iter().position(|(k, _)| *k == key).unwrap();
                        model.remove(pos);
                        model.push((key, step));
                    }
                    None => {
                        insert(&mut map, &key, step);
                        model.push((key, step));
                    }
                },
                1 => {
                    let expected = model
                        .iter()
                        .position(|(k, _)| *k == key)
                        .map(|pos| model.remove(pos).1);
                    assert_eq!(remove(&mut map, &key), expected);
                }
                _ => {
                    if let Some(slot) = map.lru() {
                        assert_eq!(map.remove(slot), model.remove(0).1);
                    }
                }
            }
            let values: Vec<u32> = model.iter().map(|(_, v)| *v).collect();
            assert_eq!(order(&map), values);
        }
    }
}
