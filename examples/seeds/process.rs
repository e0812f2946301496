//! Body of `seed_process` (and step 2 of the tour): the seed notes' `Process(target=f, args=('john',))`.

use multiprocess::Process;

/// The target, as in the notes: `def f(name): print(f'hello {name}')`.
fn f(name: String) {
    println!("hello {name}");
}

/// Starts `f("john")` in a child and joins it.
pub fn run() -> multiprocess::Result<()> {
    // p = Process(target=f, args=('john',)); the Rust args tuple is `(String,)`.
    let mut p = Process::new(f, ("john".to_string(),));
    assert_eq!(p.exitcode(), None, "not started yet");
    p.start()?; // p.start()
    p.join()?; // p.join(): blocks until the child ends
    assert_eq!(p.exitcode(), Some(0), "f returned normally");
    assert!(!p.is_alive());
    println!("{} ran f('john') under {} and exited with code {:?}", p.name(), p.start_method(), p.exitcode());
    Ok(())
}
