// A generic method: its types would not be known to the proxy.
#[multiprocess::managed]
pub trait Store {
    fn put<T: serde::Serialize>(&mut self, value: T);
    fn get<'a>(&'a self) -> u8;
}

fn main() {}
