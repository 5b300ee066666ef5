//! Log-probabilities of candidate continuations under the frozen LM, with or without a prompt: what
//! perplexity-based classification compares. Two ways, same numbers: [`score_naive`] runs context and candidate
//! together for every candidate (the reference); [`score_shared`] runs the context once into the KV cache and
//! all candidates from it in one batch, projecting to the vocabulary only where a token is scored.

use anyhow::{ensure, Context, Result};
use tch::{Kind, Tensor};

use crate::model::{pad, Model, Side};
use crate::prompt::{inject, Injection};

/// A candidate continuation of a context: the answer that is scored, then the rest of the formatted text
/// (literal text and any prompt tokens after the answer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub answer: Vec<i64>,
    pub suffix: Vec<i64>,
}

/// Log-probability sums of one candidate. Prompt tokens are never predicted, so they count in neither sum.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Scored {
    /// Σ log p(answer token | everything before it).
    pub answer_logprob: f64,
    pub answer_tokens: usize,
    /// Σ log p over every predicted token of the whole text (context, answer, suffix): the CPT paper's
    /// "perplexity of the resulting fragment" is `exp(-text_logprob / text_tokens)`.
    pub text_logprob: f64,
    pub text_tokens: usize,
}

/// Log-probabilities `[K]` of the `targets` that are in the vocabulary, given the hidden states `hidden: [N, d]`
/// that predict them (one each), and which targets those are (prompt tokens are outside the vocabulary and never
/// predicted). Differentiable: training backpropagates through it.
fn target_logprob_tensor(model: &Model, hidden: &Tensor, targets: &[i64]) -> (Tensor, Vec<bool>) {
    let vocab = model.config().vocab_size;
    let real: Vec<bool> = targets.iter().map(|t| (0..vocab).contains(t)).collect();
    let keep: Vec<i64> = (0..targets.len() as i64).filter(|&i| real[i as usize]).collect();
    let device = model.device();
    if keep.is_empty() {
        return (Tensor::zeros([0], (Kind::Float, device)), real);
    }
    let rows = select(hidden, &keep, device);
    let wanted: Vec<i64> = keep.iter().map(|&i| targets[i as usize]).collect();
    let logp = model.lm_logits(&rows).log_softmax(-1, Kind::Float);
    let picked = logp.gather(1, &Tensor::from_slice(&wanted).to_device(device).unsqueeze(1), false).squeeze_dim(1);
    (picked, real)
}

/// [`target_logprob_tensor`] as numbers: `None` for targets outside the vocabulary.
fn target_logprobs(model: &Model, hidden: &Tensor, targets: &[i64]) -> Result<Vec<Option<f64>>> {
    let (picked, real) = target_logprob_tensor(model, hidden, targets);
    let mut values = Vec::<f64>::try_from(picked.to_kind(Kind::Double))?.into_iter();
    Ok(real.iter().map(|&r| if r { values.next() } else { None }).collect())
}

/// Adds the log-probs of `tokens`, those in `answer` to the answer sums, and with `whole_text` all of them to the
/// text sums.
fn accumulate(scored: &mut Scored, logprobs: &[Option<f64>], answer: std::ops::Range<usize>, whole_text: bool) {
    for (i, lp) in logprobs.iter().enumerate() {
        if let Some(lp) = lp {
            if whole_text {
                scored.text_logprob += lp;
                scored.text_tokens += 1;
            }
            if answer.contains(&i) {
                scored.answer_logprob += lp;
                scored.answer_tokens += 1;
            }
        }
    }
}

/// The reference: one forward over context + answer + suffix per candidate. With `whole_text` false only the
/// answer is scored (`text_*` stay 0): the other positions are never projected to the vocabulary.
pub fn score_naive(
    model: &Model,
    injections: &[Injection],
    context: &[i64],
    candidates: &[Candidate],
    whole_text: bool,
) -> Result<Vec<Scored>> {
    ensure!(!context.is_empty(), "scoring needs a non-empty context");
    let _guard = tch::no_grad_guard();
    candidates
        .iter()
        .map(|c| {
            let ids: Vec<i64> = [context, &c.answer, &c.suffix].concat();
            let input = Tensor::from_slice(&ids).unsqueeze(0).to_device(model.device());
            let hidden = model.forward(inject(model, &input, injections)?.input(), None, None)?.squeeze_dim(0);
            let t = ids.len() as i64;
            // Position p predicts token p + 1.
            let start = context.len() - 1;
            let mut scored = Scored::default();
            if whole_text {
                let logprobs = target_logprobs(model, &hidden.narrow(0, 0, t - 1), &ids[1..])?;
                accumulate(&mut scored, &logprobs, start..start + c.answer.len(), true);
            } else {
                let n = c.answer.len();
                let logprobs = target_logprobs(model, &hidden.narrow(0, start as i64, n as i64), &c.answer)?;
                accumulate(&mut scored, &logprobs, 0..n, false);
            }
            Ok(scored)
        })
        .collect()
}

/// The prompts' rows that a segment holds: the first `taken` tokens of each went to what came before it. A
/// context may hold a prompt several times over (around every demonstration), so rows wrap around.
fn slice_injections<'a>(injections: &[Injection<'a>], ids: &[i64], taken: &mut [i64]) -> Vec<Injection<'a>> {
    injections
        .iter()
        .zip(taken.iter_mut())
        .filter_map(|(inj, taken)| {
            let n = ids.iter().filter(|&&t| t == inj.token_id).count() as i64;
            let length = inj.length().max(1);
            let index: Vec<i64> = (*taken..*taken + n).map(|i| i % length).collect();
            *taken += n;
            (n > 0).then(|| inj.select(&index))
        })
        .collect()
}

/// The context once through the KV cache, then every candidate in one batch from it (no second forward at all
/// when every answer is one token and only answers are scored). Same numbers as [`score_naive`] up to float
/// rounding.
pub fn score_shared(
    model: &Model,
    injections: &[Injection],
    context: &[i64],
    candidates: &[Candidate],
    whole_text: bool,
) -> Result<Vec<Scored>> {
    let mut scored = score_shared_many(model, injections, &[(context, candidates)], whole_text)?;
    Ok(scored.pop().expect("one request"))
}

/// [`score_shared`] for several (context, candidates) requests at once: the contexts go through the model as one
/// left-padded batch (so they all end at the same position), then every candidate of every request as a second
/// batch continuing from its own context's cache row. Requests of similar context length waste the least on
/// padding; every context must hold the same number of each prompt's tokens (the same format).
pub fn score_shared_many(
    model: &Model,
    injections: &[Injection],
    requests: &[(&[i64], &[Candidate])],
    whole_text: bool,
) -> Result<Vec<Vec<Scored>>> {
    let _guard = tch::no_grad_guard();
    let Some(pass) = shared_pass(model, injections, requests, whole_text)? else {
        return Ok(vec![Vec::new(); requests.len()]);
    };
    let mut values = Vec::<f64>::try_from(pass.picked.to_kind(Kind::Double))?.into_iter();
    let logprobs: Vec<Option<f64>> = pass.real.iter().map(|&r| if r { values.next() } else { None }).collect();
    let mut out: Vec<Vec<Scored>> = vec![Vec::new(); requests.len()];
    let mut offset = 0;
    let candidates = requests.iter().flat_map(|(_, c)| c.iter());
    for ((row, cand), &owner) in pass.rows.iter().zip(candidates).zip(&pass.owners) {
        let mut scored = pass.bases[owner as usize];
        let logprobs = &logprobs[offset..offset + row.len()];
        accumulate(&mut scored, logprobs, 0..cand.answer.len(), whole_text);
        offset += row.len();
        out[owner as usize].push(scored);
    }
    Ok(out)
}

/// Σ log p(answer) of every candidate of every request, in order, as one tensor `[Σ candidates]` that gradients
/// flow back through (to the prompt's embeddings): the same shared-context pass as [`score_shared_many`], so
/// training's `choice` objective optimises exactly the numbers the evaluator ranks.
pub fn answer_logprob_sums(
    model: &Model,
    injections: &[Injection],
    requests: &[(&[i64], &[Candidate])],
) -> Result<Tensor> {
    let pass = shared_pass(model, injections, requests, false)?.context("no candidates to score")?;
    ensure!(pass.real.iter().all(|&r| r), "a candidate answer holds a prompt token: only text can be scored");
    let row_of: Vec<i64> =
        pass.rows.iter().enumerate().flat_map(|(r, row)| std::iter::repeat_n(r as i64, row.len())).collect();
    let index = Tensor::from_slice(&row_of).to_device(model.device());
    let sums = Tensor::zeros([pass.rows.len() as i64], (Kind::Float, model.device()));
    Ok(sums.index_add(0, &index, &pass.picked))
}

/// What one shared-context pass computes: the fed candidate rows (answers, and with `whole_text` their
/// suffixes) with the request each belongs to, each context's whole-text sums (zero without `whole_text`), and
/// the log-prob of every fed candidate token that is in the vocabulary (`real`), in row order.
struct SharedPass {
    rows: Vec<Vec<i64>>,
    owners: Vec<i64>,
    bases: Vec<Scored>,
    picked: Tensor,
    real: Vec<bool>,
}

/// The pass behind [`score_shared_many`] and [`answer_logprob_sums`] (`None` when no request has candidates);
/// it records gradients unless the caller turned them off.
fn shared_pass(
    model: &Model,
    injections: &[Injection],
    requests: &[(&[i64], &[Candidate])],
    whole_text: bool,
) -> Result<Option<SharedPass>> {
    ensure!(requests.iter().all(|(c, _)| !c.is_empty()), "scoring needs a non-empty context");
    // Candidate rows with the request each belongs to; only the tokens that are scored are fed (an answer alone
    // when the suffix is not scored: later tokens cannot change an answer's log-probs).
    let mut rows: Vec<Vec<i64>> = Vec::new();
    let mut owners: Vec<i64> = Vec::new();
    for (i, (_, candidates)) in requests.iter().enumerate() {
        for cand in *candidates {
            rows.push(if whole_text { [&cand.answer[..], &cand.suffix].concat() } else { cand.answer.clone() });
            owners.push(i as i64);
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let width = rows.iter().map(Vec::len).max().unwrap_or(0) as i64;
    ensure!(width > 0, "every candidate is empty");
    let device = model.device();
    let d = model.config().n_embd;
    let contexts: Vec<&[i64]> = requests.iter().map(|(c, _)| *c).collect();
    let b = contexts.len() as i64;
    let prompt_ids: Vec<i64> = injections.iter().map(|i| i.token_id).collect();
    // Single-token candidates are all scored from the contexts' last states: no cache to keep.
    let keep_cache = width > 1;
    // Padding between prefix and rest widens the batch: it must still leave room for the candidates.
    let room = (model.config().n_positions - width).max(0) as usize;
    let ContextStage { cache, mask, last, bases, taken } = match prefix_groups(&contexts, &prompt_ids, room) {
        Some(groups) => prefixed_contexts(model, injections, &contexts, whole_text, keep_cache, &groups)?,
        None => plain_contexts(model, injections, &contexts, whole_text, keep_cache)?,
    };

    // Token j of a candidate is predicted by its context's last state (j = 0) or by its own state j − 1: the
    // first B rows of `states` are the contexts' last states, then the candidate batch's states row by row.
    let states = match &cache {
        None => last,
        Some(cache) => {
            let cache = cache.select_rows(&owners);
            let mask = select(&mask, &owners, device);
            let hidden = continue_batch(model, injections, &taken, cache, &mask, &rows)?;
            Tensor::cat(&[last, hidden.reshape([-1, d])], 0)
        }
    };
    let (mut picks, mut targets) = (Vec::new(), Vec::new());
    for (r, row) in rows.iter().enumerate() {
        for (j, &t) in row.iter().enumerate() {
            picks.push(if j == 0 { owners[r] } else { b + r as i64 * width + j as i64 - 1 });
            targets.push(t);
        }
    }
    let (picked, real) = target_logprob_tensor(model, &select(&states, &picks, device), &targets);
    Ok(Some(SharedPass { rows, owners, bases, picked, real }))
}

/// What the contexts' pass leaves for the candidates: the KV cache (when candidates continue from it), the
/// attention mask over its positions, each context's last hidden state `[B, d]`, each context's whole-text sums
/// (zero without `whole_text`) and how many rows of each prompt the contexts used.
struct ContextStage {
    cache: Option<crate::model::KvCache>,
    mask: Tensor,
    last: Tensor,
    bases: Vec<Scored>,
    taken: Vec<i64>,
}

/// The contexts as one left-padded batch (so they all end at the same position).
fn plain_contexts(
    model: &Model,
    injections: &[Injection],
    contexts: &[&[i64]],
    whole_text: bool,
    keep_cache: bool,
) -> Result<ContextStage> {
    let device = model.device();
    let d = model.config().n_embd;
    let mut taken = vec![0i64; injections.len()];
    let context_injections = slice_injections(injections, contexts[0], &mut taken);
    let (ids, context_mask) = pad(contexts, 0, Side::Left);
    let (b, l) = (contexts.len() as i64, ids.size()[1]);
    let mut cache = keep_cache.then(|| model.new_cache());
    let embeds = inject(model, &ids.to_device(device), &context_injections)?;
    let mask = context_mask.to_device(device);
    // Without whole-text scoring only the contexts' last states are read.
    let from = if whole_text { 0 } else { l - 1 };
    let hidden = model.forward_from(embeds.input(), Some(&mask), cache.as_mut(), from)?;
    let (hidden, kept) = (hidden.reshape([-1, d]), l - from);
    // Row i's context starts after its padding; its token j sits at i·L + pad + j (whole text: all L kept).
    let start = |i: usize| i as i64 * l + l - contexts[i].len() as i64;
    let mut bases = vec![Scored::default(); contexts.len()];
    if whole_text {
        let (mut picks, mut targets) = (Vec::new(), Vec::new());
        for (i, c) in contexts.iter().enumerate() {
            picks.extend((0..c.len() as i64 - 1).map(|j| start(i) + j));
            targets.extend_from_slice(&c[1..]);
        }
        let logprobs = target_logprobs(model, &select(&hidden, &picks, device), &targets)?;
        let mut offset = 0;
        for (base, c) in bases.iter_mut().zip(contexts) {
            accumulate(base, &logprobs[offset..offset + c.len() - 1], 0..0, true);
            offset += c.len() - 1;
        }
    }
    let last: Vec<i64> = (0..b).map(|i| i * kept + kept - 1).collect();
    let last = select(&hidden, &last, device);
    Ok(ContextStage { cache, mask, last, bases, taken })
}

/// Tokens a prefix must span, shared by at least two contexts of a batch, to be run once for all of them.
const MIN_SHARED_PREFIX: usize = 16;

/// How a batch's contexts split into a prefix run once per group and the rest run per context: the group of
/// each context, and each group's prefix length and first member. Groups are runs of the sorted contexts that
/// share at least [`MIN_SHARED_PREFIX`] tokens (the same demonstrations, a MuSeRC paragraph and question, a long
/// instruction); a group's prefix is what its members share, a lone context's all but its last token. Every
/// prefix leaves its contexts at least one token, and all prefixes hold the same number of each prompt's
/// tokens (the fewest any holds), so one slice of each prompt serves every row. `None` when nothing is shared, or
/// when the longest prefix and the longest rest, padded side by side, would take more than `room` positions.
fn prefix_groups(contexts: &[&[i64]], prompt_ids: &[i64], room: usize) -> Option<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let common = |a: &[i64], b: &[i64]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let mut order: Vec<usize> = (0..contexts.len()).collect();
    order.sort_by(|&a, &b| contexts[a].cmp(contexts[b]));
    let mut groups: Vec<(Vec<usize>, usize)> = Vec::new();
    for &i in &order {
        match groups.last_mut() {
            Some((members, shared)) if common(contexts[members[0]], contexts[i]).min(*shared) >= MIN_SHARED_PREFIX => {
                *shared = common(contexts[members[0]], contexts[i]).min(*shared);
                members.push(i);
            }
            _ => groups.push((vec![i], contexts[i].len())),
        }
    }
    let mut lens: Vec<usize> = groups
        .iter()
        .map(|(members, shared)| {
            let shortest = members.iter().map(|&i| contexts[i].len()).min().unwrap_or(1);
            (*shared).min(shortest - 1)
        })
        .collect();
    // Each prompt's tokens in every prefix: the fewest any prefix holds, and every prefix cut to that many.
    for &p in prompt_ids {
        let count = |g: usize, len: usize| contexts[groups[g].0[0]][..len].iter().filter(|&&t| t == p).count();
        let fewest = (0..groups.len()).map(|g| count(g, lens[g])).min().unwrap_or(0);
        for (g, len) in lens.iter_mut().enumerate() {
            let ids = &contexts[groups[g].0[0]];
            let mut seen = 0;
            if let Some(cut) = ids[..*len].iter().position(|&t| {
                seen += usize::from(t == p);
                t == p && seen > fewest
            }) {
                *len = cut;
            }
        }
    }
    let saved: usize = groups.iter().zip(&lens).map(|((members, _), len)| (members.len() - 1) * len).sum();
    let widest_prefix = lens.iter().max().copied().unwrap_or(0);
    let widest_rest = groups
        .iter()
        .zip(&lens)
        .flat_map(|((members, _), len)| members.iter().map(move |&i| contexts[i].len() - len))
        .max()
        .unwrap_or(0);
    if saved < MIN_SHARED_PREFIX || widest_prefix + widest_rest > room {
        return None;
    }
    let mut group_of = vec![0; contexts.len()];
    for (g, (members, _)) in groups.iter().enumerate() {
        for &i in members {
            group_of[i] = g;
        }
    }
    let first = groups.iter().map(|(members, _)| members[0]).collect();
    Some((group_of, lens, first))
}

/// The contexts in two passes: each group's shared prefix once (a left-padded batch of prefixes, into a KV cache),
/// then every context's rest continuing from its group's cache row (left-padded again: padding may sit between
/// prefix and rest, which positions and the mask skip). All rests end at the same position, as plain contexts do.
fn prefixed_contexts(
    model: &Model,
    injections: &[Injection],
    contexts: &[&[i64]],
    whole_text: bool,
    keep_cache: bool,
    (group_of, lens, first): &(Vec<usize>, Vec<usize>, Vec<usize>),
) -> Result<ContextStage> {
    let device = model.device();
    let d = model.config().n_embd;
    let prefixes: Vec<&[i64]> = first.iter().zip(lens).map(|(&i, &len)| &contexts[i][..len]).collect();
    let mut taken = vec![0i64; injections.len()];
    let prefix_injections = slice_injections(injections, prefixes[0], &mut taken);
    let (ids, prefix_mask) = pad(&prefixes, 0, Side::Left);
    let p = ids.size()[1];
    let mut prefix_cache = model.new_cache();
    let embeds = inject(model, &ids.to_device(device), &prefix_injections)?;
    let prefix_mask = prefix_mask.to_device(device);
    // Whole text: every prefix state predicts a token; otherwise none is read (the last is the cheapest to keep).
    let from = if whole_text { 0 } else { p - 1 };
    let prefix_hidden = model.forward_from(embeds.input(), Some(&prefix_mask), Some(&mut prefix_cache), from)?;
    let (prefix_hidden, prefix_kept) = (prefix_hidden.reshape([-1, d]), p - from);

    let owners: Vec<i64> = group_of.iter().map(|&g| g as i64).collect();
    let mut cache = prefix_cache.select_rows(&owners);
    let rests: Vec<&[i64]> = contexts.iter().zip(group_of).map(|(c, &g)| &c[lens[g]..]).collect();
    let rest_injections = slice_injections(injections, rests[0], &mut taken);
    let (ids, rest_mask) = pad(&rests, 0, Side::Left);
    let (b, r) = (contexts.len() as i64, ids.size()[1]);
    let mask = Tensor::cat(&[select(&prefix_mask, &owners, device), rest_mask.to_device(device)], 1);
    let embeds = inject(model, &ids.to_device(device), &rest_injections)?;
    let from = if whole_text { 0 } else { r - 1 };
    let hidden = model.forward_from(embeds.input(), Some(&mask), Some(&mut cache), from)?;
    let (hidden, kept) = (hidden.reshape([-1, d]), r - from);
    let last: Vec<i64> = (0..b).map(|i| i * kept + kept - 1).collect();
    let last = select(&hidden, &last, device);

    let mut bases = vec![Scored::default(); contexts.len()];
    if whole_text {
        // Token t of a context is predicted by the state of t − 1: in the prefix pass for t ≤ its prefix length q
        // (shared by the group for t < q), in the rest pass after. States: the prefixes' rows, then the rests'.
        let prefix_state = |g: usize, j: usize| (g as i64) * prefix_kept + p - lens[g] as i64 + j as i64;
        let rest_state =
            |i: usize, j: usize| prefix_hidden.size()[0] + i as i64 * kept + r - rests[i].len() as i64 + j as i64;
        let states = Tensor::cat(&[prefix_hidden.shallow_clone(), hidden.shallow_clone()], 0);
        let (mut picks, mut targets, mut spans) = (Vec::new(), Vec::new(), Vec::new());
        for (g, prefix) in prefixes.iter().enumerate() {
            let from = picks.len();
            for t in 1..prefix.len() {
                picks.push(prefix_state(g, t - 1));
                targets.push(prefix[t]);
            }
            spans.push(from..picks.len());
        }
        for (i, c) in contexts.iter().enumerate() {
            let (g, q) = (group_of[i], lens[group_of[i]]);
            let from = picks.len();
            for t in q.max(1)..c.len() {
                picks.push(if t == q { prefix_state(g, q - 1) } else { rest_state(i, t - 1 - q) });
                targets.push(c[t]);
            }
            spans.push(from..picks.len());
        }
        let logprobs = target_logprobs(model, &select(&states, &picks, device), &targets)?;
        let (groups, own) = spans.split_at(prefixes.len());
        for (i, base) in bases.iter_mut().enumerate() {
            accumulate(base, &logprobs[groups[group_of[i]].clone()], 0..0, true);
            accumulate(base, &logprobs[own[i].clone()], 0..0, true);
        }
    }
    Ok(ContextStage { cache: keep_cache.then_some(cache), mask, last, bases, taken })
}

/// Consecutive runs of `requests` that may share one [`score_shared_many`] pass: in each, the contexts hold the
/// same number of every prompt's tokens (`prompt_ids`; demonstrations around a prompt repeat it, and items that
/// dropped some hold fewer), the longest context plus the longest fed candidate (the answer, with `whole_text`
/// its suffix too) fits in the model's `positions` (contexts are padded to the longest, candidates continue after
/// it), and at most `budget` cached context positions are copied across candidate rows (rows × context length,
/// which bounds memory). A request alone always forms a run.
pub fn shared_batches(
    requests: &[(&[i64], &[Candidate])],
    prompt_ids: &[i64],
    whole_text: bool,
    positions: usize,
    budget: usize,
) -> Vec<std::ops::Range<usize>> {
    let fed = |c: &Candidate| c.answer.len() + if whole_text { c.suffix.len() } else { 0 };
    let prompts =
        |c: &[i64]| -> Vec<usize> { prompt_ids.iter().map(|p| c.iter().filter(|&t| t == p).count()).collect() };
    let (mut runs, mut start) = (Vec::new(), 0);
    let (mut rows, mut context, mut width) = (0, 0, 0);
    for (i, (c, candidates)) in requests.iter().enumerate() {
        let (r, l) = (rows + candidates.len(), context.max(c.len()));
        let w = candidates.iter().map(fed).max().unwrap_or(0).max(width);
        if i > start && (r * l > budget || l + w > positions || prompts(c) != prompts(requests[start].0)) {
            runs.push(start..i);
            start = i;
            (rows, context, width) = (candidates.len(), c.len(), candidates.iter().map(fed).max().unwrap_or(0));
        } else {
            (rows, context, width) = (r, l, w);
        }
    }
    if start < requests.len() {
        runs.push(start..requests.len());
    }
    runs
}

/// Rows `index` of `t` (along its first dimension).
fn select(t: &Tensor, index: &[i64], device: tch::Device) -> Tensor {
    t.index_select(0, &Tensor::from_slice(index).to_device(device))
}

/// Hidden states `[R, width, d]` of the candidate `rows`, right-padded into one batch that continues from
/// `cache` (one context row per candidate row, `context_mask` likewise; the contexts used the first `taken`
/// rows of each prompt).
fn continue_batch(
    model: &Model,
    injections: &[Injection],
    taken: &[i64],
    mut cache: crate::model::KvCache,
    context_mask: &Tensor,
    rows: &[Vec<i64>],
) -> Result<Tensor> {
    let device = model.device();
    let slices: Vec<&[i64]> = rows.iter().map(|r| r.as_slice()).collect();
    let (ids, row_mask) = pad(&slices, 0, Side::Right);
    let mask = Tensor::cat(&[context_mask.shallow_clone(), row_mask.to_device(device)], 1);
    // Every candidate row holds the same prompt tokens after the answer (they come from the same format).
    let rest = slice_injections(injections, &rows[0], &mut taken.to_vec());
    let embeds = inject(model, &ids.to_device(device), &rest)?;
    model.forward(embeds.input(), Some(&mask), Some(&mut cache))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_groups_share_what_contexts_have_in_common() {
        let common: Vec<i64> = (1..=20).collect();
        let (a, b) = ([&common[..], &[30, 31]].concat(), [&common[..], &[40]].concat());
        let lone = vec![9i64; 5];
        // a and b share 20 tokens (all of b but its last one); the lone context keeps its last token for the rest.
        let groups = prefix_groups(&[&a, &lone, &b], &[], 100).unwrap();
        assert_eq!(groups, (vec![0, 1, 0], vec![20, 4], vec![0, 1]));
        // The widest prefix (20) and rest (2) side by side take 22 positions: with less room, no sharing.
        assert!(prefix_groups(&[&a, &lone, &b], &[], 22).is_some());
        assert_eq!(prefix_groups(&[&a, &lone, &b], &[], 21), None);
        // Fewer than 16 shared tokens: nothing to gain.
        assert_eq!(prefix_groups(&[&a[..15], &b[..15], &lone], &[], 100), None);
        // Prompt tokens (99): every prefix holds as many as the fewest does; here that cuts the shared prefix to one
        // token, too little to share.
        let (pa, pb) = ([&[99, 99][..], &common, &[99, 5]].concat(), [&[99, 99][..], &common, &[99, 6]].concat());
        let same = [99i64, 99, 7, 99, 8];
        assert_eq!(prefix_groups(&[&pa, &pb, &same], &[99], 100).unwrap().1, vec![23, 4]);
        assert_eq!(prefix_groups(&[&pa, &pb, &[99, 7, 99]], &[99], 100), None);
    }

    #[test]
    fn shared_batches_fit_the_model_and_the_budget() {
        let cand = |n: usize| Candidate { answer: vec![1; n], suffix: vec![2; 3] };
        let (short, long) = (vec![5i64; 10], vec![5i64; 200]);
        let (one, wide) = (vec![cand(1), cand(2)], vec![cand(60)]);
        let requests: Vec<(&[i64], &[Candidate])> =
            vec![(&long, &one), (&short, &wide), (&short, &one), (&long, &one), (&long, &one)];
        // 200 + 60 > 256: the wide candidate cannot follow the long context; the budget splits the last run.
        assert_eq!(shared_batches(&requests, &[], false, 256, 10_000), [0..1, 1..3, 3..5]);
        assert_eq!(shared_batches(&requests, &[], false, 256, 500), [0..1, 1..3, 3..4, 4..5]);
        // With the suffix fed (whole text) the widths grow by 3: 200 + 2 + 3 still fits.
        assert_eq!(shared_batches(&requests, &[], true, 205, usize::MAX), [0..1, 1..3, 3..5]);
        assert_eq!(shared_batches(&requests, &[], true, 204, usize::MAX), [0..1, 1..3, 3..4, 4..5]);
        assert!(shared_batches(&[], &[], false, 256, 1).is_empty());
        // Contexts holding a prompt a different number of times (dropped demonstrations) never share a pass.
        let (once, twice) = ([&short[..], &[99]].concat(), [&short[..], &[99, 99]].concat());
        let prompted: Vec<(&[i64], &[Candidate])> = vec![(&once, &one), (&once, &one), (&twice, &one), (&once, &one)];
        assert_eq!(shared_batches(&prompted, &[99], false, 256, usize::MAX), [0..2, 2..3, 3..4]);
    }
}
