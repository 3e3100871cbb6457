#!/usr/bin/env python3
"""Regenerates every committed parity fixture under tests/fixtures/ from independent PyTorch
reference implementations. Run by hand (never in CI):

    python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-fixtures.txt
    .venv/bin/pip install --no-deps -r scripts/requirements-fixtures-nodeps.txt
    .venv/bin/python scripts/make_fixtures.py            # all
    .venv/bin/python scripts/make_fixtures.py htsat      # one part

Parts: htsat (torchlibrosa front end + msclap HTSAT, scripts/fixtures_audio.py),
       gpt2 (Hugging Face GPT-2 + tokenizer, scripts/fixtures_gpt2.py),
       adiff (the whole tiny ADIFF; needs the htsat and gpt2 parts; scripts/fixtures_adiff.py).
Audio decoding fixtures: scripts/make_audio_fixtures.py.
"""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = {"htsat": "fixtures_audio.py", "gpt2": "fixtures_gpt2.py", "adiff": "fixtures_adiff.py"}

if __name__ == "__main__":
    wanted = sys.argv[1:] or list(PARTS)
    for name in wanted:
        if name not in PARTS:
            sys.exit(f"unknown part {name!r}; choose from {', '.join(PARTS)}")
        print(f"== {name}: {PARTS[name]}", flush=True)
        runpy.run_path(str(HERE / PARTS[name]), run_name="__main__")
