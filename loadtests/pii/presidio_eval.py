"""Microsoft Presidio on the same labelled files as ``pii_eval``, same metric.

Presidio runs with its pattern recognizers only (email, phone via the
``phonenumbers`` library, credit card with Luhn, IBAN with checksum, IP): its
NLP engine needs a spaCy model that is not on PyPI, and these entity types do
not use it. A find is a true positive when it overlaps a labelled span of the
same type, as in ``pii_eval``.

    python presidio_eval.py FILE.json [FILE.json ...]
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
)

TYPES = ["CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "PHONE_NUMBER"]
RECOGNIZERS = [
    CreditCardRecognizer(),
    EmailRecognizer(),
    IbanRecognizer(),
    IpRecognizer(),
    PhoneRecognizer(supported_regions=("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")),
]


def findings(text: str) -> list[tuple[str, int, int]]:
    out = []
    for recognizer in RECOGNIZERS:
        for result in recognizer.analyze(text, entities=recognizer.supported_entities, nlp_artifacts=None):
            if result.entity_type in TYPES and result.score >= 0.3:
                out.append((result.entity_type, result.start, result.end))
    return out


def evaluate(path: str) -> None:
    samples: list[dict[str, Any]] = json.load(open(path))
    tally = {t: [0, 0, 0, 0] for t in TYPES}  # gold, recalled, predicted, true positives
    started = time.perf_counter()
    size = 0
    for sample in samples:
        text = sample["full_text"]
        size += len(text.encode())
        found = findings(text)
        gold = [
            (s["entity_type"], s["start_position"], s["end_position"])
            for s in sample["spans"]
            if s["entity_type"] in TYPES
        ]
        for kind, start, end in gold:
            tally[kind][0] += 1
            if any(k == kind and s < end and start < e for k, s, e in found):
                tally[kind][1] += 1
        for kind, start, end in found:
            tally[kind][2] += 1
            if any(k == kind and s < end and start < e for k, s, e in gold):
                tally[kind][3] += 1
    elapsed = time.perf_counter() - started
    print(f"## Presidio (pattern recognizers) on {path}")
    print("| type | labelled | recall | precision |")
    print("|---|---|---|---|")
    for kind, (gold_n, recalled, predicted, tp) in tally.items():
        recall = recalled / max(gold_n, 1)
        precision = tp / predicted if predicted else 1.0
        print(f"| {kind} | {gold_n} | {recall * 100:.1f} % | {precision * 100:.1f} % |")
    print(f"throughput {size / elapsed / 1e6:.2f} MB/s")


if __name__ == "__main__":
    for file in sys.argv[1:]:
        evaluate(file)
