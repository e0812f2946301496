// An async method.
#[multiprocess::managed]
pub trait Store {
    async fn put(&mut self, value: u8);
}

fn main() {}
