//! Few-shot demonstrations: drawn deterministically by seed, never the item's own record, balanced over the gold
//! answers when asked; dropped whole (farthest first) when an item does not fit, before its truncation field is
//! cut; and scored exactly as the naive scorer scores the same full text.

use crate::common;

use common::*;
use ruprompts::data::read_rows;
use ruprompts::format::PromptFormat;
use ruprompts::task::fewshot::{choose, Sampler};
use ruprompts::task::{score_naive, Classifier, Item, RsgTask, ScoreMode, Shot, TaskFormats, TaskItem};
use ruprompts::tokenizer::Tokenizer;

const FORMAT: &str = "{premise}\nВопрос: {hypothesis}? Ответ:";

/// TERRa items of a fixture file (`rsg/TERRa/train.jsonl`; `lm-eval/terra/val.jsonl` has short ones).
fn terra(file: &str) -> Vec<TaskItem> {
    let rows = read_rows(&fixture(file)).unwrap();
    RsgTask::Terra.items(&rows, &TaskFormats::bundled(RsgTask::Terra).verbalizers).unwrap()
}

#[test]
fn demonstrations_are_seeded_never_the_item_itself_and_balanced_when_asked() {
    let train = terra("rsg/TERRa/train.jsonl");
    // Drawn from the evaluated split itself: an item never precedes itself.
    for sampler in [Sampler::Random, Sampler::Balanced, Sampler::FirstN] {
        let shots = choose(&train, &train, 5, sampler, 7).unwrap();
        for (item, shots) in train.iter().zip(&shots) {
            assert_eq!(shots.len(), 5);
            assert!(shots.iter().all(|s| s.row != item.item.row), "{sampler:?}: {:?} shows itself", item.item.origin);
        }
        // Deterministic by seed, and an item's demonstrations do not depend on the other items evaluated.
        assert_eq!(choose(&train, &train, 5, sampler, 7).unwrap(), shots);
        assert_eq!(choose(&train[3..6], &train, 5, sampler, 7).unwrap(), shots[3..6]);
    }
    let random = |seed| choose(&train, &train, 5, Sampler::Random, seed).unwrap();
    assert_ne!(random(7), random(8));
    // first_n: the split's first items in order, skipping the item's own.
    let first = choose(&train[..2], &train, 2, Sampler::FirstN, 0).unwrap();
    let answer = |t: &TaskItem| t.item.candidates[t.item.gold.unwrap()].clone();
    let shot = |t: &TaskItem| Shot { row: t.item.row.clone(), answer: answer(t) };
    assert_eq!(first[0], [shot(&train[1]), shot(&train[2])]);
    assert_eq!(first[1], [shot(&train[0]), shot(&train[2])]);
    // Balanced: 4 demonstrations over TERRa's two answers are two of each, for every item and seed.
    for seed in 0..5 {
        for shots in choose(&train, &train, 4, Sampler::Balanced, seed).unwrap() {
            let yes = shots.iter().filter(|s| s.answer == " да").count();
            assert_eq!((yes, shots.len() - yes), (2, 2), "{shots:?}");
        }
    }
    // Asking for more than the split holds says so.
    let err = choose(&train[..1], &train[..3], 3, Sampler::Random, 0).unwrap_err().to_string();
    assert!(
        err.ends_with("3 demonstrations asked for, but the few-shot split has only 2 labelled items to draw from"),
        "{err}"
    );
}

#[test]
fn k_shot_scores_are_the_naive_scores_of_the_full_text_and_overflow_drops_whole_demonstrations() {
    init();
    let backbone = ruprompts::model::Backbone::load_local(&ruprompts::model::ModelSource::local(model_dir())).unwrap();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile(FORMAT, &tok).unwrap();
    let classifier = |max_tokens| Classifier {
        model: &backbone.model,
        tokenizer: &tok,
        format: &format,
        injections: &[],
        mode: ScoreMode::Sum,
        shared: true,
        truncation_field: Some("premise"),
        max_tokens,
        shot_delimiter: "\n\n",
        chat: None,
    };
    // Short rows, so that most items fit the tiny model's 256 positions with two demonstrations.
    let (val, train) = (terra("lm-eval/terra/val.jsonl"), terra("lm-eval/terra/train.jsonl"));
    let shots = choose(&val, &train, 2, Sampler::Random, 3).unwrap();
    let items: Vec<Item> = val.iter().zip(shots).map(|(t, shots)| Item { shots, ..t.item.clone() }).collect();
    let text = |row: &ruprompts::format::Row| format.format(row).unwrap().text;
    let full = |item: &Item, shots: &[Shot]| -> String {
        let demos: String = shots.iter().map(|s| format!("{}{}\n\n", text(&s.row), s.answer)).collect();
        demos + &text(&item.row)
    };
    let c = classifier(None);
    let refs: Vec<&Item> = items.iter().collect();
    let scored = c.scored(&refs, None, true).unwrap();
    let (mut worst, mut compared) = (0.0f64, 0);
    for (item, s) in items.iter().zip(&scored) {
        let request = c.request(item).unwrap();
        if request.dropped_shots > 0 {
            continue; // the tiny model's 256 positions: checked below
        }
        compared += 1;
        let ids = tok.encode_ids(&full(item, &item.shots)).unwrap();
        assert_eq!(request.context, ids, "the context is the full text, tokenized as one");
        let naive = score_naive(&backbone.model, &[], &ids, &request.candidates, true).unwrap();
        for (a, b) in s.candidates.iter().zip(&naive) {
            worst = worst.max((a.answer_logprob - b.answer_logprob).abs()).max((a.text_logprob - b.text_logprob).abs());
            assert_eq!((a.answer_tokens, a.text_tokens), (b.answer_tokens, b.text_tokens));
        }
    }
    assert!(compared >= 20 && worst <= 1e-4, "{compared} items: shared k-shot scores differ from naive by {worst}");

    // Overflow: with room for one demonstration the farthest is dropped; with room for none both are, and then
    // the premise is cut.
    let item = &items[0];
    let longest = c.request(item).unwrap().candidates.iter().map(|c| c.answer.len()).max().unwrap();
    let one = tok.encode_ids(&full(item, &item.shots[1..])).unwrap().len() + longest;
    let request = classifier(Some(one)).request(item).unwrap();
    assert_eq!(request.dropped_shots, 1);
    assert_eq!(request.context, tok.encode_ids(&full(item, &item.shots[1..])).unwrap());
    let none = tok.encode_ids(&full(item, &[])).unwrap().len() + longest;
    let request = classifier(Some(none - 3)).request(item).unwrap();
    assert_eq!((request.dropped_shots, request.context.len() + longest), (2, none - 3));
    let zero_shot = Item { shots: vec![], ..item.clone() };
    assert_eq!(classifier(Some(none - 3)).request(&zero_shot).unwrap().context, request.context);
}
