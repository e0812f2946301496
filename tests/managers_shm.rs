//! SharedMemoryManager: segments made through it live until it stops, whoever made them,
//! and are unlinked then, also when its owner was SIGKILLed. CONFORMANCE.md SHM-17, SHM-18.
mod common;
use multiprocess::managers::SharedMemoryManager;
use multiprocess::*;
use std::time::Duration;

fn in_dev_shm(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name.trim_start_matches('/')).exists()
}

start_methods! {
    /// SHM-17: lists of 5 to 8 items and segments of 32 to 104 bytes made through the
    /// manager attach by name; after `shutdown()` every name is gone.
    fn shm_17_manager_basics(m) {
        let smm = SharedMemoryManager::start_with(m).unwrap();
        let mut names = Vec::new();
        for i in 5..9 {
            let sl = smm.shareable_list((0..i).map(|x| x as i64)).unwrap();
            let again = ShareableList::open(sl.name()).unwrap();
            assert_eq!(again.len(), i);
            names.push(sl.name().to_string());
        }
        for j in (32..112).step_by(8) {
            let shm = smm.shared_memory(j).unwrap();
            assert!(SharedMemory::open(shm.name()).unwrap().size() >= j);
            names.push(shm.name().to_string());
        }
        assert!(names.iter().all(|n| in_dev_shm(n)));
        smm.shutdown().unwrap();
        for name in &names {
            assert!(matches!(SharedMemory::open(name), Err(Error::NotFound(_))), "{name} outlived the manager");
        }
    }

    /// SHM-18: SIGINT to the manager's server: it keeps serving.
    fn shm_18_server_ignores_sigint(m) {
        let smm = SharedMemoryManager::start_with(m).unwrap();
        let pid = smm.pid().unwrap();
        // SAFETY: kill(2) with a plain signal on the manager's own server.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
        std::thread::sleep(Duration::from_millis(100));
        assert!(common::pid_alive(pid));
        let shm = smm.shared_memory(16).unwrap();
        let name = shm.name().to_string();
        smm.shutdown().unwrap();
        assert!(!in_dev_shm(&name));
    }

    /// The owner SIGKILLed: its manager's server unlinks every segment and exits.
    fn segments_go_when_the_owner_is_killed(m) {
        fn owner(report: Connection) -> Result<()> {
            let smm = SharedMemoryManager::start()?;
            let a = smm.shared_memory(4096)?;
            let b = smm.shareable_list(["x", "y"])?;
            report.send(&(smm.pid(), vec![a.name().to_string(), b.name().to_string()]))?;
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        }
        let (a, b) = pipe().unwrap();
        let mut p = common::start(m, owner, (b,));
        let (server, names): (Option<u32>, Vec<String>) = a.recv().unwrap();
        assert!(names.iter().all(|n| in_dev_shm(n)));
        p.kill().unwrap();
        p.join().unwrap();
        let server = server.unwrap();
        assert!(common::eventually_within(Duration::from_secs(5), || !common::pid_alive(server)), "the server outlived its owner");
        for name in &names {
            assert!(!in_dev_shm(name), "{name} outlived the killed owner");
        }
    }
}

/// A segment made through the manager outlives the handle that made it (no resource
/// tracker of its maker's unlinks it), and goes at shutdown.
#[test]
fn a_segment_outlives_its_handle() {
    let smm = SharedMemoryManager::start().unwrap();
    let shm = smm.shared_memory(64).unwrap();
    shm.write_at(0, b"left by its maker").unwrap();
    let name = shm.name().to_string();
    drop(shm);
    let again = SharedMemory::open(&name).unwrap();
    let mut buf = [0u8; 17];
    again.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"left by its maker");
    smm.shutdown().unwrap();
    assert!(!in_dev_shm(&name));
}
