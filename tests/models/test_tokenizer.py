import pytest
from transformers import AutoTokenizer

from steerlit.models.tokenizer import build_t5_tokenizer


def test_tokenizer_round_trips_offline(tmp_path):
    tok = build_t5_tokenizer(["fast drums and bright synth", "slow dark pads"], vocab_size=64)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "slow bright drums"
    assert again(text).input_ids == tok(text).input_ids
    assert tok(text).input_ids[-1] == tok.eos_token_id


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="corpus is empty"):
        build_t5_tokenizer([])


def test_word_level_vocabulary_keeps_words_whole_and_spells_the_rest(tmp_path):
    corpus = ["fast drums and bright synth, rock", "slow dark pads in G# minor", "four-on-the-floor kick"]
    tok = build_t5_tokenizer(corpus, word_level=True)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    pieces = tok.tokenize("slow bright four-on-the-floor drums, G# minor")
    assert pieces == ["▁slow", "▁bright", "▁four-on-the-floor", "▁drums", ",", "▁G#", "▁minor"]
    # an unknown word is spelled with the corpus characters; a character never seen is <unk>
    assert tok.tokenize("pan") == ["▁", "p", "a", "n"]
    assert tok("zap").input_ids[1:4] == [tok.unk_token_id, *tok.convert_tokens_to_ids(["a", "p"])]
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).tokenize("fast dark pads") == ["▁fast", "▁dark", "▁pads"]
