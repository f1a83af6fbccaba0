//! Pooled buffers for the file lines of large responses.
//!
//! A segment of lines (thousands of files, megabytes) is written into a buffer taken from the
//! pool and handed to the connection as a `Bytes` that owns it; once the connection has
//! written and dropped that chunk, the buffer goes back to the pool. Without the pool every
//! segment was a fresh allocation that the allocator served with fresh (faulted, zeroed)
//! pages.
//!
//! Invariant: the pool keeps at most `BUFFERS_KEPT_MAX` idle buffers, each of at most
//! `BUFFER_BYTES_KEPT_MAX` capacity; anything beyond is freed.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

/// Idle buffers kept: enough for the segments of two large responses in flight.
pub const BUFFERS_KEPT_MAX: usize = 16;
/// Largest buffer capacity worth keeping.
pub const BUFFER_BYTES_KEPT_MAX: usize = 8 << 20;

/// The pool (one per node).
#[derive(Default)]
pub struct LineBuffers {
    idle: Mutex<Vec<BytesMut>>,
}

impl LineBuffers {
    /// An empty buffer of at least `capacity` bytes, reused when the pool has one.
    pub fn take(&self, capacity: usize) -> BytesMut {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let mut buffer = reused.unwrap_or_default();
        buffer.reserve(capacity);
        buffer
    }

    /// A body chunk holding `lines`; their buffer returns to the pool when the chunk is dropped.
    pub fn chunk(self: &Arc<Self>, lines: BytesMut) -> Bytes {
        Bytes::from_owner(PooledLines {
            lines,
            pool: self.clone(),
        })
    }

    /// Returns a buffer that was not sent (its lines were copied elsewhere).
    pub fn give_back(&self, mut buffer: BytesMut) {
        if buffer.capacity() > BUFFER_BYTES_KEPT_MAX {
            return;
        }
        buffer.clear();
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < BUFFERS_KEPT_MAX {
            idle.push(buffer);
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// The owner behind a pooled chunk.
struct PooledLines {
    lines: BytesMut,
    pool: Arc<LineBuffers>,
}

impl AsRef<[u8]> for PooledLines {
    fn as_ref(&self) -> &[u8] {
        &self.lines
    }
}

impl Drop for PooledLines {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.lines));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn a_chunk_gives_its_buffer_back_when_dropped() {
        let pool = Arc::new(LineBuffers::default());
        let mut lines = pool.take(1 << 20);
        let allocation = lines.as_ptr();
        lines.put_slice(b"{\"file\":{}}\n");
        let chunk = pool.chunk(lines);
        let copy = chunk.slice(2..6);
        assert_eq!(&chunk[..], b"{\"file\":{}}\n");
        drop(chunk);
        assert_eq!(pool.idle_count(), 0, "a slice still holds the buffer");
        assert_eq!(&copy[..], b"file");
        drop(copy);
        assert_eq!(pool.idle_count(), 1);
        let again = pool.take(1 << 20);
        assert!(again.is_empty() && again.capacity() >= 1 << 20);
        assert_eq!(again.as_ptr(), allocation, "the same allocation is reused");
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_modest_buffers() {
        let pool = Arc::new(LineBuffers::default());
        let chunks: Vec<Bytes> = (0..BUFFERS_KEPT_MAX + 3)
            .map(|_| pool.chunk(pool.take(1024)))
            .collect();
        drop(chunks);
        assert_eq!(pool.idle_count(), BUFFERS_KEPT_MAX);
        let huge = Arc::new(LineBuffers::default());
        drop(huge.chunk(huge.take(BUFFER_BYTES_KEPT_MAX + 1)));
        assert_eq!(huge.idle_count(), 0);
    }
}
