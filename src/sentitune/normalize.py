"""Social-media text as the model should read it: the `tweet` normalisation, recorded in a run and applied
the same way wherever the run reads text (training, evaluation, prediction, the server, the ONNX backend,
the baseline, explanations).

An uncased BERT vocabulary reads every emoji as [UNK]; as words ("smiling face with heart-eyes") the
pre-trained encoder already knows what they mean, even when the training posts held none. The stages,
in order: HTML entities unescaped (to a fixed point: scraped posts are often escaped twice), links to
`http` and user mentions to `@user` (the TweetEval convention), emoji to their names (the `emoji`
package's CLDR names, skin tones dropped), emoticons to the names of the emoji they stand for, hashtags
split into words when asked (`#NotHappy` -> `not happy`), letters repeated three times or more cut to
two (`soooo` -> `soo`), runs of white space to one space. Normalising twice gives the same text.

`apply_with_spans` also returns, for each character of the normalised text, the span of the original
text it came from, so that explanations shade the characters the user wrote, not the rewritten ones.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sentitune.errors import SentituneError, short

SCHEMES = ("tweet", "none")
CONFIG_KEY = "sentitune_normalize"  # in a run's config.json: {"scheme": ..., "split_hashtags": ...}

ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
LINK = re.compile(r"(?<!\w)(?:https?://|www\.)\S+", re.IGNORECASE)
MENTION = re.compile(r"(?<![\w@])@\w+")
HASHTAG = re.compile(r"(?<![\w#&])#(\w+)")
HASHTAG_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
ELONGATION = re.compile(r"([^\W\d_])\1{2,}")
THRICE = re.compile(r"(.)\1\1")  # any character three times: what an elongation needs, found faster
SPACE = re.compile(r"\s+")
SKIN_TONE = re.compile(r"_?(?:(?:medium-)?(?:light|dark)|medium)_skin_tone")

# Emoticons as the names of the emoji they stand for, so `:)` and 🙂 read alike.
EMOTICONS = {
    ":)": "slightly smiling face", ":-)": "slightly smiling face", "=)": "slightly smiling face",
    ":]": "slightly smiling face", "(:": "slightly smiling face",
    ":D": "grinning face", ":-D": "grinning face", "=D": "grinning face",
    "xD": "grinning squinting face", "XD": "grinning squinting face",
    ";)": "winking face", ";-)": "winking face", ";D": "winking face",
    ":P": "face with tongue", ":p": "face with tongue", ":-P": "face with tongue", ":-p": "face with tongue",
    ":*": "face blowing a kiss", ":-*": "face blowing a kiss",
    "^_^": "smiling face with smiling eyes", "^^": "smiling face with smiling eyes",
    "<3": "red heart", "</3": "broken heart",
    ":(": "frowning face", ":-(": "frowning face", "=(": "frowning face", ":[": "frowning face",
    "):": "frowning face",
    ":'(": "crying face", ":'-(": "crying face", "T_T": "loudly crying face",
    ">:(": "angry face", ">:-(": "angry face",
    ":/": "confused face", ":-/": "confused face", ":\\": "confused face",
    ":|": "neutral face", ":-|": "neutral face",
    ":O": "face with open mouth", ":o": "face with open mouth", ":-O": "face with open mouth",
    "D:": "anguished face",
}  # fmt: skip
# An emoticon stands alone: white space or punctuation (or the ends of the post) on both sides.
EMOTICON = re.compile(
    r"(?<![^\s.,!?])("
    + "|".join(re.escape(e) for e in sorted(EMOTICONS, key=len, reverse=True))
    + r")(?![^\s.,!?])"
)

# A post can hold an emoticon only if it holds the first mark of one (`:` of `:-)`, `<` of `</3`) or one
# made of letters alone (xD): a set test, far cheaper than the pattern on the many posts with neither.
EMOTICON_MARKS = frozenset(next((c for c in e if not c.isalnum()), "") for e in EMOTICONS) - {""}
LETTER_EMOTICONS = tuple(e for e in EMOTICONS if e.isalnum())


# A stage's pattern runs only on texts whose cheap test says it may match: most posts hold no link, no
# emoticon mark, no character three times in a row, and a test of that is far cheaper than the pattern.
def _may_hold_link(text: str) -> bool:
    lowered = text.lower()
    return "http" in lowered or "www." in lowered


MAY_MATCH: dict[re.Pattern, Callable[[str], bool]] = {
    LINK: _may_hold_link,
    MENTION: lambda text: "@" in text,
    EMOTICON: lambda text: not EMOTICON_MARKS.isdisjoint(text) or any(e in text for e in LETTER_EMOTICONS),
    ELONGATION: lambda text: THRICE.search(text) is not None,
}


# What a link, a mention and an elongation are rewritten to (benchmarks/vader_errors.py applies them one by one)
def link_to_http(match: re.Match) -> str:
    return " http "


def mention_to_user(match: re.Match) -> str:
    return "@user"


def cut_elongation(match: re.Match) -> str:
    return match.group(1) * 2


Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class Normalization:
    """How posts are rewritten before tokenising: `tweet` (see the module) or `none` (as written)."""

    scheme: str = "none"
    split_hashtags: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown normalisation {self.scheme!r}; choose one of {', '.join(SCHEMES)}")

    @property
    def active(self) -> bool:
        return self.scheme != "none"

    def describe(self) -> str:
        return self.scheme + (" with hashtags split" if self.split_hashtags and self.active else "")

    def to_config(self) -> dict:
        return {"scheme": self.scheme, "split_hashtags": self.split_hashtags}

    @classmethod
    def from_config(cls, value) -> Normalization:
        """From a config.json entry; absent (a model from elsewhere, or an older run) means none."""
        if not value:
            return cls()
        scheme = value.get("scheme") if isinstance(value, dict) else None
        if scheme not in SCHEMES:
            raise SentituneError(
                f"config.json's {CONFIG_KEY} is {short(json.dumps(value), 80)}, not one of the schemes "
                f"{', '.join(SCHEMES)}; the folder was edited: restore it from the run"
            )
        return cls(scheme, bool(value.get("split_hashtags", False)))

    def apply(self, text: str) -> str:
        return text if not self.active else _Rewrite(text, track=False).run(self).text

    def apply_all(self, texts: Sequence[str]) -> list[str]:
        return list(texts) if not self.active else [self.apply(t) for t in texts]

    def apply_with_spans(self, text: str) -> tuple[str, Spans]:
        """The normalised text and, per character of it, the (start, end) of the original it came from."""
        if not self.active:
            return text, [(i, i + 1) for i in range(len(text))]
        rewrite = _Rewrite(text, track=True).run(self)
        return rewrite.text, rewrite.spans


AS_WRITTEN = Normalization()  # no normalisation: models from elsewhere, runs that chose none


class _Rewrite:
    """A text rewritten stage by stage, keeping (when tracked) the original span of each character."""

    def __init__(self, text: str, track: bool):
        self.text = text
        self.spans: Spans | None = [(i, i + 1) for i in range(len(text))] if track else None

    def run(self, how: Normalization) -> _Rewrite:
        for _ in range(3):  # twice-escaped entities (&amp;lt;) need two rounds; a third finds none
            before = self.text
            self.regex(ENTITY, lambda m: html.unescape(m.group()))
            if self.text == before:
                break
        self.regex(LINK, link_to_http)
        self.regex(MENTION, mention_to_user)
        self.replace(_emoji_matches(self.text))
        self.regex(EMOTICON, lambda m: f" {EMOTICONS[m.group(1)]} ")
        if how.split_hashtags:
            self.regex(HASHTAG, lambda m: f" {split_hashtag(m.group(1))} ")
        self.regex(ELONGATION, cut_elongation)
        if self.spans is None:  # runs of white space to one space, none at the ends (str.isspace is \s)
            self.text = " ".join(self.text.split())
            return self
        self.regex(SPACE, lambda m: " ")
        self.replace(_ends(self.text))
        return self

    def regex(self, pattern: re.Pattern, repl: Callable[[re.Match], str]) -> None:
        if pattern in MAY_MATCH and not MAY_MATCH[pattern](self.text):
            return
        if self.spans is None:
            self.text = pattern.sub(repl, self.text)
        else:
            self.replace((m.start(), m.end(), repl(m)) for m in pattern.finditer(self.text))

    def replace(self, matches: Iterable[tuple[int, int, str]]) -> None:
        """Replace each (start, end, new) of `matches` (in order, not overlapping)."""
        pieces, spans, pos = [], [] if self.spans is not None else None, 0
        for start, end, new in matches:
            pieces += [self.text[pos:start], new]
            if spans is not None:
                spans += self.spans[pos:start]
                # every new character stands for the whole span it replaced (no stage matches nothing)
                spans += [(self.spans[start][0], self.spans[end - 1][1])] * len(new)
            pos = end
        if pos == 0 and not pieces:
            return
        pieces.append(self.text[pos:])
        self.text = "".join(pieces)
        if spans is not None:
            self.spans = spans + self.spans[pos:]


def _emoji_matches(text: str) -> list[tuple[int, int, str]]:
    if text.isascii():
        return []
    import emoji

    return [
        (m["match_start"], m["match_end"], f" {emoji_words(m['emoji'])} ") for m in emoji.emoji_list(text)
    ]


def _ends(text: str) -> list[tuple[int, int, str]]:
    """The leading and trailing space left by the stages, removed."""
    found = []
    if text.startswith(" "):
        found.append((0, 1, ""))
    if text.endswith(" ") and len(text) > 1:
        found.append((len(text) - 1, len(text), ""))
    return found


def emoji_words(char: str) -> str:
    """An emoji's CLDR name as words: 👍🏽 -> 'thumbs up' (skin tones carry no sentiment)."""
    import emoji

    data = emoji.EMOJI_DATA.get(char)
    if data is None:  # a sequence the package does not know by name: its parts' names
        return " ".join(emoji_words(c) for c in char if c in emoji.EMOJI_DATA) or "emoji"
    return SKIN_TONE.sub("", data["en"].strip(":")).replace("_", " ")


def split_hashtag(tag: str) -> str:
    """`NotHappy` -> 'not happy', `COVID19` -> 'covid 19'; a tag with no capitals stays one word."""
    words = HASHTAG_WORD.findall(tag)
    return " ".join(w.lower() for w in words) if words else tag.replace("_", " ")


def normalization_of(cfg) -> Normalization:
    """What a command's --normalize and --split-hashtags ask for."""
    return Normalization(cfg.normalize, cfg.split_hashtags)
