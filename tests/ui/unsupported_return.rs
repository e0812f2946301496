// Targets whose return type is not an `Outcome`: the message lists the ones that are.
use multiprocess::Process;

fn name() -> String {
    "not an exit code".to_string()
}

fn closure() {
    let _p = Process::new(|x: u8| Some(x), (1,));
}

fn fn_item() {
    let _p = Process::new(name, ());
}

fn main() {
    closure();
    fn_item();
}
