//! Rows of token ids of different lengths as one `[rows, width]` batch with its attention mask: what training,
//! scoring and generation all feed the model.

use tch::Tensor;

/// Which end of a row padding goes on: the right for training and scoring, the left for generation (so every
/// row's next token is at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// `rows` padded with `pad_id` to the longest: ids and attention mask (1 = real), both `[rows, width]` int64 on
/// the CPU.
pub fn pad(rows: &[&[i64]], pad_id: i64, side: Side) -> (Tensor, Tensor) {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let (mut ids, mut mask) = (Vec::with_capacity(rows.len() * width), Vec::with_capacity(rows.len() * width));
    for row in rows {
        let padding = width - row.len();
        let (fill, real) = (std::iter::repeat_n(pad_id, padding), row.iter().copied());
        let (zeros, ones) = (std::iter::repeat_n(0i64, padding), std::iter::repeat_n(1i64, row.len()));
        match side {
            Side::Left => {
                ids.extend(fill.chain(real));
                mask.extend(zeros.chain(ones));
            }
            Side::Right => {
                ids.extend(real.chain(fill));
                mask.extend(ones.chain(zeros));
            }
        }
    }
    let shape = [rows.len() as i64, width as i64];
    (Tensor::from_slice(&ids).view(shape), Tensor::from_slice(&mask).view(shape))
}
