//! Start methods and contexts: MISC-01, MISC-02, and what a child inherits.
mod common;
use multiprocess::*;

fn report_method(conn: Connection) -> Result<()> {
    conn.send(&get_start_method().to_string())?;
    // In a child the method is already fixed (inherited), so setting it needs `force`.
    let refused = matches!(set_start_method(StartMethod::Fork, false), Err(Error::ContextAlreadySet));
    conn.send(&refused)?;
    set_start_method(StartMethod::Spawn, true)?;
    conn.send(&get_start_method().to_string())
}

start_methods! {
    /// MISC-01: a context reports its method, and the child it starts reports the same one.
    fn misc_01_child_reports_its_start_method(m) {
        let ctx = get_context(m);
        assert_eq!(ctx.get_start_method(), m);
        let (parent, child) = pipe().unwrap();
        let mut p = ctx.process(report_method, (child,));
        assert_eq!(p.start_method(), m);
        p.start().unwrap();
        assert_eq!(parent.recv::<String>().unwrap(), m.as_str());
        assert!(parent.recv::<bool>().unwrap(), "set_start_method without force must be refused in a child");
        assert_eq!(parent.recv::<String>().unwrap(), "spawn");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// MISC-02: all three methods exist on Linux, the default (never fork) first.
#[test]
fn misc_02_all_start_methods() {
    let all = get_all_start_methods();
    assert_eq!(all, [StartMethod::ForkServer, StartMethod::Spawn, StartMethod::Fork]);
    for m in &all {
        assert_eq!(m.as_str().parse::<StartMethod>().unwrap(), *m);
    }
    assert!(matches!("thread".parse::<StartMethod>(), Err(Error::InvalidArgument(_))));
}

/// `Process::from_closure` always forks, whatever the context says.
#[test]
fn from_closure_is_always_fork() {
    let p = get_context(StartMethod::Spawn).process(|| (), ());
    assert_eq!(p.start_method(), StartMethod::Spawn);
    assert_eq!(Process::from_closure(|| ()).start_method(), StartMethod::Fork);
}
