//! The remote queue of CPython's manager documentation: one process serves a queue on a TCP
//! address with an authkey; others, which know only the address and the key, put and get.
//!
//! ```python
//! # server                                  # client
//! class QueueManager(BaseManager): pass     class QueueManager(BaseManager): pass
//! queue = queue.Queue()                     QueueManager.register('get_queue')
//! QueueManager.register('get_queue',        m = QueueManager(address=('foo.bar.org', 50000),
//!     callable=lambda: queue)                                authkey=b'abracadabra')
//! m = QueueManager(address=('', 50000),     m.connect()
//!                  authkey=b'abracadabra')  queue = m.get_queue()
//! m.get_server().serve_forever()            queue.put('hello')
//! ```
//!
//! Run: `cargo run --example remote_queue` (both sides: it starts the client as a separate
//! program, which gets only the address and the key on its command line), or one side:
//! `cargo run --example remote_queue -- serve 127.0.0.1:50000` and, elsewhere,
//! `cargo run --example remote_queue -- put 127.0.0.1:50000 hello`.

use multiprocess::managers::{QueueProxy, SyncManager, connect};
use std::net::SocketAddr;

const AUTHKEY: &[u8] = b"abracadabra";

fn serve(address: SocketAddr) -> multiprocess::Result<SyncManager> {
    let m = SyncManager::builder().address(address).authkey(AUTHKEY).start()?;
    m.share("get_queue", &m.queue::<String>()?)?;
    Ok(m)
}

fn put(address: SocketAddr, text: &str) -> multiprocess::Result<()> {
    let m = connect(address, AUTHKEY)?;
    let queue: QueueProxy<String> = m.get("get_queue")?;
    queue.put(text.to_string()).map_err(multiprocess::Error::from)
}

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve", address] => {
            let m = serve(address.parse().map_err(|e| multiprocess::Error::InvalidArgument(format!("{e}")))?)?;
            println!("serving a queue on {}", m.address());
            m.serve_forever()
        }
        ["put", address, text] => {
            put(address.parse().map_err(|e| multiprocess::Error::InvalidArgument(format!("{e}")))?, text)
        }
        [] => {
            // Both sides: a server on a free port, and a client that is another program.
            let m = serve(([127, 0, 0, 1], 0).into())?;
            let multiprocess::Address::Tcp(address) = m.address().clone() else { unreachable!() };
            println!("serving a queue on {address}");
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(["put", &address.to_string(), "hello from another program"])
                .status()?;
            assert!(status.success(), "the client failed: {status}");
            let queue: QueueProxy<String> = m.get("get_queue")?;
            let got = queue.get_timeout(std::time::Duration::from_secs(10))?;
            println!("got {got:?}");
            assert_eq!(got, "hello from another program");
            Ok(())
        }
        _ => Err(multiprocess::Error::InvalidArgument("usage: remote_queue [serve ADDRESS | put ADDRESS TEXT]".into())),
    }
}
