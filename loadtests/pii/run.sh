#!/usr/bin/env bash
# The PII comparison, end to end: mcpgate and Presidio on Presidio's own
# labelled set and on our Faker corpus, in one run. Needs PyPI (Faker,
# presidio-analyzer) the first time; results go to stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/pii-venv
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check Faker presidio-analyzer
"$VENV/bin/python" loadtests/pii/generate_corpus.py --count 2000 --out target/pii-corpus.json
cargo build --release --quiet -p loadtests --bin pii_eval
echo "## mcpgate on synth_dataset_v2"; target/release/pii_eval
echo "## mcpgate on the Faker corpus"; target/release/pii_eval --dataset target/pii-corpus.json
"$VENV/bin/python" loadtests/pii/presidio_eval.py ../shared/data/pii/synth_dataset_v2.json target/pii-corpus.json
