//! Remote managers: a server on a TCP address (or a unix path) with an authkey, reached by
//! `connect` from other processes, which find each other by address only. CONFORMANCE.md
//! MGR-11, MGR-12, MGR-20.
mod common;
use multiprocess::managers::{QueueProxy, SyncManager, connect};
use multiprocess::*;
use std::time::Duration;

fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    // Test-local randomness: the pid and the time are enough to tell runs apart.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        ^ u64::from(std::process::id());
    for (i, b) in key.iter_mut().enumerate() {
        *b = (seed.rotate_left(i as u32 * 7) >> (i % 8)) as u8;
    }
    key
}

/// The values of MGR-11: strings (one not ASCII), none, a bool, a float, bytes.
type Values = (String, Option<()>, bool, f64, String, String, Vec<u8>);

fn values() -> Values {
    (
        "hello world".into(),
        None,
        true,
        2.25,
        "hallå världen".into(),
        "привіт світ".into(),
        b"hall\xe5 v\xe4rlden".to_vec(),
    )
}

start_methods! {
    /// MGR-11: a server on `(127.0.0.1, 0)` with a random key; a child connects by address
    /// and key only and puts the values; a second client gets them back intact.
    fn mgr_11_remote_queue(m) {
        fn putter(address: Address, key: Vec<u8>) -> Result<()> {
            let remote = connect(address, &key)?;
            let q: QueueProxy<Values> = remote.get("queue")?;
            q.put(values()).map_err(Error::from)
        }
        let key = random_key();
        let server = SyncManager::builder().start_method(m).address(([127, 0, 0, 1], 0)).authkey(&key).start().unwrap();
        assert!(matches!(server.address(), Address::Tcp(_)));
        server.share("queue", &server.queue::<Values>().unwrap()).unwrap();
        let mut p = common::start(m, putter, (server.address().clone(), key.clone()));
        common::join_ok(&mut p);
        let second = connect(server.address().clone(), &key).unwrap();
        let q: QueueProxy<Values> = second.get("queue").unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), values());
    }

    /// MGR-12: a manager on a fixed address, shut down, and a new one on the same address
    /// at once.
    fn mgr_12_rapid_restart(m) {
        let first = SyncManager::builder().start_method(m).address(([127, 0, 0, 1], 0)).start().unwrap();
        let address = first.address().clone();
        first.share("x", &1u8).unwrap();
        let stale = first.value(1u8).unwrap();
        first.shutdown().unwrap();
        let second = SyncManager::builder().start_method(m).address(address.clone()).start().unwrap();
        assert_eq!(second.address(), &address);
        second.share("x", &2u8).unwrap();
        let fresh = second.value(9u8).unwrap();
        assert_eq!(second.get::<u8>("x").unwrap(), 2);
        // A proxy of the first server does not reach the second's object of the same number.
        assert!(matches!(stale.get(), Err(Error::ManagerGone)));
        assert_eq!(fresh.get().unwrap(), 9);
    }

    /// MGR-20: a wrong key is refused on both sides; a call after the shutdown is an error;
    /// a connect after it is refused; the server exits 0.
    fn mgr_20_remote_auth_and_lifecycle(m) {
        let server = SyncManager::builder().start_method(m).address(([127, 0, 0, 1], 0)).authkey(b"right").start().unwrap();
        let address = server.address().clone();
        assert!(matches!(connect(address.clone(), b"wrong"), Err(Error::Authentication(_))));
        let client = connect(address.clone(), b"right").unwrap();
        server.share("d", &server.dict::<u8, u8>().unwrap()).unwrap();
        let d: multiprocess::managers::DictProxy<u8, u8> = client.get("d").unwrap();
        d.insert(1, 1).unwrap();
        client.shutdown().unwrap(); // not the owner: does nothing
        assert_eq!(d.get(&1).unwrap(), Some(1), "a client's shutdown does not stop the server");
        let pid = server.pid().unwrap();
        server.shutdown().unwrap();
        assert!(!common::pid_alive(pid));
        assert!(matches!(d.get(&1), Err(Error::ManagerGone)));
        match connect(address, b"right") {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
            other => panic!("a connect after shutdown gave {other:?}"),
        }
    }
}

/// Three clients in three processes, each on a thread of its own, over TCP loopback, put and
/// get through one remote queue and one remote dict; every item arrives once.
#[test]
fn three_clients_on_three_processes_over_tcp() {
    fn client(address: Address, key: Vec<u8>, n: u32) -> Result<()> {
        let worker = std::thread::spawn(move || -> Result<()> {
            let remote = connect(address, &key)?;
            let q: QueueProxy<(u32, u32)> = remote.get("queue")?;
            let d: multiprocess::managers::DictProxy<u32, u32> = remote.get("seen")?;
            for i in 0..100 {
                q.put((n, i)).map_err(Error::from)?;
            }
            d.insert(n, 100)?;
            Ok(())
        });
        worker.join().expect("the client thread panicked")
    }
    let key = random_key();
    let server = SyncManager::builder().address(([127, 0, 0, 1], 0)).authkey(&key).start().unwrap();
    let q = server.queue::<(u32, u32)>().unwrap();
    server.share("queue", &q).unwrap();
    server.share("seen", &server.dict::<u32, u32>().unwrap()).unwrap();
    let methods = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];
    let mut kids: Vec<Process> = (0..3)
        .map(|n| common::start(methods[n as usize], client, (server.address().clone(), key.clone(), n)))
        .collect();
    let mut got = Vec::new();
    for _ in 0..300 {
        got.push(q.get_timeout(Duration::from_secs(20)).unwrap());
    }
    for p in &mut kids {
        common::join_ok(p);
    }
    got.sort();
    let want: Vec<(u32, u32)> = (0..3).flat_map(|n| (0..100).map(move |i| (n, i))).collect();
    assert_eq!(got, want);
    let seen: multiprocess::managers::DictProxy<u32, u32> = server.get("seen").unwrap();
    assert_eq!(seen.len().unwrap(), 3);
}

/// A raw TCP client that sends garbage before the handshake, or stalls in it, reads and
/// changes nothing, and a good client is served meanwhile.
#[test]
fn clients_that_fail_the_handshake_change_nothing() {
    use std::io::Write;
    let server = SyncManager::builder().address(([127, 0, 0, 1], 0)).authkey(b"key").start().unwrap();
    let Address::Tcp(at) = server.address().clone() else { unreachable!() };
    server.share("n", &7u8).unwrap();
    let mut stalled = std::net::TcpStream::connect(at).unwrap();
    let mut garbage = std::net::TcpStream::connect(at).unwrap();
    garbage.write_all(&[0xff; 64]).unwrap();
    let mut huge = std::net::TcpStream::connect(at).unwrap();
    huge.write_all(&0x7fff_ffffu32.to_be_bytes()).unwrap();
    let good = connect(server.address().clone(), b"key").unwrap();
    assert_eq!(good.get::<u8>("n").unwrap(), 7);
    assert_eq!(server.number_of_objects().unwrap(), 0);
    let _ = stalled.write_all(b"");
}
