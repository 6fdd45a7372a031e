"""The LM's code cache: written atomically, recognised only while it holds the configured clips as the
synth renders them now, and served as (codes, caption) items."""

import torch

from steerlit.files import TEMP_GLOB
from steerlit.models.tokenizer import build_t5_tokenizer
from steerlit.testbed.captions import training_corpus
from steerlit.testbed.code_cache import CodeDataset, build_code_cache, code_cache_matches


def test_code_cache_holds_the_configured_clips_only(tmp_path, tiny_codec_dir):
    cache = tmp_path / "codes.pt"
    data = build_code_cache(tiny_codec_dir, cache, num_clips=4, clip_s=1.0)
    assert data["codes"].shape == (4, 4, 50) and data["codes"].dtype == torch.int16
    assert code_cache_matches(cache, 4, clip_s=1.0) and not list(tmp_path.glob(TEMP_GLOB))
    assert not code_cache_matches(cache, 5, clip_s=1.0) and not code_cache_matches(cache, 4, 1, clip_s=1.0)
    assert not code_cache_matches(cache, 4, clip_s=2.0)  # another clip length
    stale = dict(torch.load(cache, weights_only=True), render_sha256="rendered by an older synth")
    torch.save(stale, tmp_path / "stale.pt")
    assert not code_cache_matches(tmp_path / "stale.pt", 4, clip_s=1.0)


def test_code_dataset_batches_codes_with_tokenized_captions(tmp_path, tiny_codec_dir):
    cache = tmp_path / "codes.pt"
    data = build_code_cache(tiny_codec_dir, cache, num_clips=4, clip_s=1.0)
    tokenizer = build_t5_tokenizer(training_corpus(200), vocab_size=200)
    fixed = CodeDataset(cache, tokenizer, recaption=False)
    assert len(fixed) == 4 and fixed[2][1] == data["captions"][2]
    batch = fixed.collate([fixed[0], fixed[1]])
    assert torch.equal(batch["codes"], data["codes"][:2].long())
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 2
    fresh = CodeDataset(cache, tokenizer, seed=0)
    assert all(torch.equal(fresh[i][0], fixed[i][0]) for i in range(4))  # recaptioning keeps the codes
