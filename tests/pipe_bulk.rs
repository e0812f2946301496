//! Bulk bytes through pipes (issue 16, point 8): messages from empty to 64 MiB, around the
//! default pipe size and past the point where a pipe is grown (`F_SETPIPE_SZ`) and the reader
//! asks for huge pages, go to a child and come back intact, through a duplex `pipe()` and
//! through two one-way `pipe_simplex()`es, under every start method; a child receives a
//! 64 MiB argument intact. Each case runs with the leak check on.
//!
//! 256 MiB is left out: in a debug build on a loaded two-core machine one round trip of it
//! took about 5 s a case, ten times the rest together.
mod common;

use multiprocess::*;

/// The message sizes: empty, one byte, the default pipe size and one either side of it (the
/// pipe is grown above it), 1 MiB (the size it is grown to) and 64 MiB (many turns of the
/// grown pipe, and reads into huge pages).
const SIZES: &[usize] = &[0, 1, (64 << 10) - 1, 64 << 10, (64 << 10) + 1, 1 << 20, 64 << 20];

/// `len` bytes that are not all alike, so that a shifted, truncated or mixed-up copy differs.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends back as many messages as [`SIZES`] has. (Not "until end of file": a fork child
/// holds copies of the parent's ends too, as under CPython, so it would never see one.)
fn echo(inbox: Connection, outbox: Connection) -> Result<()> {
    for _ in SIZES {
        outbox.send_bytes(&inbox.recv_bytes()?)?;
    }
    Ok(())
}

fn echo_duplex(conn: Connection) -> Result<()> {
    let out = conn.try_clone()?;
    echo(conn, out)
}

/// Every size of [`SIZES`] to the echo child and back: what comes back is what went.
fn round_trip_all(to_child: &Connection, from_child: &Connection) {
    for (i, &len) in SIZES.iter().enumerate() {
        let msg = pattern(len, i as u64 + 1);
        to_child.send_bytes(&msg).unwrap();
        let back = from_child.recv_bytes().unwrap();
        assert_eq!(back.len(), len);
        assert!(back == msg, "a message of {len} bytes came back changed");
    }
}

use common::Blob;

/// Checks its argument against the pattern it should be, and says so.
fn check_arg(big: Blob, conn: Connection) -> Result<()> {
    let ok = big.0.len() == 64 << 20 && big.0 == pattern(64 << 20, 99);
    conn.send(&ok)
}

start_methods! {
    /// Every size round-trips intact through one duplex pipe.
    fn duplex_round_trips_intact(m) {
        let (ours, theirs) = pipe().unwrap();
        let mut p = common::start(m, echo_duplex, (theirs,));
        round_trip_all(&ours, &ours);
        drop(ours);
        common::join_ok(&mut p);
    }

    /// Every size round-trips intact through two one-way pipes.
    fn simplex_round_trips_intact(m) {
        let (child_reads, we_write) = pipe_simplex().unwrap();
        let (we_read, child_writes) = pipe_simplex().unwrap();
        let mut p = common::start(m, echo, (child_reads, child_writes));
        round_trip_all(&we_write, &we_read);
        drop(we_write);
        common::join_ok(&mut p);
        assert!(matches!(we_read.recv_bytes(), Err(Error::Eof)));
    }

    /// A 64 MiB argument reaches the child intact (in a sealed memfd under spawn and
    /// forkserver, in the copied memory under fork).
    fn child_gets_a_64_mib_argument_intact(m) {
        let (ours, theirs) = pipe().unwrap();
        let mut p = common::start(m, check_arg, (Blob(pattern(64 << 20, 99)), theirs));
        assert!(ours.recv::<bool>().unwrap(), "the child's argument arrived changed");
        common::join_ok(&mut p);
    }
}
