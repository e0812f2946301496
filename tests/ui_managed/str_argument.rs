// References: take owned types.
#[multiprocess::managed]
pub trait Store {
    fn put(&mut self, key: &str, value: &[u8]);
    fn get(&self, key: String) -> &Vec<u8>;
    fn all(&self, keys: Vec<&str>) -> usize;
}

fn main() {}
