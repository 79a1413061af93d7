//! [`LruMap`]: the map inside each shard, an LRU list over a hash table that takes the key's hash
//! from the caller.
//!
//! Why not `lru::LruCache`: it hashes the key again inside the map (the cache already hashed it
//! to pick the shard), allocates one node per entry and one more for the key, and follows two
//! pointers before it can compare a key. Here the hash is computed once per operation, nodes
//! live in one slab linked by `u32` indices, and keys of up to [`INLINE_KEY`] bytes are stored in
//! the node itself, so a lookup touches the table's control bytes, one bucket and one node.
//!
//! Invariants:
//! - `table` holds exactly the indices `0..nodes.len()`, each under its node's `hash`;
//! - the `prev`/`next` links form one list over all nodes, `head` the most recently used end,
//!   `tail` the least recently used, both [`NIL`] when the map is empty;
//! - removal moves the last node into the freed index (`swap_remove`) and repoints its table
//!   bucket and neighbours, so the slab stays dense and needs no free list.
//!
//! A [`Slot`] found by [`LruMap::find`] stays valid until the next insertion or removal.

use hashbrown::HashTable;

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

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }
}

struct Node<V> {
    hash: u64,
    key: Key,
    prev: u32,
    next: u32,
    value: V,
}

/// The position of an entry, from [`LruMap::find`]; valid until the next insert or remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot(u32);

/// An LRU-ordered map from string keys to `V`, hashed by the caller.
pub(super) struct LruMap<V> {
    table: HashTable<u32>,
    nodes: Vec<Node<V>>,
    head: u32,
    tail: u32,
}

impl<V> LruMap<V> {
    pub(super) fn new() -> Self {
        LruMap {
            table: HashTable::new(),
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The entry stored under `key`; `hash` must be the hash `key` was inserted with.
    #[inline]
    pub(super) fn find(&self, hash: u64, key: &str) -> Option<Slot> {
        let nodes = &self.nodes;
        let key = key.as_bytes();
        self.table
            .find(hash, |&i| {
                let node = &nodes[i as usize];
                node.hash == hash && node.key.as_bytes() == key
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
    pub(super) fn insert(&mut self, hash: u64, key: &str, value: V) -> Slot {
        debug_assert!(self.find(hash, key).is_none(), "key inserted twice");
        let i = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&i| i != NIL)
            .expect("a shard holds fewer than 2^32 - 1 entries");
        self.nodes.push(Node {
            hash,
            key: Key::new(key),
            prev: NIL,
            next: NIL,
            value,
        });
        let nodes = &self.nodes;
        self.table
            .insert_unique(hash, i, |&j| nodes[j as usize].hash);
        self.push_front(i);
        Slot(i)
    }

    /// Removes the entry and returns its value. Invalidates every other [`Slot`].
    pub(super) fn remove(&mut self, slot: Slot) -> V {
        let i = slot.0;
        let hash = self.nodes[i as usize].hash;
        self.unlink(i);
        self.table
            .find_entry(hash, |&j| j == i)
            .expect("every node is in the table")
            .remove();
        let last = (self.nodes.len() - 1) as u32;
        let node = self.nodes.swap_remove(i as usize);
        if i != last {
            // The last node moved into `i`: repoint its bucket and its neighbours.
            let (moved_hash, prev, next) = {
                let moved = &self.nodes[i as usize];
                (moved.hash, moved.prev, moved.next)
            };
            *self
                .table
                .find_mut(moved_hash, |&j| j == last)
                .expect("every node is in the table") = i;
            match prev {
                NIL => self.head = i,
                p => self.nodes[p as usize].next = i,
            }
            match next {
                NIL => self.tail = i,
                n => self.nodes[n as usize].prev = i,
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
        self.head = NIL;
        self.tail = NIL;
    }

    #[inline]
    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let node = &self.nodes[i as usize];
            (node.prev, node.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    #[inline]
    fn push_front(&mut self, i: u32) {
        let old_head = self.head;
        {
            let node = &mut self.nodes[i as usize];
            node.prev = NIL;
            node.next = old_head;
        }
        match old_head {
            NIL => self.tail = i,
            h => self.nodes[h as usize].prev = i,
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash(key: &str) -> u64 {
        foldhash::fast::FixedState::with_seed(1).hash_one(key)
    }

    /// Keys from least to most recently used, walking the links both ways.
    fn order(map: &LruMap<u32>) -> Vec<u32> {
        let mut forward = Vec::new();
        let mut i = map.tail;
        while i != NIL {
            forward.push(map.nodes[i as usize].value);
            i = map.nodes[i as usize].prev;
        }
        let mut backward = Vec::new();
        let mut i = map.head;
        while i != NIL {
            backward.push(map.nodes[i as usize].value);
            i = map.nodes[i as usize].next;
        }
        backward.reverse();
        assert_eq!(forward, backward, "links disagree");
        assert_eq!(forward.len(), map.len());
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
        let mut map = LruMap::new();
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
        let mut map = LruMap::new();
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
    fn random_operations_match_a_vec_model() {
        let mut map = LruMap::new();
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
