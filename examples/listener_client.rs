//! `Listener` and `Client` speak CPython's `multiprocessing.connection` protocol: framing and
//! the HMAC authkey challenge. This example runs three conversations with the same authkey:
//!
//! 1. a Rust `Listener` and a Rust `Client` in a child process;
//! 2. a Rust `Listener` and a Python `Client` (`python3 -c ...`);
//! 3. a Python `Listener` and a Rust `Client`.
//!
//! Without python3 it says so and runs the first only.
//!
//! ```text
//! cargo run --example listener_client
//! ```

use multiprocess::connection::{Address, Client, Listener};
use multiprocess::{Error, Process, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const AUTHKEY: &[u8] = b"shared secret";

/// Shows bytes as Python prints them.
fn show(bytes: &[u8]) -> String {
    format!("b'{}'", bytes.escape_ascii())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn failed(what: String) -> Error {
    Error::Io(std::io::Error::other(what))
}

/// The child of part 1: connects, says hello, prints the reply.
fn rust_client(address: Address) -> Result<()> {
    let conn = Client::connect(address, Some(AUTHKEY))?;
    conn.send_bytes(b"hello from a Rust client")?;
    println!("  Rust client got:   {}", show(&conn.recv_bytes()?));
    Ok(())
}

fn rust_to_rust() -> Result<()> {
    println!("1. Rust Listener <- Rust Client (child process)");
    let listener = Listener::new(Some(AUTHKEY))?;
    println!("  listening at {}", listener.address());
    let mut child = Process::new(rust_client, (listener.address().clone(),));
    child.start()?;
    let conn = listener.accept()?;
    println!("  Rust listener got: {}", show(&conn.recv_bytes()?));
    conn.send_bytes(b"hello back from the Rust listener")?;
    child.join()?;
    if child.exitcode() != Some(0) {
        return Err(failed(format!("the Rust client exited {:?}", child.exitcode())));
    }
    Ok(())
}

const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
conn = Client(sys.argv[1], authkey=bytes.fromhex(sys.argv[2]))
conn.send_bytes(b'hello from a Python client')
print('  Python client got:', conn.recv_bytes(), flush=True)
"#;

fn python_client_to_rust_listener() -> Result<()> {
    println!("2. Rust Listener <- Python Client");
    let listener = Listener::new(Some(AUTHKEY))?;
    let Address::Unix(path) = listener.address() else { unreachable!("Listener::new binds a Unix path") };
    println!("  listening at {}", path.display());
    let mut python =
        Command::new("python3").args(["-c", PY_CLIENT]).arg(path).arg(hex(AUTHKEY)).stdin(Stdio::null()).spawn()?;
    let conn = listener.accept()?;
    println!("  Rust listener got: {}", show(&conn.recv_bytes()?));
    conn.send_bytes(b"hello back from the Rust listener")?;
    let status = python.wait()?;
    if !status.success() {
        return Err(failed(format!("the Python client exited {status}")));
    }
    Ok(())
}

const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
with Listener(('127.0.0.1', 0), authkey=bytes.fromhex(sys.argv[1])) as listener:
    print('%s:%d' % listener.address, flush=True)
    with listener.accept() as conn:
        print('  Python listener got:', conn.recv_bytes(), flush=True)
        conn.send_bytes(b'hello back from the Python listener')
"#;

fn rust_client_to_python_listener() -> Result<()> {
    println!("3. Python Listener <- Rust Client");
    let mut python = Command::new("python3")
        .args(["-c", PY_LISTENER])
        .arg(hex(AUTHKEY))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(python.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    let address: std::net::SocketAddr =
        line.trim().parse().map_err(|_| failed(format!("the Python listener printed {line:?}")))?;
    println!("  Python listening at {address}");
    let conn = Client::connect(address, Some(AUTHKEY))?;
    conn.send_bytes(b"hello from a Rust client")?;
    let reply = conn.recv_bytes()?;
    // The Python side prints what it got; pass its lines on, then ours.
    for line in out.lines() {
        println!("{}", line?);
    }
    println!("  Rust client got:   {}", show(&reply));
    let status = python.wait()?;
    if !status.success() {
        return Err(failed(format!("the Python listener exited {status}")));
    }
    Ok(())
}

fn python3_available() -> bool {
    Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn main() -> Result<()> {
    multiprocess::init();
    rust_to_rust()?;
    if !python3_available() {
        println!("note: python3 not found, so the Python half of this example was skipped");
        return Ok(());
    }
    python_client_to_rust_listener()?;
    rust_client_to_python_listener()?;
    println!("all three conversations authenticated with the same key and exchanged bytes both ways");
    Ok(())
}
