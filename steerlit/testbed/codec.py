"""Training a small transformers ``EncodecModel`` with our own residual VQ.

transformers' EnCodec has no quantiser training, so :class:`CodecModule` trains the SEANet
encoder/decoder of an ``EncodecModel`` as an autoencoder with :class:`~steerlit.testbed.rvq.ResidualVQ`
in between (L1 waveform + multi-resolution log-STFT + commitment losses). :func:`export_encodec`
then copies the learned codebooks into ``encodec.quantizer.layers[i].codebook.embed`` so that the
stock ``EncodecModel.encode`` / ``decode`` (and hence MusicGen's ``generate``) reproduce our codes.

Shapes: waveforms (B, 1, N) at 16 kHz; codes (B, K, T) with T = N / 320 (50 Hz frames).
"""

from __future__ import annotations

import functools
import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info
from transformers import EncodecConfig, EncodecModel

from steerlit.models.tiny import encodec_config
from steerlit.testbed.rvq import ResidualVQ
from steerlit.testbed.synth import SAMPLE_RATE, render, render_stems, spec_for_index

# The testbed codec's sizes (the keys a training config's codec section sets, see ``train_config.CODEC_SIZE_KEYS``).
TESTBED_CODEC_SIZES = dict(
    num_filters=8, hidden_size=64, codebook_size=512, num_codebooks=4, num_lstm_layers=1
)
TESTBED_UPSAMPLING_RATIOS = (8, 5, 4, 2)  # product 320: 50 Hz frames at 16 kHz


def make_encodec_config(**sizes) -> EncodecConfig:
    """EnCodec config at 16 kHz whose single target bandwidth selects exactly ``num_codebooks``.

    ``sizes`` override ``TESTBED_CODEC_SIZES`` (and may set ``upsampling_ratios`` and ``sampling_rate``).
    Bandwidth (kbps) = num_codebooks * log2(codebook_size) * frame_rate / 1000 (frame rate
    16000 / prod(upsampling_ratios) = 50 Hz for the default ratios).
    """
    layout = dict(upsampling_ratios=TESTBED_UPSAMPLING_RATIOS, sampling_rate=SAMPLE_RATE)
    return encodec_config(**{**TESTBED_CODEC_SIZES, **layout, **sizes})


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int | None = None) -> torch.Tensor:
    """|STFT| with a Hann window: x (B, N) -> (B, n_fft // 2 + 1, frames); hop defaults to n_fft // 4."""
    win = torch.hann_window(n_fft, device=x.device)
    return torch.stft(x, n_fft, hop or n_fft // 4, window=win, return_complex=True).abs()


def multi_resolution_stft_loss(
    x: torch.Tensor, y: torch.Tensor, fft_sizes: tuple[int, ...] = (256, 512, 1024), eps: float = 1e-5
) -> torch.Tensor:
    """Mean over resolutions of L1(log|X|, log|Y|) + spectral convergence. x, y: (B, N)."""
    loss = x.new_zeros(())
    for n_fft in fft_sizes:
        sx, sy = stft_magnitude(x, n_fft), stft_magnitude(y, n_fft)
        log_l1 = F.l1_loss(torch.log(sx + eps), torch.log(sy + eps))
        sc = torch.linalg.norm(sy - sx) / (torch.linalg.norm(sy) + 1e-7)
        loss = loss + log_l1 + sc
    return loss / len(fft_sizes)


def spectral_centroid_torch(x: torch.Tensor, n_fft: int = 2048, hop: int = 512) -> torch.Tensor:
    """Differentiable energy-weighted spectral centroid in Hz, like
    :func:`steerlit.metrics.brightness.spectral_centroid` (magnitude-weighted per frame, frames
    weighted by energy; no silence gate). x: (B, N) -> (B,)."""
    mag = stft_magnitude(x, n_fft, hop)  # (B, F, T)
    freqs = torch.linspace(0, SAMPLE_RATE / 2, mag.shape[1], device=x.device)
    frame_c = (freqs[None, :, None] * mag).sum(1) / mag.sum(1).clamp_min(1e-8)  # (B, T)
    energy = (mag**2).sum(1)
    return (energy * frame_c).sum(-1) / energy.sum(-1).clamp_min(1e-8)


@functools.cache
def _mel_filters(n_fft: int) -> np.ndarray:
    """librosa's Slaney mel filterbank, ``n_fft // 16`` bands: (n_mels, n_fft // 2 + 1). Built once per size."""
    import librosa  # deferred: librosa (heavy; only the mel loss needs it)

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=n_fft // 16)


def multi_scale_mel_loss(
    x: torch.Tensor, y: torch.Tensor, fft_sizes: tuple[int, ...] = (256, 512, 1024, 2048), eps: float = 1e-5
) -> torch.Tensor:
    """Mean over scales of L1(log10 mel(X), log10 mel(Y)), ``n_fft // 16`` mel bands per scale (librosa's
    Slaney filters), magnitude spectra. Mel bands pool neighbouring bins, so a slightly detuned tone
    costs little next to silence: for a 900 Hz target, 950 Hz costs 0.22 of silence's loss here and
    0.54 under :func:`multi_resolution_stft_loss` (tested). x, y: (B, N)."""
    loss = x.new_zeros(())
    for n_fft in fft_sizes:
        fb = torch.from_numpy(_mel_filters(n_fft)).to(x)
        mx, my = (fb @ stft_magnitude(a, n_fft) for a in (x, y))
        loss = loss + F.l1_loss(torch.log10(mx.clamp_min(eps)), torch.log10(my.clamp_min(eps)))
    return loss / len(fft_sizes)


def band_envelope_loss(
    x: torch.Tensor, y: torch.Tensor, n_fft: int = 1024, bands: int = 32, frames: int = 4, eps: float = 1e-6
) -> torch.Tensor:
    """L1 between log energies of ``bands`` log-spaced frequency bands pooled over ``frames`` STFT
    frames. Unlike a per-bin log-magnitude loss, whose optimum for noise (hi-hats) under-shoots the
    energy, band energies of noise are predictable, so the decoder keeps the highs. x, y: (B, N)."""
    px, py = stft_magnitude(x, n_fft) ** 2, stft_magnitude(y, n_fft) ** 2
    edges = torch.unique(torch.logspace(0, math.log10(px.shape[1]), bands + 1).long()).tolist()
    loss = x.new_zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        ex = F.avg_pool1d(px[:, lo:hi].sum(1, keepdim=True), frames, frames, ceil_mode=True)
        ey = F.avg_pool1d(py[:, lo:hi].sum(1, keepdim=True), frames, frames, ceil_mode=True)
        loss = loss + F.l1_loss(torch.log(ex + eps), torch.log(ey + eps))
    return loss / (len(edges) - 1)


def lowpass_waveform(x: torch.Tensor, cutoff_hz: float, width_hz: float = 200.0) -> torch.Tensor:
    """Zero-phase FFT low-pass of x (B, N) -> (B, N): gain 1 below ``cutoff_hz``, a raised-cosine
    transition ``width_hz`` wide, 0 above."""
    spec = torch.fft.rfft(x)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / SAMPLE_RATE).to(x.device)
    ramp = ((freqs - cutoff_hz) / width_hz).clamp(0.0, 1.0)
    return torch.fft.irfft(spec * (0.5 + 0.5 * torch.cos(math.pi * ramp)), x.shape[-1])


def low_band_l1_loss(x: torch.Tensor, y: torch.Tensor, cutoff_hz: float = 2000.0) -> torch.Tensor:
    """L1 between the low bands (below ``cutoff_hz``) of two waveforms x, y (B, N). Phase-sensitive where
    the music is tonal (the pitched part's fundamentals and first harmonics), so the encoder must carry the
    phase of steady tones; the noisy highs (hats, snare) stay to the magnitude losses."""
    return lowpass_waveform(x - y, cutoff_hz).abs().mean()  # the low-pass is linear: one FFT, not two


class ClipCropDataset(IterableDataset):
    """Endless random crops of synthetic training clips.

    Yields float tensors (1, crop_samples). Clip ``i`` of the pool is ``spec_for_index(i, base_seed)``,
    so the pool is deterministic; crop positions come from ``seed``. With ``stem_prob`` > 0 that share
    of crops is one stem of the clip alone (drums or pitched part, at its level in the mix), so that
    the codes must say whether a pitched part plays instead of the decoder guessing from the drums.
    """

    def __init__(
        self, num_clips: int, crop_s: float = 1.0, base_seed: int = 0, seed: int = 0, stem_prob: float = 0.0
    ):
        if not 0.0 <= stem_prob <= 1.0:
            raise ValueError(f"stem_prob is a probability in [0, 1], got {stem_prob}")
        self.num_clips, self.crop = num_clips, int(crop_s * SAMPLE_RATE)
        self.base_seed, self.seed, self.stem_prob = base_seed, seed, stem_prob

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            spec = spec_for_index(int(rng.integers(self.num_clips)), self.base_seed)
            if self.stem_prob and rng.random() < self.stem_prob:
                wav = render_stems(spec)[int(rng.integers(2))]
            else:
                wav = render(spec)
            start = int(rng.integers(0, len(wav) - self.crop + 1))
            yield torch.from_numpy(wav[start : start + self.crop].copy())[None]


@torch.no_grad()
def reinit_convs(encodec: EncodecModel) -> None:
    """Kaiming-normal init of every (weight-normed) conv, through the weight-norm parametrisation.

    transformers' ``_init_weights`` writes to the computed ``weight`` of parametrised convs, which
    has no effect, leaving PyTorch's default init (gain ~0.58 per layer): after ~10 layers the
    encoder output barely varies in time and training stalls. Assigning ``conv.weight`` goes
    through weight norm's ``right_inverse`` and sets both g and v.
    """
    for m in encodec.modules():
        if isinstance(m, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
            w = torch.empty_like(m.weight)
            torch.nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear")
            m.weight = w


class CodecModule(L.LightningModule):
    """EnCodec encoder/decoder + :class:`ResidualVQ`, trained as an autoencoder.

    Args:
        encodec_config: dict of an ``EncodecConfig`` (see :func:`make_encodec_config`).
        lr: Adam learning rate.
        w_l1, w_stft, w_commit: loss weights.
        quantize_after: train as a plain autoencoder (no RVQ) for this many steps first, so the
            encoder learns features before k-means initialises the codebooks on them.
        stft_eps: floor added to STFT magnitudes before the log.
        stft_fft_sizes: FFT sizes of the multi-resolution STFT loss.
        dead_threshold: EMA usage count below which a code is re-seeded (about one use per 20
            steps with ~600 vectors per batch and 512 entries).
        log_audio_every: log an input/reconstruction pair to W&B every this many steps (0 = never).
        w_envelope: weight of :func:`band_envelope_loss`.
        w_centroid: weight of the L1 between log spectral centroids (:func:`spectral_centroid_torch`)
            of reconstruction and input: the attribute the testbed's brightness is measured by.
        w_mel: weight of :func:`multi_scale_mel_loss` (log-mel L1 at four scales).
        w_l1_low, l1_low_cutoff_hz: weight and cutoff of :func:`low_band_l1_loss`.
        decoder_only: train the decoder alone; encoder and codebooks stay frozen (no EMA updates),
            so the codes, and an LM trained on them, stay valid.
    """

    def __init__(
        self,
        encodec_config: dict,
        lr: float = 1e-3,
        w_l1: float = 1.0,
        w_stft: float = 1.0,
        w_commit: float = 1.0,
        log_audio_every: int = 0,
        dead_threshold: float = 0.05,
        quantize_after: int = 0,
        stft_eps: float = 1e-4,
        stft_fft_sizes: tuple[int, ...] = (256, 512, 1024),
        w_envelope: float = 0.0,
        w_centroid: float = 0.0,
        w_mel: float = 0.0,
        w_l1_low: float = 0.0,
        l1_low_cutoff_hz: float = 2000.0,
        decoder_only: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        config = EncodecConfig(**encodec_config)
        self.encodec = EncodecModel(config)
        reinit_convs(self.encodec)
        self.rvq = ResidualVQ(
            config.codebook_dim, config.codebook_size, config.num_quantizers, dead_threshold=dead_threshold
        )
        if decoder_only:
            for p in self.encodec.encoder.parameters():
                p.requires_grad_(False)
        self.train(self.training)  # frozen parts to eval now: Lightning's fit keeps submodule modes as set

    def train(self, mode: bool = True):
        """With ``decoder_only`` the encoder and the RVQ stay in eval mode (no k-means, EMA or dead-code
        updates of the codebooks) whatever mode the module is put in."""
        super().train(mode)
        if self.hparams.decoder_only:
            self.encodec.encoder.eval()
            self.rvq.eval()
        return self

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """wav (B, 1, N) -> (reconstruction (B, 1, N), codes (B, K, N/320), commitment loss).

        During the first ``quantize_after`` training steps the RVQ is bypassed (codes are -1).
        """
        z = self.encodec.encoder(wav)  # (B, D, T)
        if self.training and self.global_step < self.hparams.quantize_after and not self.hparams.decoder_only:
            codes = torch.full((z.shape[0], self.rvq.num_quantizers, z.shape[-1]), -1, dtype=torch.long)
            z_q, commit = z, z.new_zeros(())
        else:
            z_q, codes, commit = self.rvq(z)
        recon = self.encodec.decoder(z_q)[..., : wav.shape[-1]]
        return recon, codes, commit

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, parts, recon, codes = self.reconstruction_loss(batch)
        self.log_step(loss, parts, codes, batch, recon)
        return loss

    def reconstruction_loss(
        self, batch: torch.Tensor
    ) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        """batch (B, 1, N) -> (weighted loss, {part: unweighted loss}, reconstruction (B, 1, N), codes)."""
        recon, codes, commit = self(batch)
        l1 = F.l1_loss(recon, batch)
        stft = multi_resolution_stft_loss(
            recon[:, 0], batch[:, 0], tuple(self.hparams.stft_fft_sizes), eps=self.hparams.stft_eps
        )
        hp = self.hparams
        parts = {"l1": l1, "stft": stft, "commit": commit}
        if hp.w_envelope:
            parts["envelope"] = band_envelope_loss(recon[:, 0], batch[:, 0])
        if hp.w_mel:
            parts["mel"] = multi_scale_mel_loss(recon[:, 0], batch[:, 0])
        if hp.w_l1_low:
            parts["l1_low"] = low_band_l1_loss(recon[:, 0], batch[:, 0], hp.l1_low_cutoff_hz)
        if hp.w_centroid:
            c_rec, c_ref = spectral_centroid_torch(recon[:, 0]), spectral_centroid_torch(batch[:, 0])
            parts["centroid"] = (
                (torch.log(c_rec.clamp_min(1.0)) - torch.log(c_ref.clamp_min(1.0))).abs().mean()
            )
        weights = {"l1": hp.w_l1, "stft": hp.w_stft, "commit": hp.w_commit}
        weights.update(envelope=hp.w_envelope, centroid=hp.w_centroid, mel=hp.w_mel, l1_low=hp.w_l1_low)
        return sum(weights[k] * v for k, v in parts.items()), parts, recon, codes

    def log_step(
        self, loss, parts: dict, codes: torch.Tensor, batch: torch.Tensor, recon: torch.Tensor
    ) -> None:
        """Log the losses and codebook usage (progress bar + logger); audio every ``log_audio_every`` steps."""
        used = torch.tensor([float(torch.unique(codes[:, k]).numel()) for k in range(codes.shape[1])]).mean()
        self.log_dict(
            {"codec/loss": loss, **{f"codec/{k}": v for k, v in parts.items()}, "codec/codes_used": used},
            prog_bar=True,
        )
        if self.hparams.log_audio_every and self.global_step % self.hparams.log_audio_every == 0:
            self._log_audio(batch[0, 0], recon[0, 0])

    def _log_audio(self, ref: torch.Tensor, rec: torch.Tensor) -> None:
        logger = self.logger
        if logger is None or not hasattr(logger, "experiment") or not hasattr(logger.experiment, "log"):
            return
        import wandb  # deferred: wandb (optional, heavy)

        logger.experiment.log(
            {
                "codec/audio_input": wandb.Audio(ref.detach().cpu().numpy(), sample_rate=SAMPLE_RATE),
                "codec/audio_recon": wandb.Audio(rec.detach().float().cpu().numpy(), sample_rate=SAMPLE_RATE),
                "trainer/global_step": self.global_step,
            }
        )

    def configure_optimizers(self):
        parts = (self.encodec.encoder, self.encodec.decoder)
        params = [p for part in parts for p in part.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr)


@torch.no_grad()
def _sync_codebooks(rvq: ResidualVQ, encodec: EncodecModel, to_encodec: bool) -> None:
    """Copy embed / embed_avg / cluster_size between our RVQ and EnCodec's quantizer (either way) and
    mark the receiving codebooks initialised."""
    if len(encodec.quantizer.layers) != rvq.num_quantizers:
        raise ValueError(f"EnCodec has {len(encodec.quantizer.layers)} codebooks, RVQ {rvq.num_quantizers}")
    for ours, theirs in zip(rvq.layers, encodec.quantizer.layers):
        src, dst = (ours, theirs.codebook) if to_encodec else (theirs.codebook, ours)
        for name in ("embed", "embed_avg", "cluster_size"):
            getattr(dst, name).copy_(getattr(src, name))
        dst.inited.fill_(1)


def copy_codebooks(rvq: ResidualVQ, encodec: EncodecModel) -> None:
    """Copy our codebooks into ``encodec.quantizer.layers[i].codebook`` (embed, embed_avg, cluster_size)."""
    _sync_codebooks(rvq, encodec, to_encodec=True)


@torch.no_grad()
def init_from_encodec(module: CodecModule, encodec: EncodecModel) -> None:
    """Start ``module`` from a trained ``EncodecModel``: its weights and its codebooks (the inverse
    of :func:`copy_codebooks`). Sizes must match; the RVQ counts as initialised (no k-means)."""
    module.encodec.load_state_dict(encodec.state_dict())
    _sync_codebooks(module.rvq, encodec, to_encodec=False)


def export_encodec(module: CodecModule) -> EncodecModel:
    """The module's ``EncodecModel`` with our codebooks copied in, in eval mode."""
    copy_codebooks(module.rvq, module.encodec)
    return module.encodec.eval()


@torch.no_grad()
def encode_codes(encodec: EncodecModel, wav: torch.Tensor) -> torch.Tensor:
    """Stock EnCodec encode: wav (B, 1, N) -> codes (B, K, T) int64."""
    bw = encodec.config.target_bandwidths[0]
    return encodec.encode(wav, bandwidth=bw).audio_codes[0]


@torch.no_grad()
def decode_codes(encodec: EncodecModel, codes: torch.Tensor) -> torch.Tensor:
    """Stock EnCodec decode: codes (B, K, T) -> wav (B, 1, T * hop)."""
    return encodec.decode(codes[None], [None]).audio_values


@torch.no_grad()
def round_trip(encodec: EncodecModel, wav: np.ndarray) -> np.ndarray:
    """Stock encode then decode of a mono clip ``(samples,)``; the result is cut to the input's length."""
    codes = encode_codes(encodec, torch.from_numpy(np.asarray(wav, dtype=np.float32))[None, None])
    return decode_codes(encodec, codes)[0, 0, : len(wav)].numpy()
