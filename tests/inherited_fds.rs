//! What a child holds (issue 16 point 9, docs/children.md): a
//! spawn or forkserver child only the descriptors it was given; a fork child, as in CPython,
//! every descriptor its parent had open.
mod common;
use multiprocess::*;
use std::os::fd::AsRawFd;

/// Whether descriptor `fd` of this process is open on `path` (its number alone could name
/// another file the child opened since).
fn is_open_on(fd: i32, path: &std::path::Path) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|target| target == path)
}

fn report(fd: i32, path: std::path::PathBuf, conn: Connection) -> Result<()> {
    conn.send(&is_open_on(fd, &path))
}

start_methods! {
    fn a_descriptor_not_given(m) {
        // Not close-on-exec, as a C library's or a careless program's may be.
        let path = std::env::temp_dir().join(format!("multiprocess-inherited-{}-{m:?}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: F_SETFD on a descriptor we own, clearing FD_CLOEXEC.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
        let (a, b) = pipe().unwrap();
        let mut p = common::start(m, report, (fd, path.clone(), b));
        let open_in_child: bool = a.recv().unwrap();
        common::join_ok(&mut p);
        match m {
            StartMethod::Fork => assert!(open_in_child, "a fork child inherits what its parent had open"),
            _ => assert!(!open_in_child, "a {m:?} child holds only what it was given"),
        }
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }
}
