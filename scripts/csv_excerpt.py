"""The committed excerpt of ADIFF's validation CSVs that scripts/fixtures_metrics.py and
scripts/fixtures_meteor.py read. Not a generator: they import it.

Those generators pick seeded blocks of rows out of the full CSVs (ADIFF's data/ACD and data/CLD:
2,456 and 5,225 rows), and fixtures_metrics.py a seeded sample of their sentences. The seeded
draws depend only on how many rows (sentences) there are, so the repository keeps just the
items that are read, with their positions, in tests/fixtures/metrics/source/:

  <ADIFF CSV name>   columns `row,answer`: 0-based row number in the full CSV, its `answer`
  ptb_sample.csv     columns `index,sentence`: the sentences fixtures_metrics.py samples for its
                     tokenizer fixture, by index into the list they are drawn from
  counts.csv         columns `file,count`: the full CSVs' row counts and that list's length

A generator reading an item that is not in the excerpt stops and names it. Given `--data DIR`
(a folder with ACD/ and CLD/ holding the full CSVs), the generators read the full CSVs instead
and add what they read to the excerpt (`save`); nothing is ever removed from it.
"""
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "tests" / "fixtures" / "metrics" / "source"
COUNTS = "counts.csv"
SAMPLE = "ptb_sample.csv"
HEADERS = {SAMPLE: ("index", "sentence")}
DEFAULT_HEADER = ("row", "answer")


class Items:
    """Items by 0-based position: all of a full CSV's (or list's), or only the excerpt's. len() is
    always the full length. Remembers which positions were read."""

    def __init__(self, name, values, count, excerpt):
        self.name, self.values, self.count, self.excerpt = name, values, count, excerpt
        self.read = set()

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        if not 0 <= i < self.count:
            raise IndexError(f"{self.name}: {i} out of range 0..{self.count}")
        if i not in self.values:
            sys.exit(f"{self.name}: item {i} is not in the excerpt {SOURCE / self.name}; run the "
                     "generator once with --data DIR (the full ADIFF CSVs) to add it")
        self.read.add(i)
        return self.values[i]


def _counts():
    with open(SOURCE / COUNTS, newline="") as f:
        return {r["file"]: int(r["count"]) for r in csv.DictReader(f)}


def _excerpt(name):
    key, value = HEADERS.get(name, DEFAULT_HEADER)
    with open(SOURCE / name, newline="") as f:
        values = {int(r[key]): r[value] for r in csv.DictReader(f)}
    return Items(name, values, _counts()[name], excerpt=True)


def answers(name, data=None):
    """The `answer` column of ADIFF CSV `name`: from the full CSV under data/ACD or data/CLD when
    `data` is given, else from the excerpt."""
    if data is None:
        return _excerpt(name)
    sub = "ACD" if name.startswith("acd") else "CLD"
    with open(Path(data) / sub / name, newline="") as f:
        values = [r["answer"] for r in csv.DictReader(f)]
    return Items(name, dict(enumerate(values)), len(values), excerpt=False)


def sample_population(sentences=None):
    """The list fixtures_metrics.py samples its tokenizer sentences from: `sentences` (built from
    the full CSVs) when given, else the excerpt's sampled entries."""
    if sentences is None:
        return _excerpt(SAMPLE)
    return Items(SAMPLE, dict(enumerate(sentences)), len(sentences), excerpt=False)


def save(items):
    """Adds what was read from full CSVs (Items with excerpt=False) to the excerpt files."""
    counts = _counts() if (SOURCE / COUNTS).exists() else {}
    SOURCE.mkdir(parents=True, exist_ok=True)
    for it in items:
        if it.excerpt:
            continue
        assert counts.get(it.name, it.count) == it.count, f"{it.name}: length changed"
        counts[it.name] = it.count
        values = _excerpt(it.name).values if (SOURCE / it.name).exists() else {}
        values.update({i: it.values[i] for i in it.read})
        with open(SOURCE / it.name, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(HEADERS.get(it.name, DEFAULT_HEADER))
            w.writerows(sorted(values.items()))
        print(f"{SOURCE / it.name}: {len(values)} of {it.count} items")
    with open(SOURCE / COUNTS, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("file", "count"))
        w.writerows(sorted(counts.items()))
