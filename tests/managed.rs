//! Your own types in a manager (issue 15, point 1): `#[multiprocess::managed]` on a trait, a
//! factory registered for it, and its proxy, called from the parent and from children under
//! every start method (the server's too).
mod common;
use multiprocess::managers::SyncManager;
use multiprocess::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[multiprocess::managed]
pub trait Counter {
    /// Adds `by`; the new value.
    fn increment(&mut self, by: i64) -> i64;
    fn get(&self) -> i64;
    fn reset(&mut self);
    fn name(&self, prefix: String) -> String;
    /// Panics with `message` (a method that fails alone).
    fn explode(&self, message: String) -> i64;
}

struct LocalCounter {
    value: i64,
    label: &'static str,
}

impl Counter for LocalCounter {
    fn increment(&mut self, by: i64) -> i64 {
        self.value += by;
        self.value
    }
    fn get(&self) -> i64 {
        self.value
    }
    fn reset(&mut self) {
        self.value = 0;
    }
    fn name(&self, prefix: String) -> String {
        format!("{prefix}{}", self.label)
    }
    fn explode(&self, message: String) -> i64 {
        panic!("{message}")
    }
}

fn new_counter(start: i64) -> Box<dyn Counter + Send> {
    Box::new(LocalCounter { value: start, label: "counter" })
}

fn new_hundred(_: ()) -> Box<dyn Counter + Send> {
    Box::new(LocalCounter { value: 100, label: "hundred" })
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Item {
    name: String,
    count: u32,
}

/// Struct arguments, `Option`, `Vec`, `Result` and `()` results, and a default method.
#[multiprocess::managed]
pub trait Inventory {
    fn add(&mut self, item: Item);
    fn find(&self, name: String) -> Option<Item>;
    fn names(&self) -> Vec<String>;
    fn take(&mut self, name: String, count: u32) -> Result<u32, String>;
    fn clear(&mut self);
    /// A default body: kept, and called in the server.
    fn size(&self) -> usize {
        self.names().len()
    }
}

#[derive(Default)]
struct Shelf(BTreeMap<String, u32>);

impl Inventory for Shelf {
    fn add(&mut self, item: Item) {
        *self.0.entry(item.name).or_default() += item.count;
    }
    fn find(&self, name: String) -> Option<Item> {
        self.0.get(&name).map(|&count| Item { name, count })
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn take(&mut self, name: String, count: u32) -> Result<u32, String> {
        let have = self.0.get_mut(&name).ok_or(format!("no {name}"))?;
        *have = have.checked_sub(count).ok_or(format!("only {have} {name}"))?;
        Ok(*have)
    }
    fn clear(&mut self) {
        self.0.clear()
    }
}

fn new_shelf(items: Vec<Item>) -> Box<dyn Inventory + Send> {
    let mut shelf = Shelf::default();
    items.into_iter().for_each(|item| shelf.add(item));
    Box::new(shelf)
}

/// Another definition of `Counter`, as a client built from other sources would know it: the
/// same name, other methods, so another digest.
mod other {
    #[multiprocess::managed]
    pub trait Counter {
        fn increment(&mut self, by: i32) -> i32;
    }
}

fn builder(m: StartMethod) -> multiprocess::managers::ManagerBuilder {
    SyncManager::builder()
        .start_method(m)
        .register::<dyn Counter, _, _>("Counter", new_counter)
        .register::<dyn Counter, _, _>("Hundred", new_hundred)
        .register::<dyn Inventory, _, _>("Inventory", new_shelf)
}

/// Waits for the server to hold `n` objects (a fork child of a test beside this one, under
/// plain `cargo test`, may hold copies of this test's proxies until it ends).
fn objects_reach(mgr: &SyncManager, n: usize) {
    let reached = common::eventually_within(Duration::from_secs(20), || mgr.number_of_objects().unwrap() == n);
    assert!(reached, "the server holds {} objects, not {n}", mgr.number_of_objects().unwrap());
}

fn remote_kind<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Err(Error::Remote { kind, .. }) => kind,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn child_counts(c: CounterProxy, times: i64) -> Result<()> {
    for _ in 0..times {
        c.increment(1)?;
    }
    assert_eq!(c.name("child's ".into())?, "child's counter");
    Ok(())
}

fn child_stocks(shelf: InventoryProxy) -> Result<()> {
    shelf.add(Item { name: "pear".into(), count: 2 })?;
    assert_eq!(shelf.take("apple".into(), 1)?, Ok(2));
    assert_eq!(shelf.take("kiwi".into(), 1)?, Err("no kiwi".to_string()));
    Ok(())
}

start_methods! {
    /// The trait's methods through the proxy, in the parent and in a child (the proxy travels
    /// in its args); the object is freed when the last proxy is dropped.
    fn managed_counter(m) {
        let mgr = builder(m).start().unwrap();
        let c: CounterProxy = mgr.create::<dyn Counter, _>("Counter", 10).unwrap();
        assert_eq!(mgr.number_of_objects().unwrap(), 1);
        assert_eq!(c.increment(5).unwrap(), 15);
        assert_eq!(c.get().unwrap(), 15);
        assert_eq!(c.name("a ".into()).unwrap(), "a counter");
        let mut p = common::start(m, child_counts, (c.clone(), 3));
        common::join_ok(&mut p);
        assert_eq!(c.get().unwrap(), 18);
        c.reset().unwrap();
        assert_eq!(c.get().unwrap(), 0);
        assert!(format!("{c:?}").starts_with("CounterProxy("), "{c:?}");
        drop((c, p));
        objects_reach(&mgr, 0);
    }

    /// Struct arguments and `Option`, `Vec`, `Result` and `()` results, a default method, and
    /// a child that changes the object.
    fn managed_struct_arguments(m) {
        let mgr = builder(m).start().unwrap();
        let apples = vec![Item { name: "apple".into(), count: 3 }];
        let shelf: InventoryProxy = mgr.create::<dyn Inventory, _>("Inventory", apples).unwrap();
        assert_eq!(shelf.find("apple".into()).unwrap(), Some(Item { name: "apple".into(), count: 3 }));
        assert_eq!(shelf.find("pear".into()).unwrap(), None);
        let mut p = common::start(m, child_stocks, (shelf.clone(),));
        common::join_ok(&mut p);
        assert_eq!(shelf.names().unwrap(), vec!["apple".to_string(), "pear".to_string()]);
        assert_eq!(shelf.take("pear".into(), 5).unwrap(), Err("only 2 pear".to_string()));
        assert_eq!(shelf.size().unwrap(), 2);
        shelf.clear().unwrap();
        assert_eq!(shelf.size().unwrap(), 0);
        drop((shelf, p));
        objects_reach(&mgr, 0);
    }

    /// A method that panics is `Error::Remote { kind: "Panic" }` with its message, for the
    /// parent and for a child; the object and the server go on.
    fn managed_panic_fails_alone(m) {
        let mgr = builder(m).start().unwrap();
        let c = mgr.create::<dyn Counter, _>("Counter", 1).unwrap();
        match c.explode("boom".into()) {
            Err(Error::Remote { kind, message }) => {
                assert_eq!(kind, "Panic");
                assert!(message.contains("boom"), "{message}");
            }
            other => panic!("expected a panic, got {other:?}"),
        }
        assert_eq!(c.increment(1).unwrap(), 2);
        fn child(c: CounterProxy) -> Result<()> {
            assert_eq!(remote_kind(c.explode("in child".into())), "Panic");
            c.increment(1).map(drop)
        }
        let mut p = common::start(m, child, (c.clone(),));
        common::join_ok(&mut p);
        assert_eq!(c.get().unwrap(), 3);
        drop((c, p));
        objects_reach(&mgr, 0);
    }

    /// One trait registered under two names, with two factories: two kinds of objects, each
    /// its own.
    fn managed_two_registrations(m) {
        let mgr = builder(m).start().unwrap();
        let a = mgr.create::<dyn Counter, _>("Counter", 0).unwrap();
        let b = mgr.create::<dyn Counter, _>("Hundred", ()).unwrap();
        let b2 = mgr.create::<dyn Counter, _>("Hundred", ()).unwrap();
        assert_eq!(a.increment(1).unwrap(), 1);
        assert_eq!(b.increment(1).unwrap(), 101);
        assert_eq!(b2.get().unwrap(), 100);
        assert_eq!(b.name(String::new()).unwrap(), "hundred");
        assert_eq!(mgr.number_of_objects().unwrap(), 3);
        drop((a, b, b2));
        objects_reach(&mgr, 0);
    }

    /// A client whose `Counter` has other methods (so another digest) is refused at `create`,
    /// before any call; so is a name nobody registered, and arguments of the wrong type.
    fn managed_definition_mismatch(m) {
        let mgr = builder(m).start().unwrap();
        let refused = mgr.create::<dyn other::Counter, _>("Counter", 0);
        assert_eq!(remote_kind(refused), "InterfaceMismatch");
        assert_ne!(
            <dyn other::Counter as managers::Interface>::DIGEST,
            <dyn Counter as managers::Interface>::DIGEST
        );
        assert_eq!(<dyn other::Counter as managers::Interface>::NAME, "Counter");
        let _ = remote_kind(mgr.create::<dyn Counter, _>("Nobody", 0));
        let _ = remote_kind(mgr.create::<dyn Counter, _>("Counter", "ten".to_string()));
        let _ = remote_kind(mgr.create::<dyn Counter, _>("Inventory", Vec::<Item>::new()));
        assert_eq!(mgr.number_of_objects().unwrap(), 0);
    }

    /// Proxies are serde values: a list of them holds references to their objects, and gives
    /// proxies back.
    fn managed_proxy_in_a_list(m) {
        let mgr = builder(m).start().unwrap();
        let c = mgr.create::<dyn Counter, _>("Counter", 5).unwrap();
        let list = mgr.list::<CounterProxy>().unwrap();
        list.push(c.clone()).unwrap();
        drop(c);
        let back = list.get(0).unwrap().unwrap();
        assert_eq!(back.increment(1).unwrap(), 6);
        drop((back, list));
        objects_reach(&mgr, 0);
    }
}

/// Names that the generated code must not trip on: an argument named as its method, methods
/// named as the dispatch's own variables, a raw identifier, a pattern argument, a method left
/// out by `cfg`.
#[multiprocess::managed]
trait Awkward {
    fn name(&self, name: String) -> String;
    fn object(&mut self, args: u8, method: u8, result: u8) -> u8;
    fn wire(&self, object: u8) -> u8;
    fn r#type(&self) -> String;
    fn pair(&self, (a, b): (u8, u8), arg0: u8) -> u8 {
        a * b + arg0
    }
    #[cfg(any())]
    fn never(&self);
}

struct Plain;

impl Awkward for Plain {
    fn name(&self, name: String) -> String {
        name
    }
    fn object(&mut self, args: u8, method: u8, result: u8) -> u8 {
        args + method + result
    }
    fn wire(&self, object: u8) -> u8 {
        object
    }
    fn r#type(&self) -> String {
        "plain".into()
    }
}

fn new_awkward(_: ()) -> Box<dyn Awkward + Send> {
    Box::new(Plain)
}

#[test]
fn managed_awkward_names() {
    let mgr = SyncManager::builder().register::<dyn Awkward, _, _>("Awkward", new_awkward).start().unwrap();
    let a: AwkwardProxy = mgr.create::<dyn Awkward, _>("Awkward", ()).unwrap();
    assert_eq!(a.name("n".into()).unwrap(), "n");
    assert_eq!(a.object(1, 2, 3).unwrap(), 6);
    assert_eq!(a.wire(7).unwrap(), 7);
    assert_eq!(a.r#type().unwrap(), "plain");
    assert_eq!(a.pair((2, 3), 1).unwrap(), 7);
    assert_eq!(<dyn Awkward as managers::Interface>::NAME, "Awkward");
}

/// MGR-09's generator: a registered type whose `next` method a client calls until `None`,
/// as CPython's `IteratorProxy` calls `__next__` in the server.
#[multiprocess::managed]
pub trait Squares {
    fn next(&mut self) -> Option<u64>;
}

struct SquaresBelow {
    i: u64,
    end: u64,
}

impl Squares for SquaresBelow {
    fn next(&mut self) -> Option<u64> {
        (self.i < self.end).then(|| {
            self.i += 1;
            (self.i - 1) * (self.i - 1)
        })
    }
}

fn squares_below(end: u64) -> Box<dyn Squares + Send> {
    Box::new(SquaresBelow { i: 0, end })
}

start_methods! {
    /// MGR-09: `list(baz) == [i*i for i in range(10)]`, through a proxy turned into an iterator
    /// with `std::iter::from_fn`, in the parent and in a child.
    fn mgr_09_generator_as_an_iterator(m) {
        fn child(squares: SquaresProxy) -> Result<()> {
            let rest: Vec<u64> = std::iter::from_fn(|| squares.next().transpose()).collect::<Result<_>>()?;
            assert_eq!(rest, (5..10u64).map(|i| i * i).collect::<Vec<_>>());
            Ok(())
        }
        let mgr = SyncManager::builder().start_method(m).register::<dyn Squares, _, _>("baz", squares_below).start().unwrap();
        let squares: SquaresProxy = mgr.create::<dyn Squares, _>("baz", 10u64).unwrap();
        let first: Vec<u64> = std::iter::from_fn(|| squares.next().transpose()).take(5).collect::<Result<_>>().unwrap();
        assert_eq!(first, vec![0, 1, 4, 9, 16]);
        let mut p = common::start(m, child, (squares.clone(),));
        common::join_ok(&mut p);
        assert_eq!(squares.next().unwrap(), None, "the child took the rest");
    }
}
