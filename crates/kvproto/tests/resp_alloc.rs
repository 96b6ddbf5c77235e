//! The RESP2 decoders do not allocate in proportion to a length the peer merely claims.
//!
//! A counting allocator records the largest single allocation while hostile headers are
//! decoded with every limit lifted. This file holds one test, so its binary runs nothing else
//! at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kvproto::resp::{CommandDecoder, Decoder, Limits, decode, parse_command};

/// The system allocator, noting the largest block asked for.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which `System.alloc` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc` and `realloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract, which `System.realloc` shares.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn hostile_headers_allocate_nothing_in_proportion_to_their_claims() {
    let unlimited = Limits {
        max_bulk_bytes: usize::MAX,
        max_array_len: usize::MAX,
        max_depth: 64,
        max_inline_bytes: usize::MAX,
    };
    let values: [&[u8]; 5] = [
        b"*2147483647\r\n",
        b"*1000000000\r\n:1\r\n",
        b"$999999999\r\n",
        b"*1\r\n$999999999\r\nabc",
        b"*9223372036854775807\r\n*9223372036854775807\r\n$9223372036854775807\r\nab",
    ];
    let commands: [&[u8]; 4] = [
        b"*2147483647\r\n",
        b"*1000000000\r\n$1\r\na\r\n",
        b"*1\r\n$999999999\r\nabc",
        b"*9223372036854775807\r\n$9223372036854775807\r\nab",
    ];
    LARGEST.store(0, Ordering::Relaxed);
    for buf in values {
        assert_eq!(decode(buf, &unlimited), Ok(None));
        let mut decoder = Decoder::new(unlimited);
        for end in 1..=buf.len() {
            assert_eq!(decoder.decode(&buf[..end]), Ok(None));
        }
    }
    for buf in commands {
        assert_eq!(parse_command(buf, &unlimited), Ok(None));
        let mut decoder = CommandDecoder::new(unlimited);
        for end in 1..=buf.len() {
            assert_eq!(decoder.parse(&buf[..end]), Ok(None));
        }
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < 4096, "an allocation of {largest} bytes");
}
