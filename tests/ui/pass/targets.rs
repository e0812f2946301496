// What `Process::new` takes: fn items and closures that capture nothing, with serde args;
// and `Process::from_closure` for a closure that captures.
use multiprocess::{Process, pipe};
use std::process::ExitCode;

fn add(a: i32, b: i32) -> multiprocess::Result<()> {
    assert_eq!(a + b, 3);
    Ok(())
}

fn exit_code() -> ExitCode {
    ExitCode::from(3)
}

fn main() -> multiprocess::Result<()> {
    let (_r, w) = pipe()?;
    let processes = [
        Process::new(add, (1, 2)),
        Process::new(exit_code, ()),
        Process::new(|| (), ()),
        Process::new(|s: String, v: Vec<u8>| assert_eq!(s.len(), v.len()), ("ab".to_string(), vec![1, 2])),
        Process::new(|w: multiprocess::Connection| w.send(&1u8), (w,)),
    ];
    let greeting = String::from("hello");
    let captured = Process::from_closure(move || assert_eq!(greeting.len(), 5));
    assert_eq!(processes.len() + 1, [captured].len() + processes.len());
    Ok(())
}
