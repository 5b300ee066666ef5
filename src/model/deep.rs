//! Keys and values given from outside for some input positions, in every layer: where a deep prompt's virtual
//! tokens sit, the model attends to the prompt's trained keys and values instead of those it would compute.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// Positions of an input `[B, T]` whose keys and values are replaced, and their replacements: rows of a table,
/// so a prompt's keys and values are stored once however many rows use them.
#[derive(Debug)]
pub struct DeepKv {
    /// `[n]` batch row of each replaced position.
    rows: Tensor,
    /// `[n]` its position in the input (0-based, cached positions not counted).
    cols: Tensor,
    /// `[R, layers·2·d]`, PEFT's prefix layout: layer `i`'s key at `2i·d`, its value at `(2i+1)·d`.
    table: Tensor,
    /// `[n]` the table row of each position.
    index: Tensor,
}

impl DeepKv {
    /// `positions: [n, 2]` (row, position) pairs, each taking row `index[j]` of `table: [R, layers·2·d]`.
    pub fn new(positions: &Tensor, table: Tensor, index: Tensor) -> Result<Self> {
        ensure!(
            positions.dim() == 2 && positions.size()[1] == 2 && table.dim() == 2 && index.dim() == 1,
            "deep prompt positions must be [n, 2], the table [rows, width] and the index [n], got {:?}, {:?}, {:?}",
            positions.size(),
            table.size(),
            index.size()
        );
        ensure!(positions.size()[0] == index.size()[0], "one table row per deep prompt position");
        let positions = positions.to_kind(Kind::Int64);
        Ok(Self { rows: positions.select(1, 0), cols: positions.select(1, 1), table, index })
    }

    /// The width of a row of values: layers · 2 · d.
    pub(super) fn width(&self) -> i64 {
        self.table.size()[1]
    }

    /// The replacements on `device` in `kind`, once per forward.
    pub(super) fn prepared(&self, device: tch::Device, kind: Kind) -> DeepKv {
        let on = |t: &Tensor| t.to_device(device);
        DeepKv {
            rows: on(&self.rows),
            cols: on(&self.cols),
            table: on(&self.table).to_kind(kind),
            index: on(&self.index),
        }
    }

    /// `labels: [B, T]` (HF's unshifted labels) with the token after each replaced position unlabelled: a virtual
    /// token's output predicts nothing, as in PEFT, whose prefix is no part of the sequence.
    pub(super) fn unlabel_followers(&self, labels: &Tensor) -> Tensor {
        let device = labels.device();
        let next = self.cols.to_device(device) + 1;
        let inside = next.lt(labels.size()[1]);
        let at = [Some(self.rows.to_device(device).masked_select(&inside)), Some(next.masked_select(&inside))];
        labels.index_put(&at, &Tensor::from(-100i64).to_device(device), false)
    }

    /// `k, v: [B, T, d]` of `layer` with the given positions replaced (gradients reach the table).
    pub(super) fn apply(&self, layer: i64, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let d = k.size()[2];
        // On the layer's device, which a device map may make another than the model's first.
        let on = |t: &Tensor| t.to_device(k.device());
        let at = [Some(on(&self.rows)), Some(on(&self.cols))];
        let pick = |offset: i64| on(&self.table.narrow(1, offset, d).index_select(0, &self.index));
        (k.index_put(&at, &pick(2 * layer * d), false), v.index_put(&at, &pick((2 * layer + 1) * d), false))
    }
}
