//! ruPrompts' `prompt_provider.bin`: a `torch.save` zip archive of one bare tensor. Read without executing
//! any pickle code: a small interpreter accepts only the opcodes and globals a plain tensor uses
//! (`torch._utils._rebuild_tensor_v2` over one storage) and rejects everything else. Written the same way,
//! so Python ruPrompts loads our prompts.

use std::io::{Cursor, Read, Seek, Write};
use std::path::Path;
use std::rc::Rc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use tch::{Kind, Tensor};

/// Values the interpreter can hold; anything else in the pickle is an error. Tuples are shared, not copied, so
/// a pickle that fetches one memoised tuple many times costs a pointer each time (work stays linear in its size).
#[derive(Debug, Clone)]
enum Value {
    Mark,
    Int(i64),
    /// A `bool` argument (`requires_grad`); its value does not matter to a loaded prompt.
    Bool,
    Str(String),
    Tuple(Rc<[Value]>),
    /// `torch._utils._rebuild_tensor_v2`, `collections.OrderedDict` or a storage class.
    Global(String),
    EmptyDict,
    Storage {
        kind: Kind,
        key: String,
        numel: i64,
    },
    Tensor {
        kind: Kind,
        key: String,
        numel: i64,
        offset: i64,
        size: Vec<i64>,
        stride: Vec<i64>,
    },
}

impl Value {
    /// What the value is, in a word: error messages name it without printing a (possibly huge) tuple.
    fn describe(&self) -> &'static str {
        match self {
            Value::Mark => "a mark",
            Value::Int(_) => "an int",
            Value::Bool => "a bool",
            Value::Str(_) => "a string",
            Value::Tuple(_) => "a tuple",
            Value::Global(_) => "a global",
            Value::EmptyDict => "a dict",
            Value::Storage { .. } => "a storage",
            Value::Tensor { .. } => "a tensor",
        }
    }
}

fn storage_kind(class: &str) -> Option<Kind> {
    Some(match class {
        "FloatStorage" => Kind::Float,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "DoubleStorage" => Kind::Double,
        _ => return None,
    })
}

fn ints(v: &Value) -> Result<Vec<i64>> {
    match v {
        Value::Tuple(items) => {
            items.iter().map(|i| if let Value::Int(n) = i { Ok(*n) } else { bail!("expected an int") }).collect()
        }
        _ => bail!("expected a tuple of ints"),
    }
}

/// Interprets `data.pkl`; returns the tensor's description.
fn interpret(pickle: &[u8]) -> Result<Value> {
    let mut r = Cursor::new(pickle);
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: std::collections::HashMap<u32, Value> = Default::default();
    let byte = |r: &mut Cursor<&[u8]>| -> Result<u8> {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).context("pickle ends early")?;
        Ok(b[0])
    };
    fn take<const N: usize>(r: &mut Cursor<&[u8]>) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        r.read_exact(&mut b).context("pickle ends early")?;
        Ok(b)
    }
    fn line(r: &mut Cursor<&[u8]>) -> Result<String> {
        let mut out = Vec::new();
        loop {
            let [b] = take::<1>(r)?;
            if b == b'\n' {
                return String::from_utf8(out).context("bad global name");
            }
            out.push(b);
        }
    }
    fn pop_mark(stack: &mut Vec<Value>) -> Result<Vec<Value>> {
        let at = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| anyhow!("no MARK"))?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    }
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| anyhow!("pickle stack underflow"));
    loop {
        let op = byte(&mut r)?;
        match op {
            0x80 => {
                byte(&mut r)?; // PROTO n
            }
            0x95 => {
                take::<8>(&mut r)?; // FRAME
            }
            b'c' => {
                let name = format!("{}.{}", line(&mut r)?, line(&mut r)?);
                let allowed = name == "torch._utils._rebuild_tensor_v2"
                    || name == "collections.OrderedDict"
                    || name.strip_prefix("torch.").and_then(storage_kind).is_some();
                ensure!(allowed, "refers to {name}, which a plain tensor never does");
                stack.push(Value::Global(name));
            }
            b'q' => {
                let [i] = take::<1>(&mut r)?;
                memo.insert(u32::from(i), stack.last().cloned().ok_or_else(|| anyhow!("empty stack"))?);
            }
            b'r' => {
                let i = u32::from_le_bytes(take::<4>(&mut r)?);
                memo.insert(i, stack.last().cloned().ok_or_else(|| anyhow!("empty stack"))?);
            }
            b'h' | b'j' => {
                let i =
                    if op == b'h' { u32::from(take::<1>(&mut r)?[0]) } else { u32::from_le_bytes(take::<4>(&mut r)?) };
                stack.push(memo.get(&i).cloned().ok_or_else(|| anyhow!("bad memo reference"))?);
            }
            b'(' => stack.push(Value::Mark),
            b'X' | 0x8c => {
                let n = if op == b'X' {
                    u32::from_le_bytes(take::<4>(&mut r)?) as usize
                } else {
                    take::<1>(&mut r)?[0] as usize
                };
                ensure!(n <= 1 << 16, "string too long");
                let mut s = vec![0u8; n];
                r.read_exact(&mut s).context("pickle ends early")?;
                stack.push(Value::Str(String::from_utf8(s).context("bad string")?));
            }
            b'J' => stack.push(Value::Int(i64::from(i32::from_le_bytes(take::<4>(&mut r)?)))),
            b'K' => stack.push(Value::Int(i64::from(take::<1>(&mut r)?[0]))),
            b'M' => stack.push(Value::Int(i64::from(u16::from_le_bytes(take::<2>(&mut r)?)))),
            0x8a => {
                let [n] = take::<1>(&mut r)?;
                ensure!(n <= 8, "integer too large");
                let mut b = [0u8; 8];
                r.read_exact(&mut b[..n as usize]).context("pickle ends early")?;
                stack.push(Value::Int(i64::from_le_bytes(b)));
            }
            0x88 | 0x89 => stack.push(Value::Bool),
            b')' => stack.push(Value::Tuple(Rc::new([]))),
            b'}' => stack.push(Value::EmptyDict),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items.into()));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                ensure!(stack.len() >= n, "pickle stack underflow");
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items.into()));
            }
            b'Q' => {
                let Value::Tuple(pid) = pop(&mut stack)? else { bail!("persistent id is not a tuple") };
                match &pid[..] {
                    [Value::Str(tag), Value::Global(class), Value::Str(key), Value::Str(_location), Value::Int(numel)]
                        if tag == "storage" =>
                    {
                        let kind = class
                            .strip_prefix("torch.")
                            .and_then(storage_kind)
                            .ok_or_else(|| anyhow!("not a storage"))?;
                        stack.push(Value::Storage { kind, key: key.clone(), numel: *numel });
                    }
                    _ => bail!("unexpected persistent id"),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let Value::Tuple(args) = args else { bail!("call arguments are not a tuple") };
                match (callable, &args[..]) {
                    (Value::Global(g), []) if g == "collections.OrderedDict" => stack.push(Value::EmptyDict),
                    (
                        Value::Global(g),
                        [Value::Storage { kind, key, numel }, Value::Int(offset), size, stride, Value::Bool, Value::EmptyDict, rest @ ..],
                    ) if g == "torch._utils._rebuild_tensor_v2" && rest.len() <= 1 => stack.push(Value::Tensor {
                        kind: *kind,
                        key: key.clone(),
                        numel: *numel,
                        offset: *offset,
                        size: ints(size)?,
                        stride: ints(stride)?,
                    }),
                    (Value::Global(g), _) => bail!("calls {g} in a way a plain tensor never does"),
                    (callable, _) => bail!("calls {}, which a plain tensor never does", callable.describe()),
                }
            }
            b'.' => {
                ensure!(stack.len() == 1, "does not hold exactly one object");
                return pop(&mut stack);
            }
            other => bail!("uses pickle opcode 0x{other:02x}, which a plain tensor never does"),
        }
    }
}

/// The most bytes the pickle of one bare tensor may take: `torch.save`'s is a few hundred.
const MAX_PICKLE_BYTES: u64 = 1 << 16;

/// How many times its archive's size an entry may unpack to (or [`MIN_BUDGET`] for a small archive).
/// `torch.save` stores entries uncompressed, so a real file never comes near; a deflated bomb (a few KB that
/// unpack to gigabytes) is refused before it is read.
const MAX_EXPANSION: u64 = 4;
const MIN_BUDGET: u64 = 1 << 20;

/// Reads a bare tensor saved by `torch.save`; anything else (a state dict, arbitrary objects) is refused. Memory
/// and work are bounded by the file's size (see [`MAX_EXPANSION`], [`MAX_PICKLE_BYTES`]).
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let context = || format!("{} is not a torch.save file of one plain tensor", path.display());
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let budget = file.metadata().map(|m| m.len()).unwrap_or(0).saturating_mul(MAX_EXPANSION).max(MIN_BUDGET);
    let mut zip = zip::ZipArchive::new(file).map_err(anyhow::Error::from).with_context(context)?;
    let pkl_name = zip.file_names().find(|n| n.ends_with("/data.pkl")).map(str::to_owned);
    let pkl_name = pkl_name.ok_or_else(|| anyhow!("no data.pkl")).with_context(context)?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pickle = read_entry(&mut zip, &pkl_name, MAX_PICKLE_BYTES).with_context(context)?;
    if let Ok(order) = read_entry(&mut zip, &format!("{prefix}byteorder"), 16) {
        ensure!(order == b"little", "{}: big-endian tensors are not supported", path.display());
    }
    let Value::Tensor { kind, key, numel, offset, size, stride } = interpret(&pickle).with_context(context)? else {
        return Err(anyhow!("it holds an object, not a tensor")).with_context(context);
    };
    let data = read_entry(&mut zip, &format!("{prefix}data/{key}"), budget).with_context(context)?;
    let bytes = usize::try_from(numel)
        .ok()
        .and_then(|n| n.checked_mul(kind.elt_size_in_bytes()))
        .ok_or_else(|| anyhow!("{}: storage {key} has {numel} elements", path.display()))?;
    ensure!(
        data.len() >= bytes,
        "{}: storage {key} is truncated ({} bytes, {bytes} needed)",
        path.display(),
        data.len()
    );
    view_extent(&size, &stride, offset, numel)
        .with_context(|| format!("{}: the tensor's view does not fit its storage", path.display()))?;
    let storage = Tensor::f_from_data_size(&data[..bytes], &[numel], kind)
        .with_context(|| format!("{}: storage {key}", path.display()))?;
    let view = storage
        .f_as_strided(size.as_slice(), stride.as_slice(), offset)
        .and_then(|t| t.f_contiguous())
        .with_context(|| format!("{}: the tensor's view of its storage", path.display()))?;
    Ok(view)
}

/// Checks a strided view against its storage with checked arithmetic: sizes and strides not negative, and every
/// element it reads (offset + Σ (size−1)·stride) inside the `numel` elements.
fn view_extent(size: &[i64], stride: &[i64], offset: i64, numel: i64) -> Result<()> {
    ensure!(size.len() == stride.len(), "{} sizes but {} strides", size.len(), stride.len());
    ensure!(offset >= 0, "negative storage offset {offset}");
    let (mut last, mut count) = (offset, 1i64);
    for (&n, &s) in size.iter().zip(stride) {
        ensure!(n >= 0, "negative size {n} in {size:?}");
        ensure!(s >= 0, "negative stride {s} in {stride:?}");
        count = count.checked_mul(n).ok_or_else(|| anyhow!("size {size:?} overflows"))?;
        let reach = (n - 1).max(0).checked_mul(s).ok_or_else(|| anyhow!("stride {stride:?} overflows"))?;
        last = last.checked_add(reach).ok_or_else(|| anyhow!("stride {stride:?} overflows"))?;
    }
    ensure!(count == 0 || last < numel, "it reads element {last} of a storage of {numel}");
    Ok(())
}

/// The entry `name`, refused if it unpacks to more than `most` bytes (checked on the bytes read, not only on
/// the size the archive states).
fn read_entry<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, name: &str, most: u64) -> Result<Vec<u8>> {
    let entry = zip.by_name(name).with_context(|| format!("no entry {name}"))?;
    let too_big = || anyhow!("entry {name} unpacks to more than {most} bytes, out of proportion to the file");
    ensure!(entry.size() <= most, too_big());
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry.take(most + 1).read_to_end(&mut out)?;
    ensure!(out.len() as u64 <= most, too_big());
    Ok(out)
}

/// The pickle `torch.save` writes for a bare contiguous tensor, byte for byte (protocol 2, memoised like
/// Python's pickler): `_rebuild_tensor_v2(storage "0", 0, size, stride, False, OrderedDict())`.
fn tensor_pickle(class: &str, numel: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    struct Pickler {
        out: Vec<u8>,
        memo: u8,
    }
    impl Pickler {
        fn put(&mut self) {
            self.out.extend_from_slice(&[b'q', self.memo]);
            self.memo += 1;
        }
        fn global(&mut self, module: &str, name: &str) {
            self.out.push(b'c');
            self.out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
            self.put();
        }
        fn string(&mut self, s: &str) {
            self.out.push(b'X');
            self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            self.out.extend_from_slice(s.as_bytes());
            self.put();
        }
        fn int(&mut self, n: i64) {
            match n {
                0..=0xff => self.out.extend_from_slice(&[b'K', n as u8]),
                0x100..=0xffff => {
                    self.out.push(b'M');
                    self.out.extend_from_slice(&(n as u16).to_le_bytes());
                }
                _ if i32::try_from(n).is_ok() => {
                    self.out.push(b'J');
                    self.out.extend_from_slice(&(n as i32).to_le_bytes());
                }
                _ => {
                    self.out.extend_from_slice(&[0x8a, 8]);
                    self.out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
        /// Python's tuple opcodes: EMPTY_TUPLE (not memoised), TUPLE1-3, else MARK ... TUPLE.
        fn tuple(&mut self, len: usize, items: impl FnOnce(&mut Self)) {
            if len == 0 {
                self.out.push(b')');
                return;
            }
            if len > 3 {
                self.out.push(b'(');
            }
            items(self);
            self.out.push(if len > 3 { b't' } else { 0x84 + len as u8 });
            self.put();
        }
        fn ints(&mut self, values: &[i64]) {
            self.tuple(values.len(), |p| values.iter().for_each(|&v| p.int(v)));
        }
    }
    let mut p = Pickler { out: vec![0x80, 2], memo: 0 };
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.tuple(6, |p| {
        p.tuple(5, |p| {
            p.string("storage");
            p.global("torch", class);
            p.string("0");
            p.string("cpu");
            p.int(numel);
        });
        p.out.push(b'Q');
        p.int(0);
        p.ints(size);
        p.ints(stride);
        p.out.push(0x89);
        p.global("collections", "OrderedDict");
        p.out.push(b')');
        p.out.push(b'R');
        p.put();
    });
    p.out.push(b'R');
    p.put();
    p.out.push(b'.');
    p.out
}

/// Writes `tensor` as `torch.save(tensor, "<archive>.bin")` does: the same pickle and records, each record
/// 64-byte aligned and stored uncompressed.
pub fn write_tensor(tensor: &Tensor, archive: &str, mut out: impl Write + Seek) -> Result<()> {
    let t = tensor.detach().to_device(tch::Device::Cpu).contiguous();
    let class = match t.kind() {
        Kind::Float => "FloatStorage",
        Kind::Half => "HalfStorage",
        Kind::BFloat16 => "BFloat16Storage",
        Kind::Double => "DoubleStorage",
        other => bail!("cannot save a {other:?} tensor as a prompt"),
    };
    let size = t.size();
    let mut stride = vec![1i64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1];
    }
    let pickle = tensor_pickle(class, t.numel() as i64, &size, &stride);
    let mut data = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, t.numel())?;
    let mut zip = zip::ZipWriter::new(&mut out);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
    let entries: [(&str, &[u8]); 6] = [
        ("data.pkl", &pickle),
        (".format_version", b"1"),
        (".storage_alignment", b"64"),
        ("byteorder", b"little"),
        ("data/0", &data),
        ("version", b"3\n"),
    ];
    for (name, bytes) in entries {
        zip.start_file(format!("{archive}/{name}"), stored)?;
        zip.write_all(bytes)?;
    }
    zip.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn views_outside_their_storage_are_refused_with_the_reason() {
        let err = |size: &[i64], stride: &[i64], offset: i64, numel: i64| {
            view_extent(size, stride, offset, numel).unwrap_err().to_string()
        };
        assert!(view_extent(&[7, 64], &[64, 1], 0, 448).is_ok());
        assert!(view_extent(&[0, 64], &[64, 1], 0, 0).is_ok());
        assert_eq!(err(&[-7, 64], &[64, 1], 0, 448), "negative size -7 in [-7, 64]");
        assert_eq!(err(&[7, 64], &[-64, 1], 0, 448), "negative stride -64 in [-64, 1]");
        assert_eq!(err(&[7, 64], &[64, 1], -1, 448), "negative storage offset -1");
        assert_eq!(err(&[7, 64], &[64, 1], 1, 448), "it reads element 448 of a storage of 448");
        assert_eq!(err(&[i64::MAX, 2], &[1, 1], 0, 448), "size [9223372036854775807, 2] overflows");
        assert_eq!(err(&[3, 64], &[i64::MAX, 1], 0, 448), "stride [9223372036854775807, 1] overflows");
        assert_eq!(err(&[7], &[1, 1], 0, 448), "1 sizes but 2 strides");
    }

    use super::*;

    #[test]
    fn written_pickle_reads_back_for_every_rank() {
        for size in [vec![], vec![5], vec![7, 64], vec![2, 3, 4], vec![2, 1, 3, 300]] {
            let t = crate::rng::unseeded(|| Tensor::randn(size.as_slice(), (Kind::Float, tch::Device::Cpu)));
            let mut buf = Cursor::new(Vec::new());
            write_tensor(&t, "x", &mut buf).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.bin");
            std::fs::write(&path, buf.into_inner()).unwrap();
            let back = read_tensor(&path).unwrap();
            assert_eq!(back.size(), size);
            assert!(back.equal(&t), "{size:?}");
        }
    }
}
