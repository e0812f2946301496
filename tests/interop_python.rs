//! Wire compatibility with CPython: a Python `multiprocessing.connection.Client` talks to a
//! Rust `Listener`, and a Rust `Client` to a Python `Listener`, over TCP, Unix paths and
//! Linux abstract names, with and without an authkey; a wrong key is refused on both sides
//! with CPython's messages.
//!
//! These tests need `python3` and FAIL without it (CI installs it). `MP_INTEROP_PYTHONS`, a
//! `:`-separated list of interpreters, runs them against several CPython versions at once
//! (default `python3`); CPython 3.11 and earlier speak the legacy HMAC-MD5 challenge, 3.12 and
//! later the `{sha256}` one, and both must work.
mod common;
use multiprocess::connection::{Address, Client, Listener};
use multiprocess::{Connection, Error};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// How long any one step may take before the test calls it a hang.
const LONG: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"interop key \x00\xff";
const WRONG_KEY: &[u8] = b"another key";

/// The conversation, in Python. The connecting side speaks first; both check every message.
const PY_COMMON: &str = r#"
import sys
from multiprocessing.connection import Client, Listener

BIG = bytes(i % 251 for i in range(1 << 20 | 3))

def parse(family, text):
    if family == 'tcp':
        host, port = text.rsplit(':', 1)
        return (host, int(port))
    if family == 'abstract':
        return '\0' + text
    return text

def key(text):
    return None if text == '-' else bytes.fromhex(text)

def expect(got, want):
    if got != want:
        raise SystemExit('unexpected message: %r' % (got[:64],))

def talk_as_client(c):
    c.send_bytes(b'hello from python')
    expect(c.recv_bytes(), b'hello from rust')
    c.send_bytes(b'')
    big = c.recv_bytes()
    expect(big, BIG)
    c.send_bytes(big)
    expect(c.recv_bytes(), b'bye')

def talk_as_server(c):
    expect(c.recv_bytes(), b'hello from rust')
    c.send_bytes(b'hello from python')
    expect(c.recv_bytes(), b'')
    c.send_bytes(BIG)
    expect(c.recv_bytes(), BIG)
    c.send_bytes(b'bye')
"#;

const PY_CLIENT: &str = r#"
family, address, authkey = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    c = Client(parse(family, address), authkey=key(authkey))
except Exception as e:
    print('ERR', type(e).__name__, e, flush=True)
    raise SystemExit(0)
talk_as_client(c)
c.close()
print('OK', flush=True)
"#;

const PY_LISTENER: &str = r#"
family, address, authkey = sys.argv[1], sys.argv[2], sys.argv[3]
l = Listener(parse(family, address), authkey=key(authkey))
a = l.address
if family == 'tcp':
    shown = '%s:%d' % a
elif family == 'abstract':
    shown = a[1:].decode() if isinstance(a, bytes) else a[1:]
else:
    shown = a
print('ADDR', shown, flush=True)
try:
    c = l.accept()
except Exception as e:
    print('ERR', type(e).__name__, e, flush=True)
    raise SystemExit(0)
talk_as_server(c)
c.close()
l.close()
print('OK', flush=True)
"#;

fn big() -> Vec<u8> {
    (0..(1usize << 20 | 3)).map(|i| (i % 251) as u8).collect()
}

/// The Rust half of the conversation, accepting side.
fn talk_as_server(conn: &Connection) {
    assert_eq!(conn.recv_bytes().unwrap(), b"hello from python");
    conn.send_bytes(b"hello from rust").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    conn.send_bytes(&big()).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), big());
    conn.send_bytes(b"bye").unwrap();
}

/// The Rust half of the conversation, connecting side.
fn talk_as_client(conn: &Connection) {
    conn.send_bytes(b"hello from rust").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello from python");
    conn.send_bytes(b"").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), big());
    conn.send_bytes(&big()).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"bye");
}

fn interpreters() -> Vec<String> {
    let list = std::env::var("MP_INTEROP_PYTHONS").unwrap_or_else(|_| "python3".into());
    list.split(':').filter(|s| !s.is_empty()).map(String::from).collect()
}

fn hex(key: Option<&[u8]>) -> String {
    match key {
        None => "-".into(),
        Some(k) => k.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// A running Python script; killed and reaped if the test fails first.
struct Py {
    child: Child,
    out: BufReader<ChildStdout>,
    python: String,
}

impl Py {
    fn start(python: &str, script: &str, args: &[&str]) -> Py {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(format!("{PY_COMMON}\n{script}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python:?} ({e}): these tests need python3 (CI installs it)"));
        let out = BufReader::new(child.stdout.take().unwrap());
        Py { child, out, python: python.to_string() }
    }

    /// The next line the script prints; fails the test with its stderr if it printed none.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        if line.is_empty() {
            let status = self.child.wait().unwrap();
            let mut err = String::new();
            self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("{} printed nothing more (exit {status}); stderr:\n{err}", self.python);
        }
        line.trim_end().to_string()
    }

    /// Waits for the script, which must print `expect` last and exit 0.
    fn finish(mut self, expect: &str) {
        let last = self.line();
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(last, expect, "{}: stderr:\n{err}", self.python);
        assert!(status.success(), "{} exited {status}; stderr:\n{err}", self.python);
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A Rust listener on `address` with `key`; its address as the Python script takes it.
fn rust_listener(address: Address, key: Option<&[u8]>) -> (Listener, &'static str, String) {
    let listener = Listener::bind(address, key).unwrap();
    let (family, shown) = match listener.address() {
        Address::Tcp(a) => ("tcp", a.to_string()),
        Address::Unix(p) => ("unix", p.display().to_string()),
        Address::Abstract(n) => ("abstract", String::from_utf8(n.clone()).unwrap()),
    };
    (listener, family, shown)
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mp-interop-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh socket path in a directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique("dir"));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Python Client → Rust Listener, the conversation both ways.
fn python_client_to_rust_listener(address: Address, key: Option<&[u8]>) {
    for python in interpreters() {
        let (listener, family, shown) = rust_listener(address.clone(), key);
        let py = Py::start(&python, PY_CLIENT, &[family, &shown, &hex(key)]);
        let conn = listener.accept_timeout(LONG).unwrap();
        talk_as_server(&conn);
        py.finish("OK");
    }
}

/// Rust Client → Python Listener, the conversation both ways.
fn rust_client_to_python_listener(family: &str, address: &str, key: Option<&[u8]>) {
    for python in interpreters() {
        let mut py = Py::start(&python, PY_LISTENER, &[family, address, &hex(key)]);
        let line = py.line();
        let shown = line.strip_prefix("ADDR ").unwrap_or_else(|| panic!("{python}: {line}"));
        let address = match family {
            "tcp" => Address::Tcp(shown.parse().unwrap()),
            "abstract" => Address::abstract_name(shown),
            _ => Address::from(shown),
        };
        let conn = Client::connect_timeout(address, key, LONG).unwrap();
        talk_as_client(&conn);
        py.finish("OK");
    }
}

#[test]
fn python_client_rust_listener_tcp_with_key() {
    common::guarded(|| python_client_to_rust_listener(Address::from(([127, 0, 0, 1], 0)), Some(KEY)));
}

#[test]
fn python_client_rust_listener_unix_with_key() {
    common::guarded(|| {
        let dir = TempDir::new();
        python_client_to_rust_listener(Address::from(dir.0.join("sock")), Some(KEY));
    });
}

#[test]
fn python_client_rust_listener_abstract_with_key() {
    common::guarded(|| python_client_to_rust_listener(Address::abstract_name(unique("abs")), Some(KEY)));
}

#[test]
fn python_client_rust_listener_empty_key() {
    common::guarded(|| python_client_to_rust_listener(Address::from(([127, 0, 0, 1], 0)), Some(b"")));
}

#[test]
fn python_client_rust_listener_unauthenticated() {
    common::guarded(|| {
        python_client_to_rust_listener(Address::from(([127, 0, 0, 1], 0)), None);
        let dir = TempDir::new();
        python_client_to_rust_listener(Address::from(dir.0.join("sock")), None);
    });
}

#[test]
fn rust_client_python_listener_tcp_with_key() {
    common::guarded(|| rust_client_to_python_listener("tcp", "127.0.0.1:0", Some(KEY)));
}

#[test]
fn rust_client_python_listener_unix_with_key() {
    common::guarded(|| {
        let dir = TempDir::new();
        rust_client_to_python_listener("unix", &dir.0.join("sock").display().to_string(), Some(KEY));
    });
}

#[test]
fn rust_client_python_listener_abstract_with_key() {
    common::guarded(|| rust_client_to_python_listener("abstract", &unique("abs"), Some(KEY)));
}

#[test]
fn rust_client_python_listener_unauthenticated() {
    common::guarded(|| {
        rust_client_to_python_listener("tcp", "127.0.0.1:0", None);
        let dir = TempDir::new();
        rust_client_to_python_listener("unix", &dir.0.join("sock").display().to_string(), None);
    });
}

/// A Python client with the wrong key: the Rust listener says 'digest received was wrong',
/// the Python client 'digest sent was rejected' (CPython's messages on both sides).
#[test]
fn python_client_wrong_key_rejected() {
    common::guarded(|| {
        for python in interpreters() {
            let (listener, family, shown) = rust_listener(Address::from(([127, 0, 0, 1], 0)), Some(KEY));
            let py = Py::start(&python, PY_CLIENT, &[family, &shown, &hex(Some(WRONG_KEY))]);
            match listener.accept_outcome(Some(LONG)).unwrap().map_err(|failure| failure.into_error()) {
                Err(Error::Authentication(msg)) => assert_eq!(msg, "digest received was wrong"),
                other => panic!("{python}: {other:?}"),
            }
            py.finish("ERR AuthenticationError digest sent was rejected");
        }
    });
}

/// A Rust client with the wrong key: it gets 'digest sent was rejected', the Python listener
/// 'digest received was wrong'.
#[test]
fn rust_client_wrong_key_rejected() {
    common::guarded(|| {
        for python in interpreters() {
            let mut py = Py::start(&python, PY_LISTENER, &["tcp", "127.0.0.1:0", &hex(Some(KEY))]);
            let line = py.line();
            let shown = line.strip_prefix("ADDR ").unwrap();
            let address = Address::Tcp(shown.parse().unwrap());
            match Client::connect_timeout(address, Some(WRONG_KEY), LONG) {
                Err(Error::Authentication(msg)) => assert_eq!(msg, "digest sent was rejected"),
                other => panic!("{python}: {other:?}"),
            }
            py.finish("ERR AuthenticationError digest received was wrong");
        }
    });
}
