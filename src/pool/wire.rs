//! The pool's own messages, orders to a worker and its reports, in a wire form written by
//! hand: a kind byte, then numbers as LEB128 varints, then the chunk's (or the results')
//! bytes as they are. Both ends are this binary, and one of each passes per task; as
//! serde-derived enums through postcard they cost the manager a tenth of its time to decode,
//! where these few byte reads cost almost nothing. The queues carry them as bytes, and every
//! length and position read from them is checked: a worker's bytes are shared memory.

use crate::{Error, Result};

/// What the pool sends a worker, borrowing the chunks from the message it was decoded from.
pub(crate) enum Order<'a> {
    /// Run a chunk: the runner's offset in the binary, the address of the closure it runs
    /// (0 for a stateless function), and the encoded `Vec<Args>`. With `handles`, the
    /// descriptors of the handles in its arguments come on the worker's handle socket, in one
    /// message that names the task.
    Run {
        task: u64,
        /// Its place in the stream of chunks sent to this worker (see
        /// [`Board::begin`](super::board::Board::begin)).
        seq: u64,
        runner: i64,
        closure: u64,
        chunk: &'a [u8],
        handles: bool,
    },
    /// Finish: exit once the orders before this one are done.
    Stop,
    /// Run several chunks of one function, one after the other, each reported before the
    /// next begins, as if each had come in a `Run` of its own (without handles): one message
    /// for many tiny chunks. A chunk the pool cancelled meanwhile is passed over (see
    /// [`Board`](super::board::Board)).
    Many { runner: i64, closure: u64, pieces: Pieces<'a> },
}

/// The chunks of an [`Order::Many`], read as they are iterated (checked whole when the order
/// was decoded).
#[derive(Clone, Copy)]
pub(crate) struct Pieces<'a> {
    /// The place of the first in the worker's stream of chunks; the others follow it.
    first_seq: u64,
    /// Each chunk's task number, length and bytes.
    bytes: &'a [u8],
}

/// One chunk of an [`Order::Many`]: its task number, its place in the stream of chunks sent
/// to the worker, and its encoded arguments.
pub(crate) struct Piece<'a>(pub(crate) u64, pub(crate) u64, pub(crate) &'a [u8]);

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let mut r = Reader(self.bytes);
        let task = r.varint()?;
        let len = r.len()?;
        let chunk = r.take(len)?;
        self.bytes = r.0;
        let seq = self.first_seq;
        self.first_seq = seq.wrapping_add(1);
        Some(Piece(task, seq, chunk))
    }
}

/// What a worker (or the pool itself, to wake its manager) puts on the result queue,
/// borrowing the results from the message.
pub(crate) enum Report<'a> {
    /// A chunk is done: the encoded `Vec<Result<Output, String>>`.
    Done { worker: u64, task: u64, results: &'a [u8] },
    /// The initializer panicked: the worker exits without running anything.
    InitFailed { worker: u64, message: &'a str },
    /// Nothing: the pool has news for its manager (a new task, a close).
    Wake,
}

const RUN: u8 = 1;
const STOP: u8 = 2;
const MANY: u8 = 3;
const DONE: u8 = 1;
const INIT_FAILED: u8 = 2;
const WAKE: u8 = 3;

impl<'a> Order<'a> {
    /// Appends a [`Order::Run`].
    pub(crate) fn put_run(
        out: &mut Vec<u8>,
        task: u64,
        seq: u64,
        runner: i64,
        closure: u64,
        chunk: &[u8],
        handles: bool,
    ) {
        out.push(RUN);
        put_varint(out, task);
        put_varint(out, seq);
        put_varint(out, zigzag(runner));
        put_varint(out, closure);
        out.push(u8::from(handles));
        out.extend_from_slice(chunk);
    }

    /// An encoded [`Order::Stop`].
    pub(crate) fn stop() -> Vec<u8> {
        vec![STOP]
    }

    /// Appends a [`Order::Many`] of the chunks `pieces` (task number and bytes), the first of
    /// them at place `first_seq` in the worker's stream and the others after it.
    pub(crate) fn put_many<'p>(
        out: &mut Vec<u8>,
        runner: i64,
        closure: u64,
        first_seq: u64,
        pieces: impl IntoIterator<Item = (u64, &'p [u8])>,
    ) {
        out.push(MANY);
        put_varint(out, zigzag(runner));
        put_varint(out, closure);
        put_varint(out, first_seq);
        for (task, chunk) in pieces {
            put_varint(out, task);
            put_varint(out, chunk.len() as u64);
            out.extend_from_slice(chunk);
        }
    }

    /// Reads an order; an error for bytes that are not one, whole.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Order<'a>> {
        Order::read(Reader(bytes)).ok_or_else(|| bad("an order"))
    }

    fn read(mut r: Reader<'a>) -> Option<Order<'a>> {
        match r.byte()? {
            RUN => {
                let (task, seq, runner, closure) = (r.varint()?, r.varint()?, unzigzag(r.varint()?), r.varint()?);
                let handles = match r.byte()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                Some(Order::Run { task, seq, runner, closure, chunk: r.0, handles })
            }
            STOP if r.0.is_empty() => Some(Order::Stop),
            MANY => {
                let (runner, closure, first_seq) = (unzigzag(r.varint()?), r.varint()?, r.varint()?);
                let pieces = Pieces { first_seq, bytes: r.0 };
                // Checked whole here, so that iterating cannot meet a bad piece.
                while !r.0.is_empty() {
                    r.varint()?;
                    let len = r.len()?;
                    r.take(len)?;
                }
                Some(Order::Many { runner, closure, pieces })
            }
            _ => None,
        }
    }
}

impl<'a> Report<'a> {
    /// Appends the start of a [`Report::Done`]: the results go right after it.
    pub(crate) fn put_done_head(out: &mut Vec<u8>, worker: u64, task: u64) {
        out.push(DONE);
        put_varint(out, worker);
        put_varint(out, task);
    }

    /// Appends a report.
    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        match *self {
            Report::Done { worker, task, results } => {
                Report::put_done_head(out, worker, task);
                out.extend_from_slice(results);
            }
            Report::InitFailed { worker, message } => {
                out.push(INIT_FAILED);
                put_varint(out, worker);
                out.extend_from_slice(message.as_bytes());
            }
            Report::Wake => out.push(WAKE),
        }
    }

    /// Reads a report; an error for bytes that are not one, whole.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Report<'a>> {
        Report::read(Reader(bytes)).ok_or_else(|| bad("a report"))
    }

    fn read(mut r: Reader<'a>) -> Option<Report<'a>> {
        match r.byte()? {
            DONE => Some(Report::Done { worker: r.varint()?, task: r.varint()?, results: r.0 }),
            INIT_FAILED => Some(Report::InitFailed { worker: r.varint()?, message: std::str::from_utf8(r.0).ok()? }),
            WAKE if r.0.is_empty() => Some(Report::Wake),
            _ => None,
        }
    }
}

fn bad(what: &str) -> Error {
    Error::Codec(format!("pool message: bytes that are not {what}"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A signed number as an unsigned one that stays short when the number is small either way.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Reads a message from the front; `None` where it does not hold what is read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A varint of at most 10 bytes whose value fits in 64 bits.
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// A length, as a varint no longer than what is left.
    #[inline]
    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok().filter(|&n| n <= self.0.len())
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_read_back_as_written() {
        let mut out = Vec::new();
        Order::put_run(&mut out, 7, 3, -1234, 0, b"args", true);
        match Order::decode(&out).unwrap() {
            Order::Run { task: 7, seq: 3, runner: -1234, closure: 0, chunk: b"args", handles: true } => {}
            _ => panic!("a Run read back as something else"),
        }
        out.clear();
        let chunks: [&[u8]; 3] = [b"a", b"", &[0x80; 200]];
        Order::put_many(&mut out, i64::MIN, u64::MAX, 41, [(u64::MAX, chunks[0]), (0, chunks[1]), (300, chunks[2])]);
        let Order::Many { runner: i64::MIN, closure: u64::MAX, pieces } = Order::decode(&out).unwrap() else {
            panic!("a Many read back as something else");
        };
        let read: Vec<_> = pieces.map(|Piece(task, seq, chunk)| (task, seq, chunk.to_vec())).collect();
        assert_eq!(read, vec![(u64::MAX, 41, b"a".to_vec()), (0, 42, vec![]), (300, 43, vec![0x80; 200])]);
        assert!(matches!(Order::decode(&Order::stop()).unwrap(), Order::Stop));
    }

    #[test]
    fn reports_read_back_as_written() {
        let mut out = Vec::new();
        Report::Done { worker: 2, task: 1 << 40, results: b"\x01\x02" }.put(&mut out);
        assert!(matches!(
            Report::decode(&out).unwrap(),
            Report::Done { worker: 2, task: 0x100_0000_0000, results: b"\x01\x02" }
        ));
        out.clear();
        Report::InitFailed { worker: 9, message: "boom: ü" }.put(&mut out);
        assert!(matches!(Report::decode(&out).unwrap(), Report::InitFailed { worker: 9, message: "boom: ü" }));
        out.clear();
        Report::Wake.put(&mut out);
        assert!(matches!(Report::decode(&out).unwrap(), Report::Wake));
    }

    /// A worker's bytes are shared memory: whatever they hold is an error, never a panic or
    /// a read past the message.
    #[test]
    fn bad_bytes_are_refused() {
        let mut many = Vec::new();
        Order::put_many(&mut many, 1, 0, 1, [(5, &b"abc"[..])]);
        let cut = &many[..many.len() - 1];
        let mut long_len = many.clone();
        let at = long_len.len() - 4;
        long_len[at] = 100;
        let refused: [&[u8]; 10] = [
            b"",
            &[0],
            &[RUN, 1, 1, 2, 0, 2],
            &[STOP, 0],
            &[MANY, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            &[MANY, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            cut,
            &long_len,
            &[RUN, 1],
            &[9],
        ];
        for bytes in refused {
            assert!(Order::decode(bytes).is_err(), "{bytes:?} read as an order");
        }
        let refused: [&[u8]; 5] = [b"", &[DONE, 0x80], &[INIT_FAILED, 1, 0xff, 0xfe], &[WAKE, 0], &[0]];
        for bytes in refused {
            assert!(Report::decode(bytes).is_err(), "{bytes:?} read as a report");
        }
    }
}
