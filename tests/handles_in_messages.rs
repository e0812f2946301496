//! Handles inside messages (issue 17, point 4): `Connection::send_handle`/`recv_handle`
//! (CPython's `reduction.send_handle`/`recv_handle`), and connections, queues, locks and
//! values inside a message on a `pipe()` end or a Unix-socket connection, their descriptors
//! travelling with `SCM_RIGHTS`. Cases with a child run under every start method; the child
//! gets the handle over a connection, never in its args.
mod common;
use multiprocess::connection::{Client, Listener};
use multiprocess::*;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A file of our own, already unlinked.
fn scratch_file(tag: &str) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("mp-handles-{tag}-{}", std::process::id()));
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

fn open_fd_count() -> usize {
    multiprocess::__private::open_fds().unwrap().len()
}

/// Receives a pipe end in a message and answers on it.
fn answer_on_received_end(control: Connection) -> Result<()> {
    let end: Connection = control.recv()?;
    let question: String = end.recv()?;
    end.send(&format!("{question}: answered"))?;
    control.send(&"done")
}

/// Receives a lock and a value in a message; takes the lock and adds to the value.
fn add_under_received_lock(control: Connection) -> Result<()> {
    let (lock, value): (Lock, Value<u64>) = control.recv()?;
    for _ in 0..100 {
        lock.acquire()?;
        value.set(value.get() + 1);
        lock.release()?;
    }
    control.send(&"done")
}

/// Receives a queue in a message and puts into it.
fn put_into_received_queue(control: Connection) -> Result<()> {
    let queue: Queue<String> = control.recv()?;
    queue.put("from the child".to_string()).map_err(Error::from)?;
    control.send(&"done")
}

/// Receives a file by `recv_handle` and writes into it.
fn write_into_received_file(control: Connection) -> Result<()> {
    let mut file = std::fs::File::from(control.recv_handle()?);
    file.write_all(b"written by the child")?;
    control.send(&"done")
}

start_methods! {
    /// A child gets a pipe end in a message on its control pipe, and talks on it.
    fn child_uses_a_pipe_end_sent_in_a_message(m) {
        let (control, child_control) = pipe().unwrap();
        let mut p = common::start(m, answer_on_received_end, (child_control,));
        let (mine, theirs) = pipe().unwrap();
        control.send(&theirs).unwrap();
        drop(theirs);
        mine.send(&"question").unwrap();
        assert_eq!(mine.recv::<String>().unwrap(), "question: answered");
        assert_eq!(control.recv::<String>().unwrap(), "done");
        common::join_ok(&mut p);
    }

    /// A lock and a value sent in a message work across processes.
    fn child_uses_a_lock_and_value_sent_in_a_message(m) {
        let (control, child_control) = pipe().unwrap();
        let mut p = common::start(m, add_under_received_lock, (child_control,));
        let lock = Lock::new().unwrap();
        let value = Value::new(0u64).unwrap();
        control.send(&(&lock, &value)).unwrap();
        for _ in 0..100 {
            lock.acquire().unwrap();
            value.set(value.get() + 1);
            lock.release().unwrap();
        }
        assert_eq!(control.recv::<String>().unwrap(), "done");
        common::join_ok(&mut p);
        assert_eq!(value.get(), 200);
    }

    /// A queue sent in a message: the child's item arrives.
    fn child_uses_a_queue_sent_in_a_message(m) {
        let (control, child_control) = pipe().unwrap();
        let mut p = common::start(m, put_into_received_queue, (child_control,));
        let queue = Queue::<String>::new().unwrap();
        control.send(&queue).unwrap();
        assert_eq!(queue.get().unwrap(), "from the child");
        assert_eq!(control.recv::<String>().unwrap(), "done");
        common::join_ok(&mut p);
    }

    /// `send_handle` of a file to a child over a pipe: the child writes through the same
    /// open file (one offset).
    fn send_handle_of_a_file_to_a_child(m) {
        let (control, child_control) = pipe().unwrap();
        let mut p = common::start(m, write_into_received_file, (child_control,));
        let mut file = scratch_file("child");
        control.send_handle(&file).unwrap();
        assert_eq!(control.recv::<String>().unwrap(), "done");
        common::join_ok(&mut p);
        assert_eq!(file.stream_position().unwrap(), 20, "the child moved the shared offset");
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "written by the child");
    }
}

/// `send_handle` of a socket, on a pipe and on a Unix socket made with `from_fd`.
#[test]
fn send_handle_of_a_socket() {
    let guard = common::LeakGuard::new();
    let (pa, pb) = pipe().unwrap();
    let (sa, sb) = UnixStream::pair().unwrap();
    let (ua, ub) = (Connection::from_fd(sa.into()), Connection::from_fd(sb.into()));
    for (a, b) in [(&pa, &pb), (&ua, &ub)] {
        let (mut mine, theirs) = UnixStream::pair().unwrap();
        a.send(&1u8).unwrap();
        a.send_handle(&theirs).unwrap();
        a.send(&2u8).unwrap();
        drop(theirs);
        assert_eq!(b.recv::<u8>().unwrap(), 1);
        let mut got = UnixStream::from(b.recv_handle().unwrap());
        assert_eq!(b.recv::<u8>().unwrap(), 2);
        got.write_all(b"through").unwrap();
        drop(got);
        let mut text = String::new();
        mine.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through");
    }
    drop((pa, pb, ua, ub));
    guard.check();
}

/// Handles in messages over a Listener/Client pair on a Unix path and on an abstract name.
#[test]
fn handles_in_messages_over_a_listener() {
    let guard = common::LeakGuard::new();
    let abstract_name = format!("\0mp-handles-{}", std::process::id());
    for address in [None, Some(abstract_name)] {
        let listener = match &address {
            None => Listener::new(None).unwrap(),
            Some(name) => Listener::bind(name.as_str(), None).unwrap(),
        };
        let where_ = listener.address().clone();
        let client = std::thread::spawn(move || Client::connect(where_, None).unwrap());
        let server = listener.accept().unwrap();
        let client = client.join().unwrap();
        let lock = Lock::new().unwrap();
        let (x, y) = pipe().unwrap();
        client.send(&(7u32, &lock, &x)).unwrap();
        let (n, lock2, x2): (u32, Lock, Connection) = server.recv().unwrap();
        assert_eq!(n, 7);
        lock2.acquire().unwrap();
        assert!(!lock.try_acquire().unwrap(), "the same lock");
        lock2.release().unwrap();
        x2.send(&"via the copy").unwrap();
        assert_eq!(y.recv::<String>().unwrap(), "via the copy");
        let mut file = scratch_file("listener");
        server.send_handle(&file).unwrap();
        let mut same = std::fs::File::from(client.recv_handle().unwrap());
        same.write_all(b"abc").unwrap();
        assert_eq!(file.stream_position().unwrap(), 3);
    }
    guard.check();
}

/// A TCP connection refuses a lock with an error that says why, sends nothing, and stays
/// usable; `send_handle` there is refused too. So is a lock in a queue's item.
#[test]
fn tcp_refuses_a_lock_with_a_clear_error() {
    let listener = Listener::bind(([127, 0, 0, 1], 0), None).unwrap();
    let where_ = listener.address().clone();
    let client = std::thread::spawn(move || Client::connect(where_, None).unwrap());
    let server = listener.accept().unwrap();
    let client = client.join().unwrap();
    let lock = Lock::new().unwrap();
    let err = client.send(&lock).unwrap_err().to_string();
    assert!(err.contains("can travel only where its descriptor can"), "{err}");
    assert!(err.contains("TCP"), "{err}");
    let err = client.send_handle(&lock_file()).unwrap_err().to_string();
    assert!(err.contains("cannot carry handles"), "{err}");
    client.send(&5u8).unwrap();
    assert_eq!(server.recv::<u8>().unwrap(), 5);

    let queue = Queue::<Lock>::new().unwrap();
    let err = format!("{:?}", queue.put(lock).unwrap_err());
    assert!(err.contains("can travel only where its descriptor can"), "{err}");
    // A one-way pipe has no side channel.
    let (r, w) = pipe_simplex().unwrap();
    assert!(w.send_handle(&lock_file()).is_err());
    drop(r);
}

fn lock_file() -> std::fs::File {
    scratch_file("tcp")
}

/// Messages with handles that are never read leave nothing behind once the connection is
/// closed, on a pipe and on a Unix socket; while it is open, only what the messages hold.
#[test]
fn unread_messages_leak_nothing_after_close() {
    let guard = common::LeakGuard::new();
    let before = open_fd_count();
    {
        let (a, b) = pipe().unwrap();
        let (sa, sb) = UnixStream::pair().unwrap();
        let (ua, ub) = (Connection::from_fd(sa.into()), Connection::from_fd(sb.into()));
        for (a, b) in [(&a, &b), (&ua, &ub)] {
            for _ in 0..5 {
                let (x, y) = pipe().unwrap();
                a.send(&(&x, &y)).unwrap();
                a.send_handle(&scratch_file("unread")).unwrap();
            }
            // One read with handles behind it in the buffer, not taken.
            let (x, y): (Connection, Connection) = b.recv().unwrap();
            drop((x, y));
            // The unread ones' descriptors are in the kernel's queue or our buffer, not
            // open beside them.
            assert!(b.poll(Some(Duration::ZERO)).unwrap());
        }
    }
    assert_eq!(open_fd_count(), before, "descriptors of unread messages outlived the connection");
    guard.check();
}

/// A message read with `recv_bytes` closes the descriptors that came with it.
#[test]
fn recv_bytes_of_a_message_with_handles_closes_them() {
    let (a, b) = pipe().unwrap();
    let (x, y) = pipe().unwrap();
    let before = open_fd_count();
    a.send(&(&x, &y)).unwrap();
    assert!(!b.recv_bytes().unwrap().is_empty());
    assert_eq!(open_fd_count(), before);
}

/// Many handles in one message (more than one `SCM_RIGHTS` message holds: they travel
/// packed), the same lock twice (one descriptor travels), and handles one after another.
#[test]
fn many_handles_in_one_message() {
    let (a, b) = pipe().unwrap();
    let (sa, sb) = UnixStream::pair().unwrap();
    let (ua, ub) = (Connection::from_fd(sa.into()), Connection::from_fd(sb.into()));
    // 100 pipe() ends: 300 descriptors (read, write, side channel).
    let conns: Vec<Connection> = (0..100).map(|_| pipe().unwrap().0).collect();
    let lock = Lock::new().unwrap();
    for (a, b) in [(&a, &b), (&ua, &ub)] {
        a.send(&(&conns, &lock, &lock)).unwrap();
        let (got, l1, l2): (Vec<Connection>, Lock, Lock) = b.recv().unwrap();
        assert_eq!(got.len(), 100);
        l1.acquire().unwrap();
        assert!(!l2.try_acquire().unwrap());
        l1.release().unwrap();
        for _ in 0..300 {
            let f = scratch_file("many");
            a.send_handle(&f).unwrap();
            let g = b.recv_handle().unwrap();
            assert_ne!(g.as_raw_fd(), f.as_fd().as_raw_fd());
        }
    }
}

/// CPython's `reduction.send_handle`/`recv_handle` over a Unix socket, both ways.
#[test]
fn cpython_send_handle_interop() {
    if std::process::Command::new("python3").arg("-c").arg("pass").status().is_err() {
        eprintln!("no python3: skipped");
        return;
    }
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs_fd: OwnedFd = theirs.into();
    let script = r#"
import os, socket, sys
from multiprocessing import reduction
from multiprocessing.connection import Connection
fd = int(sys.argv[1])
conn = Connection(fd)
h = reduction.recv_handle(conn)
with os.fdopen(h, "wb") as f:
    f.write(b"python wrote")
r, w = os.pipe()
os.write(w, b"from python")
os.close(w)
reduction.send_handle(conn, r, os.getppid())
os.close(r)
conn.send_bytes(b"bye")
"#;
    // A duplicate that stays open across exec, for the child.
    let keep = theirs_fd.try_clone().unwrap();
    unsafe_clear_cloexec(&keep);
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(script).arg(keep.as_raw_fd().to_string());
    let mut child = cmd.spawn().unwrap();
    drop(keep);
    drop(theirs_fd);
    let conn = Connection::from_fd(ours.into());
    let mut file = scratch_file("python");
    conn.send_handle(&file).unwrap();
    let pipe_end = conn.recv_handle().unwrap();
    let mut text = String::new();
    std::fs::File::from(pipe_end).read_to_string(&mut text).unwrap();
    assert_eq!(text, "from python");
    assert_eq!(conn.recv_bytes().unwrap(), b"bye");
    assert!(child.wait().unwrap().success());
    file.rewind().unwrap();
    let mut written = String::new();
    file.read_to_string(&mut written).unwrap();
    assert_eq!(written, "python wrote");
}

/// Lets a descriptor survive `exec` (the duplicate is close-on-exec by default).
fn unsafe_clear_cloexec(fd: &OwnedFd) {
    // SAFETY: F_SETFD on a descriptor we own changes only its close-on-exec flag.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
}
