#!/usr/bin/env python3
"""Regenerates every committed parity fixture (tests/fixtures/, data/examples/) from independent
reference implementations, reading nothing outside the repository. Run by hand (never in CI), from
anywhere:

    python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-fixtures.txt
    .venv/bin/pip install --no-deps -r scripts/requirements-fixtures-nodeps.txt
    .venv/bin/python scripts/make_fixtures.py                 # every default part, in order
    .venv/bin/python scripts/make_fixtures.py htsat adiff     # some parts (run in the order below)

Parts, in the order they run (a part reads the committed output of the parts it names as input;
asking for a part does not rerun those):
  audio     scripts/make_audio_fixtures.py  tests/fixtures/audio/ (decoder references; torchaudio
                                            with its FFmpeg backend)
  htsat     scripts/fixtures_audio.py       tests/fixtures/htsat/ (torchlibrosa + msclap HTSAT)
  gpt2      scripts/fixtures_gpt2.py        tests/fixtures/gpt2/ (Hugging Face GPT-2 + tokenizer)
  adiff     scripts/fixtures_adiff.py       tests/fixtures/adiff/ (the whole tiny ADIFF; input: htsat, gpt2)
  stage1    scripts/fixtures_stage1.py      tests/fixtures/train/stage1.* (input: htsat, gpt2)
  train     scripts/fixtures_train.py       tests/fixtures/train/loss_grads.* (input: htsat, gpt2, adiff)
  optim     scripts/fixtures_optim.py       tests/fixtures/train/adamw.safetensors (torch AdamW)
  metrics   scripts/fixtures_metrics.py     tests/fixtures/metrics/cases.json, tokenizer.json
                                            (pycocoevalcap + aac-metrics; Java 17)
  meteor    scripts/fixtures_meteor.py      tests/fixtures/metrics/meteor.json (meteor-1.5.jar;
                                            input: metrics)
  meteorgen scripts/fixtures_meteor_generated.py  tests/fixtures/metrics/meteor_generated.json
                                            (2,850 generated items; PTB tokenizer, meteor-1.5.jar)
  fense     scripts/fixtures_fense.py       tests/fixtures/metrics/fense/ (tiny random Sentence-BERT and
                                            echecker; aac-metrics fense / fer / spider_fl;
                                            sentence-transformers 3.3.1)
  ptb       scripts/fixtures_ptb.py         tests/fixtures/metrics/ptb_punct.json (pycocoevalcap's PTB
                                            tokenizer on punctuation-heavy strings; Java 17)
  examples  scripts/fixtures_examples.py    data/examples/ (adiff build-dataset synthetic; the adiff
                                            binary: $ADIFF or target/release/adiff)
Not in the default run, only when named:
  demo      scripts/train_demo.sh           data/models/demo/ (trains the demo model: 20+ minutes
                                            on 2 cores, not bit-reproducible across machines)
scripts/FIXTURES.md lists every fixture file with the part that writes it.
"""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# part -> (generator, parts whose committed output it reads)
PARTS = {
    "audio": ("make_audio_fixtures.py", ()),
    "htsat": ("fixtures_audio.py", ()),
    "gpt2": ("fixtures_gpt2.py", ()),
    "adiff": ("fixtures_adiff.py", ("htsat", "gpt2")),
    "stage1": ("fixtures_stage1.py", ("htsat", "gpt2")),
    "train": ("fixtures_train.py", ("htsat", "gpt2", "adiff")),
    "optim": ("fixtures_optim.py", ()),
    "metrics": ("fixtures_metrics.py", ()),
    "meteor": ("fixtures_meteor.py", ("metrics",)),
    "meteorgen": ("fixtures_meteor_generated.py", ()),
    "fense": ("fixtures_fense.py", ()),
    "ptb": ("fixtures_ptb.py", ()),
    "examples": ("fixtures_examples.py", ()),
    "demo": ("train_demo.sh", ()),
}
OPT_IN = {"demo"}

# Every part runs after the parts it reads.
for _i, (_name, (_, _deps)) in enumerate(PARTS.items()):
    assert all(list(PARTS).index(d) < _i for d in _deps), _name


def command(script):
    path = HERE / script
    if script.endswith(".sh"):
        return ["bash", str(path)]
    return [sys.executable, str(path)]


if __name__ == "__main__":
    wanted = sys.argv[1:] or [p for p in PARTS if p not in OPT_IN]
    for name in wanted:
        if name not in PARTS:
            sys.exit(f"unknown part {name!r}; choose from {', '.join(PARTS)}")
    for name in [p for p in PARTS if p in wanted]:
        script, deps = PARTS[name]
        print(f"== {name}: scripts/{script}" + (f" (reads {', '.join(deps)})" if deps else ""),
              flush=True)
        if subprocess.run(command(script), cwd=REPO).returncode != 0:
            sys.exit(f"part {name} failed (scripts/{script})")
