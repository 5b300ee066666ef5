//! Beam search as transformers 4.57 runs it (`GenerationMixin._beam_search`): each step every input's running
//! hypotheses propose their 2·num_beams best continuations by summed log-probability; those that end (eos, a
//! stop string, the last step) and rank among the first num_beams join the input's finished ones (scored by
//! log-probability over length^length_penalty, the best num_beams kept); the best num_beams that do not end run
//! on. An input is done when early stopping says so or at max_new_tokens, and then leaves the batch. The inputs
//! are read once (not once per beam); after that the KV cache is reordered to follow each hypothesis to its
//! parent, so the context is never run again.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::batch::{histories, Batch, Generated};
use super::logits::{finite, Processors, Row};
use super::settings::EarlyStopping;
use super::stops::Stops;
use super::GenerationConfig;
use crate::model::Model;
use crate::prompt::Injection;

/// transformers' stand-in for "impossible": added to a hypothesis that ended, so it does not run on.
const IMPOSSIBLE: f32 = -1.0e9;

/// A sequence of new tokens with their log-probabilities; `score` is their sum while running (plus
/// [`IMPOSSIBLE`] once it ended), and that over length^length_penalty once finished.
#[derive(Debug, Clone, Default)]
struct Hypothesis {
    ids: Vec<i64>,
    scores: Vec<f32>,
    score: f32,
}

/// One input's search.
struct Search {
    running: Vec<Hypothesis>,
    /// The best finished hypotheses, best first, at most num_beams.
    finished: Vec<Hypothesis>,
    /// No running hypothesis can still enter `finished` (transformers' early-stop heuristic said so).
    settled: bool,
}

/// A continuation proposed at one step: hypothesis `beam` of its input extended by `token`.
struct Candidate {
    beam: usize,
    token: i64,
    log_prob: f32,
    score: f32,
}

/// Beam search: the public `generate` with `num_beams` > 1, on checked arguments.
pub(super) fn search(
    model: &Model,
    inputs: &[Vec<i64>],
    injections: &[Injection],
    config: &GenerationConfig,
    processors: &Processors,
    stops: &Stops,
) -> Result<Vec<Vec<Generated>>> {
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let width = 2 * config.num_beams as i64;
    let vocab = model.config().vocab_size;
    let rows: Vec<&Vec<i64>> = inputs.iter().collect();
    let mut batch = Batch::new(model, &rows, injections, config.use_cache)?;
    let mut searches: Vec<Search> = inputs
        .iter()
        .map(|_| Search { running: vec![Hypothesis::default()], finished: Vec::new(), settled: false })
        .collect();
    // The inputs still searching, in batch order; each has its running hypotheses as consecutive batch rows.
    let mut active: Vec<usize> = (0..inputs.len()).collect();
    for step in 0..config.max_new_tokens {
        let log_probs = finite(&batch.logits()?).log_softmax(-1, Kind::Float);
        let owners: Vec<&Vec<i64>> =
            active.iter().flat_map(|&i| searches[i].running.iter().map(move |_| &inputs[i])).collect();
        let new: Vec<&[i64]> =
            active.iter().flat_map(|&i| searches[i].running.iter().map(|h| h.ids.as_slice())).collect();
        let tokens = histories(&owners, &new);
        let rows: Vec<Row> = tokens.iter().zip(&new).map(|(t, new)| Row { tokens: t, new: new.len() }).collect();
        let log_probs = processors.apply(&log_probs, &rows);
        let running: Vec<f32> = active.iter().flat_map(|&i| searches[i].running.iter().map(|h| h.score)).collect();
        let per_input = searches[active[0]].running.len() as i64;
        let totals = (&log_probs + Tensor::from_slice(&running).to_device(device).unsqueeze(1))
            .view([active.len() as i64, per_input * vocab]);
        let (top, index) = totals.topk(width, -1, true, true);
        let (top, index) = (Vec::<f32>::try_from(top.reshape([-1]))?, Vec::<i64>::try_from(index.reshape([-1]))?);
        // Each candidate's own log-probability: row (input · per_input + beam), column token.
        let flat: Vec<i64> =
            index.iter().enumerate().map(|(c, &i)| (c as i64 / width * per_input) * vocab + i).collect();
        let own = log_probs.reshape([-1]).index_select(0, &Tensor::from_slice(&flat).to_device(device));
        let own = Vec::<f32>::try_from(own)?;
        let last_step = step + 1 == config.max_new_tokens;
        let (mut parents, mut next_tokens, mut still) = (Vec::new(), Vec::new(), Vec::new());
        for (a, &i) in active.iter().enumerate() {
            let candidates: Vec<Candidate> = (a * width as usize..(a + 1) * width as usize)
                .map(|at| Candidate {
                    beam: (index[at] / vocab) as usize,
                    token: index[at] % vocab,
                    log_prob: own[at],
                    score: top[at],
                })
                .collect();
            let search = &mut searches[i];
            let from = advance(search, &inputs[i], &candidates, step + 1, last_step, config, stops)?;
            if last_step || search.done(config) {
                continue;
            }
            for (beam, h) in from.iter().zip(&search.running) {
                parents.push(a as i64 * per_input + *beam as i64);
                next_tokens.push(*h.ids.last().expect("a running hypothesis has a token"));
            }
            still.push(i);
        }
        if still.is_empty() {
            break;
        }
        active = still;
        batch.advance(&Tensor::from_slice(&next_tokens), Some(&parents))?;
    }
    Ok(searches
        .into_iter()
        .map(|s| {
            s.finished
                .into_iter()
                .take(config.num_return_sequences)
                .map(|h| Generated { new_ids: h.ids, scores: h.scores, sequence_score: Some(h.score) })
                .collect()
        })
        .collect())
}

impl Search {
    /// Nothing can change this input's finished hypotheses any more.
    fn done(&self, config: &GenerationConfig) -> bool {
        self.settled || (config.early_stopping == EarlyStopping::True && self.finished.len() == config.num_beams)
    }
}

/// One step of one input: `candidates` (best first) become its finished and running hypotheses, as
/// transformers' `_get_running_beams_for_next_iteration`, `_update_finished_beams` and
/// `_check_early_stop_heuristic` do; `length` counts the new tokens with this step's. Returns the beam each
/// new running hypothesis continues.
fn advance(
    search: &mut Search,
    input: &[i64],
    candidates: &[Candidate],
    length: usize,
    last_step: bool,
    config: &GenerationConfig,
    stops: &Stops,
) -> Result<Vec<usize>> {
    let beams = config.num_beams;
    let lp = config.length_penalty;
    let extended: Vec<Hypothesis> = candidates
        .iter()
        .map(|c| {
            let parent = &search.running[c.beam];
            let mut h = parent.clone();
            h.ids.push(c.token);
            h.scores.push(c.log_prob);
            h.score = c.score;
            h
        })
        .collect();
    let ended = extended.iter().map(|h| Ok(last_step || stops.hit(input, &h.ids)?)).collect::<Result<Vec<bool>>>()?;
    // Finished: the ended among the first num_beams, unless nothing may join any more.
    if !search.done(config) {
        let divisor = (length as f64).powf(lp) as f32;
        let joined = extended.iter().zip(&ended).take(beams).filter(|(_, &e)| e);
        search.finished.extend(joined.map(|(h, _)| Hypothesis { score: h.score / divisor, ..h.clone() }));
        search.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        search.finished.truncate(beams);
    }
    // Running: the best num_beams by score, an ended candidate only when too few did not end.
    let mut order: Vec<(usize, f32)> = extended
        .iter()
        .zip(&ended)
        .enumerate()
        .map(|(c, (h, &e))| (c, if e { h.score + IMPOSSIBLE } else { h.score }))
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order.truncate(beams);
    let from = order.iter().map(|&(c, _)| candidates[c].beam).collect();
    search.running = order.iter().map(|&(c, score)| Hypothesis { score, ..extended[c].clone() }).collect();
    // Can a running hypothesis still beat the worst finished one? Judged at this length, or with "never" and
    // a positive length penalty at the longest.
    if !search.settled {
        let longest = config.early_stopping == EarlyStopping::Never && lp > 0.0;
        let at = if longest { config.max_new_tokens } else { length };
        let best = search.running[0].score / (at as f64).powf(lp) as f32;
        let worst = if search.finished.len() == beams { search.finished[beams - 1].score } else { IMPOSSIBLE };
        search.settled = best <= worst;
    }
    Ok(from)
}
