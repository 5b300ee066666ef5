//! Batches: which examples go together each epoch (shuffled with the seed, grouped by length so little is
//! padding) and how they become tensors (right padding, labels padded with -100 as `DataCollatorForSeq2Seq` does).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use super::{Example, IGNORE};
use crate::model::{pad, Side};

/// How many batches' worth of shuffled examples are sorted by length together: enough to group similar
/// lengths, few enough that batches still mix the data.
const BUCKET_BATCHES: usize = 50;

/// `[batch, seq]` int64 tensors on the CPU.
#[derive(Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub labels: Tensor,
}

/// Pads `examples` on the right to the longest: ids with `pad_id`, mask 0, labels [`IGNORE`].
pub fn collate(examples: &[&Example], pad_id: i64) -> Batch {
    let ids: Vec<&[i64]> = examples.iter().map(|e| e.input_ids.as_slice()).collect();
    let labels: Vec<&[i64]> = examples.iter().map(|e| e.labels.as_slice()).collect();
    let (input_ids, attention_mask) = pad(&ids, pad_id, Side::Right);
    Batch { input_ids, attention_mask, labels: pad(&labels, IGNORE, Side::Right).0 }
}

/// The batches of one epoch as indices into the examples: shuffled by `(seed, epoch)`, sorted by length within
/// buckets, then the batches shuffled again. The same arguments always give the same batches, which is what lets
/// a resumed run see the data in the uninterrupted run's order.
pub fn epoch_batches(lengths: &[usize], batch_size: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for bucket in order.chunks_mut(batch_size * BUCKET_BATCHES) {
        bucket.sort_by_key(|&i| lengths[i]);
        batches.extend(bucket.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_every_example_once_deterministically() {
        let lengths: Vec<usize> = (0..1037).map(|i| (i * 7919) % 300).collect();
        let a = epoch_batches(&lengths, 8, 42, 0);
        assert_eq!(a, epoch_batches(&lengths, 8, 42, 0));
        assert_ne!(a, epoch_batches(&lengths, 8, 42, 1));
        assert_ne!(a, epoch_batches(&lengths, 8, 43, 0));
        let mut seen: Vec<usize> = a.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1037).collect::<Vec<_>>());
        // Bucketing: within a batch lengths are close (the spread is far below the data's 0..300).
        let spread: usize = a
            .iter()
            .map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() - b.iter().map(|&i| lengths[i]).min().unwrap())
            .sum();
        assert!(spread / a.len() < 30, "mean spread {}", spread / a.len());
    }

    #[test]
    fn pads_left_for_generation() {
        let (ids, mask) = pad(&[&[5, 6, 7], &[8]], 0, Side::Left);
        assert_eq!(Vec::<i64>::try_from(ids.flatten(0, 1)).unwrap(), [5, 6, 7, 0, 0, 8]);
        assert_eq!(Vec::<i64>::try_from(mask.flatten(0, 1)).unwrap(), [1, 1, 1, 0, 0, 1]);
    }

    #[test]
    fn collate_pads_right() {
        let a = Example { input_ids: vec![5, 6, 7], labels: vec![IGNORE, 6, 7] };
        let b = Example { input_ids: vec![8], labels: vec![8] };
        let batch = collate(&[&a, &b], 0);
        assert_eq!(Vec::<i64>::try_from(batch.input_ids.flatten(0, 1)).unwrap(), [5, 6, 7, 8, 0, 0]);
        assert_eq!(Vec::<i64>::try_from(batch.attention_mask.flatten(0, 1)).unwrap(), [1, 1, 1, 1, 0, 0]);
        assert_eq!(Vec::<i64>::try_from(batch.labels.flatten(0, 1)).unwrap(), [IGNORE, 6, 7, 8, IGNORE, IGNORE]);
    }
}
