"""Social-media text as the model should read it: the `tweet` normalisation, recorded in a run and applied
the same way wherever the run reads text (training, evaluation, prediction, the server, the ONNX backend,
the baseline, explanations), and by plain transformers, which reads it from the run's tokenizer.json.

An uncased BERT vocabulary reads every emoji as [UNK]; as words ("smiling face with heart-eyes") the
pre-trained encoder already knows what they mean, even when the training posts held none. The stages,
in order: HTML entities unescaped (`&amp;` to any depth, so twice-escaped `&amp;lt;` too, and the
entities of quotes, spaces, dashes and ellipses in `ENTITIES`; others stay as written), links to `http`
and user mentions to `@user` (the TweetEval convention), a flag (two regional indicators) to `flag`,
each emoji character to its name (the `emoji` package's CLDR names; skin tones, variation selectors and
keycap marks dropped, so a sequence joined by zero-width joiners reads as its parts: 👨‍👩‍👧 -> man woman
girl), emoticons to the names of the emoji they stand for, hashtags split into words when asked
(`#NotHappy` -> `Not Happy`), letters repeated three times or more cut to two (`soooo` -> `soo`), runs of
white space to one space. Normalising twice gives the same text.

The stages are rules of the `tokenizers` library (Replace with an Oniguruma pattern and fixed text, and
one Precompiled character map for the emoji), not Python code: sentitune runs them, and a run saves them
in front of its tokenizer's own normalizer in tokenizer.json, so that any fast tokenizer loaded from the
folder reads raw posts exactly as sentitune does (one definition, the same engine). A run keeps the rules
it was trained with: a later `emoji` package changes new runs only.

`apply_with_spans` also returns, for each character of the normalised text, the span of the original
text it came from (for rewritten text, the last character of what it replaced), so that explanations
shade the characters the user wrote, not the rewritten ones.
"""

from __future__ import annotations

import copy
import functools
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sentitune.errors import SentituneError, short

SCHEMES = ("tweet", "none")
CONFIG_KEY = "sentitune_normalize"  # in a run's config.json: {"scheme": ..., "split_hashtags": ..., ...}
# In that entry: tokenizer.json's normalizer is a Sequence whose first member is these rules (runs saved
# since the rules travel with the model); absent in older runs, whose tokenizer reads posts as given.
IN_TOKENIZER = "in_tokenizer"

# Which loaders of a run folder apply the rules, and which cannot (config.json and the model card say it).
APPLIED_BY = (
    "every fast tokenizer loaded from this folder's tokenizer.json: transformers' AutoTokenizer and "
    "pipeline(), tokenizers.Tokenizer.from_file (tokenizers 0.20 or newer), servers and ONNX runtimes "
    "that tokenise with the tokenizers library"
)
NOT_APPLIED_BY = (
    "tokenizers rebuilt from the vocabulary alone: BertTokenizer.from_pretrained (its own BERT normalizer), "
    "the slow Python tokenizers, and WordPiece readers of a vocab.txt; give them posts rewritten by "
    "sentitune.normalize.Normalization(...).apply"
)

# HTML entities, each a rule to the character it stands for. A rule writes fixed text, so each character
# costs one pass over every post: these are the entities social-media posts hold (the SemEval tweets and
# the embedded corpus hold no others but one misspelt), by name, decimal and hexadecimal number.
ENTITIES = {
    "<": ("lt", 60), ">": ("gt", 62), '"': ("quot", 34), "'": ("apos", 39), " ": ("nbsp", 160),
    "‘": ("lsquo", 8216), "’": ("rsquo", 8217), "“": ("ldquo", 8220), "”": ("rdquo", 8221),
    "…": ("hellip", 8230), "–": ("ndash", 8211), "—": ("mdash", 8212),
}  # fmt: skip
AMPERSANDS = r"&(?:amp;|#0*38;|#[xX]0*26;)+"  # to any depth first: &amp;lt; is an escaped &lt;
# A pattern that opens with a literal, its look-behind after it, lets the engine skip to where the literal
# is; one that opens with a look-behind is tried at every character.
LINK = r"(?i)(?:h(?<!\wh)ttps?://|w(?<!\ww)ww\.)\S+"  # not inside a word
MENTION = r"@(?<![\w@]@)\w+"  # not inside a word (an e-mail address) or after another @
FLAG = "[\U0001f1e6-\U0001f1ff]{2}"  # two regional indicators
HASHTAG = r"(?:^|[^\w#&])#\w*"  # a hashtag up to a point: its # is not inside a word, a tag or an entity
ELONGATION = r"(\p{L})(?=\1\1)"  # a letter with two more of it after it: dropped, so three or more become two
SPACE = r"\s{2,}|[^\S ]"  # runs of white space but a plain space, which is already what they become

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
ALONE_BEFORE, ALONE_AFTER = r"(?<![^\s.,!?])", r"(?![^\s.,!?])"

# Characters that emoji sequences are built with, read as nothing (or, a joiner, as a space between parts).
SKIN_TONES = [chr(c) for c in range(0x1F3FB, 0x1F400)]
EMOJI_PARTS = {
    "\u200d": " ",  # zero-width joiner: 👩‍💻 reads as its parts, woman laptop
    "\ufe0e": "", "\ufe0f": "",  # variation selectors (text or emoji presentation)
    "\u20e3": "",  # combining keycap: 1️⃣ reads as its key
    **dict.fromkeys(SKIN_TONES, ""),
    **{chr(c): "" for c in range(0xE0020, 0xE0080)},  # tags: 🏴 with a region's tags reads as a black flag
}  # fmt: skip

STAGES = ("entities", "links", "mentions", "emoji", "emoticons", "hashtags", "elongations", "spaces")


def _escaped(text: str) -> str:
    """`text` matched literally by an Oniguruma pattern."""
    return "".join("\\" + c if c in "\\^$.|?*+()[]{}-" else c for c in text)


def _replace(pattern: str, content: str):
    from tokenizers import Regex, normalizers

    return normalizers.Replace(Regex(pattern), content)


def stage_rules(stage: str, split_hashtags: bool = False) -> list:
    """The `tokenizers` normalizers of one stage of `tweet`, in order."""
    from tokenizers import normalizers

    if stage == "entities":
        return [_replace(AMPERSANDS, "&")] + [
            _replace(rf"&(?:{name}|#0*{code}|#[xX]0*(?i:{code:x}));", char)
            for char, (name, code) in ENTITIES.items()
        ]
    if stage == "links":
        return [_replace(LINK, " http ")]
    if stage == "mentions":
        return [_replace(MENTION, "@user")]
    if stage == "emoji":
        return [_replace(FLAG, " flag "), normalizers.Precompiled(emoji_charsmap())]
    if stage == "emoticons":
        by_name: dict[str, list[str]] = {}
        for emoticon, name in EMOTICONS.items():
            by_name.setdefault(name, []).append(emoticon)
        return [
            _replace(
                ALONE_BEFORE
                + "(?:"
                + "|".join(_escaped(e) for e in sorted(found, key=len, reverse=True))
                + ")"
                + ALONE_AFTER,
                f" {name} ",
            )
            for name, found in by_name.items()
        ]
    if stage == "hashtags":
        if not split_hashtags:
            return []
        # One pass inserts every word boundary of a tag (a later pass would no longer see the tag's #):
        # lower to upper case, the last capital of a run before a word (COVIDVaccine), letters to digits
        # and back, and underscores; then the # goes.
        # Each boundary is tested before the look-behind for the tag, which is dear.
        inside = [
            r"(?<=\p{Ll})(?=\p{Lu})",
            r"(?<=\p{Lu})(?=\p{Lu}\p{Ll})",
            r"(?<=\p{L})(?=\p{N})",
            r"(?<=\p{N})(?=\p{L})",
        ]
        boundaries = "|".join(f"{b}(?<={HASHTAG})" for b in inside) + f"|(?=_)(?<={HASHTAG})_"
        return [_replace(boundaries, " "), _replace(r"(?<![\w#&])#(?=\w)", " ")]
    if stage == "elongations":
        return [_replace(ELONGATION, "")]
    if stage == "spaces":
        return [_replace(SPACE, " "), normalizers.Strip()]
    raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")


@functools.cache
def tweet_normalizer(split_hashtags: bool):
    """`tweet` as one `tokenizers` normalizer (a Sequence of every stage's rules)."""
    from tokenizers import normalizers

    return normalizers.Sequence([rule for stage in STAGES for rule in stage_rules(stage, split_hashtags)])


def rewrite(stage: str) -> Callable[[str], str]:
    """One stage of `tweet` alone, as a function of a post (benchmarks/vader_errors.py applies them one by one)."""
    from tokenizers import normalizers

    return normalizers.Sequence(stage_rules(stage, split_hashtags=True)).normalize_str


Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class Normalization:
    """How posts are rewritten before tokenising: `tweet` (see the module) or `none` (as written)."""

    scheme: str = "none"
    split_hashtags: bool = False
    # The rules themselves: a run's own, read from its tokenizer.json; None: this version's for the scheme.
    rules: object = field(default=None, compare=False, repr=False)
    _readers: dict = field(default_factory=dict, init=False, compare=False, repr=False)  # see `reading`

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown normalisation {self.scheme!r}; choose one of {', '.join(SCHEMES)}")

    @property
    def active(self) -> bool:
        return self.scheme != "none"

    @property
    def normalizer(self):
        """The `tokenizers` normalizer that rewrites posts (None: posts are read as written)."""
        if not self.active:
            return None
        return self.rules if self.rules is not None else tweet_normalizer(self.split_hashtags)

    def describe(self) -> str:
        return self.scheme + (" with hashtags split" if self.split_hashtags and self.active else "")

    def to_config(self) -> dict:
        return {"scheme": self.scheme, "split_hashtags": self.split_hashtags}

    def run_entry(self) -> dict:
        """config.json's entry of a run whose tokenizer.json carries the rules: what, and who applies it."""
        if not self.active:
            return self.to_config()
        return {
            **self.to_config(),
            IN_TOKENIZER: True,
            "applied_by": APPLIED_BY,
            "not_applied_by": NOT_APPLIED_BY,
        }

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
        return text if not self.active else self.normalizer.normalize_str(text)

    def apply_all(self, texts: Sequence[str]) -> list[str]:
        if not self.active:
            return list(texts)
        normalize = self.normalizer.normalize_str
        return [normalize(t) for t in texts]

    def reading(self, tokenizer):
        """`tokenizer` (a transformers fast tokenizer) reading posts as written: a copy of it with the rules
        in front of its normalizer, as the run folder's tokenizer.json holds them (the tokenizer itself when
        posts are read as written). Tokenising a post through it, not rewriting the post first, is what
        plain transformers does to the letter: a post holding a special token's text ([UNK]:)) is split at
        it before any normalizer runs, which changes what the rules around it see."""
        if not self.active:
            return tokenizer
        found = self._readers.get(id(tokenizer))
        if found is None or found[0] is not tokenizer:
            from tokenizers import normalizers

            reader = copy.deepcopy(tokenizer)
            backend = reader.backend_tokenizer
            own = [backend.normalizer] if backend.normalizer is not None else []
            backend.normalizer = normalizers.Sequence([self.normalizer, *own])
            found = self._readers[id(tokenizer)] = (tokenizer, reader)
        return found[1]

    def apply_with_spans(self, text: str) -> tuple[str, Spans]:
        """The normalised text and, per character of it, the (start, end) of the original it came from."""
        if not self.active:
            return text, [(i, i + 1) for i in range(len(text))]
        read = self.apply(text)
        spans = [tuple(span) for span in self._characters.encode(text).offsets]
        if len(spans) != len(read):  # the character map tokenises every character: never expected
            raise RuntimeError(f"{len(spans)} spans for the {len(read)} characters of {short(read, 60)!r}")
        return read, spans

    @functools.cached_property
    def _characters(self):
        """A tokenizer that normalises with the rules and makes each character a token: its offsets are
        where each normalised character came from in the original."""
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers

        tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        tokenizer.normalizer = self.normalizer
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        return tokenizer


AS_WRITTEN = Normalization()  # no normalisation: models from elsewhere, runs that chose none


def normalization_of(cfg) -> Normalization:
    """What a command's --normalize and --split-hashtags ask for."""
    return Normalization(cfg.normalize, cfg.split_hashtags)


# ----------------------------------------------------------------------------- in a tokenizer


def with_rules(tokenizer_json: dict, how: Normalization) -> dict:
    """tokenizer.json's content with `how`'s rules in front of its own normalizer (unchanged for none)."""
    if not how.active:
        return tokenizer_json
    rules = json.loads(how.normalizer.__getstate__())
    own = tokenizer_json.get("normalizer")
    out = copy.copy(tokenizer_json)
    out["normalizer"] = {"type": "Sequence", "normalizers": [rules, *([own] if own else [])]}
    return out


def take_from_tokenizer(tokenizer, entry, source: str) -> Normalization:
    """The normalisation config.json's `entry` records. Where the folder's tokenizer.json carries the rules,
    they are taken out of `tokenizer` (a transformers fast tokenizer, changed in place) into the
    Normalization: sentitune then rewrites once, with the run's own rules, and tokenises with the tokenizer
    it was trained with."""
    how = Normalization.from_config(entry)
    if not (how.active and isinstance(entry, dict) and entry.get(IN_TOKENIZER)):
        return how
    backend = tokenizer.backend_tokenizer
    state = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else {}
    members = state.get("normalizers") if state.get("type") == "Sequence" else None
    if not members or members[0].get("type") != "Sequence":
        raise SentituneError(
            f"{source}: config.json says tokenizer.json carries the {how.scheme} normalisation, but its "
            "normalizer does not begin with it; the folder was edited: restore tokenizer.json from the run"
        )
    rest = members[1:]
    backend.normalizer = (
        None
        if not rest
        else normalizer_from_json(rest[0] if len(rest) == 1 else {"type": "Sequence", "normalizers": rest})
    )
    return Normalization(how.scheme, how.split_hashtags, rules=normalizer_from_json(members[0]))


def normalizer_from_json(state: dict):
    """A `tokenizers` normalizer from its JSON (as tokenizer.json holds it)."""
    from tokenizers import Tokenizer

    holder = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": state,
        "pre_tokenizer": None, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"},
    }  # fmt: skip
    return Tokenizer.from_str(json.dumps(holder)).normalizer


# ----------------------------------------------------------------------------- emoji


def emoji_words(char: str) -> str:
    """An emoji's CLDR name as words: 😍 -> 'smiling face with heart-eyes'."""
    import emoji

    return emoji.EMOJI_DATA[char]["en"].strip(":").replace("_", " ")


@functools.cache
def emoji_charsmap() -> bytes:
    """Every emoji character of the `emoji` package to ` its name `, and the parts of emoji sequences to
    nothing, as the character map the Precompiled normalizer reads (one pass, whatever the number)."""
    import emoji

    names = {}
    for key in emoji.EMOJI_DATA:
        char = key.replace("\ufe0f", "")
        if len(char) == 1:
            names[char] = f" {emoji_words(key)} "
    return compile_charsmap({**names, **EMOJI_PARTS})


def compile_charsmap(mapping: dict[str, str]) -> bytes:
    """SentencePiece's `precompiled_charsmap` for `mapping` (keys: single characters), the format of the
    `tokenizers` Precompiled normalizer: the trie's size (u32), a darts-clone double-array trie of the keys'
    UTF-8 bytes (u32 units), then the replacements, each ending with NUL.

    A unit is a node: its label (the byte leading to it, bits 0-7), whether it holds a value (bit 8) and
    the XOR offset from its position to its children's base (bits 10-30); the child labelled b sits at
    base ^ b, the value at base ^ 0 with bit 31 set. Each base is used once, so a label found at base ^ b
    belongs to that node; the array is padded so that any byte from any node stays inside it."""
    blob, root = bytearray(), {}
    for key in sorted(mapping):
        node = root
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[-1] = len(blob)  # -1: the value, an offset into the replacements
        blob += mapping[key].encode("utf-8") + b"\0"
    units, used, bases, free = [0], bytearray(b"\1"), set(), 1
    stack = [(root, 0)]
    while stack:
        node, position = stack.pop()
        labels = sorted(b for b in node if b >= 0)
        slots = ([0] if -1 in node else []) + labels
        while free < len(used) and used[free]:
            free += 1
        candidate = free
        while True:
            base = candidate ^ slots[0]
            if (base | 0xFF) >= len(units):
                grow = (base | 0xFF) + 1 - len(units)
                units += [0] * grow
                used += bytes(grow)
            if base not in bases and not any(used[base ^ s] for s in slots):
                break
            candidate += 1
            while candidate < len(used) and used[candidate]:
                candidate += 1
        bases.add(base)
        for s in slots:
            used[base ^ s] = 1
        offset = base ^ position
        if offset >= 1 << 21:  # beyond the direct offset: never for the few thousand keys here
            raise ValueError("character map too large for a direct double-array offset")
        units[position] |= offset << 10 | (-1 in node) << 8
        if -1 in node:
            units[base] = node[-1] | 1 << 31
        for label in labels:
            units[base ^ label] = label
            stack.append((node[label], base ^ label))
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)
