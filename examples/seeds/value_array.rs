//! Body of `seed_value_array`: the seed notes' `num = Value('d', 0.0)` and
//! `arr = Array('i', range(10))`, shared with a child that changes them.

use multiprocess::{Array, Process, Value};

/// What the child writes: the Python documentation's literal, not `f64::consts::PI`.
#[allow(clippy::approx_constant)]
const NUM: f64 = 3.1415927;

/// The child (Python's `f(n, a)`): `n.value = 3.1415927`, then `a[i] = -a[i]` for each `i`.
fn f(n: Value<f64>, a: Array<i32>) -> multiprocess::Result<()> {
    n.set(NUM);
    for i in 0..a.len() {
        // Each get and set takes the array's lock; `a.lock()?` would hold it for the loop.
        let x = a.get(i).unwrap_or_default();
        a.set(i, -x)?;
    }
    Ok(())
}

/// Makes the shared value and array, lets a child change them, and prints what it left.
pub fn run() -> multiprocess::Result<()> {
    let num = Value::new(0.0f64)?; // Value('d', 0.0)
    let arr = Array::from_iter(0..10i32)?; // Array('i', range(10))
    println!("before: num = {}, arr = {:?}", num.get(), arr.to_vec());

    // The handles go to the child in its args: both sides see the same memory.
    let mut p = Process::new(f, (num.clone(), arr.clone()));
    p.start()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));

    println!("{}", num.get()); // print(num.value)
    println!("{:?}", arr.to_vec()); // print(arr[:])
    assert_eq!(num.get(), NUM);
    assert_eq!(arr.to_vec(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
    Ok(())
}
