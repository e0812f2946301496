//! The authkey never falls back to zeros (issue 13 point 4): when the kernel gives no random
//! bytes, the key is empty, not predictable, and starting a child (which hands the key on)
//! is an error that says why. A seccomp filter makes `getrandom` fail for real.
mod common;
use multiprocess::*;

/// Makes every `getrandom` of this thread (and of the processes it starts) fail with EIO:
/// an error the `getrandom` crate passes on, where ENOSYS or EPERM would make it fall back
/// to `/dev/urandom`.
fn refuse_getrandom() {
    const LOAD_NR: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS, seccomp_data.nr at offset 0
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let mut program = [
        libc::sock_filter { code: LOAD_NR, jt: 0, jf: 0, k: 0 },
        libc::sock_filter { code: JEQ, jt: 0, jf: 1, k: libc::SYS_getrandom as u32 },
        libc::sock_filter { code: RET, jt: 0, jf: 0, k: RET_ERRNO | libc::EIO as u32 },
        libc::sock_filter { code: RET, jt: 0, jf: 0, k: RET_ALLOW },
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: plain prctl calls; the program outlives the call, which copies it.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog), 0);
    }
    // The filter works: the raw call fails with EIO.
    let mut byte = [0u8; 1];
    // SAFETY: a one-byte buffer we own.
    let r = unsafe { libc::getrandom(byte.as_mut_ptr().cast(), 1, 0) };
    assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EIO)));
}

fn child() -> Result<()> {
    Ok(())
}

#[test]
fn no_randomness_no_authkey() {
    if !common::in_fresh_process("no_randomness_no_authkey") {
        // The body needs a process whose key was not made yet: this binary, run again.
        let out = common::fresh_process("no_randomness_no_authkey");
        assert!(out.status.success(), "the run behind the seccomp filter failed: {out:?}");
        return;
    }
    // std's hash maps take their keys from getrandom too, once per thread: take them now.
    let _ = std::collections::HashMap::<u8, u8>::new();
    refuse_getrandom();
    let me = current_process();
    assert!(me.authkey().is_empty(), "a key made without randomness: {:?}", me.authkey());
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = get_context(m).process(child, ());
        match p.start() {
            Err(Error::Io(e)) => assert!(e.to_string().contains("authkey"), "{m:?}: {e}"),
            other => panic!("{m:?}: a child started with no authkey to hand on: {other:?}"),
        }
    }
    assert!(active_children().is_empty());
}

#[test]
fn the_authkey_is_random_and_inherited() {
    fn send_key(conn: Connection) -> Result<()> {
        conn.send(&current_process().authkey().to_vec())
    }
    let key = current_process().authkey().to_vec();
    assert_eq!(key.len(), 32);
    assert!(key.iter().any(|&b| b != 0));
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let (a, b) = pipe().unwrap();
        let mut p = common::start(m, send_key, (b,));
        assert_eq!(a.recv::<Vec<u8>>().unwrap(), key, "{m:?}");
        common::join_ok(&mut p);
    }
}
