//! A typed receive refuses bytes left over after the value (issue 13 point 1): postcard stops
//! where a value ends, so a message sent as `(u32, u32)` and read as `u32` used to give the
//! first field as if all were well. Every decoding path now gives `Error::Codec`; the
//! connection or queue goes on with the next message, and exact types still round-trip.
mod common;
use multiprocess::connection::{Client, Listener};
use multiprocess::*;

/// Sends a pair, then a lone number, on `a`; reads them from `b` as the wrong and then the right
/// type.
fn check_pair_read_as_single(a: &Connection, b: &Connection) {
    a.send(&(7u32, 9u32)).unwrap();
    match b.recv::<u32>() {
        Err(Error::Codec(message)) => assert!(message.contains("left over"), "{message}"),
        other => panic!("a (u32, u32) read as u32 must be a codec error, got {other:?}"),
    }
    // The connection goes on: the next message decodes normally.
    a.send(&11u32).unwrap();
    assert_eq!(b.recv::<u32>().unwrap(), 11);
    // Exact types still round-trip, strings and nested options included.
    a.send(&(7u32, 9u32)).unwrap();
    assert_eq!(b.recv::<(u32, u32)>().unwrap(), (7, 9));
    a.send(&("text".to_string(), Some(vec![1u8, 2]))).unwrap();
    assert_eq!(b.recv::<(String, Option<Vec<u8>>)>().unwrap(), ("text".to_string(), Some(vec![1, 2])));
}

#[test]
fn pipe_recv_refuses_bytes_left_over() {
    let guard = common::LeakGuard::new();
    {
        let (a, b) = pipe().unwrap();
        check_pair_read_as_single(&a, &b);
        check_pair_read_as_single(&b, &a);
        let (r, w) = pipe_simplex().unwrap();
        check_pair_read_as_single(&w, &r);
    }
    guard.check();
}

#[test]
fn socket_recv_refuses_bytes_left_over() {
    let listener = Listener::bind(([127, 0, 0, 1], 0), Some(b"key")).unwrap();
    let address = listener.address().clone();
    let client = std::thread::spawn(move || Client::connect(address, Some(b"key")).unwrap());
    let served = listener.accept().unwrap();
    let client = client.join().unwrap();
    check_pair_read_as_single(&client, &served);
    check_pair_read_as_single(&served, &client);
}

#[test]
fn a_shorter_struct_is_refused_too() {
    #[derive(serde::Serialize)]
    struct Wide {
        a: u8,
        b: String,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Narrow {
        a: u8,
    }
    let (a, b) = pipe().unwrap();
    a.send(&Wide { a: 1, b: "more".into() }).unwrap();
    assert!(matches!(b.recv::<Narrow>(), Err(Error::Codec(_))));
}

start_methods! {
    /// A child that reads its messages with the wrong type gets the codec error, under every
    /// start method (the child's decoding is the same code, in another process).
    fn child_recv_refuses_bytes_left_over(m) {
        fn child(conn: Connection) -> Result<()> {
            let wrong = matches!(conn.recv::<u32>(), Err(Error::Codec(_)));
            let right = conn.recv::<(u32, u32)>()? == (3, 4);
            conn.send(&(wrong, right))
        }
        let (a, b) = pipe().unwrap();
        let mut p = common::start(m, child, (b,));
        a.send(&(1u32, 2u32)).unwrap();
        a.send(&(3u32, 4u32)).unwrap();
        assert_eq!(a.recv::<(bool, bool)>().unwrap(), (true, true));
        common::join_ok(&mut p);
    }
}
