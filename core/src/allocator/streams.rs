//! Stream ordering with few events.
//!
//! A free on stream S needs no event for reuse on S: the stream orders the next user after the
//! last. For reuse on another stream, what matters is that the work enqueued on S before the free
//! has completed. Rather than record an event at every free (GMLake does, at a driver call per
//! free), each stream counts *epochs*: a free is stamped with S's open epoch (a [`Fence`]), and an
//! event is recorded on S only when another stream needs to know, closing the epoch. Once that
//! event completes, every free stamped with that epoch or an earlier one is safe everywhere.
//! A single-stream workload records no events at all.

use super::types::*;
use super::Allocator;
use crate::device::{Device, DeviceResult, DriverCall, EventHandle, StreamHandle};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use hashbrown::HashMap;

#[derive(Debug)]
pub(crate) struct StreamState {
    pub handle: StreamHandle,
    /// The open epoch: frees now are stamped with it.
    pub epoch: u64,
    /// Every epoch below this has completed.
    pub completed: u64,
    /// Some free was stamped with the open epoch.
    pub dirty: bool,
    /// Events recorded to close epochs, oldest first: `(event, epoch it closed)`.
    pub pending: VecDeque<(EventHandle, u64)>,
}

#[derive(Debug, Default)]
pub(crate) struct Streams {
    pub list: Vec<StreamState>,
    index: HashMap<u64, StreamIdx>,
    last: Option<(u64, StreamIdx)>,
    pub free_events: Vec<EventHandle>,
    /// Events recorded and not yet seen complete, over all streams.
    pub outstanding: usize,
}

impl Streams {
    /// Whether the work behind `f` has completed.
    pub fn done(&self, f: Fence) -> bool {
        f == Fence::NONE || self.list[f.stream as usize].completed > f.epoch
    }

    /// Whether memory fenced by `f` may be used by stream `s` now.
    pub fn safe_for(&self, f: Fence, s: StreamIdx) -> bool {
        f.stream == s || self.done(f)
    }

    /// The fence of a free on stream `s` now.
    pub fn free_fence(&mut self, s: StreamIdx) -> Fence {
        let st = &mut self.list[s as usize];
        st.dirty = true;
        Fence {
            stream: s,
            epoch: st.epoch,
        }
    }

    /// The fence of two adjacent free blocks merged, or `None` if neither covers the other (two
    /// streams' work, both still pending).
    pub fn merge(&self, a: Fence, b: Fence) -> Option<Fence> {
        if a.stream == b.stream {
            Some(Fence {
                stream: a.stream,
                epoch: a.epoch.max(b.epoch),
            })
        } else if self.done(a) {
            Some(b)
        } else if self.done(b) {
            Some(a)
        } else {
            None
        }
    }

    /// After a device synchronization: every epoch so far has completed. Returns the events that
    /// were pending, for reuse.
    pub fn complete_all(&mut self) -> Vec<EventHandle> {
        let mut evs = Vec::new();
        for st in &mut self.list {
            st.completed = st.epoch + 1;
            st.epoch += 1;
            st.dirty = false;
            evs.extend(st.pending.drain(..).map(|(e, _)| e));
        }
        self.outstanding = 0;
        evs
    }
}

impl<D: Device> Allocator<D> {
    /// The index of `stream`, registering it on first sight.
    pub(super) fn stream_index(&mut self, stream: StreamHandle) -> StreamIdx {
        if let Some((h, i)) = self.streams.last {
            if h == stream.0 {
                return i;
            }
        }
        let i = match self.streams.index.get(&stream.0) {
            Some(&i) => i,
            None => {
                let i = self.streams.list.len() as StreamIdx;
                self.streams.list.push(StreamState {
                    handle: stream,
                    epoch: 0,
                    completed: 0,
                    dirty: false,
                    pending: VecDeque::new(),
                });
                self.streams.index.insert(stream.0, i);
                i
            }
        };
        self.streams.last = Some((stream.0, i));
        i
    }

    fn take_event(&mut self) -> DeviceResult<EventHandle> {
        match self.streams.free_events.pop() {
            Some(e) => Ok(e),
            None => self.call(DriverCall::CreateEvent, |d| d.create_event()),
        }
    }

    /// Records an event on stream `s` closing its open epoch if anything was freed in it.
    fn close_epoch(&mut self, s: StreamIdx) -> DeviceResult<()> {
        if !self.streams.list[s as usize].dirty {
            return Ok(());
        }
        let ev = self.take_event()?;
        let handle = self.streams.list[s as usize].handle;
        if let Err(e) = self.call(DriverCall::RecordEvent, |d| d.record_event(ev, handle)) {
            self.streams.free_events.push(ev);
            return Err(e);
        }
        let st = &mut self.streams.list[s as usize];
        st.pending.push_back((ev, st.epoch));
        st.epoch += 1;
        st.dirty = false;
        self.streams.outstanding += 1;
        Ok(())
    }

    /// Queries stream `s`'s pending events in order, without blocking.
    fn poll(&mut self, s: StreamIdx) {
        while let Some(&(ev, epoch)) = self.streams.list[s as usize].pending.front() {
            match self.call(DriverCall::QueryEvent, |d| d.query_event(ev)) {
                Ok(true) => {
                    let st = &mut self.streams.list[s as usize];
                    st.pending.pop_front();
                    st.completed = st.completed.max(epoch + 1);
                    self.streams.outstanding -= 1;
                    self.streams.free_events.push(ev);
                }
                _ => break,
            }
        }
    }

    /// Closes and polls the epochs of every stream but `s`, so that other streams' frees become
    /// usable by `s` once their work is done. A failure to record leaves those frees fenced.
    /// Nothing during a capture.
    pub(super) fn advance_other_streams(&mut self, s: StreamIdx) {
        if self.capturing() {
            return;
        }
        for t in 0..self.streams.list.len() as StreamIdx {
            if t != s {
                let _ = self.close_epoch(t);
                self.poll(t);
            }
        }
    }

    /// Makes sure the fence `f` is seen complete if its work is done: closes its epoch if still
    /// open and polls (not during a capture). Returns whether it is complete.
    pub(super) fn try_complete(&mut self, f: Fence) -> bool {
        if self.streams.done(f) || self.capturing() {
            return self.streams.done(f);
        }
        let st = &self.streams.list[f.stream as usize];
        if st.epoch == f.epoch {
            let _ = self.close_epoch(f.stream);
        }
        self.poll(f.stream);
        self.streams.done(f)
    }

    /// Waits for the work behind fence `f` if it is not seen complete (a synchronization of its
    /// stream), then polls: whether it is complete now. Never during a capture.
    pub(super) fn wait_for(&mut self, f: Fence) -> bool {
        if self.try_complete(f) || self.capturing() {
            return self.streams.done(f);
        }
        let handle = self.streams.list[f.stream as usize].handle;
        if self
            .call(DriverCall::SynchronizeStream, |d| {
                d.synchronize_stream(handle)
            })
            .is_err()
        {
            return false;
        }
        self.poll(f.stream);
        self.streams.done(f)
    }

    /// A fence covering all work enqueued on stream `x` until now (for `record_stream` frees).
    /// Records an event; if that fails, synchronizes the stream instead.
    pub(super) fn fence_now(&mut self, x: StreamIdx) -> DeviceResult<Fence> {
        let epoch = self.streams.list[x as usize].epoch;
        self.streams.list[x as usize].dirty = true;
        if self.close_epoch(x).is_ok() {
            return Ok(Fence { stream: x, epoch });
        }
        let handle = self.streams.list[x as usize].handle;
        self.call(DriverCall::SynchronizeStream, |d| {
            d.synchronize_stream(handle)
        })?;
        let st = &mut self.streams.list[x as usize];
        st.completed = st.completed.max(epoch + 1);
        st.epoch = st.epoch.max(epoch + 1);
        st.dirty = false;
        Ok(Fence { stream: x, epoch })
    }

    /// Polls outstanding events and finishes frees whose recorded streams' work is done
    /// (PyTorch's `process_events`). Cheap when nothing is outstanding; nothing during a capture.
    pub(super) fn process_events(&mut self) {
        if (self.streams.outstanding == 0 && self.pending_frees.is_empty()) || self.capturing() {
            return;
        }
        self.finish_capture_deferred_frees();
        for s in 0..self.streams.list.len() as StreamIdx {
            if !self.streams.list[s as usize].pending.is_empty() {
                self.poll(s);
            }
        }
        if self.pending_frees.is_empty() {
            return;
        }
        let pending = core::mem::take(&mut self.pending_frees);
        for p in pending {
            if !p.awaiting_capture && p.fences.iter().all(|&f| self.streams.done(f)) {
                let fence = self.streams.free_fence(p.live.stream);
                self.finish_free(p.live, fence);
            } else {
                self.pending_frees.push(p);
            }
        }
    }

    /// After a device synchronization: all work is done; finish every pending free.
    pub(super) fn after_device_sync(&mut self) {
        let evs = self.streams.complete_all();
        self.streams.free_events.extend(evs);
        // All work has completed, including what used these blocks.
        for p in core::mem::take(&mut self.pending_frees) {
            self.finish_free(p.live, Fence::NONE);
        }
    }

    /// Destroys pooled events (all events, after a synchronization). One the device refuses to
    /// destroy stays pooled.
    pub(super) fn destroy_pooled_events(&mut self) {
        for ev in core::mem::take(&mut self.streams.free_events) {
            if self
                .call(DriverCall::DestroyEvent, |d| d.destroy_event(ev))
                .is_err()
            {
                self.streams.free_events.push(ev);
            }
        }
    }
}
