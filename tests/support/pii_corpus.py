"""A corpus of texts with and without PII, shared by the unit and integration tests.

``POSITIVE`` pairs a text with the PII substrings it contains (all must vanish
after redaction); ``NEGATIVE`` texts contain look-alikes that must stay intact
(prices, dates, tickers, order numbers that fail the Luhn check, IBAN-shaped
strings that fail mod-97). Card and IBAN numbers are the published test numbers
of the card schemes and of the ISO 13616 registry, not real accounts.
"""

from __future__ import annotations

POSITIVE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Please reply to jane.doe@example.com about my refund", ("jane.doe@example.com",)),
    ("cc: Ops <ops-team+billing@mail.example.co.uk>", ("ops-team+billing@mail.example.co.uk",)),
    ("My e-mail is JOHN_SMITH99@Example.ORG.", ("JOHN_SMITH99@Example.ORG",)),
    ("Call me on +44 20 7946 0958 after 5pm", ("+44 20 7946 0958",)),
    ("my number: +1 (415) 555-2671", ("+1 (415) 555-2671",)),
    ("phone +33612345678 please", ("+33612345678",)),
    ("reach me at (212) 555-0147 tomorrow", ("(212) 555-0147",)),
    ("Tel 415-555-0132 or 415.555.0199", ("415-555-0132", "415.555.0199")),
    ("my mobile is 07700 900123", ("07700 900123",)),
    ("ring 020 7946 0018 for the branch", ("020 7946 0018",)),
    ("Bel mij op 06-12345678", ("06-12345678",)),
    ("card 4111 1111 1111 1111 was charged twice", ("4111 1111 1111 1111",)),
    ("charged on 4012888888881881!", ("4012888888881881",)),
    ("Amex 3782-822463-10005 declined", ("3782-822463-10005",)),
    ("Mastercard 5555-5555-5555-4444 expired", ("5555-5555-5555-4444",)),
    ("transfer to GB82 WEST 1234 5698 7654 32 failed", ("GB82 WEST 1234 5698 7654 32",)),
    ("IBAN DE89370400440532013000 please refund", ("DE89370400440532013000",)),
    ("my iban is fr1420041010050500013m02606", ("fr1420041010050500013m02606",)),
    (
        "Hi, I'm anna@example.net, card 5105105105105100, phone +49 30 901820, IBAN NL91ABNA0417164300.",
        ("anna@example.net", "5105105105105100", "+49 30 901820", "NL91ABNA0417164300"),
    ),
)

NEGATIVE: tuple[str, ...] = (
    "$AAPL closed at 150.25, range 148.10 - 152.30 on volume 1,234,567",
    "Revenue grew 12.5% to $4,512,000,000 in Q3 2026",
    "Meeting on 2026-11-29 at 10:30, ref 2026-11-29T10:30:00Z",
    "order 1234567890123 has not arrived (not a card: fails Luhn)",
    "tracking 4111111111111112 is wrong",
    "GB00 WEST 1234 5698 7654 32 is not a valid account",
    "The S&P 500 rose 0.5 0.25 and 1.75 points in three sessions",
    "version 10.2.3 released; build 20261129",
    "@elonmusk tweeted about $TSLA again",
    "Shares 100 200 300 400 traded",
    "Invoice #100045 for 3 items, total 249.99 EUR",
)
