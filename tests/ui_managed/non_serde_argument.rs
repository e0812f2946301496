// An argument that is not a serde type: the message names the method and says why.
use std::rc::Rc;

pub struct Plain {
    pub x: i32,
}

#[multiprocess::managed]
pub trait Store {
    fn put(&mut self, value: Plain);
    fn share(&self, count: Rc<u8>) -> u8;
}

fn main() {}
