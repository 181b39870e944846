//! The pickle virtual machine: one loop over opcodes, with a stack, marks and a memo. Nothing it
//! reads is ever imported or called, and each opcode does constant work apart from moving the items
//! it was given, so a pickle costs time and memory in proportion to its length, under a budget.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::rc::Rc;

use super::{Arena, Node, Pickle, Res, Value, MAX_PICKLE_BYTES, MAX_VALUES};

/// Reads one pickle from `reader`, stopping right after its `STOP` opcode so that what follows
/// (another pickle, or tensor data in legacy files) can be read next.
pub(crate) fn parse<R: BufRead>(reader: &mut R) -> Res<Pickle> {
    parse_limited(reader, MAX_VALUES)
}

pub(super) fn parse_limited<R: BufRead>(reader: &mut R, budget: usize) -> Res<Pickle> {
    let vm = Vm {
        r: reader.take(MAX_PICKLE_BYTES),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        persistent_ids: Vec::new(),
        arena: Arena::default(),
        budget,
        position: 0,
    };
    vm.run()
}

struct Vm<'r, R> {
    r: std::io::Take<&'r mut R>,
    stack: Vec<Value>,
    /// Stack lengths at each `MARK`; items above the top mark belong to the next `TUPLE`, `APPENDS`…
    marks: Vec<usize>,
    /// Keyed by index rather than a `Vec`: a hostile `LONG_BINPUT 4294967295` must not allocate.
    memo: HashMap<u32, Value>,
    persistent_ids: Vec<Value>,
    arena: Arena,
    /// Values the pickle may still create.
    budget: usize,
    /// Bytes read so far, for messages.
    position: u64,
}

impl<R: BufRead> Vm<'_, R> {
    fn run(mut self) -> Res<Pickle> {
        loop {
            let at = self.position;
            let op = self.u8()?;
            if op == b'.' {
                let root = self.pop()?;
                let Vm { persistent_ids, arena, .. } = self;
                return Ok(Pickle { root, persistent_ids, _arena: arena });
            }
            self.step(op).map_err(|e| format!("{e} (at byte {at} of its pickle)"))?;
        }
    }

    fn step(&mut self, op: u8) -> Res<()> {
        match op {
            0x80 => {
                if self.u8()? > 5 {
                    return Err("its pickle uses a protocol newer than 5".into());
                }
            }
            0x95 => {
                self.fixed::<8>()?; // FRAME: only a read-ahead hint.
            }
            b'(' => {
                self.charge()?;
                self.marks.push(self.stack.len());
            }
            b'}' => self.push_node(Value::Dict, Vec::new())?,
            b']' => self.push_node(Value::List, Vec::new())?,
            b')' => self.push_node(Value::Tuple, Vec::new())?,
            0x8f => self.push_node(Value::Set, Vec::new())?,
            b'd' => {
                let items = self.pop_mark()?;
                if !items.len().is_multiple_of(2) {
                    return Err("its pickle has a dict key without a value".into());
                }
                self.push_node(Value::Dict, items)?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push_node(Value::List, items)?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push_node(Value::Tuple, items)?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let floor = self.floor();
                if self.stack.len() < floor + n {
                    return Err("its pickle builds a tuple from values it never pushed".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_node(Value::Tuple, items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.add(vec![key, value], b's')?;
            }
            b'u' | b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.add(items, op)?;
            }
            b'a' => {
                let value = self.pop()?;
                self.add(vec![value], b'a')?;
            }
            b'J' => {
                let value = i32::from_le_bytes(self.fixed()?);
                self.push(Value::Int(value.into()))?;
            }
            b'K' => {
                let value = self.u8()?;
                self.push(Value::Int(value.into()))?;
            }
            b'M' => {
                let value = u16::from_le_bytes(self.fixed()?);
                self.push(Value::Int(value.into()))?;
            }
            0x8a => {
                let len = self.u8()?;
                let bytes = self.blob(u64::from(len))?;
                self.push(long(bytes))?;
            }
            0x8b => {
                let len = i32::from_le_bytes(self.fixed()?);
                let len = u64::try_from(len).map_err(|_| "its pickle has an integer of negative length")?;
                let bytes = self.blob(len)?;
                self.push(long(bytes))?;
            }
            b'G' => {
                let value = f64::from_be_bytes(self.fixed()?); // big-endian, unlike the rest
                self.push(Value::Float(value))?;
            }
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'N' => self.push(Value::None)?,
            b'X' | 0x8c | b'U' | 0x8d => {
                let len = match op {
                    b'X' => u64::from(u32::from_le_bytes(self.fixed()?)),
                    0x8d => u64::from_le_bytes(self.fixed()?),
                    _ => u64::from(self.u8()?),
                };
                self.string(len)?;
            }
            b'T' => {
                let len = i32::from_le_bytes(self.fixed()?);
                let len = u64::try_from(len).map_err(|_| "its pickle has a string of negative length")?;
                self.string(len)?;
            }
            b'C' | b'B' | 0x8e => {
                let len = match op {
                    b'C' => u64::from(self.u8()?),
                    b'B' => u64::from(u32::from_le_bytes(self.fixed()?)),
                    _ => u64::from_le_bytes(self.fixed()?),
                };
                let bytes = self.blob(len)?;
                self.push(Value::Bytes(bytes.into()))?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global(module.into(), name.into()))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err("its pickle names a global with something other than strings".into());
                };
                self.push(Value::Global(module, name))?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                // The one call honoured is making an empty dict: torch writes state dicts as
                // `OrderedDict()` followed by SETITEMS. Every other call stays a record.
                let dict =
                    matches!(callable.global(), Some(("collections", "OrderedDict") | ("builtins", "dict")));
                if dict {
                    self.push_node(Value::Dict, Vec::new())?;
                } else {
                    self.push_node(Value::Call, vec![callable, args])?;
                }
            }
            b'b' => {
                // BUILD would call `__setstate__`; the state is dropped and the object kept as is.
                self.pop()?;
                self.top()?;
            }
            b'Q' => {
                let id = self.pop()?;
                self.charge()?;
                self.persistent_ids.push(id.clone());
                self.push_node(Value::Persistent, vec![id])?;
            }
            b'q' | b'r' => {
                let index =
                    if op == b'q' { u32::from(self.u8()?) } else { u32::from_le_bytes(self.fixed()?) };
                self.memo_put(index)?;
            }
            0x94 => {
                let index = u32::try_from(self.memo.len()).map_err(|_| "its pickle's memo is full")?;
                self.memo_put(index)?;
            }
            b'h' | b'j' => {
                let index =
                    if op == b'h' { u32::from(self.u8()?) } else { u32::from_le_bytes(self.fixed()?) };
                self.memo_get(index)?;
            }
            b'0' => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else if self.marks.pop().is_none() {
                    return Err("its pickle pops from an empty stack".into());
                }
            }
            b'1' => drop(self.pop_mark()?),
            b'2' => {
                let top = self.top()?.clone();
                self.push(top)?;
            }
            other => {
                return Err(format!(
                    "its pickle uses opcode {}, which Easel does not read",
                    opcode_name(other)
                ))
            }
        }
        Ok(())
    }

    fn charge(&mut self) -> Res<()> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            format!(
                "its pickle builds more than {} million values, far more than a checkpoint needs",
                MAX_VALUES / 1_000_000
            )
        })?;
        Ok(())
    }

    fn push(&mut self, value: Value) -> Res<()> {
        self.charge()?;
        self.stack.push(value);
        Ok(())
    }

    fn push_node(&mut self, make: fn(Rc<Node>) -> Value, items: Vec<Value>) -> Res<()> {
        let node = Rc::new(Node { items: RefCell::new(items) });
        self.arena.0.push(Rc::downgrade(&node));
        self.push(make(node))
    }

    /// The stack index below which the current mark hides values.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Res<Value> {
        if self.stack.len() <= self.floor() {
            return Err("its pickle takes a value it never pushed".into());
        }
        self.stack.pop().ok_or_else(|| "its pickle takes a value it never pushed".into())
    }

    fn top(&self) -> Res<&Value> {
        match self.stack.last() {
            Some(value) if self.stack.len() > self.floor() => Ok(value),
            _ => Err("its pickle works on a value it never pushed".into()),
        }
    }

    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let mark = self.marks.pop().ok_or("its pickle closes a mark it never opened")?;
        if mark > self.stack.len() {
            return Err("its pickle closes a mark below the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    /// SETITEM(S), APPEND(S) and ADDITEMS: items go into the container under them.
    fn add(&mut self, items: Vec<Value>, op: u8) -> Res<()> {
        match (self.top()?, op) {
            (Value::Dict(dict), b's' | b'u') if items.len().is_multiple_of(2) => dict.extend(items),
            (Value::List(list), b'a' | b'e') => list.extend(items),
            (Value::Set(set), 0x90) => set.extend(items),
            // Python would call the object's own `append` or `__setitem__`; its items are dropped.
            (Value::Call(_), _) => Ok(()),
            (target, _) => Err(format!("its pickle adds items to a {} that cannot hold them", target.kind())),
        }
    }

    fn memo_put(&mut self, index: u32) -> Res<()> {
        let value = self.top()?.clone();
        self.charge()?;
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Res<()> {
        let value =
            self.memo.get(&index).cloned().ok_or("its pickle fetches a memo entry it never stored")?;
        self.push(value)
    }

    fn read_error(&self, e: &std::io::Error) -> String {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof if self.r.limit() == 0 => {
                format!(
                    "its pickle is longer than {} MiB, far more than a checkpoint needs",
                    MAX_PICKLE_BYTES >> 20
                )
            }
            std::io::ErrorKind::UnexpectedEof => {
                "its pickle stops in the middle; the file is truncated".into()
            }
            _ => format!("its pickle could not be read ({e})"),
        }
    }

    fn fixed<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut bytes = [0u8; N];
        let read = self.r.read_exact(&mut bytes);
        read.map_err(|e| self.read_error(&e))?;
        self.position += N as u64;
        Ok(bytes)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(u8::from_le_bytes(self.fixed()?))
    }

    /// `len` bytes, allocated as they arrive: a declared length is never trusted up front.
    fn blob(&mut self, len: u64) -> Res<Vec<u8>> {
        let mut bytes = Vec::new();
        let read = self.r.by_ref().take(len).read_to_end(&mut bytes);
        read.map_err(|e| self.read_error(&e))?;
        if bytes.len() as u64 != len {
            let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
            return Err(self.read_error(&eof));
        }
        self.position += len;
        Ok(bytes)
    }

    fn string(&mut self, len: u64) -> Res<()> {
        let text = text(self.blob(len)?);
        self.push(Value::Str(text.into()))
    }

    /// A newline-terminated name for GLOBAL.
    fn line(&mut self) -> Res<String> {
        let mut bytes = Vec::new();
        let read = self.r.by_ref().take(256).read_until(b'\n', &mut bytes);
        read.map_err(|e| self.read_error(&e))?;
        self.position += bytes.len() as u64;
        if bytes.pop() != Some(b'\n') {
            return Err("its pickle has a global name that is cut short or longer than 255 bytes".into());
        }
        Ok(text(bytes))
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A little-endian two's-complement integer (LONG1, LONG4).
fn long(bytes: Vec<u8>) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt(bytes.into());
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut wide = if negative { [0xff; 8] } else { [0; 8] };
    for (slot, byte) in wide.iter_mut().zip(&bytes) {
        *slot = *byte;
    }
    Value::Int(i64::from_le_bytes(wide))
}

/// Names the pickle opcodes Easel refuses, so a message says which one a file used.
fn opcode_name(op: u8) -> String {
    let name = match op {
        b'I' => "INT",
        b'L' => "LONG",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'F' => "FLOAT",
        b'P' => "PERSID",
        b'g' => "GET",
        b'p' => "PUT",
        b'i' => "INST",
        b'o' => "OBJ",
        0x82..=0x84 => "EXT",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return format!("0x{op:02x}, which is not a pickle opcode"),
    };
    format!("{name} (0x{op:02x})")
}
