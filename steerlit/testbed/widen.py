"""Function-preserving widening of a trained codec (``num_filters`` n -> m*n), for decoder capacity.

The codec's channel counts all scale with ``num_filters`` (SEANet stage i has ``num_filters * 2**i``
channels; the LSTM is ``num_filters * 2**len(ratios)`` wide), and transformers' ``EncodecConfig``
has one ``num_filters`` for both encoder and decoder. :func:`widen_encodec` builds the wider model
and fills it so that it computes exactly what the narrow one did:

* every trained weight keeps its place (old channels first in each layer);
* weights from new input channels to old output channels are zero, so the old channels never see
  the new ones and the encoder's output, the codes and the decoded audio are unchanged;
* weights into new channels keep the wide model's fresh Kaiming init, so the new channels carry
  signal from the start and the zero weights out of them get gradients when the decoder is
  fine-tuned (``codec_decoder`` stage, encoder and codebooks frozen).

Since the codes do not change, the language model trained on them is kept as is;
:func:`with_tuned_decoder` puts a fine-tuned (possibly widened) decoder into the assembled model.
"""

from __future__ import annotations

import torch
from transformers import EncodecModel

from steerlit.testbed.codec import reinit_convs


def _lstm_gate_rows(h_old: int, h_new: int) -> torch.Tensor:
    """Rows of a (4 * h_new)-row LSTM weight that hold the old units' gates (order i, f, g, o)."""
    return torch.cat([torch.arange(g * h_new, g * h_new + h_old) for g in range(4)])


@torch.no_grad()
def _widen_lstm(old: torch.nn.LSTM, new: torch.nn.LSTM) -> None:
    h_old, h_new = old.hidden_size, new.hidden_size
    rows = _lstm_gate_rows(h_old, h_new)
    for name, p_old in old.named_parameters():
        p_new = getattr(new, name)
        if p_new.dim() == 1:  # bias (4H,)
            p_new[rows] = p_old
        else:  # weight_ih (4H, in) / weight_hh (4H, H): old units read old inputs only
            block = torch.zeros(len(rows), p_new.shape[1])
            block[:, : p_old.shape[1]] = p_old
            p_new[rows] = block


@torch.no_grad()
def _widen_conv(old: torch.nn.Module, new: torch.nn.Module) -> None:
    """Conv1d weights are (out, in, k), ConvTranspose1d weights (in, out, k). Writes go through weight
    norm's ``right_inverse`` (g = per-slice norm, v = weight), as in :func:`reinit_convs`."""
    w_old, w = old.weight.detach(), new.weight.detach().clone()
    transposed = isinstance(old, torch.nn.ConvTranspose1d)
    if transposed:
        w_old, w = w_old.transpose(0, 1), w.transpose(0, 1)  # now (out, in, k)
    o, i = w_old.shape[:2]
    w[:o, :i] = w_old
    w[:o, i:] = 0.0
    new.weight = w.transpose(0, 1).contiguous() if transposed else w
    if old.bias is not None:
        new.bias[:o] = old.bias


@torch.no_grad()
def widen_encodec(encodec: EncodecModel, factor: int = 2, seed: int = 0) -> EncodecModel:
    """A copy of ``encodec`` with ``num_filters * factor`` filters that encodes to the same codes and
    decodes them to the same audio (up to float summation order). The new channels' weights depend on
    ``seed`` only, so widening the same codec twice gives the same model. Returns it in eval mode."""
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"widening factor must be a positive integer, got {factor}")
    config = encodec.config.__class__.from_dict(encodec.config.to_dict())
    config.num_filters = encodec.config.num_filters * int(factor)
    with torch.random.fork_rng(devices=[]):  # seeded new channels, global RNG untouched
        torch.manual_seed(seed)
        wide = EncodecModel(config)
        reinit_convs(wide)
    wide_modules = dict(wide.named_modules())
    for name, old in encodec.named_modules():
        new = wide_modules[name]
        if isinstance(old, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
            _widen_conv(old, new)
        elif isinstance(old, torch.nn.LSTM):
            _widen_lstm(old, new)
    wide.quantizer.load_state_dict(encodec.quantizer.state_dict())
    return wide.eval()


@torch.no_grad()
def with_tuned_decoder(encodec: EncodecModel, tuned: EncodecModel) -> EncodecModel:
    """``encodec`` with ``tuned``'s decoder, after checking that everything else (encoder, codebooks)
    is ``encodec``'s, so that the codes the LM was trained on keep their meaning. A ``tuned`` codec
    with k times the filters must hold ``widen_encodec(encodec, k)``'s encoder (the ``codec_decoder``
    stage with ``widen: k`` freezes it); the widened model is returned then. Raises ``ValueError``."""
    n, n_tuned = encodec.config.num_filters, tuned.config.num_filters
    if n_tuned % n:
        raise ValueError(f"the tuned codec has {n_tuned} filters, not a multiple of the model's {n}")
    base = widen_encodec(encodec, n_tuned // n) if n_tuned != n else encodec
    mine, theirs = base.state_dict(), tuned.state_dict()
    differ = [k for k in mine if not k.startswith("decoder.") and not torch.equal(mine[k], theirs[k])]
    if differ:
        raise ValueError(
            f"{len(differ)} encoder/codebook tensors differ (e.g. {differ[0]}): this codec was not "
            "fine-tuned from the LM's codec; re-run the codec_decoder stage with --force"
        )
    base.decoder.load_state_dict(tuned.decoder.state_dict())
    return base
