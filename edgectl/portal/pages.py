"""Notice pages: Jinja2 templates (shipped ja + en, operator overrides), the
language from Accept-Language, and the lint that refuses a template asking
for a password.

Jinja2 enters the project here and nowhere else.  Autoescape is on: the
Host header and the ticket come from outside and end up in the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from edgectl.portal.config import LANGUAGES

SHIPPED = Path(__file__).parent / "templates"
# Every page in every language: a missing one is a start-up error, not a 500.
PAGES = ("notice", "reminder", "done", "clear", "refused")

# Shipped texts per hold category; the operator's [portal.categories] win.
CATEGORIES: Mapping[str, Mapping[str, str]] = {
    "spam": {
        "en": "Spam (unsolicited bulk e-mail) was sent from your line.",
        "ja": "お客様の回線から迷惑メール「スパム」が送信されていました。",
    },
    "botnet": {
        "en": "A device on your line appears to be infected and controlled by a botnet.",
        "ja": "お客様の回線の機器がウイルスに感染し、ボットネットに操られている可能性があります。",
    },
    "malware": {
        "en": "A device on your line appears to be infected with malware.",
        "ja": "お客様の回線の機器がマルウェアに感染している可能性があります。",
    },
    "other": {
        "en": "Traffic from your line broke our terms of service.",
        "ja": "お客様の回線からの通信が利用規約に反していました。",
    },
}

# A notice page must never collect credentials: phishing pages look exactly
# like this one (RFC 6108 section 12), and the portal has no use for them.
_PASSWORD_INPUT = re.compile(r"<input\b[^>]*\btype\s*=\s*[\"']?password\b", re.IGNORECASE)
_FORM = re.compile(r"<form\b.*?</form\s*>", re.IGNORECASE | re.DOTALL)
_PASSWORD_WORDS = re.compile(r"password|passwd|パスワード|暗証番号", re.IGNORECASE)


def lint_text(text: str) -> list[str]:
    """Why this template must not be served; empty when it may."""
    problems = []
    if _PASSWORD_INPUT.search(text):
        problems.append("has a password input")
    for form in _FORM.findall(text):
        word = _PASSWORD_WORDS.search(form)
        if word:
            problems.append(f"asks for a password in a form ({word.group(0)!r})")
    return problems


def lint_dir(directory: Path) -> dict[str, list[str]]:
    """Problems per template file in ``directory`` (``*.html``)."""
    found = {}
    for path in sorted(directory.glob("*.html")):
        problems = lint_text(path.read_text(encoding="utf-8"))
        if problems:
            found[path.name] = problems
    return found


class TemplateRefused(ValueError):
    pass


def choose_language(header: str | None, default: str) -> str:
    """The best of ja/en by Accept-Language (RFC 9110 q-values); else ``default``."""
    best, best_q = default, 0.0
    for index, part in enumerate((header or "").split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        # Earlier entries win ties: the browser lists them in preference order.
        score = quality - index * 1e-6
        if primary in LANGUAGES and quality > 0 and score > best_q:
            best, best_q = primary, score
    return best


class Pages:
    """The rendered pages; checks every template (shipped and override) at start."""

    def __init__(
        self,
        override: Path | None,
        categories: Mapping[str, Mapping[str, str]],
        support: str,
    ) -> None:
        loaders: list[jinja2.BaseLoader] = []
        directories = [SHIPPED] if override is None else [override, SHIPPED]
        for directory in directories:
            loaders.append(jinja2.FileSystemLoader(directory))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.categories = {name: dict(texts) for name, texts in CATEGORIES.items()}
        for name, texts in categories.items():
            self.categories.setdefault(name, {}).update(texts)
        self.support = support
        problems = {}
        for directory in directories:
            problems.update({f"{directory}/{k}": v for k, v in lint_dir(directory).items()})
        if problems:
            listed = "; ".join(f"{name}: {', '.join(why)}" for name, why in problems.items())
            raise TemplateRefused(f"templates refused: {listed}")
        self.templates = {
            (page, language): self.env.get_template(f"{page}.{language}.html")
            for page in PAGES
            for language in LANGUAGES
        }

    def category_text(self, category: str | None, language: str) -> str:
        texts = self.categories.get(category or "other") or self.categories["other"]
        return texts.get(language) or next(iter(texts.values()))

    def render(self, page: str, language: str, **values: Any) -> str:
        return self.templates[(page, language)].render(
            support=self.support, language=language, **values
        )


def names() -> Iterable[str]:
    return (f"{page}.{language}.html" for page in PAGES for language in LANGUAGES)
