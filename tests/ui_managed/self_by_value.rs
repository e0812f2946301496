// Receivers: the object stays in the server, so `&self` or `&mut self`. The proxy is still
// written for the methods that are fine, so only the refusals are reported.
#[multiprocess::managed]
pub trait Store {
    fn into_items(self) -> Vec<u8>;
    fn boxed(self: Box<Self>) -> u8;
    fn new(size: usize) -> u8;
    fn len(&self) -> usize;
}

fn len(store: &StoreProxy) -> multiprocess::Result<usize> {
    store.len()
}

fn main() {
    let _ = len;
}
