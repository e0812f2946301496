// A result that is not a serde type.
pub struct Report {
    pub lines: Vec<String>,
}

#[multiprocess::managed]
pub trait Store {
    fn report(&self) -> Option<Report>;
    fn callback(&self) -> Box<dyn Fn() + Send>;
}

fn main() {}
