//! Body of `seed_pipe` (and step 7 of the tour): the seed notes' `parent_conn, child_conn = Pipe()`.

use multiprocess::{Connection, Error, Process, pipe};

/// The child: talks over its end of the pipe in both directions.
fn child(conn: Connection) -> multiprocess::Result<()> {
    // Child to parent: any serde value, here the notes' `[42, None, 'hello']` as a tuple.
    conn.send(&(42, None::<i32>, "hello"))?;
    // Parent to child, then an answer back.
    let question: String = conn.recv()?;
    conn.send(&question.to_uppercase())?;
    // Raw bytes work too (`send_bytes` / `recv_bytes`).
    let bytes = conn.recv_bytes()?;
    conn.send_bytes(&[bytes.as_slice(), b" back"].concat())?;
    Ok(())
}

/// Makes a pipe, gives one end to a child, and talks both ways.
pub fn run() -> multiprocess::Result<()> {
    // The two connection objects are the two ends of the pipe; each can send() and recv().
    let (parent_conn, child_conn) = pipe()?;
    // `child_conn` moves into the process's args; after start() it is closed here.
    let mut p = Process::new(child, (child_conn,));
    p.start()?;

    let first: (i32, Option<i32>, String) = parent_conn.recv()?;
    println!("parent got from child: {first:?}");
    assert_eq!(first, (42, None, "hello".to_string()));

    parent_conn.send("ping from the parent")?;
    let reply: String = parent_conn.recv()?;
    println!("parent sent \"ping from the parent\", child answered {reply:?}");
    assert_eq!(reply, "PING FROM THE PARENT");

    parent_conn.send_bytes(b"bytes")?;
    let echoed = parent_conn.recv_bytes()?;
    println!("send_bytes(b\"bytes\") came back as {:?}", String::from_utf8_lossy(&echoed));
    assert_eq!(echoed, b"bytes back");

    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    // The only other end was the child's, and it has exited: reading now gives Eof
    // (Python's EOFError) instead of blocking forever.
    assert!(matches!(parent_conn.recv::<String>(), Err(Error::Eof)));
    println!("child exited with code 0; recv() now gives Eof: the other end is closed");
    Ok(())
}
