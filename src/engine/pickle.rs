//! Easel's own pickle reader, for PyTorch checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`).
//!
//! A checkpoint is a Python pickle: a small program that Python runs to rebuild the saved objects,
//! and which can just as well run any command. Candle's reader never runs it, but it trusts what
//! the program declares: a 562-byte file declaring a 2^20×2^20 tensor made it ask for terabytes and
//! abort, and a 403-byte "billion laughs" (a memoised list referenced twice per step) made it
//! deep-copy values until the machine ran out of memory. This reader is built against hostile
//! files instead. It interprets only the opcodes `torch.save` writes and turns every call into an
//! inert [`Value::Call`]; values are reference-counted so fetching a memoised one copies nothing; one
//! pickle may create at most [`MAX_VALUES`] values and be at most [`MAX_PICKLE_BYTES`] long; and
//! every size is checked against the real bytes before anything is allocated (see `torch.rs`).

mod torch;
mod vm;

pub use torch::{read_torch_checkpoint, read_torch_checkpoint_from};
pub(crate) use vm::parse;

use std::cell::RefCell;
use std::fmt;
use std::rc::{Rc, Weak};

use crate::error::{Error, Result};

/// The most values one pickle may create (pushes, memo entries and marks together). State dicts
/// need about fifteen per tensor (an SDXL checkpoint with EMA weights about 80 000), so real
/// checkpoints stay far below; a file beyond it is refused (ten million cost 1.4 GB).
pub const MAX_VALUES: usize = 2_000_000;

/// The longest pickle program read, in bytes (a checkpoint's pickle is a few hundred kilobytes).
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// What failed, as the middle of a sentence about the file; callers add the path.
type Res<T> = std::result::Result<T, String>;

/// One value the pickle program built. Compound values share their contents (cloning one is O(1)),
/// as Python does, so a memoised value fetched a million times still exists once.
#[derive(Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A wider integer, as its little-endian two's-complement bytes.
    BigInt(Rc<[u8]>),
    /// A float.
    Float(f64),
    /// A text string.
    Str(Rc<str>),
    /// A byte string.
    Bytes(Rc<[u8]>),
    /// A name in a module (`module`, `name`), which is never imported.
    Global(Rc<str>, Rc<str>),
    /// A tuple.
    Tuple(Rc<Node>),
    /// A list.
    List(Rc<Node>),
    /// A set.
    Set(Rc<Node>),
    /// A dict (or `collections.OrderedDict`); keys and values alternate inside the node.
    Dict(Rc<Node>),
    /// A call the pickle asked for (`REDUCE`, `NEWOBJ`): `[callable, args]`, recorded, never made.
    Call(Rc<Node>),
    /// A persistent id (`BINPERSID`): in `torch.save` files, a reference to tensor storage.
    Persistent(Rc<Node>),
}

/// The shared, mutable contents of a compound [`Value`].
pub struct Node {
    items: RefCell<Vec<Value>>,
}

impl Node {
    fn extend(&self, items: Vec<Value>) -> Res<()> {
        let mut inside = self.items.try_borrow_mut().map_err(|_| "the pickle nests a container in itself")?;
        inside.extend(items);
        Ok(())
    }

    fn snapshot(&self) -> Vec<Value> {
        self.items.try_borrow().map(|items| items.clone()).unwrap_or_default()
    }
}

impl Drop for Node {
    /// Frees nested values with a worklist instead of recursion: a pickle of a million nested
    /// tuples is a few megabytes, and dropping it recursively would overflow the stack.
    fn drop(&mut self) {
        let mut pending = std::mem::take(self.items.get_mut());
        while let Some(value) = pending.pop() {
            if let Some(node) = value.into_node() {
                if let Ok(mut node) = Rc::try_unwrap(node) {
                    pending.append(node.items.get_mut());
                }
            }
        }
    }
}

impl Value {
    fn into_node(self) -> Option<Rc<Node>> {
        match self {
            Value::Tuple(n) | Value::List(n) | Value::Set(n) | Value::Dict(n) => Some(n),
            Value::Call(n) | Value::Persistent(n) => Some(n),
            _ => None,
        }
    }

    /// The text of a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of an integer that fits 64 bits.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The module and name of a global.
    pub fn global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global(module, name) => Some((module, name)),
            _ => None,
        }
    }

    /// The items of a tuple, list or set (shared, not copied). This is O(length): code visiting
    /// values many times reads [`Value::item`]s instead, so a long tuple referenced a million times
    /// cannot make the reader quadratic.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(n) | Value::List(n) | Value::Set(n) => Some(n.snapshot()),
            _ => None,
        }
    }

    /// The number of items of a tuple, list or set.
    pub fn item_count(&self) -> Option<usize> {
        match self {
            Value::Tuple(n) | Value::List(n) | Value::Set(n) => n.items.try_borrow().ok().map(|i| i.len()),
            _ => None,
        }
    }

    /// One item of a tuple, list or set, in O(1).
    pub fn item(&self, index: usize) -> Option<Value> {
        match self {
            Value::Tuple(n) | Value::List(n) | Value::Set(n) => {
                n.items.try_borrow().ok()?.get(index).cloned()
            }
            _ => None,
        }
    }

    /// The key–value pairs of a dict, in the order the pickle set them.
    pub fn entries(&self) -> Option<Vec<(Value, Value)>> {
        let Value::Dict(n) = self else { return None };
        let items = n.snapshot();
        Some(items.chunks_exact(2).filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone()))).collect())
    }

    /// The value a dict holds under a string key (the last one set, as in Python).
    pub fn get(&self, key: &str) -> Option<Value> {
        self.entries()?.into_iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// The callable and arguments of a call the pickle asked for.
    pub fn call(&self) -> Option<(Value, Value)> {
        let Value::Call(n) = self else { return None };
        match n.snapshot().as_slice() {
            [callable, args] => Some((callable.clone(), args.clone())),
            _ => None,
        }
    }

    /// The id inside a persistent reference.
    pub fn persistent_id(&self) -> Option<Value> {
        let Value::Persistent(n) = self else { return None };
        n.snapshot().into_iter().next()
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Global(..) => "global",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::Dict(_) => "dict",
            Value::Call(_) => "object",
            Value::Persistent(_) => "persistent reference",
        }
    }
}

impl fmt::Debug for Value {
    /// Shallow on purpose: values may contain themselves, and a deep print would never end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Global(module, name) => write!(f, "{module}.{name}"),
            other => write!(f, "<{}>", other.kind()),
        }
    }
}

/// A parsed pickle: its result and the persistent ids it referenced.
///
/// A pickle can build cycles (a list appended to itself), which reference counting alone never
/// frees; dropping the `Pickle` empties every container it built, so values cloned out of it are
/// empty containers afterwards — take out what you need (names, numbers, strings) first.
pub struct Pickle {
    root: Value,
    persistent_ids: Vec<Value>,
    _arena: Arena,
}

impl Pickle {
    /// The value the pickle returned (what `STOP` found on the stack).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Every persistent id the pickle referenced, in order.
    pub fn persistent_ids(&self) -> &[Value] {
        &self.persistent_ids
    }
}

/// Every node a pickle created, so that cycles can be broken when it is dropped.
#[derive(Default)]
struct Arena(Vec<Weak<Node>>);

impl Drop for Arena {
    fn drop(&mut self) {
        for weak in self.0.drain(..) {
            if let Some(node) = weak.upgrade() {
                let items = node.items.try_borrow_mut().map(|mut i| std::mem::take(&mut *i));
                drop(node);
                drop(items);
            }
        }
    }
}

/// Runs the pickle VM alone on raw pickle bytes (no zip, no tensors), as a fuzz target would.
/// Errors are [`Error::BadFile`] sentences naming "pickle bytes" as the file.
pub fn parse_pickle_bytes(bytes: &[u8]) -> Result<Pickle> {
    let mut reader = bytes;
    vm::parse(&mut reader).map_err(|detail| Error::bad_file(detail, "pickle bytes"))
}

#[cfg(test)]
mod tests {
    use super::vm::parse_limited;
    use super::*;

    fn refusal(bytes: &[u8]) -> String {
        match parse_pickle_bytes(bytes) {
            Ok(pickle) => panic!("accepted, returning {:?}", pickle.root()),
            Err(e) => e.to_string(),
        }
    }

    /// A dict holding one of each value torch.save writes, with memo, marks, DUP, POP and POP_MARK.
    fn every_opcode() -> Vec<u8> {
        let mut p = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94(".to_vec();
        p.extend_from_slice(
            b"\x8c\x01aK\x07\x8c\x01bM\x00\x01\x8c\x01cJ\xff\xff\xff\xff\x8c\x01d\x8a\x02\x00\x80",
        );
        p.extend_from_slice(b"\x8c\x01eG");
        p.extend_from_slice(&1.5f64.to_be_bytes());
        p.extend_from_slice(b"\x8c\x01f\x88\x8c\x01gN\x8c\x01hC\x02hi\x8c\x01i]\x94(K\x01K\x02e");
        p.extend_from_slice(b"\x8c\x01jK\x01K\x02K\x03\x87\x8c\x01k\x8f(K\x01\x90X\x01\x00\x00\x00l");
        p.extend_from_slice(b"\x8c\x05torch\x8c\x04Size\x93)R\x8c\x01mh\x01\x8c\x01nU\x03abc");
        p.extend_from_slice(b"K\x09200(K\x01K\x021u.");
        p
    }

    #[test]
    fn the_opcodes_torch_writes_build_the_values_python_would() -> Result<()> {
        let pickle = parse_pickle_bytes(&every_opcode())?;
        let root = pickle.root();
        let int = |key: &str| root.get(key).and_then(|v| v.as_int());
        assert_eq!((int("a"), int("b"), int("c"), int("d")), (Some(7), Some(256), Some(-1), Some(-32768)));
        assert!(matches!(root.get("e"), Some(Value::Float(x)) if x == 1.5));
        assert!(matches!(root.get("f"), Some(Value::Bool(true))));
        assert!(matches!(root.get("g"), Some(Value::None)));
        assert!(matches!(root.get("h"), Some(Value::Bytes(b)) if &*b == b"hi"));
        let list = root.get("i").and_then(|v| v.items()).expect("a list");
        assert_eq!(list.iter().map(Value::as_int).collect::<Vec<_>>(), [Some(1), Some(2)]);
        assert_eq!(root.get("j").and_then(|v| v.items()).map(|t| t.len()), Some(3));
        assert_eq!(root.get("k").and_then(|v| v.items()).map(|s| s.len()), Some(1));
        let size = root.get("l").and_then(|v| v.call()).expect("a call");
        assert_eq!(size.0.global(), Some(("torch", "Size")));
        let (Some(Value::List(a)), Some(Value::List(b))) = (root.get("i"), root.get("m")) else {
            panic!("memo entries are lists")
        };
        assert!(Rc::ptr_eq(&a, &b), "BINGET shares the memoised list instead of copying it");
        assert_eq!(root.get("n").as_ref().and_then(Value::as_str), Some("abc"));
        assert_eq!(root.entries().map(|e| e.len()), Some(14), "DUP, POP and POP_MARK leave nothing behind");
        Ok(())
    }

    #[test]
    fn every_truncation_of_a_pickle_is_a_sentence() {
        let bytes = every_opcode();
        for end in 0..bytes.len() {
            let err = refusal(&bytes[..end]);
            assert!(err.contains("truncated"), "cut at {end}: {err}");
        }
    }

    #[test]
    fn a_billion_laughs_is_read_in_milliseconds_without_copying() -> Result<()> {
        // Each round makes a list of two references to the previous one and appends the new list to
        // itself: 2^40 leaves to a reader that copies, 40 lists to one that shares.
        let mut bytes = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            bytes.extend_from_slice(b"](h\x00h\x00eq\x00h\x00a");
        }
        bytes.extend_from_slice(b"h\x00.");
        assert!(bytes.len() < 500);
        let started = std::time::Instant::now();
        let pickle = parse_pickle_bytes(&bytes)?;
        assert_eq!(pickle.root().items().map(|items| items.len()), Some(3));
        drop(pickle);
        assert!(started.elapsed().as_secs_f32() < 1.0, "took {:?}", started.elapsed());
        Ok(())
    }

    #[test]
    fn a_pickle_building_too_many_values_is_refused() {
        let mut bytes = b"]".to_vec();
        bytes.extend(std::iter::repeat_n(b'2', 2000));
        bytes.push(b'.');
        let err = match parse_limited(&mut bytes.as_slice(), 1000) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        assert!(err.contains("million values"), "{err}");
    }

    #[test]
    fn a_million_nested_tuples_are_dropped_without_overflowing_the_stack() -> Result<()> {
        let mut bytes = b"N".to_vec();
        bytes.extend(std::iter::repeat_n(0x85, 1_000_000));
        bytes.push(b'.');
        let pickle = parse_pickle_bytes(&bytes)?;
        assert_eq!(pickle.root().items().map(|items| items.len()), Some(1));
        drop(pickle);
        Ok(())
    }

    #[test]
    fn a_list_holding_itself_is_emptied_when_the_pickle_is_dropped() -> Result<()> {
        let pickle = parse_pickle_bytes(b"]q\x00h\x00a.")?;
        let list = pickle.root().clone();
        assert_eq!(list.items().map(|items| items.len()), Some(1));
        drop(pickle);
        assert_eq!(list.items().map(|items| items.len()), Some(0), "the cycle is broken, so it is freed");
        Ok(())
    }

    #[test]
    fn os_system_is_recorded_and_never_called() -> Result<()> {
        let marker = std::env::temp_dir().join("easel-pickle-vm-ran-this");
        let _ = std::fs::remove_file(&marker);
        let command = format!("touch {}", marker.display());
        let mut bytes = b"\x80\x02cposix\nsystem\nX".to_vec();
        bytes.extend_from_slice(&(command.len() as u32).to_le_bytes());
        bytes.extend_from_slice(command.as_bytes());
        bytes.extend_from_slice(b"\x85R.");
        let pickle = parse_pickle_bytes(&bytes)?;
        let (callable, _args) = pickle.root().call().expect("an inert call");
        assert_eq!(callable.global(), Some(("posix", "system")));
        assert!(!marker.exists(), "the pickle's call was made");
        Ok(())
    }

    #[test]
    fn an_opcode_easel_does_not_read_is_named() {
        let err = refusal(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.");
        assert!(err.contains("STRING (0x53)") && err.contains("byte 14"), "{err}");
        assert!(refusal(b"\x80\x02\xff").contains("0xff, which is not a pickle opcode"));
    }

    #[test]
    fn values_taken_from_nowhere_are_refused() {
        for bytes in
            [&b"."[..], b"h\x05.", b"(0.", b"K\x01(a.", b"1.", b"K\x01K\x02s.", b"r\xff\xff\xff\xff."]
        {
            let err = refusal(bytes);
            assert!(err.contains("its pickle"), "{bytes:?}: {err}");
        }
    }
}
