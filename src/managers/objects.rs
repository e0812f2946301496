//! The objects a manager's server holds, and the operations on them. Values are the
//! postcard bytes of the clients' types: equal values have equal bytes, so keys and members
//! are compared as bytes, and nothing here decodes them.

use super::sync;
use super::wire::{Bytes, Init, Kind, Op, Remote, RemoteKind, Reply, SetRelation};
use std::collections::HashMap;
use std::sync::Arc;

/// One object.
pub(crate) enum Object {
    Dict(Dict),
    List(List),
    Namespace(Vec<(String, Bytes, String)>),
    Value(Bytes),
    Set(Set),
    /// An object of a registered type.
    Custom(super::custom::Custom),
    /// The objects calls wait on, shared with the calls (which wait without the object's
    /// mutex).
    Sync(Waitable),
}

/// An object calls may wait on.
#[derive(Clone)]
pub(crate) enum Waitable {
    Queue(Arc<sync::Queue>),
    Lock(Arc<sync::Lock>),
    Event(Arc<sync::Event>),
    Condition(Arc<sync::Condition>),
    Barrier(Arc<sync::Barrier>),
}

impl Object {
    /// A new object of `kind`, from `init`.
    pub(crate) fn new(kind: Kind, init: Init) -> Result<Object, Remote> {
        Ok(match (kind, init) {
            (Kind::Dict, Init::Empty) => Object::Dict(Dict::default()),
            (Kind::Dict, Init::Pairs(pairs)) => {
                let mut d = Dict::default();
                for (k, v) in pairs {
                    d.insert(k, v);
                }
                Object::Dict(d)
            }
            (Kind::List, Init::Empty) => Object::List(List::default()),
            (Kind::List, Init::Items(items)) => Object::List(List { items, version: 0 }),
            (Kind::Namespace, Init::Empty) => Object::Namespace(Vec::new()),
            (Kind::Value, Init::One(v)) => Object::Value(v),
            (Kind::Queue { maxsize, joinable }, Init::Empty) => {
                Object::Sync(Waitable::Queue(Arc::new(sync::Queue::new(maxsize, joinable))))
            }
            (Kind::Lock { flavour, value }, Init::Empty) => {
                Object::Sync(Waitable::Lock(Arc::new(sync::Lock::new(flavour, value))))
            }
            (Kind::Event, Init::Empty) => Object::Sync(Waitable::Event(Arc::default())),
            (Kind::Condition, Init::Empty) => Object::Sync(Waitable::Condition(Arc::default())),
            (Kind::Barrier { parties }, Init::Empty) => {
                Object::Sync(Waitable::Barrier(Arc::new(sync::Barrier::new(parties))))
            }
            (Kind::Set, Init::Empty) => Object::Set(Set::default()),
            (Kind::Set, Init::Items(items)) => {
                let mut set = Set::default();
                for item in items {
                    set.add(item);
                }
                Object::Set(set)
            }
            (kind, init) => return Err(wrong(format!("a {kind:?} cannot be made from {}", init_name(&init)))),
        })
    }

    /// Runs `op`; the reply, or the error the Python method would raise.
    pub(crate) fn call(&mut self, op: Op) -> Result<Reply, Remote> {
        match self {
            Object::Dict(d) => d.call(op),
            Object::List(l) => l.call(op),
            Object::Namespace(n) => namespace_call(n, op),
            Object::Set(s) => s.call(op),
            Object::Custom(c) => match op {
                Op::Method { method, args } => c.call(method, &args).map(Reply::Value).map_err(|e| match e {
                    crate::Error::Remote { kind, message } => Remote::new(RemoteKind::Raised(kind), message),
                    e => Remote::new(RemoteKind::Raised("Codec".into()), e.to_string()),
                }),
                op => Err(not_for("an object of a registered type", &op)),
            },
            Object::Sync(_) => Err(wrong("a waitable object's call reached the plain path".into())),
            Object::Value(v) => match op {
                Op::ValueGet => Ok(Reply::Value(v.clone())),
                Op::ValueSet(new) => {
                    *v = new;
                    Ok(Reply::Done)
                }
                op => Err(not_for("a Value", &op)),
            },
        }
    }
}

fn init_name(init: &Init) -> &'static str {
    match init {
        Init::Empty => "nothing",
        Init::One(_) => "one value",
        Init::Items(_) => "items",
        Init::Pairs(_) => "pairs",
    }
}

fn wrong(message: String) -> Remote {
    Remote::new(RemoteKind::WrongKind, message)
}

fn not_for(what: &str, op: &Op) -> Remote {
    let name = format!("{op:?}");
    let name = name.split(['(', ' ', '{']).next().unwrap_or("");
    wrong(format!("{name} is not an operation of {what}"))
}

/// A dict: insertion-ordered, keyed by the keys' bytes. Removed entries leave holes that are
/// squeezed out once they are half the slots.
#[derive(Default)]
pub(crate) struct Dict {
    slots: Vec<Option<(Bytes, Bytes)>>,
    index: HashMap<Bytes, usize>,
}

impl Dict {
    fn insert(&mut self, key: Bytes, value: Bytes) -> Option<Bytes> {
        if let Some(&i) = self.index.get(&key)
            && let Some((_, v)) = self.slots[i].as_mut()
        {
            return Some(std::mem::replace(v, value));
        }
        self.index.insert(key.clone(), self.slots.len());
        self.slots.push(Some((key, value)));
        None
    }

    fn remove(&mut self, key: &[u8]) -> Option<Bytes> {
        let i = self.index.remove(key)?;
        let (_, v) = self.slots[i].take()?;
        if self.index.len() * 2 < self.slots.len() {
            self.compact();
        }
        Some(v)
    }

    fn compact(&mut self) {
        self.slots.retain(Option::is_some);
        for (i, (k, _)) in self.slots.iter().flatten().enumerate() {
            self.index.insert(k.clone(), i);
        }
    }

    fn entries(&self) -> impl Iterator<Item = &(Bytes, Bytes)> {
        self.slots.iter().flatten()
    }

    fn call(&mut self, op: Op) -> Result<Reply, Remote> {
        Ok(match op {
            Op::DictGet(k) => {
                Reply::Maybe(self.index.get(&k).and_then(|&i| self.slots[i].as_ref()).map(|(_, v)| v.clone()))
            }
            Op::DictInsert(k, v) => Reply::Maybe(self.insert(k, v)),
            Op::DictRemove(k) => Reply::Maybe(self.remove(&k)),
            Op::DictContains(k) => Reply::Bool(self.index.contains_key(&k)),
            Op::DictKeys => Reply::Values(self.entries().map(|(k, _)| k.clone()).collect()),
            Op::DictValues => Reply::Values(self.entries().map(|(_, v)| v.clone()).collect()),
            Op::DictItems => Reply::Pairs(self.entries().cloned().collect()),
            Op::DictUpdate(pairs) => {
                for (k, v) in pairs {
                    self.insert(k, v);
                }
                Reply::Done
            }
            Op::DictSetDefault(k, default) => match self.index.get(&k).and_then(|&i| self.slots[i].as_ref()) {
                Some((_, v)) => Reply::Value(v.clone()),
                None => {
                    self.insert(k, default.clone());
                    Reply::Value(default)
                }
            },
            Op::DictPopItem => {
                // Python's popitem takes the last inserted pair.
                let last = self.slots.iter().rposition(Option::is_some);
                Reply::MaybePair(last.and_then(|i| {
                    let (k, v) = self.slots[i].take()?;
                    self.index.remove(&k);
                    self.slots.truncate(i);
                    Some((k, v))
                }))
            }
            Op::Len => Reply::Count(self.index.len() as u64),
            Op::Clear => {
                self.slots.clear();
                self.index.clear();
                Reply::Done
            }
            op => return Err(not_for("a dict", &op)),
        })
    }
}

/// A list, with a version that every change bumps (for the changes a client computes on a
/// copy, such as a sort: they apply only to the version they were computed from).
#[derive(Default)]
pub(crate) struct List {
    items: Vec<Bytes>,
    version: u64,
}

/// The most memory `list *= n` may take (1 GiB).
const MAX_REPEAT_BYTES: u64 = 1 << 30;

/// Python's index: negative counts from the end. `None` if out of range.
fn position(index: i64, len: usize) -> Option<usize> {
    let i = if index < 0 { index.checked_add(len as i64)? } else { index };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// Python's slice bound, clamped into `0..=len`.
fn bound(index: Option<i64>, len: usize, default: usize) -> usize {
    match index {
        None => default,
        Some(i) if i < 0 => (len as i64).saturating_add(i).max(0) as usize,
        Some(i) => (i as u64).min(len as u64) as usize,
    }
}

fn index_error(what: &str, index: i64, len: usize) -> Remote {
    Remote::new(RemoteKind::Index { index, len: len as u64 }, what)
}

impl List {
    fn call(&mut self, op: Op) -> Result<Reply, Remote> {
        let len = self.items.len();
        let reply = match op {
            Op::ListGet(i) => {
                let i = position(i, len).ok_or_else(|| index_error("list index out of range", i, len))?;
                return Ok(Reply::Value(self.items[i].clone()));
            }
            Op::ListSlice(start, end) => {
                let (start, end) = (bound(start, len, 0), bound(end, len, len));
                return Ok(Reply::Values(self.items.get(start..end.max(start)).unwrap_or_default().to_vec()));
            }
            Op::ListIndex(item) => {
                return match self.items.iter().position(|x| *x == item) {
                    Some(i) => Ok(Reply::Count(i as u64)),
                    None => Err(Remote::new(RemoteKind::NotInList, "item is not in list")),
                };
            }
            Op::ListCount(item) => return Ok(Reply::Count(self.items.iter().filter(|x| **x == item).count() as u64)),
            Op::Len => return Ok(Reply::Count(len as u64)),
            Op::ListSnapshot => return Ok(Reply::Snapshot { version: self.version, items: self.items.clone() }),
            Op::ListSet(i, item) => {
                let i = position(i, len).ok_or_else(|| index_error("list assignment index out of range", i, len))?;
                self.items[i] = item;
                Reply::Done
            }
            Op::ListPush(item) => {
                self.items.push(item);
                Reply::Done
            }
            Op::ListExtend(items) => {
                self.items.extend(items);
                Reply::Done
            }
            Op::ListInsert(i, item) => {
                // Python clamps an insertion index instead of failing.
                let at = bound(Some(i), len, len);
                self.items.insert(at, item);
                Reply::Done
            }
            Op::ListPop(i) => {
                if len == 0 {
                    return Err(index_error("pop from empty list", i.unwrap_or(-1), len));
                }
                let at = i.unwrap_or(-1);
                let i = position(at, len).ok_or_else(|| index_error("pop index out of range", at, len))?;
                Reply::Value(self.items.remove(i))
            }
            Op::ListRemove(item) => match self.items.iter().position(|x| *x == item) {
                Some(i) => {
                    self.items.remove(i);
                    Reply::Done
                }
                None => return Err(Remote::new(RemoteKind::NotInList, "list.remove(x): x not in list")),
            },
            Op::ListReverse => {
                self.items.reverse();
                Reply::Done
            }
            Op::ListRepeat(n) => {
                // Bounded, so that a request cannot make the server allocate without limit.
                let each: u64 = self.items.iter().map(|x| x.len() as u64 + 24).sum();
                if each.checked_mul(n).is_none_or(|total| total > MAX_REPEAT_BYTES) {
                    return Err(Remote::new(RemoteKind::BadRequest, "the repeated list would not fit in memory"));
                }
                let once = std::mem::take(&mut self.items);
                self.items = once.iter().cycle().take(len * n as usize).cloned().collect();
                Reply::Done
            }
            Op::ListReplace { version, items } => {
                if version != self.version {
                    return Err(Remote::new(RemoteKind::Changed, "the list changed meanwhile"));
                }
                self.items = items;
                Reply::Done
            }
            Op::Clear => {
                self.items.clear();
                Reply::Done
            }
            op => return Err(not_for("a list", &op)),
        };
        self.version += 1;
        Ok(reply)
    }
}

fn namespace_call(attrs: &mut Vec<(String, Bytes, String)>, op: Op) -> Result<Reply, Remote> {
    Ok(match op {
        Op::NsGet(name) => Reply::Maybe(attrs.iter().find(|(n, ..)| *n == name).map(|(_, v, _)| v.clone())),
        Op::NsSet(name, value, text) => {
            match attrs.iter_mut().find(|(n, ..)| *n == name) {
                Some((_, v, t)) => (*v, *t) = (value, text),
                None => attrs.push((name, value, text)),
            }
            Reply::Done
        }
        Op::NsDel(name) => {
            let before = attrs.len();
            attrs.retain(|(n, ..)| *n != name);
            Reply::Bool(attrs.len() < before)
        }
        Op::NsItems => Reply::Named(attrs.clone()),
        op => return Err(not_for("a Namespace", &op)),
    })
}

/// A set, of items compared by their bytes, in insertion order.
#[derive(Default)]
pub(crate) struct Set {
    items: Dict,
}

impl Set {
    fn add(&mut self, item: Bytes) -> bool {
        if self.items.index.contains_key(&item) {
            return false;
        }
        self.items.insert(item, Vec::new());
        true
    }

    fn contains(&self, item: &[u8]) -> bool {
        self.items.index.contains_key(item)
    }

    fn keys(&self) -> Vec<Bytes> {
        self.items.entries().map(|(k, _)| k.clone()).collect()
    }

    fn call(&mut self, op: Op) -> Result<Reply, Remote> {
        Ok(match op {
            Op::SetAdd(item) => Reply::Bool(self.add(item)),
            Op::SetRemove(item) => Reply::Bool(self.items.remove(&item).is_some()),
            Op::SetContains(item) => Reply::Bool(self.contains(&item)),
            Op::SetPop => {
                let first = self.items.entries().next().map(|(k, _)| k.clone());
                if let Some(k) = &first {
                    self.items.remove(k);
                }
                Reply::Maybe(first)
            }
            Op::SetItems => Reply::Values(self.keys()),
            Op::SetUpdate(items) => {
                for item in items {
                    self.add(item);
                }
                Reply::Done
            }
            Op::SetDifferenceUpdate(items) => {
                for item in items {
                    self.items.remove(&item);
                }
                Reply::Done
            }
            Op::SetIntersectionUpdate(items) => {
                let keep: std::collections::HashSet<Bytes> = items.into_iter().collect();
                for k in self.keys() {
                    if !keep.contains(&k) {
                        self.items.remove(&k);
                    }
                }
                Reply::Done
            }
            Op::SetSymmetricDifferenceUpdate(items) => {
                let other: Vec<Bytes> = {
                    let mut seen = std::collections::HashSet::new();
                    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
                };
                for item in other {
                    if self.items.remove(&item).is_none() {
                        self.add(item);
                    }
                }
                Reply::Done
            }
            Op::SetCompare(relation, items) => {
                let other: std::collections::HashSet<Bytes> = items.into_iter().collect();
                Reply::Bool(match relation {
                    SetRelation::Subset => self.items.entries().all(|(k, _)| other.contains(k)),
                    SetRelation::Superset => other.iter().all(|k| self.contains(k)),
                    SetRelation::Disjoint => !other.iter().any(|k| self.contains(k)),
                })
            }
            Op::Len => Reply::Count(self.items.index.len() as u64),
            Op::Clear => {
                self.items = Dict::default();
                Reply::Done
            }
            op => return Err(not_for("a set", &op)),
        })
    }
}
