mod common;
use multiprocess::*;

fn noop() {}

start_methods! {
    /// A child starts and exits 0.
    fn smoke_start_join(m) {
        let mut p = get_context(m).process(noop, ());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}
