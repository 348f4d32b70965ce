"""A labelled PII corpus shaped like what mcpgate's services return.

Writes JSON in the format of Presidio's synth_dataset_v2 (``full_text`` and
``spans`` with ``entity_type``, ``start_position``, ``end_position`` in
characters), so the same evaluators read both. Faker with a fixed seed: the
corpus is the same on every machine.

    python generate_corpus.py --count 2000 --out corpus.json

Shapes: Jira issues (JSON), Slack messages and profiles (JSON), Gmail headers,
Metabase rows (CSV), free text. Every PII span is labelled; each document also
carries hard negatives (order numbers, UUIDs, versions, timestamps, prices,
ISBNs) that must not be found.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

from faker import Faker

SEED = 2026
# Fixed bounds: Faker's defaults end "now", which would change the corpus daily.
START, END = datetime(2020, 1, 1), datetime(2026, 1, 1)


class Doc:
    """Builds a text while recording the character spans of labelled values."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: list[dict[str, Any]] = []

    def plain(self, text: str) -> Doc:
        self.text += text
        return self

    def pii(self, entity: str, value: str) -> Doc:
        start = len(self.text)
        self.text += value
        self.spans.append(
            {
                "entity_type": entity,
                "entity_value": value,
                "start_position": start,
                "end_position": len(self.text),
            }
        )
        return self

    def json_string(self, entity: str | None, value: str) -> Doc:
        """A JSON string literal whose content is ``value`` (escaped as JSON would)."""
        encoded = json.dumps(value)
        self.plain('"')
        if entity:
            self.pii(entity, encoded[1:-1])
        else:
            self.plain(encoded[1:-1])
        return self.plain('"')


def negatives(fake: Faker, rng: random.Random) -> list[str]:
    return [
        f"Order #{rng.randint(10**7, 10**9)}",
        f"request {fake.uuid4()}",
        f"version {rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
        f"at {fake.date_time_between(START, END).isoformat()}",
        f"price ${rng.randint(1, 9)},{rng.randint(100, 999)}.{rng.randint(10, 99)}",
        f"ISBN {fake.isbn13()}",
        f"build {rng.randint(1000, 99999)}",
        f"ticket PROJ-{rng.randint(1, 99999)}",
    ]


def phone(fake: Faker, rng: random.Random) -> str:
    formats = [
        "+44 20 #### ####",
        "+1 (###) ###-####",
        "###-###-####",
        "+49 30 #######",
        "0#### ######",
        "(###) ###-####",
    ]
    return fake.numerify(rng.choice(formats))


def card(fake: Faker) -> str:
    return str(fake.credit_card_number(card_type=None))


def jira(fake: Faker, rng: random.Random) -> Doc:
    d = Doc().plain('{"key": "PROJ-' + str(rng.randint(1, 999)) + '", "fields": {"summary": ')
    d.json_string(None, fake.sentence())
    d.plain(', "reporter": {"displayName": ').json_string("PERSON", fake.name())
    d.plain(', "emailAddress": ').json_string("EMAIL_ADDRESS", fake.email())
    d.plain(', "accountId": ').json_string(None, fake.hexify("^" * 24))
    d.plain('}, "description": "Please call ').pii("PHONE_NUMBER", phone(fake, rng))
    d.plain(". Server ").pii("IP_ADDRESS", fake.ipv4_public()).plain(" failed; ")
    d.plain(rng.choice(negatives(fake, rng))).plain('"}}')
    return d


def slack(fake: Faker, rng: random.Random) -> Doc:
    d = Doc().plain('{"ok": true, "user": {"id": "U').plain(fake.bothify("########").upper())
    d.plain('", "real_name": ').json_string("PERSON", fake.name())
    d.plain(', "profile": {"email": ').json_string("EMAIL_ADDRESS", fake.company_email())
    d.plain(', "phone": ').json_string("PHONE_NUMBER", phone(fake, rng))
    d.plain('}}, "text": "refund to ').pii("IBAN_CODE", fake.iban()).plain(", ")
    d.plain(rng.choice(negatives(fake, rng))).plain('"}')
    return d


def gmail(fake: Faker, rng: random.Random) -> Doc:
    d = Doc().plain("From: ").pii("PERSON", fake.name()).plain(" <").pii("EMAIL_ADDRESS", fake.email())
    d.plain(">\nTo: ").pii("EMAIL_ADDRESS", fake.email()).plain("\nDate: ").plain(
        fake.date_time_between(START, END).strftime("%a, %d %b %Y %H:%M:%S +0000")
    )
    d.plain("\nSubject: Invoice ").plain(str(rng.randint(10**5, 10**7))).plain("\nX-Originating-IP: [")
    d.pii("IP_ADDRESS", fake.ipv4()).plain("]\n")
    return d


def metabase(fake: Faker, rng: random.Random) -> Doc:
    d = Doc().plain("id,customer,email,card,amount,created\n")
    for _ in range(3):
        d.plain(f"{rng.randint(1, 10**6)},").pii("PERSON", fake.name()).plain(",")
        d.pii("EMAIL_ADDRESS", fake.email()).plain(",").pii("CREDIT_CARD", card(fake))
        d.plain(
            f",{rng.randint(1, 9999)}.{rng.randint(10, 99)},{fake.date_between(START, END).isoformat()}\n"
        )
    return d


def free_text(fake: Faker, rng: random.Random) -> Doc:
    d = (
        Doc()
        .plain("Hi, this is ")
        .pii("PERSON", fake.name())
        .plain(". My card ")
        .pii("CREDIT_CARD", card(fake))
    )
    d.plain(" was charged twice (").plain(rng.choice(negatives(fake, rng))).plain("). Reach me at ")
    d.pii("PHONE_NUMBER", phone(fake, rng)).plain(" or ").pii("EMAIL_ADDRESS", fake.free_email())
    d.plain(". My IBAN is ").pii("IBAN_CODE", fake.iban()).plain(". I connect from ")
    d.pii("IP_ADDRESS", fake.ipv6() if rng.random() < 0.3 else fake.ipv4()).plain(".")
    return d


SHAPES: list[Callable[[Faker, random.Random], Doc]] = [jira, slack, gmail, metabase, free_text]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    Faker.seed(SEED)
    fake = Faker(["en_US", "en_GB", "de_DE", "fr_FR"])
    rng = random.Random(SEED)
    docs = []
    for i in range(args.count):
        doc = SHAPES[i % len(SHAPES)](fake, rng)
        docs.append({"full_text": doc.text, "spans": doc.spans, "shape": SHAPES[i % len(SHAPES)].__name__})
    with open(args.out, "w") as out:
        json.dump(docs, out)


if __name__ == "__main__":
    main()
