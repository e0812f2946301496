//! Twin of the seed notes' shared-memory example:
//!
//! ```python
//! from multiprocessing import Value, Array
//! # shared memory: Value or Array store data in a shared memory map
//! # this Array is not numpy's: it can only be one-dimensional
//! # like Value, it needs its data type declared, or it is an error
//! num = Value('d', 0.0)
//! arr = Array('i', range(10))
//! ```
//!
//! completed as the Python documentation does: a child sets `num.value = 3.1415927` and
//! negates `arr` in place, and the parent prints both (`3.1415927`, then
//! `[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]`). The notes' "declare the data type" is the Rust
//! type here: `'d'` is `f64`, `'i'` is `i32`, and a wrong one does not compile.
//!
//! Run: `cargo run --example seed_value_array`

#[path = "seeds/value_array.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
