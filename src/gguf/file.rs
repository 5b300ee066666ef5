//! The GGUF container (versions 2 and 3, little-endian): a header, typed metadata, a tensor table and aligned
//! tensor data. Every count, length, offset and size is checked against the file's own size before anything is
//! allocated from it, so a file that lies gets an error naming the file and the field, never a panic or an
//! allocation its size does not justify.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::blocks::{self, GgmlType};

const MAGIC: &[u8; 4] = b"GGUF";

/// ggml's limit on a tensor's dimensions.
const MAX_DIMS: u32 = 4;

/// Arrays of arrays deeper than this are refused (nothing real nests; a file could nest until the stack ends).
const MAX_NESTING: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any of the integer types.
    Int(i128),
    /// `f32` or `f64`, widened.
    Float(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A metadata array, kept typed: a vocabulary of 150,000 strings is one vector, not 150,000 values.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Bools(Vec<bool>),
    Strings(Vec<String>),
    Arrays(Vec<Array>),
}

impl Array {
    fn len(&self) -> usize {
        match self {
            Array::Ints(v) => v.len(),
            Array::Floats(v) => v.len(),
            Array::Bools(v) => v.len(),
            Array::Strings(v) => v.len(),
            Array::Arrays(v) => v.len(),
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's order: the first dimension varies fastest (a `[out, in]` matrix is stored as `[in, out]`).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Where its bytes start, from the start of the file.
    start: usize,
    /// How many bytes it takes.
    len: usize,
}

impl TensorInfo {
    /// The shape as torch orders it (the slowest dimension first).
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }

    pub fn elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// An open GGUF file: its metadata and tensor table parsed, its tensor data mapped.
pub struct Gguf {
    path: PathBuf,
    map: memmap2::Mmap,
    pub version: u32,
    metadata: Vec<(String, Value)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf").field("path", &self.path).field("tensors", &self.tensors.len()).finish()
    }
}

/// Reads the header's fields in order, each checked against the bytes left.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        ensure!(n <= self.left(), "{} needs {n} bytes at byte {} but the file ends first", what(), self.at);
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_size` bytes each, which must fit in what is left.
    fn count(&mut self, min_size: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let n = self.u64(what)?;
        ensure!(
            n <= (self.left() / min_size.max(1)) as u64,
            "{} says {n}, more than the {} bytes left in the file can hold",
            what(),
            self.left()
        );
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.count(1, &|| format!("{}'s length", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| anyhow!("{} is not UTF-8", what()))
    }

    /// A value of GGUF type `ty`.
    fn value(&mut self, ty: u32, depth: usize, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match ty {
            0 => Value::Int(i128::from(self.array::<1>(what)?[0])),
            1 => Value::Int(i128::from(self.array::<1>(what)?[0] as i8)),
            2 => Value::Int(i128::from(u16::from_le_bytes(self.array(what)?))),
            3 => Value::Int(i128::from(i16::from_le_bytes(self.array(what)?))),
            4 => Value::Int(i128::from(self.u32(what)?)),
            5 => Value::Int(i128::from(i32::from_le_bytes(self.array(what)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array(what)?))),
            7 => Value::Bool(self.bool(what)?),
            8 => Value::String(self.string(what)?),
            9 => Value::Array(self.array_value(depth, what)?),
            10 => Value::Int(i128::from(self.u64(what)?)),
            11 => Value::Int(i128::from(i64::from_le_bytes(self.array(what)?))),
            12 => Value::Float(f64::from_le_bytes(self.array(what)?)),
            other => bail!("{} has value type {other}, which GGUF does not define (0 to 12)", what()),
        })
    }

    fn bool(&mut self, what: &dyn Fn() -> String) -> Result<bool> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => bail!("{} is a bool stored as {b} (0 or 1)", what()),
        }
    }

    fn array_value(&mut self, depth: usize, what: &dyn Fn() -> String) -> Result<Array> {
        ensure!(depth < MAX_NESTING, "{} nests arrays more than {MAX_NESTING} deep", what());
        let ty = self.u32(&|| format!("{}'s element type", what()))?;
        let min_size = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8..=12 => 8,
            other => bail!("{} has element type {other}, which GGUF does not define (0 to 12)", what()),
        };
        let n = self.count(min_size, &|| format!("{}'s element count", what()))?;
        let item = |i: usize| move || format!("{}[{i}]", what());
        Ok(match ty {
            6 => Array::Floats((0..n).map(|i| Ok(f32::from_le_bytes(self.array(&item(i))?))).collect::<Result<_>>()?),
            7 => Array::Bools((0..n).map(|i| self.bool(&item(i))).collect::<Result<_>>()?),
            8 => Array::Strings((0..n).map(|i| self.string(&item(i))).collect::<Result<_>>()?),
            9 => Array::Arrays((0..n).map(|i| self.array_value(depth + 1, &item(i))).collect::<Result<_>>()?),
            12 => bail!("{} is an array of f64, which no checkpoint metadata uses", what()),
            _ => Array::Ints(
                (0..n)
                    .map(|i| match self.value(ty, depth, &item(i))? {
                        Value::Int(v) => i64::try_from(v).map_err(|_| anyhow!("{} is out of range", item(i)())),
                        _ => unreachable!("integer element types give integers"),
                    })
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

impl Gguf {
    /// Opens and checks `path`: header, metadata, tensor table, and that every tensor's bytes lie inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the hazard of a file map is the file changing under it: a truncation or rewrite by another process
        // while it is mapped makes reads fault (SIGBUS) or see torn data. We never write it; tensors are copied out
        // of it before use, and downloads replace files by rename (a new inode), not in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let (version, metadata, tensors) =
            parse(&map).with_context(|| format!("{} is not a readable GGUF file", path.display()))?;
        let keys = metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        Ok(Self { path: path.to_path_buf(), map, version, metadata, keys, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.iter().map(|(k, _)| k.as_str())
    }

    fn wrong(&self, key: &str, wanted: &str, got: &Value) -> anyhow::Error {
        let got = match got {
            Value::Int(v) => format!("the integer {v}"),
            Value::Float(v) => format!("the number {v}"),
            Value::Bool(v) => format!("{v}"),
            Value::String(s) => format!("a string of {} bytes", s.len()),
            Value::Array(a) => format!("an array of {}", a.len()),
        };
        anyhow!("{}: metadata {key} should be {wanted}, but it is {got}", self.path.display())
    }

    /// A non-negative integer under `key`, if present.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Int(v)) if (0..=i128::from(u64::MAX)).contains(v) => Ok(Some(*v as u64)),
            Some(other) => Err(self.wrong(key, "a non-negative integer", other)),
        }
    }

    /// A number under `key` (integers too), if present.
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Float(v)) => Ok(Some(*v)),
            Some(Value::Int(v)) => Ok(Some(*v as f64)),
            Some(other) => Err(self.wrong(key, "a number", other)),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<&[String]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::Strings(v))) => Ok(Some(v)),
            // An empty array of another element type is still no strings.
            Some(Value::Array(a)) if a.len() == 0 => Ok(Some(&[])),
            Some(other) => Err(self.wrong(key, "an array of strings", other)),
        }
    }

    pub fn ints(&self, key: &str) -> Result<Option<&[i64]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::Ints(v))) => Ok(Some(v)),
            Some(Value::Array(a)) if a.len() == 0 => Ok(Some(&[])),
            Some(other) => Err(self.wrong(key, "an array of integers", other)),
        }
    }

    pub fn floats(&self, key: &str) -> Result<Option<&[f32]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::Floats(v))) => Ok(Some(v)),
            Some(Value::Array(a)) if a.len() == 0 => Ok(Some(&[])),
            Some(other) => Err(self.wrong(key, "an array of numbers", other)),
        }
    }

    /// A key that must be there.
    pub fn required<T>(&self, key: &str, value: Result<Option<T>>) -> Result<T> {
        value?.ok_or_else(|| anyhow!("{}: metadata {key} is missing", self.path.display()))
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's raw bytes (checked to lie inside the file when it was opened).
    pub fn bytes(&self, tensor: &TensorInfo) -> &[u8] {
        &self.map[tensor.start..tensor.start + tensor.len]
    }

    /// A tensor's values as f32, dequantized.
    pub fn to_f32(&self, tensor: &TensorInfo) -> Vec<f32> {
        let mut out = vec![0.0; tensor.elements()];
        blocks::dequantize(tensor.ty, self.bytes(tensor), &mut out);
        out
    }
}

type Parsed = (u32, Vec<(String, Value)>, Vec<TensorInfo>);

fn parse(bytes: &[u8]) -> Result<Parsed> {
    let mut c = Cursor { bytes, at: 0 };
    let magic = c.array::<4>(&|| "the magic number".into())?;
    ensure!(&magic == MAGIC, "it starts with {magic:?}, not GGUF's magic \"GGUF\"");
    let version = c.u32(&|| "the version".into())?;
    if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
        bail!("it is a big-endian GGUF file, which ruprompts does not read");
    }
    ensure!(version == 2 || version == 3, "GGUF version {version} is not read (versions 2 and 3 are)");
    // A tensor-table entry takes at least 32 bytes, a metadata entry at least 13.
    let tensor_count = c.count(32, &|| "the tensor count".into())?;
    let kv_count = c.count(13, &|| "the metadata count".into())?;
    let mut metadata = Vec::with_capacity(kv_count);
    let mut seen = std::collections::HashSet::new();
    for i in 0..kv_count {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let what = || format!("metadata {key}");
        let ty = c.u32(&|| format!("{}'s type", what()))?;
        let value = c.value(ty, 0, &what)?;
        ensure!(seen.insert(key.clone()), "metadata {key} appears twice");
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment").map(|(_, v)| v) {
        None => 32,
        Some(Value::Int(a)) if *a > 0 && *a <= 1 << 20 && (*a as u64).is_power_of_two() => *a as usize,
        Some(other) => bail!("metadata general.alignment must be a power of two up to 2^20, got {other:?}"),
    };
    let mut infos = Vec::with_capacity(tensor_count);
    seen.clear();
    for i in 0..tensor_count {
        let name = c.string(&|| format!("tensor #{i}'s name"))?;
        let what = || format!("tensor '{name}'");
        let n_dims = c.u32(&|| format!("{}'s dimension count", what()))?;
        ensure!((1..=MAX_DIMS).contains(&n_dims), "{} has {n_dims} dimensions (1 to {MAX_DIMS})", what());
        let dims = (0..n_dims).map(|_| c.u64(&|| format!("{}'s dimensions", what()))).collect::<Result<Vec<_>>>()?;
        let ty = c.u32(&|| format!("{}'s type", what()))?;
        let ty = GgmlType::from_id(ty).map_err(|e| anyhow!("{} has {e}", what()))?;
        let offset = c.u64(&|| format!("{}'s offset", what()))?;
        ensure!(seen.insert(name.clone()), "{} appears twice in the tensor table", what());
        infos.push((name, dims, ty, offset));
    }
    let data_start = c.at.div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dims, ty, offset) in infos {
        let what = || format!("tensor '{name}'");
        ensure!(dims.iter().all(|&d| d > 0), "{} has a dimension of 0: {dims:?}", what());
        let elements = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        let elements = elements.filter(|&n| n <= bytes.len() as u64 * 8).ok_or_else(|| {
            anyhow!("{} has dimensions {dims:?}, more values than the file's {} bytes can hold", what(), bytes.len())
        })?;
        let (per_block, block_bytes) = ty.block();
        ensure!(
            dims[0] % per_block as u64 == 0,
            "{} is {} but its rows ({}) are not whole blocks of {per_block}",
            what(),
            ty.name(),
            dims[0]
        );
        let len = elements / per_block as u64 * block_bytes as u64;
        ensure!(offset % alignment as u64 == 0, "{}'s offset {offset} is not a multiple of {alignment}", what());
        let start = (data_start as u64).checked_add(offset);
        let end = start.and_then(|s| s.checked_add(len));
        ensure!(
            end.is_some_and(|e| e <= bytes.len() as u64),
            "{}'s {len} bytes at offset {offset} (data from byte {data_start}) run past the file's end ({} bytes)",
            what(),
            bytes.len()
        );
        tensors.push(TensorInfo { name, dims, ty, start: start.unwrap_or(0) as usize, len: len as usize });
    }
    Ok((version, metadata, tensors))
}
