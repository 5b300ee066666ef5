//! Incremental key/value cache for decoding: each layer keeps `[B, heads, capacity, head_dim]` buffers of keys and
//! values, filled up to `len`. A decoding step writes its new positions in place; a buffer is reallocated only when
//! it is full (to 1.5× what is needed, so a run of single-token steps copies the cache O(log n) times, not once per
//! token) or when its rows are shared with another cache.

use tch::Tensor;

/// Keys and values `[B, heads, capacity, head_dim]`, of which positions `..len` are filled.
#[derive(Debug)]
struct Buffers {
    k: Tensor,
    v: Tensor,
    len: i64,
    /// False for a view of another cache's buffers (rows broadcast by [`KvCache::select_rows`]): they are copied
    /// before the first write.
    owned: bool,
}

impl Buffers {
    fn capacity(&self) -> i64 {
        self.k.size()[2]
    }

    /// The filled positions.
    fn filled(&self) -> (Tensor, Tensor) {
        (self.k.narrow(2, 0, self.len), self.v.narrow(2, 0, self.len))
    }
}

/// One layer's cached keys and values.
#[derive(Debug, Default)]
pub(super) struct LayerKv {
    kv: Option<Buffers>,
}

/// New buffers shaped like `like` (`[B, heads, _, head_dim]`) with room for `capacity` positions.
fn allocate(like: &Tensor, capacity: i64) -> Tensor {
    let s = like.size();
    Tensor::empty([s[0], s[1], capacity, s[3]], (like.kind(), like.device()))
}

impl LayerKv {
    /// The layer's buffers, taken out, with room for `t` more positions shaped like `like` (`[B, heads, _,
    /// head_dim]`): the first positions get exactly their room (a cache that is only read, in scoring, wastes
    /// nothing); a full or shared buffer is copied into one 1.5× what is needed.
    fn room(&mut self, like: &Tensor, t: i64) -> Buffers {
        match self.kv.take() {
            None => Buffers { k: allocate(like, t), v: allocate(like, t), len: 0, owned: true },
            Some(old) if old.len + t > old.capacity() || !old.owned => {
                let need = old.len + t;
                let capacity = need + need / 2;
                let (fk, fv) = old.filled();
                let (nk, nv) = (allocate(&old.k, capacity), allocate(&old.v, capacity));
                nk.narrow(2, 0, old.len).copy_(&fk);
                nv.narrow(2, 0, old.len).copy_(&fv);
                Buffers { k: nk, v: nv, len: old.len, owned: true }
            }
            Some(old) => old,
        }
    }

    /// Appends this step's `k, v: [B, heads, T, head_dim]` and returns keys and values of all positions (views of
    /// the buffers).
    pub(super) fn append(&mut self, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let mut kv = self.room(&k, t);
        kv.k.narrow(2, kv.len, t).copy_(&k);
        kv.v.narrow(2, kv.len, t).copy_(&v);
        kv.len += t;
        let filled = kv.filled();
        self.kv = Some(kv);
        filled
    }

    /// One more position of a one-row f32 cache on the CPU, counted as filled, for a caller that writes its keys
    /// and values itself (see [`RowKv`]); `None`, with nothing changed, when the layer holds no keys yet or not one
    /// such row.
    pub(super) fn next_position(&mut self) -> Option<RowKv<'_>> {
        if !self.kv.as_ref().is_some_and(RowKv::fits) {
            return None;
        }
        let like = self.kv.as_ref()?.k.shallow_clone();
        // The same buffers, or new contiguous ones: either fits.
        let mut kv = self.room(&like, 1);
        kv.len += 1;
        Some(RowKv::of(self.kv.insert(kv)))
    }
}

/// A one-row layer cache as memory: keys and values of head `h` at position `p` start at `h * head_stride + p *
/// pos_stride`; positions `..len` are filled, the last of them by the caller.
pub(super) struct RowKv<'a> {
    pub k: &'a mut [f32],
    pub v: &'a mut [f32],
    pub head_stride: usize,
    pub pos_stride: usize,
    pub len: usize,
}

impl<'a> RowKv<'a> {
    /// Whether `b` is one row of f32 on the CPU with keys and values laid out alike, each head's positions one
    /// after another (a narrowed buffer keeps its head stride).
    fn fits(b: &Buffers) -> bool {
        let f32_cpu = |t: &Tensor| t.kind() == tch::Kind::Float && t.device() == tch::Device::Cpu;
        let (size, stride) = (b.k.size(), b.k.stride());
        size.len() == 4
            && size[0] == 1
            && size[1] >= 1
            && f32_cpu(&b.k)
            && f32_cpu(&b.v)
            && b.v.size() == size
            && b.v.stride() == stride
            && stride[3] == 1
            && stride[2] == size[3]
            && stride[1] >= size[2] * size[3]
    }

    /// The memory of buffers that [`RowKv::fits`].
    fn of(b: &'a mut Buffers) -> Self {
        let (size, stride) = (b.k.size(), b.k.stride());
        let span = ((size[1] - 1) * stride[1] + size[2] * size[3]) as usize;
        // SAFETY: both are f32 CPU tensors (`fits`) whose elements at these strides lie within `span` numbers of
        // their data pointers; this cache owns them (`room` copies shared ones) and is borrowed mutably for the
        // slices' life, so nothing else reads or writes them meanwhile.
        let (k, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(b.k.data_ptr() as *mut f32, span),
                std::slice::from_raw_parts_mut(b.v.data_ptr() as *mut f32, span),
            )
        };
        Self { k, v, head_stride: stride[1] as usize, pos_stride: size[3] as usize, len: b.len as usize }
    }
}

/// Keys and values of all past positions, per layer. Get an empty one from `Model::new_cache` and
/// pass it to every `Model::forward` call of one decoding run.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
}

impl KvCache {
    pub(super) fn new(n_layer: usize) -> Self {
        Self { layers: (0..n_layer).map(|_| LayerKv::default()).collect() }
    }

    fn first(&self) -> Option<&Buffers> {
        self.layers.first().and_then(|l| l.kv.as_ref())
    }

    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.first().map_or(0, |b| b.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batch size of the cached rows (0 while empty).
    pub fn batch_size(&self) -> i64 {
        self.first().map_or(0, |b| b.k.size()[0])
    }

    /// The cache with batch rows `rows` (an index may repeat): continuations of several contexts, or several
    /// continuations of one, share the contexts' forward. The buffers' spare room comes along, so the next
    /// positions are written in place.
    pub fn select_rows(&self, rows: &[i64]) -> KvCache {
        // One row broadcast needs no copy (the first write copies it).
        let broadcast = self.batch_size() == 1 && rows.iter().all(|&r| r == 0);
        let k = rows.len() as i64;
        let layers = self
            .layers
            .iter()
            .map(|l| LayerKv {
                kv: l.kv.as_ref().map(|b| {
                    let pick = |t: &Tensor| {
                        if broadcast {
                            return t.expand([k, -1, -1, -1], false);
                        }
                        t.index_select(0, &Tensor::from_slice(rows).to_device(t.device()))
                    };
                    Buffers { k: pick(&b.k), v: pick(&b.v), len: b.len, owned: !broadcast }
                }),
            })
            .collect();
        KvCache { layers }
    }

    /// Keeps batch rows `rows` (an index may repeat), in that order: beam search follows each hypothesis to its
    /// parent's keys and values. Leaving every row where it is costs nothing.
    pub fn reorder(&mut self, rows: &[i64]) {
        let identity = rows.len() as i64 == self.batch_size() && rows.iter().enumerate().all(|(i, &r)| r == i as i64);
        if !identity {
            *self = self.select_rows(rows);
        }
    }

    /// Appends `other`'s rows after these, both right-aligned on the longer: the shorter side's first positions
    /// become zeros, which the caller's attention mask hides. Rows join a running batch this way (continuous
    /// batching); the copy happens once per join, with spare room for the next positions.
    pub fn extend_rows(&mut self, other: &KvCache) {
        if other.batch_size() == 0 {
            return;
        }
        if self.batch_size() == 0 {
            *self = other.select_rows(&(0..other.batch_size()).collect::<Vec<_>>());
            return;
        }
        let len = self.len().max(other.len());
        let capacity = len + len / 2 + 1;
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            let (Some(a), Some(b)) = (mine.kv.as_ref(), theirs.kv.as_ref()) else { continue };
            let join = |x: &Tensor, x_len: i64, y: &Tensor, y_len: i64| {
                let (sx, sy) = (x.size(), y.size());
                let out = Tensor::zeros([sx[0] + sy[0], sx[1], capacity, sx[3]], (x.kind(), x.device()));
                out.narrow(0, 0, sx[0]).narrow(2, len - x_len, x_len).copy_(&x.narrow(2, 0, x_len));
                out.narrow(0, sx[0], sy[0]).narrow(2, len - y_len, y_len).copy_(&y.narrow(2, 0, y_len));
                out
            };
            let k = join(&a.k, a.len, &b.k, b.len);
            let v = join(&a.v, a.len, &b.v, b.len);
            mine.kv = Some(Buffers { k, v, len, owned: true });
        }
    }

    /// Forgets the first `n` positions of every row: padding that no row attends to any more.
    pub fn drop_front(&mut self, n: i64) {
        for layer in &mut self.layers {
            if let Some(b) = layer.kv.as_mut() {
                let keep = b.capacity() - n;
                b.k = b.k.narrow(2, n, keep);
                b.v = b.v.narrow(2, n, keep);
                b.len -= n;
            }
        }
    }

    /// Whether every layer holds keys of one f32 row on the CPU that [`LayerKv::next_position`] can extend.
    pub(super) fn one_row_ready(&self) -> bool {
        !self.layers.is_empty() && self.layers.iter().all(|l| l.kv.as_ref().is_some_and(RowKv::fits))
    }

    pub(super) fn layer_mut(&mut self, i: usize) -> &mut LayerKv {
        &mut self.layers[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn step(b: i64, t: i64, value: f64) -> Tensor {
        Tensor::full([b, 2, t, 3], value, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn positions_are_written_in_place_until_the_buffer_is_full() {
        let mut layer = LayerKv::default();
        let (k, _) = layer.append(step(2, 4, 1.0), step(2, 4, 1.0));
        assert_eq!((k.size()[2], layer.kv.as_ref().unwrap().capacity()), (4, 4));
        // Full: grown to 1.5× what is needed, then written in place.
        let _ = layer.append(step(2, 1, 2.0), step(2, 1, 2.0));
        let first = layer.kv.as_ref().unwrap().k.data_ptr();
        assert_eq!(layer.kv.as_ref().unwrap().capacity(), 7);
        let (k, v) = layer.append(step(2, 1, 3.0), step(2, 1, 3.0));
        assert_eq!(layer.kv.as_ref().unwrap().k.data_ptr(), first, "no reallocation while there is room");
        let column = |t: &Tensor| Vec::<f32>::try_from(t.select(0, 1).select(0, 0).select(1, 2)).unwrap();
        assert_eq!(column(&k), [1.0, 1.0, 1.0, 1.0, 2.0, 3.0]);
        assert_eq!(column(&v), [1.0, 1.0, 1.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn rows_join_right_aligned_and_leading_padding_can_be_dropped() {
        let mut running = KvCache::new(1);
        let _ = running.layer_mut(0).append(step(2, 3, 1.0), step(2, 3, 1.0));
        let mut joining = KvCache::new(1);
        let _ = joining.layer_mut(0).append(step(1, 5, 2.0), step(1, 5, 2.0));
        running.extend_rows(&joining);
        assert_eq!((running.len(), running.batch_size()), (5, 3));
        let row = |c: &KvCache, r: i64| {
            let (k, _) = c.layers[0].kv.as_ref().unwrap().filled();
            Vec::<f32>::try_from(k.select(0, r).select(0, 0).select(1, 0)).unwrap()
        };
        assert_eq!(row(&running, 0), [0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(row(&running, 2), [2.0; 5]);
        let first = running.layers[0].kv.as_ref().unwrap().k.data_ptr();
        let _ = running.layer_mut(0).append(step(3, 1, 3.0), step(3, 1, 3.0));
        assert_eq!(running.layers[0].kv.as_ref().unwrap().k.data_ptr(), first, "joined with room to grow");
        let mut kept = running.select_rows(&[0]);
        kept.drop_front(2);
        assert_eq!(row(&kept, 0), [1.0, 1.0, 1.0, 3.0]);
        let _ = kept.layer_mut(0).append(step(1, 1, 4.0), step(1, 1, 4.0));
        assert_eq!(row(&kept, 0), [1.0, 1.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn broadcast_rows_are_copied_before_they_are_written() {
        let mut cache = KvCache::new(1);
        let _ = cache.layer_mut(0).append(step(1, 3, 1.0), step(1, 3, 1.0));
        let _ = cache.layer_mut(0).append(step(1, 1, 2.0), step(1, 1, 2.0));
        assert_eq!((cache.len(), cache.layers[0].kv.as_ref().unwrap().capacity()), (4, 6));
        let mut wide = cache.select_rows(&[0, 0]);
        let mut same = cache.select_rows(&[0]);
        let rows = Tensor::cat(&[step(1, 1, 5.0), step(1, 1, 6.0)], 0);
        let _ = wide.layer_mut(0).append(rows.shallow_clone(), rows);
        let _ = same.layer_mut(0).append(step(1, 1, 9.0), step(1, 1, 9.0));
        // The source has room at position 4 and writes it in place: neither selection may see that write.
        let _ = cache.layer_mut(0).append(step(1, 1, 7.0), step(1, 1, 7.0));
        let at4 = |c: &KvCache| {
            let (k, _) = c.layers[0].kv.as_ref().unwrap().filled();
            Vec::<f32>::try_from(k.select(1, 0).select(1, 4).select(1, 0)).unwrap()
        };
        assert_eq!(at4(&cache), [7.0]);
        assert_eq!(at4(&wide), [5.0, 6.0]);
        assert_eq!(at4(&same), [9.0], "a one-row selection shared its source's buffer");
        assert_eq!((wide.len(), wide.batch_size()), (5, 2));
    }
}
