"""Plain record types shared by every loader, trainer and evaluator."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TextExample:
    """One text with an optional label name (``None`` for unlabelled input)."""

    id: str
    text: str
    label: str | None


@dataclass(frozen=True, slots=True)
class TokenExample:
    """One pre-tokenised sentence with one BIO tag per token."""

    id: str
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Tokens joined by single spaces: the text the model sees at inference."""
        return " ".join(self.tokens)
