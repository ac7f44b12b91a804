//! A slab of values addressed by `u32` ids that are reused after removal.

use alloc::vec::Vec;

/// Values indexed by small integer ids; removed ids are reused (last removed, first reused).
#[derive(Debug, Clone)]
pub(crate) struct Arena<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            items: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Arena<T> {
    pub(crate) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        if let Some(id) = self.free.pop() {
            self.items[id as usize] = Some(value);
            id
        } else {
            self.items.push(Some(value));
            (self.items.len() - 1) as u32
        }
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<T> {
        let v = self.items.get_mut(id as usize)?.take()?;
        self.free.push(id);
        self.len -= 1;
        Some(v)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        self.items.get(id as usize)?.as_ref()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Live `(id, value)` pairs in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (i as u32, v)))
    }

    pub(crate) fn ids(&self) -> Vec<u32> {
        self.iter().map(|(i, _)| i).collect()
    }
}

impl<T> core::ops::Index<u32> for Arena<T> {
    type Output = T;
    /// Panics on a dead id: that is an internal bug of the allocator, never caused by input.
    fn index(&self, id: u32) -> &T {
        self.items[id as usize]
            .as_ref()
            .expect("gmlake internal error: dead arena id")
    }
}

impl<T> core::ops::IndexMut<u32> for Arena<T> {
    fn index_mut(&mut self, id: u32) -> &mut T {
        self.items[id as usize]
            .as_mut()
            .expect("gmlake internal error: dead arena id")
    }
}
