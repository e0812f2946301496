// Arguments that are not serde values: the message says what args must be.
use multiprocess::Process;
use std::rc::Rc;

struct Point {
    x: i32,
}

fn plain_struct() {
    let _p = Process::new(|p: Point| assert_eq!(p.x, 1), (Point { x: 1 },));
}

fn rc() {
    let _p = Process::new(|n: Rc<u8>| assert_eq!(*n, 1), (Rc::new(1u8),));
}

fn not_a_tuple() {
    let _p = Process::new(|n: u8| assert_eq!(n, 1), 1u8);
}

fn main() {
    plain_struct();
    rc();
    not_a_tuple();
}
