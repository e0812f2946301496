//! Body of `manager_dict` (and the tour's manager step): a manager's dict shared by two
//! children, as Python's `Manager().dict()` is. Not in the seed notes; the next thing their
//! reader reaches for.

use multiprocess::Process;
use multiprocess::managers::DictProxy;

/// A child: records its number and its pid, and counts itself in under the manager's lock.
fn child(d: DictProxy<String, u32>, n: u32, lock: multiprocess::managers::LockProxy) -> multiprocess::Result<()> {
    d.insert(format!("child {n}"), multiprocess::getpid())?;
    let _held = lock.lock()?;
    let seen = d.get(&"children".to_string())?.unwrap_or(0);
    d.insert("children".to_string(), seen + 1)?;
    Ok(())
}

/// Two children write into one dict that lives in the manager's server process.
pub fn run() -> multiprocess::Result<()> {
    let m = multiprocess::manager()?; // with Manager() as m:
    let d = m.dict::<String, u32>()?; //     d = m.dict()
    let lock = m.lock()?;
    d.insert("children".to_string(), 0)?;
    let mut kids = Vec::new();
    for n in 1..=2 {
        let mut p = Process::new(child, (d.clone(), n, lock.clone()));
        p.start()?;
        kids.push(p);
    }
    for p in &mut kids {
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    for (key, value) in d.items()? {
        println!("d[{key:?}] = {value}");
    }
    assert_eq!(d.get(&"children".to_string())?, Some(2));
    for (n, p) in (1..=2).zip(&kids) {
        assert_eq!(d.get(&format!("child {n}"))?, p.pid());
    }
    drop((d, lock));
    // The children's references went when their connections closed, at their exit; the
    // server may take a moment to see the last one.
    let start = std::time::Instant::now();
    while m.number_of_objects()? != 0 && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(m.number_of_objects()?, 0);
    println!("the server freed both objects once their last proxies were dropped");
    Ok(())
}
