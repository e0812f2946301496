//! The HMAC challenge that `Listener` and `Client` run when given an authkey, byte for byte
//! CPython's (`Lib/multiprocessing/connection.py`: `deliver_challenge`, `answer_challenge`).
//!
//! The side that delivers sends `#CHALLENGE#` and a message, the side that answers sends
//! back an HMAC of that message under the shared key, and the deliverer replies `#WELCOME#` or
//! `#FAILURE#`. Then the two swap roles, so each side knows the other has the key. CPython
//! 3.12 and later send `{sha256}` and 40 random bytes and answer `{sha256}` and the
//! HMAC-SHA256 of the whole message; CPython 3.11 and earlier send 20 random bytes and answer
//! the bare 16-byte HMAC-MD5. Both are accepted here, as CPython 3.12 accepts both: a
//! 20-byte challenge is answered with bare MD5, and a bare 16-byte answer is checked as MD5.
//!
//! Every handshake message is read with a 256-byte limit (CPython's), so a peer cannot make
//! us allocate for a long one; a peer that sends anything unexpected, or hangs up, gets an
//! error, never a panic.
//!
//! A `Listener` runs its half as a [`ServerHandshake`]: the same bytes, sent and read without
//! blocking, so that one accept call can carry many clients' handshakes at once and a client
//! that stalls holds up no other.

use super::Connection;
use crate::sys::Deadline;
use crate::sys::socket::{self, Interest};
use crate::{Error, Result};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use std::os::fd::BorrowedFd;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a challenge we deliver (CPython 3.12's `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// A legacy (CPython 3.11 and earlier) challenge: 20 random bytes, no digest prefix.
const MD5ONLY_MESSAGE_LENGTH: usize = 20;
/// A legacy answer: a bare HMAC-MD5.
const MD5_DIGEST_LEN: usize = 16;
/// The longest handshake message either side reads (CPython's `recv_bytes(256)`).
const MAX_HANDSHAKE_MESSAGE: usize = 256;
/// The digest names CPython 3.12 allows, longest first for the prefix search.
const ALLOWED_DIGESTS: [&[u8]; 5] = [b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"];
const MAX_DIGEST_NAME: usize = 8;

/// The HMAC digests this crate computes: CPython's allowed set but the SHA-3 pair (which no
/// CPython peer picks unless told to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn from_name(name: &[u8]) -> Option<Digest> {
        match name {
            b"md5" => Some(Digest::Md5),
            b"sha256" => Some(Digest::Sha256),
            b"sha384" => Some(Digest::Sha384),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        match self {
            Digest::Md5 => mac::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => mac::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => mac::<Hmac<sha2::Sha384>>(key, message),
        }
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut m = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(message);
    m.finalize().into_bytes().to_vec()
}

/// Compares in time that depends on the length only (CPython's `hmac.compare_digest`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

fn auth_error(msg: impl Into<String>) -> Error {
    Error::Authentication(msg.into())
}

/// Python's `repr` of a bytes value, for error messages.
fn repr(bytes: &[u8]) -> String {
    format!("b'{}'", bytes.escape_ascii())
}

/// The digest a message asks for and the rest of it (CPython's `_get_digest_name_and_payload`):
/// `None` for a legacy message (a 20-byte challenge or a 16-byte answer), which means bare
/// HMAC-MD5.
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8])> {
    if message.len() == MD5ONLY_MESSAGE_LENGTH || message.len() == MD5_DIGEST_LEN {
        return Ok((None, message));
    }
    if let Some(rest) = message.strip_prefix(b"{") {
        let search = &rest[..rest.len().min(MAX_DIGEST_NAME + 1)];
        if let Some(close) = search.iter().position(|&b| b == b'}') {
            let name = &rest[..close];
            if ALLOWED_DIGESTS.contains(&name) {
                let payload = &rest[close + 1..];
                return match Digest::from_name(name) {
                    Some(d) => Ok((Some(d), payload)),
                    None => Err(auth_error(format!("response_digest='{}' unsupported", name.escape_ascii()))),
                };
            }
        }
    }
    Err(auth_error(format!(
        "unsupported message length, missing digest prefix, or unsupported digest: message={}",
        repr(message)
    )))
}

/// The answer to a challenge `message` (what follows `#CHALLENGE#`), CPython's
/// `_create_response`: bare HMAC-MD5 for a legacy message, else `{name}` and the HMAC of the
/// whole message (prefix included) with the digest it names.
pub(crate) fn create_response(authkey: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    match digest_and_payload(message)?.0 {
        None => Ok(Digest::Md5.mac(authkey, message)),
        Some(d) => {
            let mut response = format!("{{{}}}", d.name()).into_bytes();
            response.extend_from_slice(&d.mac(authkey, message));
            Ok(response)
        }
    }
}

/// Checks the answer to a challenge we sent (CPython's `_verify_challenge`): an unprefixed
/// answer is bare HMAC-MD5, a prefixed one uses the digest it names.
pub(crate) fn verify_challenge(authkey: &[u8], message: &[u8], response: &[u8]) -> Result<()> {
    let (digest, mac) = digest_and_payload(response)?;
    let digest = digest.unwrap_or(Digest::Md5);
    let expected = digest.mac(authkey, message);
    if expected.len() != mac.len() {
        return Err(auth_error(format!("expected '{}' of length {} got {}", digest.name(), expected.len(), mac.len())));
    }
    if !constant_time_eq(&expected, mac) {
        return Err(auth_error("digest received was wrong"));
    }
    Ok(())
}

/// Sends a challenge on `conn` and checks the peer's answer: the serving side's first half of
/// the handshake (Python's `multiprocessing.connection.deliver_challenge(connection,
/// authkey)`). On a wrong answer the peer is told `#FAILURE#` and this returns
/// [`Error::Authentication`]`("digest received was wrong")`.
///
/// [`Listener::accept`](super::Listener::accept) runs this and then [`answer_challenge`];
/// [`Client::connect`](super::Client::connect) runs the two the other way round. They are
/// public for protocols that authenticate a connection made some other way.
///
/// ```
/// use multiprocess::connection::{answer_challenge, deliver_challenge};
/// let (server, client) = multiprocess::pipe()?;
/// let peer = std::thread::spawn(move || -> multiprocess::Result<()> {
///     answer_challenge(&client, b"secret")?;
///     deliver_challenge(&client, b"secret")
/// });
/// deliver_challenge(&server, b"secret")?;
/// answer_challenge(&server, b"secret")?;
/// peer.join().unwrap()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn deliver_challenge(conn: &Connection, authkey: &[u8]) -> Result<()> {
    deliver(conn, authkey, Deadline::NEVER)
}

/// Answers a challenge the peer sends on `conn`: the connecting side's first half of the
/// handshake (Python's `multiprocessing.connection.answer_challenge(connection, authkey)`).
/// A peer that refuses the answer gives [`Error::Authentication`]`("digest sent was
/// rejected")`; a message that is not a challenge, or too short a challenge, gives
/// [`Error::Authentication`] too.
///
/// ```
/// use multiprocess::Error;
/// use multiprocess::connection::{answer_challenge, deliver_challenge};
/// let (server, client) = multiprocess::pipe()?;
/// let peer = std::thread::spawn(move || deliver_challenge(&server, b"right key"));
/// match answer_challenge(&client, b"wrong key") {
///     Err(Error::Authentication(msg)) => assert_eq!(msg, "digest sent was rejected"),
///     other => panic!("{other:?}"),
/// }
/// assert!(matches!(peer.join().unwrap(), Err(Error::Authentication(_))));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn answer_challenge(conn: &Connection, authkey: &[u8]) -> Result<()> {
    answer(conn, authkey, Deadline::NEVER)
}

/// Reads one handshake message, at most 256 bytes, by the deadline.
fn recv_short(conn: &Connection, deadline: Deadline) -> Result<Vec<u8>> {
    if let Some(left) = deadline.remaining() {
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        conn.set_read_timeout(Some(left))?;
    }
    conn.recv_bytes_max(MAX_HANDSHAKE_MESSAGE).map_err(|e| match e {
        Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Error::Timeout
        }
        e => e,
    })
}

pub(crate) fn deliver(conn: &Connection, authkey: &[u8], deadline: Deadline) -> Result<()> {
    let mut message = Vec::with_capacity(8 + MESSAGE_LENGTH);
    message.extend_from_slice(b"{sha256}");
    let mut random = [0u8; MESSAGE_LENGTH];
    crate::sys::proc::random_bytes(&mut random)?;
    message.extend_from_slice(&random);
    conn.send_bytes(&[CHALLENGE, &message].concat())?;
    let response = recv_short(conn, deadline)?;
    match verify_challenge(authkey, &message, &response) {
        Ok(()) => conn.send_bytes(WELCOME),
        Err(e) => {
            // The peer may be gone already: the failure to report is the digest's.
            let _ = conn.send_bytes(FAILURE);
            Err(e)
        }
    }
}

pub(crate) fn answer(conn: &Connection, authkey: &[u8], deadline: Deadline) -> Result<()> {
    let message = recv_short(conn, deadline)?;
    let Some(message) = message.strip_prefix(CHALLENGE) else {
        return Err(auth_error(format!("Protocol error, expected challenge: message={}", repr(&message))));
    };
    if message.len() < MD5ONLY_MESSAGE_LENGTH {
        return Err(auth_error(format!("challenge too short: {} bytes", message.len())));
    }
    conn.send_bytes(&create_response(authkey, message)?)?;
    if recv_short(conn, deadline)? != WELCOME {
        return Err(auth_error("digest sent was rejected"));
    }
    Ok(())
}

/// The listener's half of the handshake ([`deliver`], then [`answer`]) on a socket it must
/// not block on: [`step`](ServerHandshake::step) does what the socket allows now and says
/// what it waits for next.
pub(crate) struct ServerHandshake {
    /// Our challenge: what follows `#CHALLENGE#`.
    message: Vec<u8>,
    stage: Stage,
    /// The frame being sent, and how much of it went.
    out: Vec<u8>,
    sent: usize,
    incoming: FrameIn,
    /// Why the peer's answer was refused, while `#FAILURE#` goes out.
    refused: Option<Error>,
    /// Whether the peer sent a byte: one that sent none before it left merely disconnected.
    heard: bool,
}

/// Where a [`ServerHandshake`] is: each sending stage is followed by the reading stage below
/// it.
enum Stage {
    /// Sending our challenge.
    Challenge,
    /// Reading the peer's answer to it.
    Response,
    /// Sending `#WELCOME#`.
    Welcome,
    /// Sending `#FAILURE#`, after which the handshake fails with the error in `refused`.
    Refuse,
    /// Reading the peer's challenge.
    Question,
    /// Sending our answer to it.
    Answer,
    /// Reading the peer's `#WELCOME#`.
    Verdict,
}

/// What a [`ServerHandshake`] needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The socket to be readable, or writable.
    Wants(Interest),
    /// Nothing: the peer passed, and the socket is at the first byte after the handshake.
    Done,
}

impl ServerHandshake {
    pub(crate) fn new() -> Result<ServerHandshake> {
        let mut message = Vec::with_capacity(8 + MESSAGE_LENGTH);
        message.extend_from_slice(b"{sha256}");
        let mut random = [0u8; MESSAGE_LENGTH];
        crate::sys::proc::random_bytes(&mut random)?;
        message.extend_from_slice(&random);
        let out = frame(&[CHALLENGE, &message].concat());
        Ok(ServerHandshake {
            message,
            stage: Stage::Challenge,
            out,
            sent: 0,
            incoming: FrameIn::default(),
            refused: None,
            heard: false,
        })
    }

    /// Whether the peer has sent anything yet.
    pub(crate) fn heard(&self) -> bool {
        self.heard
    }

    /// Goes as far as `fd` allows without waiting. An error ends the handshake: the peer
    /// failed it (it was told `#FAILURE#` if its answer was wrong) or left.
    pub(crate) fn step(&mut self, fd: BorrowedFd<'_>, authkey: &[u8]) -> Result<Step> {
        loop {
            match self.stage {
                Stage::Refuse => {
                    // The peer may be gone already: the failure to report is the digest's.
                    if let Ok(false) = self.flush(fd) {
                        return Ok(Step::Wants(Interest::Write));
                    }
                    return Err(self.refused.take().unwrap_or_else(|| auth_error("digest received was wrong")));
                }
                Stage::Challenge | Stage::Welcome | Stage::Answer => {
                    if !self.flush(fd)? {
                        return Ok(Step::Wants(Interest::Write));
                    }
                    self.stage = match self.stage {
                        Stage::Challenge => Stage::Response,
                        Stage::Welcome => Stage::Question,
                        _ => Stage::Verdict,
                    };
                }
                Stage::Response | Stage::Question | Stage::Verdict => {
                    let Some(payload) = self.incoming.read(fd, &mut self.heard)? else {
                        return Ok(Step::Wants(Interest::Read));
                    };
                    match self.stage {
                        Stage::Response => match verify_challenge(authkey, &self.message, &payload) {
                            Ok(()) => self.send(WELCOME, Stage::Welcome),
                            Err(e) => {
                                self.refused = Some(e);
                                self.send(FAILURE, Stage::Refuse);
                            }
                        },
                        Stage::Question => {
                            let Some(message) = payload.strip_prefix(CHALLENGE) else {
                                return Err(auth_error(format!(
                                    "Protocol error, expected challenge: message={}",
                                    repr(&payload)
                                )));
                            };
                            if message.len() < MD5ONLY_MESSAGE_LENGTH {
                                return Err(auth_error(format!("challenge too short: {} bytes", message.len())));
                            }
                            let response = create_response(authkey, message)?;
                            self.send(&response, Stage::Answer);
                        }
                        _ if payload == WELCOME => return Ok(Step::Done),
                        _ => return Err(auth_error("digest sent was rejected")),
                    }
                }
            }
        }
    }

    fn send(&mut self, payload: &[u8], then: Stage) {
        self.out = frame(payload);
        self.sent = 0;
        self.stage = then;
    }

    /// Sends what is left of `out`; true once all of it went.
    fn flush(&mut self, fd: BorrowedFd<'_>) -> Result<bool> {
        while self.sent < self.out.len() {
            match socket::send_now(fd, &self.out[self.sent..]).map_err(Error::from_write)? {
                Some(n) => self.sent += n,
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// A handshake message as CPython frames it: 4-byte big-endian length, then the bytes.
fn frame(payload: &[u8]) -> Vec<u8> {
    // Every handshake message is far below 2 GiB: the short header always fits.
    [&(payload.len() as u32).to_be_bytes(), payload].concat()
}

/// One handshake frame on its way in, read without waiting and never past its last byte (the
/// bytes after the handshake belong to the connection).
#[derive(Default)]
struct FrameIn {
    /// The header: 4 bytes, or 12 when the first 4 say `-1` (a 64-bit length follows).
    header: [u8; 12],
    header_read: usize,
    /// The payload, once the header is in.
    payload: Option<Vec<u8>>,
    len: usize,
}

impl FrameIn {
    /// Reads what is there: the whole payload once it is in, `None` while more must come.
    /// Sets `heard` once a byte came.
    fn read(&mut self, fd: BorrowedFd<'_>, heard: &mut bool) -> Result<Option<Vec<u8>>> {
        loop {
            let Some(payload) = &mut self.payload else {
                let header_len = if self.header_read >= 4 && self.header[..4] == [0xff; 4] { 12 } else { 4 };
                if self.header_read < header_len {
                    let before = self.header_read;
                    match socket::recv_now(fd, &mut self.header[before..header_len])? {
                        None => return Ok(None),
                        Some(0) => return Err(if before == 0 { Error::Eof } else { cut_short() }),
                        Some(n) => {
                            *heard = true;
                            self.header_read += n;
                        }
                    }
                    continue;
                }
                let short = i32::from_be_bytes(self.header[..4].try_into().expect("4 bytes"));
                let len = match short {
                    0.. => short as u64,
                    -1 => u64::from_be_bytes(self.header[4..12].try_into().expect("8 bytes")),
                    _ => return Err(Error::Codec(format!("bad frame length {short}"))),
                };
                if len > MAX_HANDSHAKE_MESSAGE as u64 {
                    return Err(Error::BadMessageLength { len, max: MAX_HANDSHAKE_MESSAGE as u64 });
                }
                self.len = len as usize;
                self.payload = Some(Vec::with_capacity(self.len));
                continue;
            };
            if payload.len() == self.len {
                let whole = std::mem::take(payload);
                *self = FrameIn::default();
                return Ok(Some(whole));
            }
            let mut chunk = [0u8; MAX_HANDSHAKE_MESSAGE];
            let want = self.len - payload.len();
            match socket::recv_now(fd, &mut chunk[..want])? {
                None => return Ok(None),
                Some(0) => return Err(cut_short()),
                Some(n) => {
                    *heard = true;
                    payload.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

/// The peer closed in the middle of a frame (CPython: `OSError('got end of file during
/// message')`), as a connection reports it.
fn cut_short() -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "got end of file during message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 2104 / RFC 4231 test vectors pin the three MACs.
    #[test]
    fn hmac_vectors() {
        assert_eq!(Digest::Md5.mac(b"Jefe", b"what do ya want for nothing?"), hex("750c783e6ab0b503eaa86e310a5db738"));
        assert_eq!(
            Digest::Sha256.mac(b"Jefe", b"what do ya want for nothing?"),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(Digest::Sha384.mac(b"Jefe", b"what do ya want for nothing?").len(), 48);
    }

    /// LC-16 in miniature: responses carry the `{algo}` prefix (none for legacy) and verify.
    #[test]
    fn create_and_verify() {
        let key = b"key";
        let legacy = [7u8; 20];
        let r = create_response(key, &legacy).unwrap();
        assert_eq!(r.len(), 16);
        verify_challenge(key, &legacy, &r).unwrap();

        let modern = [b"{sha256}".as_slice(), &[9u8; 40]].concat();
        let r = create_response(key, &modern).unwrap();
        assert!(r.starts_with(b"{sha256}"));
        assert_eq!(r.len(), 8 + 32);
        verify_challenge(key, &modern, &r).unwrap();

        let md5 = [b"{md5}".as_slice(), &[1u8; 40]].concat();
        let r = create_response(key, &md5).unwrap();
        assert!(r.starts_with(b"{md5}"));
        verify_challenge(key, &md5, &r).unwrap();

        // A legacy peer answers a modern challenge with bare MD5 of the whole message.
        verify_challenge(key, &modern, &Digest::Md5.mac(key, &modern)).unwrap();

        let e = verify_challenge(b"other", &modern, &r).unwrap_err();
        assert!(matches!(e, Error::Authentication(_)));
        let Error::Authentication(m) = verify_challenge(key, &modern, &[0; 16]).unwrap_err() else { panic!() };
        assert_eq!(m, "digest received was wrong");
        let Error::Authentication(m) = verify_challenge(key, &modern, b"{sha256}short").unwrap_err() else { panic!() };
        assert_eq!(m, "expected 'sha256' of length 32 got 5");
        assert!(create_response(key, b"{sha3_256}0123456789012345678901").is_err());
        assert!(create_response(key, b"no prefix and not 16 or 20").is_err());
        assert!(create_response(key, b"{sha256").is_err());
    }

    /// The non-blocking server side against a peer that writes every frame a byte at a time
    /// (its answer in the long `-1` form): each step takes what is there, and the handshake
    /// stops at its last byte, leaving the next message to the connection.
    #[test]
    fn server_handshake_byte_by_byte() {
        use std::io::{Read, Write};
        use std::os::fd::{AsFd, OwnedFd};
        use std::os::unix::net::UnixStream;
        use std::time::Duration;

        fn recv(s: &mut UnixStream) -> Vec<u8> {
            let mut header = [0u8; 4];
            s.read_exact(&mut header).unwrap();
            let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
            s.read_exact(&mut payload).unwrap();
            payload
        }
        fn send_slowly(s: &mut UnixStream, bytes: &[u8]) {
            for b in bytes {
                s.write_all(&[*b]).unwrap();
                std::thread::sleep(Duration::from_micros(100));
            }
        }

        let key = b"key";
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let peer = std::thread::spawn(move || {
            let challenge = recv(&mut theirs);
            let message = challenge.strip_prefix(CHALLENGE).unwrap();
            let response = create_response(key, message).unwrap();
            let long_form = [[0xff; 4].as_slice(), &(response.len() as u64).to_be_bytes(), &response].concat();
            send_slowly(&mut theirs, &long_form);
            assert_eq!(recv(&mut theirs), WELCOME);
            let mine = [7u8; 20];
            send_slowly(&mut theirs, &frame(&[CHALLENGE, &mine].concat()));
            verify_challenge(key, &mine, &recv(&mut theirs)).unwrap();
            send_slowly(&mut theirs, &[frame(WELCOME), frame(b"after")].concat());
            theirs
        });
        let fd = OwnedFd::from(ours);
        let mut handshake = ServerHandshake::new().unwrap();
        let deadline = Deadline::after(Some(Duration::from_secs(30)));
        let set = socket::ReadySet::new().unwrap();
        set.add(fd.as_fd(), None).unwrap();
        let mut steps = 0;
        while let Step::Wants(interest) = handshake.step(fd.as_fd(), key).unwrap() {
            set.change(fd.as_fd(), Some(interest)).unwrap();
            let ready = crate::sys::fd::poll_readable(&[set.as_fd()], deadline).unwrap();
            assert!(ready[0], "the handshake hung");
            steps += 1;
        }
        set.remove(fd.as_fd()).unwrap();
        assert!(steps > 20, "{steps} steps: the bytes came in one read");
        assert!(handshake.heard());
        let conn = Connection::from_socket(fd, 1 << 20);
        assert_eq!(conn.recv_bytes().unwrap(), b"after");
        drop(peer.join().unwrap());
    }
}
