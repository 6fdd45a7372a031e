"""Offline T5 tokenizers built from a small text corpus.

No machine here can download a tokenizer, so tiny debug models and the testbed get a
SentencePiece-style Unigram vocabulary trained with the `tokenizers` library and handed to
transformers' ``T5Tokenizer`` (ids 0, 1, 2 = pad, eos, unk, as in T5).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    from transformers import T5Tokenizer

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
_WORD = re.compile(r"[\w#'-]+")  # words (with '#', '-', "'"); punctuation is left to the characters

# Enough English for a tiny model to tokenise any prompt without falling back to <unk> too often.
DEFAULT_CORPUS = (
    "fast upbeat driving energetic rapid slow laid back sluggish calm relaxed gentle",
    "bright crisp shimmering sparkling airy dark warm muffled mellow murky deep",
    "rock jazz techno house classical folk hip hop ambient latin metal reggae funk orchestral",
    "lofi country blues soul disco drum and bass trance pop electronic piano guitar synth strings",
    "drums bass violin cello flute saxophone trumpet organ pad pluck choir vocals beat groove",
    "a song with melody harmony rhythm tempo loud quiet happy sad dreamy tense epic cinematic",
    "music track tune piece loop performance recording live studio solo ensemble band quartet",
)


def train_unigram_vocab(corpus: Iterable[str], vocab_size: int) -> list[tuple[str, float]]:
    """Train a Unigram model on ``corpus`` and return its (piece, log-prob) list, specials first."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        unk_token="<unk>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    trained = json.loads(tokenizer.to_str())["model"]["vocab"]  # [(piece, log-prob)], specials first
    vocab = [(tok, 0.0) for tok in SPECIAL_TOKENS]
    vocab += [(piece, float(score)) for piece, score in trained if piece not in SPECIAL_TOKENS]
    return vocab


def word_unigram_vocab(corpus: Iterable[str]) -> list[tuple[str, float]]:
    """A Unigram vocabulary with one piece per corpus word (``▁word``) plus every character as a
    fallback, specials first. Word pieces score their log-frequency; characters score far lower,
    so a known word is always one token and an unknown one is spelled out.

    For a closed caption vocabulary this beats a trained Unigram model, which at a few hundred
    pieces splits frequent words into letters ('fast' -> '▁ f a s t') and leaves a small text
    encoder to rebuild words before it can condition anything on them.
    """
    corpus = list(corpus)
    counts = Counter(w for line in corpus for w in _WORD.findall(line))
    total = sum(counts.values())
    vocab = [(tok, 0.0) for tok in SPECIAL_TOKENS]
    vocab += [(f"\u2581{w}", math.log(c / total)) for w, c in counts.most_common()]
    chars = sorted({ch for line in corpus for ch in line if not ch.isspace()} | {"\u2581"})
    return vocab + [(ch, math.log(1.0 / total) - 10.0) for ch in chars]


def build_t5_tokenizer(
    corpus: Iterable[str] | None = None, vocab_size: int = 256, word_level: bool = False
) -> T5Tokenizer:
    """A T5 tokenizer whose vocabulary is trained on ``corpus`` (``DEFAULT_CORPUS`` when None).

    The result saves with ``save_pretrained`` and loads back offline with ``AutoTokenizer``.
    ``vocab_size`` is an upper bound: a small corpus yields fewer pieces. ``word_level=True``
    uses :func:`word_unigram_vocab` instead (one token per corpus word; ``vocab_size`` unused).
    """
    from transformers import T5Tokenizer  # deferred: transformers

    corpus = list(corpus) if corpus is not None else list(DEFAULT_CORPUS)
    if not corpus:
        raise ValueError("build_t5_tokenizer: the corpus is empty; pass at least one sentence.")
    vocab = word_unigram_vocab(corpus) if word_level else train_unigram_vocab(corpus, vocab_size)
    return T5Tokenizer(vocab=vocab, extra_ids=0)
