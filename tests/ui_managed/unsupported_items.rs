// What else a managed trait cannot have: generics, associated types and consts, `impl
// Trait`, `Self` in a signature.
#[multiprocess::managed]
pub trait Store<T> {
    type Key;
    const SIZE: usize;
    fn put(&mut self, value: impl Into<u8>);
    fn keys(&self) -> impl Iterator<Item = u8>;
    fn merge(&mut self, other: Box<Self>);
}

#[multiprocess::managed]
pub struct NotATrait;

fn main() {}
