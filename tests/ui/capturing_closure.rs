// A closure that captures a `String`: not a target; the message names `Process::from_closure`.
use multiprocess::Process;

fn main() {
    let greeting = String::from("hello");
    let _p = Process::new(move || println!("{greeting}"), ());
}
