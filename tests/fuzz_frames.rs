//! Property tests (a small fuzzer, no extra crates) over frame decoding and the handshake.
//!
//! * `fuzz_frames`: random and mutated byte streams (valid frames, the 8-byte long form,
//!   hostile lengths, truncations, garbage) go through a socket pair into `recv_bytes`,
//!   `recv_bytes_max`, `recv_bytes_into` and `recv`, on a fresh handle (read-ahead) or a
//!   cloned one (exact reads). Every result is checked against a reference decoder of
//!   CPython's framing: the same messages in the same order, and the error CPython's rules
//!   give where the stream goes bad.
//! * `fuzz_listener_handshake` / `fuzz_client_handshake`: a raw peer plays CPython's handshake
//!   against `Listener::accept` / `Client::connect`, correctly or with a step mutated (bit
//!   flips, wrong keys, unknown digests, short or oversized messages, hang-ups). The handshake
//!   must succeed exactly when every step was right, and fail with an error otherwise.
//!
//! Always: no panic, no hang (every wait has a deadline), and bounded allocation: a counting
//! global allocator records the largest single allocation each thread asks for. A length
//! over the cap allocates nothing; under it, at most 64 MiB is allocated ahead of the bytes,
//! and past that no more than twice what the peer actually sent. The handshake allocates
//! no more than 64 KiB at once whatever the peer announces.
//!
//! Environment: `MP_FUZZ_SECS` (time per target, default 3), `MP_FUZZ_ITERS` (iterations per
//! target; set alone, no time limit), `MP_FUZZ_SEED` (replay a run; the seed and iteration
//! are printed with any failure).
mod common;
use common::{hmac_md5, hmac_sha256};
use multiprocess::connection::{Address, Client, Listener};
use multiprocess::{Connection, Error};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Allocation accounting.

/// The system allocator, noting the largest single request per thread.
struct Counting;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| {
        if size > p.get() {
            p.set(size)
        }
    });
}

// SAFETY: every call goes straight to `System` with the caller's arguments; noting a size
// touches only a const-initialised thread-local `Cell`, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as given.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded as given.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the largest allocation this thread made meanwhile.
fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    PEAK.with(|p| p.set(0));
    let r = f();
    (r, PEAK.with(|p| p.get()))
}

/// What a connection allocates at once for an announced payload before its bytes arrive
/// (`ALLOC_AHEAD` in `src/connection/mod.rs`).
const ALLOC_AHEAD: usize = 64 << 20;
/// Room for the read-ahead buffer, error messages and bookkeeping.
const SLACK: usize = 64 << 10;

// ---------------------------------------------------------------------------------------------
// The generator.

/// splitmix64: small, fast, and good enough to drive a fuzzer.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, iteration: u64) -> Rng {
        let mut r = Rng(seed ^ iteration.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A payload length: mostly small, sometimes around the 16 KiB read-ahead buffer, rarely
/// larger than a socket buffer.
fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(20) {
        0..=11 => rng.range(0, 40),
        12..=16 => rng.range(0, 300),
        17 | 18 => rng.range(16 * 1024 - 16, 16 * 1024 + 16),
        _ => rng.range(60_000, 300_000),
    }
}

/// A length header announcing far more than will come (or nonsense).
fn hostile_header(rng: &mut Rng) -> Vec<u8> {
    let short: i32 = *rng.pick(&[i32::MIN, -2, -1000, i32::MAX, 1 << 30, (1 << 30) + 1, 257, 1 << 20]);
    let long: u64 =
        *rng.pick(&[1 << 62, u64::MAX, i64::MAX as u64, (1 << 30) + 1, 1 << 40, (1 << 40) + 1, 3 << 30, 0, 5]);
    if rng.one_in(2) {
        short.to_be_bytes().to_vec()
    } else {
        [(-1i32).to_be_bytes().as_slice(), &long.to_be_bytes()].concat()
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    [(payload.len() as i32).to_be_bytes().as_slice(), payload].concat()
}

fn long_frame(payload: &[u8]) -> Vec<u8> {
    [(-1i32).to_be_bytes().as_slice(), &(payload.len() as u64).to_be_bytes(), payload].concat()
}

/// A stream of frames, mostly well formed, then perhaps mutated.
fn gen_stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.range(0, 6) {
        match rng.below(12) {
            0..=4 => {
                let n = payload_len(rng);
                out.extend(frame(&rng.bytes(n)));
            }
            5 | 6 => {
                let n = payload_len(rng);
                out.extend(long_frame(&rng.bytes(n)));
            }
            7 => {
                // Something `recv::<Vec<u16>>` can decode.
                let v: Vec<u16> = (0..rng.range(0, 20)).map(|_| rng.next() as u16).collect();
                out.extend(frame(&postcard::to_allocvec(&v).unwrap()));
            }
            8 => {
                out.extend(hostile_header(rng));
                let n = rng.range(0, 16);
                out.extend(rng.bytes(n));
            }
            9 => {
                let n = rng.range(1, 20);
                out.extend(rng.bytes(n));
            }
            10 => {
                // A frame cut short.
                let n = rng.range(1, 300);
                let f = frame(&rng.bytes(n));
                let cut = rng.range(1, f.len() - 1);
                out.extend(&f[..cut]);
            }
            _ => out.extend(frame(b"")),
        }
    }
    mutate(rng, &mut out);
    out
}

/// Zero to a few byte-level mutations, AFL style.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    if !rng.one_in(3) {
        return;
    }
    for _ in 0..rng.range(1, 4) {
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len() as u64) as usize;
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len() as u64) as usize;
                data[i] = *rng.pick(&[0, 0xff, 0x7f, 0x80, 1]);
            }
            2 => {
                let i = rng.range(0, data.len());
                let n = rng.range(1, 8);
                let extra = rng.bytes(n);
                data.splice(i..i, extra);
            }
            3 if !data.is_empty() => {
                let i = rng.below(data.len() as u64) as usize;
                let j = rng.range(i, data.len().min(i + 16));
                data.drain(i..j);
            }
            4 => {
                let i = rng.range(0, data.len());
                data.truncate(i);
            }
            _ => {
                let i = rng.range(0, data.len());
                let h = hostile_header(rng);
                data.splice(i..i, h);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reference decoder: CPython's framing rules, written out plainly.

#[derive(Debug)]
enum Item {
    /// A length header, and its payload unless the stream ends first.
    Frame { len: u64, payload: Option<Vec<u8>> },
    /// A frame that announces handles (`-2`): their descriptors never come with a byte
    /// stream, so any read of it fails, and what follows is not checked.
    HandlesFrame,
    /// A negative length other than -1.
    NegativeLength,
    /// The stream ends inside a length header.
    CutHeader,
    /// The stream ends between frames.
    End,
}

fn reference(stream: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            items.push(Item::End);
            return items;
        }
        if rest.len() < 4 {
            items.push(Item::CutHeader);
            return items;
        }
        let short = i32::from_be_bytes(rest[..4].try_into().unwrap());
        let (len, header) = match short {
            -1 if rest.len() < 12 => {
                items.push(Item::CutHeader);
                return items;
            }
            -1 => (u64::from_be_bytes(rest[4..12].try_into().unwrap()), 12),
            // A frame that carries handles: count, tag, 8-byte length (the handles themselves
            // never come here, so a typed read reports them missing).
            -2 if rest.len() < 24 => {
                items.push(Item::CutHeader);
                return items;
            }
            // No handles announced: a plain frame with a longer header.
            -2 if rest[4..8] == [0; 4] => (u64::from_be_bytes(rest[16..24].try_into().unwrap()), 24),
            -2 => {
                items.push(Item::HandlesFrame);
                return items;
            }
            n if n < 0 => {
                items.push(Item::NegativeLength);
                return items;
            }
            n => (n as u64, 4),
        };
        let body = &rest[header..];
        if (body.len() as u64) < len {
            items.push(Item::Frame { len, payload: None });
            return items;
        }
        let len_usize = len as usize;
        items.push(Item::Frame { len, payload: Some(body[..len_usize].to_vec()) });
        rest = &body[len_usize..];
    }
}

// ---------------------------------------------------------------------------------------------
// Running.

struct Budget {
    seed: u64,
    iters: Option<u64>,
    until: Option<Instant>,
}

impl Budget {
    fn from_env() -> Budget {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let seed = var("MP_FUZZ_SEED").unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        });
        let iters = var("MP_FUZZ_ITERS");
        let secs = var("MP_FUZZ_SECS").or(if iters.is_some() { None } else { Some(3) });
        Budget { seed, iters, until: secs.map(|s| Instant::now() + Duration::from_secs(s)) }
    }

    /// Runs `case(rng)` until the budget is spent; returns the iteration count.
    fn run(&self, name: &str, mut case: impl FnMut(&mut Rng)) -> u64 {
        let mut i = 0;
        while self.iters.is_none_or(|n| i < n) && self.until.is_none_or(|t| Instant::now() < t) {
            let _context = Context(name, self.seed, i);
            case(&mut Rng::new(self.seed, i));
            i += 1;
        }
        eprintln!("{name}: {i} iterations, seed {}", self.seed);
        i
    }
}

/// Prints how to replay an iteration if it panics.
struct Context<'a>(&'a str, u64, u64);

impl Drop for Context<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed at iteration {} of seed {}: replay with MP_FUZZ_SEED={}",
                self.0, self.2, self.1, self.1
            );
        }
    }
}

/// Writes `data` in random pieces, then closes; stops quietly if the reader went away.
fn spawn_writer(mut sock: UnixStream, data: Vec<u8>, rng: &mut Rng) -> std::thread::JoinHandle<()> {
    let mut cuts: Vec<usize> = (0..rng.range(0, 4)).map(|_| rng.range(0, data.len())).collect();
    cuts.sort();
    std::thread::spawn(move || {
        let mut start = 0;
        for cut in cuts.into_iter().chain([data.len()]) {
            if sock.write_all(&data[start..cut]).is_err() {
                return;
            }
            start = cut;
            std::thread::yield_now();
        }
    })
}

#[derive(Debug, Clone, Copy)]
enum Method {
    RecvBytes,
    RecvBytesMax(usize),
    RecvBytesInto(usize),
    Recv,
}

/// Reads `stream` through a connection with random methods and checks every result against
/// the reference decoder. Returns the number of messages read.
fn check_stream(rng: &mut Rng, stream: Vec<u8>) -> usize {
    let items = reference(&stream);
    let sent = stream.len();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let writer = spawn_writer(theirs, stream, rng);
    let mut conn = Connection::from_fd(ours.into());
    let cap = *rng.pick(&[1usize << 30, 1 << 20, 300, 40, 1 << 40]);
    conn.set_max_message(cap);
    // A clone reads exact lengths; a fresh handle reads ahead.
    let clone = rng.one_in(2).then(|| conn.try_clone().unwrap());
    let reader = clone.as_ref().unwrap_or(&conn);
    let mut messages = 0;
    let ((), peak) = peak_alloc(|| {
        for item in &items {
            let method = match rng.below(8) {
                0..=3 => Method::RecvBytes,
                4 => Method::RecvBytesMax(rng.range(0, 400)),
                5 | 6 => Method::RecvBytesInto(rng.range(0, 400)),
                _ => Method::Recv,
            };
            let ctx = || format!("{method:?} on {item:?} (cap {cap})");
            if let Item::HandlesFrame = item {
                // Its descriptors are missing (nothing here sends any). A typed read fails (the
                // handles did not come, or the length is past the cap); a byte read takes the
                // bytes and drops whatever handles came, so it may also succeed. The model
                // ends here: what follows is not checked.
                if matches!(method, Method::Recv) {
                    let r = reader.recv::<Vec<u16>>();
                    assert!(r.is_err(), "{}: {r:?}", ctx());
                } else {
                    let _ = reader.recv_bytes();
                }
                return;
            }
            let terminal = check_one(reader, method, item, cap, ctx);
            if terminal {
                // Whatever comes next is an error too, at once.
                let again = reader.recv_bytes();
                assert!(again.is_err(), "{} then {again:?}", ctx());
                return;
            }
            messages += 1;
        }
    });
    // The largest allocation: at most ALLOC_AHEAD (or the cap) before any payload byte
    // came, and beyond that at most twice what was actually sent.
    let bound = ALLOC_AHEAD.min(cap).max(2 * sent) + SLACK;
    assert!(peak <= bound, "allocated {peak} bytes at once for a {sent}-byte stream (cap {cap})");
    drop(clone);
    drop(conn);
    writer.join().unwrap();
    messages
}

/// Checks one read against the reference item; returns whether the stream is done.
fn check_one(conn: &Connection, method: Method, item: &Item, cap: usize, ctx: impl Fn() -> String) -> bool {
    let limit = match method {
        Method::RecvBytesMax(m) => m,
        _ => cap,
    };
    match item {
        Item::End => {
            let r = conn.recv_bytes();
            assert!(matches!(r, Err(Error::Eof)), "{}: {r:?}", ctx());
            true
        }
        Item::CutHeader => {
            let r = conn.recv_bytes();
            assert!(
                matches!(&r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof),
                "{}: {r:?}",
                ctx()
            );
            true
        }
        Item::HandlesFrame => unreachable!("handled before check_one"),
        Item::NegativeLength => {
            let r = conn.recv_bytes();
            assert!(matches!(r, Err(Error::Codec(_))), "{}: {r:?}", ctx());
            true
        }
        Item::Frame { len, payload } => {
            let too_long = |e: Option<&Error>, max: usize| matches!(e, Some(Error::BadMessageLength { len: l, max: m }) if l == len && *m == max as u64);
            let cut =
                |e: Option<&Error>| matches!(e, Some(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof);
            match method {
                Method::RecvBytes | Method::RecvBytesMax(_) => {
                    let r = match method {
                        Method::RecvBytes => conn.recv_bytes(),
                        _ => conn.recv_bytes_max(limit),
                    };
                    if *len > limit as u64 {
                        assert!(too_long(r.as_ref().err(), limit), "{}: {r:?}", ctx());
                        return true;
                    }
                    match payload {
                        None => {
                            assert!(cut(r.as_ref().err()), "{}: {r:?}", ctx());
                            true
                        }
                        Some(p) => {
                            assert_eq!(r.as_ref().ok(), Some(p), "{}: {r:?}", ctx());
                            false
                        }
                    }
                }
                Method::RecvBytesInto(size) => {
                    let mut buf = vec![0xaa; size];
                    let r = conn.recv_bytes_into(&mut buf);
                    if *len > size as u64 && *len > cap as u64 {
                        assert!(too_long(r.as_ref().err(), cap), "{}: {r:?}", ctx());
                        return true;
                    }
                    match payload {
                        None => {
                            assert!(cut(r.as_ref().err()), "{}: {r:?}", ctx());
                            true
                        }
                        Some(p) if p.len() <= size => {
                            assert_eq!(r.as_ref().ok(), Some(&p.len()), "{}: {r:?}", ctx());
                            assert_eq!(&buf[..p.len()], p.as_slice());
                            assert!(buf[p.len()..].iter().all(|&b| b == 0xaa), "wrote past the message");
                            false
                        }
                        Some(p) => {
                            assert!(matches!(&r, Err(Error::BufferTooShort(whole)) if whole == p), "{}: {r:?}", ctx());
                            false
                        }
                    }
                }
                Method::Recv => {
                    let r = conn.recv::<Vec<u16>>();
                    if *len > cap as u64 {
                        assert!(too_long(r.as_ref().err(), cap), "{}: {r:?}", ctx());
                        return true;
                    }
                    match payload {
                        None => {
                            assert!(cut(r.as_ref().err()), "{}: {r:?}", ctx());
                            true
                        }
                        Some(p) => {
                            // The payload is a Vec<u16> only if it decodes as one with no byte
                            // left over (a typed receive refuses trailing bytes).
                            let exact = match postcard::take_from_bytes::<Vec<u16>>(p) {
                                Ok((v, [])) => Some(v),
                                _ => None,
                            };
                            match &r {
                                Ok(v) => assert_eq!(exact.as_ref(), Some(v)),
                                Err(Error::Codec(_)) => assert!(exact.is_none()),
                                other => panic!("{}: {other:?}", ctx()),
                            }
                            false
                        }
                    }
                }
            }
        }
    }
}

/// Frames: random and mutated streams decode as CPython's rules say.
#[test]
fn fuzz_frames() {
    let budget = Budget::from_env();
    let mut messages = 0;
    let n = budget.run("fuzz_frames", |rng| {
        let stream = gen_stream(rng);
        messages += check_stream(rng, stream);
    });
    assert!(n > 0);
    eprintln!("fuzz_frames: {messages} messages decoded");
}

/// Fixed cases the fuzzer should always cover: hostile lengths are errors at once, with
/// nothing allocated for them.
#[test]
fn hostile_lengths_fail_at_once() {
    for (cap, header) in [
        (1usize << 30, [[0xff; 4].as_slice(), &(1u64 << 62).to_be_bytes()].concat()),
        (1 << 30, [[0xff; 4].as_slice(), &u64::MAX.to_be_bytes()].concat()),
        (1 << 40, [[0xff; 4].as_slice(), &(1u64 << 62).to_be_bytes()].concat()),
        (1 << 30, i32::MAX.to_be_bytes().to_vec()),
    ] {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = Connection::from_fd(ours.into());
        conn.set_max_message(cap);
        theirs.write_all(&header).unwrap();
        let ((r, elapsed), peak) = peak_alloc(|| common::timed(|| conn.recv_bytes()));
        assert!(matches!(r, Err(Error::BadMessageLength { max, .. }) if max == cap as u64), "{r:?}");
        common::assert_prompt(elapsed);
        assert!(peak <= SLACK, "allocated {peak} bytes for a rejected length");
    }
    // With no cap at all, a 2^62-byte announcement costs at most the first chunk, and the
    // hang-up that follows is an error.
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut conn = Connection::from_fd(ours.into());
    conn.set_max_message(usize::MAX);
    theirs.write_all(&[[0xff; 4].as_slice(), &(1u64 << 62).to_be_bytes(), b"abc"].concat()).unwrap();
    drop(theirs);
    let (r, peak) = peak_alloc(|| conn.recv_bytes());
    assert!(matches!(&r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof), "{r:?}");
    assert!(peak <= ALLOC_AHEAD + SLACK, "allocated {peak} bytes");
}

// ---------------------------------------------------------------------------------------------
// The handshake.

const KEY: &[u8] = b"fuzz key";
/// Long enough for any handshake, short enough that a hang fails the test quickly.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The raw peer's side of one conversation: it sends frames, reads the other side's, and
/// notes whether everything it sent was right.
struct Peer {
    sock: UnixStream,
    /// Whether every step so far was the correct one.
    honest: bool,
    /// Whether the peer stopped talking (it hung up or went off script).
    done: bool,
}

impl Peer {
    fn new(sock: UnixStream) -> Peer {
        sock.set_read_timeout(Some(HANDSHAKE_DEADLINE)).unwrap();
        Peer { sock, honest: true, done: false }
    }

    /// Reads one frame of at most 4 KiB; `None` if the other side hung up or sent nonsense.
    fn recv(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut header = [0u8; 4];
        self.sock.read_exact(&mut header).ok()?;
        let len = i32::from_be_bytes(header);
        if !(0..=4096).contains(&len) {
            return None;
        }
        let mut payload = vec![0u8; len as usize];
        self.sock.read_exact(&mut payload).ok()?;
        Some(payload)
    }

    /// Sends the right `payload`, or (sometimes) a mutated one, or hangs up instead.
    fn send(&mut self, rng: &mut Rng, payload: &[u8]) {
        if self.done {
            return;
        }
        let mut bytes = frame(payload);
        match rng.below(10) {
            0 => {
                self.honest = false;
                self.done = true;
                // Hang up before the frame's last byte.
                let cut = rng.range(0, bytes.len() - 1);
                bytes.truncate(cut);
            }
            1 => {
                let before = bytes.clone();
                mutate(rng, &mut bytes);
                if rng.one_in(2) {
                    let i = rng.below(bytes.len().max(1) as u64) as usize;
                    if let Some(b) = bytes.get_mut(i) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                if bytes.starts_with(&before) {
                    // Only bytes after the frame changed: the step itself is intact, and
                    // the peer sends nothing more (the extra bytes would be its next message).
                    bytes = before;
                } else {
                    self.honest = false;
                    // Off script: the other side may wait for bytes that will not come.
                    self.done = true;
                }
            }
            2 => {
                self.honest = false;
                self.done = true;
                bytes = hostile_header(rng);
            }
            _ => {}
        }
        let _ = self.sock.write_all(&bytes);
    }

    /// Sends a wrong but well-formed payload in place of the right one.
    fn send_wrong(&mut self, payload: &[u8]) {
        if self.done {
            return;
        }
        self.honest = false;
        let _ = self.sock.write_all(&frame(payload));
    }

    /// Hangs up for writing and reads until the other side closes, so neither waits for ever.
    fn finish(mut self) -> bool {
        let _ = self.sock.shutdown(Shutdown::Write);
        let mut sink = [0u8; 1024];
        while matches!(self.sock.read(&mut sink), Ok(n) if n > 0) {}
        self.honest
    }
}

/// A challenge message as some CPython would send it (after `#CHALLENGE#`), and the right
/// answer to it; or a broken one (`None` answer).
fn gen_challenge(rng: &mut Rng, key: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    match rng.below(8) {
        0..=2 => {
            let m = [b"{sha256}".as_slice(), &rng.bytes(40)].concat();
            let a = [b"{sha256}".as_slice(), &hmac_sha256(key, &m)].concat();
            (m, Some(a))
        }
        3 | 4 => {
            let m = rng.bytes(20);
            let a = hmac_md5(key, &m);
            (m, Some(a))
        }
        5 => {
            // 21 bytes or more: a 20-byte message is legacy whatever it holds.
            let n = rng.range(16, 60);
            let m = [b"{md5}".as_slice(), &rng.bytes(n)].concat();
            let a = [b"{md5}".as_slice(), &hmac_md5(key, &m)].concat();
            (m, Some(a))
        }
        6 => {
            let names: [&[u8]; 5] = [b"{sha3_256}", b"{foo}", b"{sha256", b"sha256}", b"{}"];
            let name = *rng.pick(&names);
            ([name, &rng.bytes(40)].concat(), None)
        }
        _ => {
            // Without a `{digest}` prefix only a 20-byte challenge is valid (16 bytes is a
            // legacy length, but too short a challenge).
            let n = rng.range(0, 30);
            let m = rng.bytes(n);
            if n == 20 && m.first() != Some(&b'{') {
                let a = hmac_md5(key, &m);
                (m, Some(a))
            } else {
                (m, None)
            }
        }
    }
}

/// Checks a handshake outcome: success exactly when the peer was honest, and only the
/// errors a broken handshake can give.
fn check_outcome<T: std::fmt::Debug>(r: Result<T, Error>, honest: bool) {
    match r {
        Ok(_) => assert!(honest, "the handshake succeeded with a dishonest peer"),
        Err(e) => {
            assert!(!honest, "an honest handshake failed: {e:?}");
            let expected = match &e {
                Error::Authentication(_) | Error::Eof | Error::BrokenPipe | Error::Codec(_) => true,
                Error::BadMessageLength { max, .. } => *max == 256,
                Error::Io(io) => {
                    matches!(io.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset)
                }
                _ => false,
            };
            assert!(expected, "unexpected error {e:?}");
        }
    }
}

/// A raw client against our Listener: it answers the listener's challenge, then challenges
/// it, honestly or not.
fn client_script(rng: &mut Rng, sock: UnixStream) -> bool {
    let mut p = Peer::new(sock);
    if rng.one_in(30) {
        p.honest = false;
        return p.finish();
    }
    let Some(challenge) = p.recv() else { return p.finish() };
    let message = challenge.strip_prefix(b"#CHALLENGE#").expect("our listener sends a challenge").to_vec();
    assert!(message.starts_with(b"{sha256}") && message.len() == 48, "{message:?}");
    let right = match rng.below(3) {
        0 => hmac_md5(KEY, &message),
        _ => [b"{sha256}".as_slice(), &hmac_sha256(KEY, &message)].concat(),
    };
    match rng.below(12) {
        0 => p.send_wrong(&[b"{sha256}".as_slice(), &hmac_sha256(b"wrong", &message)].concat()),
        1 => p.send_wrong(&hmac_md5(b"wrong", &message)),
        _ => p.send(rng, &right),
    }
    match p.recv() {
        Some(reply) if reply == b"#WELCOME#" => {}
        Some(reply) => {
            assert_eq!(reply, b"#FAILURE#");
            assert!(!p.honest, "an honest answer was refused");
            return p.finish();
        }
        None => return p.finish(),
    }
    challenge_our_side(rng, &mut p);
    p.finish()
}

/// The raw peer's challenge to our side, honest or not, and its verdict on the answer;
/// false if our side hung up first.
fn challenge_our_side(rng: &mut Rng, p: &mut Peer) -> bool {
    let (mine, answer) = gen_challenge(rng, KEY);
    if answer.is_some() && mine.len() >= 20 {
        p.send(rng, &[b"#CHALLENGE#".as_slice(), &mine].concat());
    } else {
        p.send_wrong(&[b"#CHALLENGE#".as_slice(), &mine].concat());
    }
    let Some(response) = p.recv() else { return false };
    if answer.as_deref() == Some(response.as_slice()) {
        if rng.one_in(10) {
            p.send_wrong(b"#FAILURE#");
        } else {
            p.send(rng, b"#WELCOME#");
        }
    } else {
        assert!(!p.honest, "a wrong answer {response:?} to an honest challenge {mine:?}");
        p.send(rng, b"#FAILURE#");
    }
    true
}

/// A raw server against our Client: it challenges the client, then answers the client's
/// challenge, honestly or not.
fn server_script(rng: &mut Rng, sock: UnixStream) -> bool {
    let mut p = Peer::new(sock);
    if rng.one_in(30) {
        p.honest = false;
        return p.finish();
    }
    if !challenge_our_side(rng, &mut p) {
        return p.finish();
    }
    let Some(challenge) = p.recv() else { return p.finish() };
    let message = challenge.strip_prefix(b"#CHALLENGE#").expect("our client sends a challenge").to_vec();
    assert!(message.starts_with(b"{sha256}") && message.len() == 48, "{message:?}");
    match rng.below(12) {
        0 => p.send_wrong(&hmac_md5(b"wrong", &message)),
        1 => p.send_wrong(b"{sha384}short"),
        _ => {
            let right = match rng.below(3) {
                0 => hmac_md5(KEY, &message),
                _ => [b"{sha256}".as_slice(), &hmac_sha256(KEY, &message)].concat(),
            };
            p.send(rng, &right);
        }
    }
    match p.recv() {
        Some(reply) if reply == b"#WELCOME#" => {}
        Some(reply) => {
            assert_eq!(reply, b"#FAILURE#");
            assert!(!p.honest, "an honest answer was refused");
        }
        None => {}
    }
    p.finish()
}

fn fuzz_address(tag: &str) -> Address {
    Address::abstract_name(format!("mp-fuzz-{tag}-{}", std::process::id()))
}

/// The listener's half of the handshake against an honest or dishonest raw client.
#[test]
fn fuzz_listener_handshake() {
    let budget = Budget::from_env();
    let l = Listener::bind(fuzz_address("listener"), Some(KEY)).unwrap();
    let Address::Abstract(name) = l.address().clone() else { unreachable!() };
    let (mut ok, mut refused) = (0, 0);
    budget.run("fuzz_listener_handshake", |rng| {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let sock = UnixStream::connect_addr(&addr).unwrap();
        let mut peer_rng = Rng(rng.next());
        let peer = std::thread::spawn(move || client_script(&mut peer_rng, sock));
        // `accept_outcome` reports the failed handshakes that `accept` skips.
        let (r, peak) =
            peak_alloc(|| l.accept_outcome(Some(HANDSHAKE_DEADLINE)).and_then(|r| r.map_err(|f| f.into_error())));
        assert!(!matches!(r, Err(Error::Timeout)), "the handshake hung");
        assert!(peak <= SLACK, "accept allocated {peak} bytes at once");
        let succeeded = r.is_ok();
        // Close our side first, so that a peer still waiting for us sees the end.
        let result = r.map(drop);
        let honest = peer.join().unwrap();
        check_outcome(result, honest);
        if succeeded { ok += 1 } else { refused += 1 }
    });
    eprintln!("fuzz_listener_handshake: {ok} accepted, {refused} refused");
    assert!(ok > 0 || budget.iters.is_some_and(|n| n < 20), "no honest handshake in the whole run");
}

/// The client's half of the handshake against an honest or dishonest raw server.
#[test]
fn fuzz_client_handshake() {
    let budget = Budget::from_env();
    /// Removes the socket's directory however the test ends.
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = TempDir(std::env::temp_dir().join(format!("mp-fuzz-client-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir(&dir.0).unwrap();
    let path = dir.0.join("sock");
    let server = UnixListener::bind(&path).unwrap();
    let (mut ok, mut refused) = (0, 0);
    budget.run("fuzz_client_handshake", |rng| {
        let mut peer_rng = Rng(rng.next());
        let p = path.clone();
        let (result, client_peak, honest) = std::thread::scope(|s| {
            let client = s.spawn(|| {
                let (r, peak) = peak_alloc(|| Client::connect_timeout(&p, Some(KEY), HANDSHAKE_DEADLINE));
                (r.map(drop), peak)
            });
            let (sock, _) = server.accept().unwrap();
            let honest = server_script(&mut peer_rng, sock);
            let (r, peak) = client.join().unwrap();
            (r, peak, honest)
        });
        assert!(!matches!(result, Err(Error::Timeout)), "the handshake hung");
        assert!(client_peak <= SLACK, "connect allocated {client_peak} bytes at once");
        if result.is_ok() {
            ok += 1
        } else {
            refused += 1
        }
        check_outcome(result, honest);
    });
    drop(server);
    drop(dir);
    eprintln!("fuzz_client_handshake: {ok} connected, {refused} refused");
    assert!(ok > 0 || budget.iters.is_some_and(|n| n < 20), "no honest handshake in the whole run");
}
