"""The synthetic set's clips and captions: the spec of every knob, and the generator that draws from it.

How a clip is made (every knob is a field of :class:`SyntheticSpec`):

* a vocabulary of 92 latent sound event types in 12 categories (dog barking, rain, car engine, footsteps, ...), each with a
  category (animal, weather, vehicle, ...) and 2-4 English phrasings; event popularity follows a Zipf law so that
  common events (rain, wind, people talking, birds) occur in many clips and vague captions are genuinely ambiguous;
* each clip holds 1-4 events with an amplitude and temporal structure (background events span the clip, foreground
  events come in 1-3 bursts), plus a clip-level "recording condition" that no caption describes;
* each expert sees the frame-level mixture of latent event embeddings through its OWN fixed random projection plus
  noise; VGGSound is more informative (less noise, sees every latent dimension) than VGGish (more noise, and only
  a fraction of the latent dimensions carry signal, so some events are confusable in VGGish alone);
* 5 captions per clip from varied templates: each mentions a random subset of the events (the most salient one
  usually), some are vague ("an animal makes noise", "something makes noise outside"), a few name a wrong event of the
  same category (annotator mistakes), with filler words and location phrases;
* w2v-style token vectors (300-d) from a deterministic pseudo word-vector table: synonyms share a concept vector plus a
  small word-specific part; every other word (function words included) has its own hash-seeded vector.

Writing the set to disk (files, qrels, atomic swap, CLI) is data.synthetic's job; the word lists and the word
vector table live in data.synthetic_vocab.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from data.synthetic_vocab import FILLERS, GENERIC, TEMPLATES_2, VAGUE, _parse_events, _tokenize
from utils.errors import UserError

EXPERT_DIMS = {"audio": 128, "vggsound": 512}


@dataclass(frozen=True)
class SyntheticSpec:
    """Every size and difficulty knob of the synthetic set, with documented defaults.

    Calibration target (for the lead): a CE model gets test text->audio R@1 4-12 %, R@10 25-45 %, and a VGGish-only
    model is clearly worse than VGGish+VGGSound. Harder: raise the expert noise, ``instance_std``,
    ``condition_std``, ``p_vague``, ``p_wrong_event`` or ``zipf_exponent``; lower ``p_mention_other``.

    Calibrated defaults (CLOTHO size, seed 0, 20 epochs, CPU): CE VGGish+VGGSound test t2a R@1 8.2 / R@10 34.0,
    CE-VGGish 5.0 / 24.5. Hardness comes from clip-level terms (``instance_std`` 0.75, ``condition_std`` 0.6) that
    averaging over frames cannot remove; the frame-level expert noise mostly averages out in the VLAD. VGGish is kept
    clearly weaker than VGGSound via the latent dimensions it barely sees (``vggish_visible_fraction`` 0.45,
    ``vggish_hidden_gain`` 0.1) plus more noise (1.8). The earlier defaults (0.6 / 0.5 / 0.6 / 0.15 / 1.4) gave
    CE 9.7 / 37.5 and CE-VGGish 7.5 / 31.8: too easy, and too small a gap between the two.
    """

    # sizes (clips per split) and frame counts (uniform, inclusive)
    n_train: int = 2314
    n_val: int = 579
    n_test: int = 1045
    vggish_frames: tuple[int, int] = (15, 31)
    vggsound_frames: tuple[int, int] = (47, 95)
    # latent event space
    latent_dim: int = 64
    zipf_exponent: float = 0.9          # event popularity ~ 1/rank^s: higher = a few events dominate
    events_per_clip: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)  # P(1), P(2), P(3), P(4) events
    instance_std: float = 0.75          # how much one occurrence of an event differs from its type prototype
    amplitude_range: tuple[float, float] = (0.4, 1.4)
    p_background: float = 0.35          # an event spans the whole clip (else 1-3 bursts)
    burst_fraction: tuple[float, float] = (0.15, 0.6)   # length of one burst, as a fraction of the clip
    condition_std: float = 0.6          # clip-level recording condition (room, mic), never captioned
    frame_latent_noise: float = 0.3     # per-frame latent jitter shared by all experts
    # experts: noise added after the projection (relative to the signal scale) and visible latent fraction
    vggish_noise: float = 1.8
    vggish_visible_fraction: float = 0.45  # share of latent dims that VGGish's projection passes with full gain
    vggish_hidden_gain: float = 0.1        # gain of the other latent dims in VGGish
    vggsound_noise: float = 0.8
    p_missing: dict = field(default_factory=lambda: {"audio": 0.0, "vggsound": 0.0})  # NaN-missing clips
    # captions
    p_mention_primary: float = 0.9      # a caption names the most salient event
    p_mention_other: float = 0.45       # ... and each other event
    p_vague: float = 0.2                # an event is named by its category only ("an animal makes noise")
    p_generic: float = 0.06             # the whole caption is generic ("something makes noise outside")
    p_wrong_event: float = 0.05         # a named event is swapped for another of the same category
    p_filler: float = 0.5               # add an adverb / location phrase
    min_tokens: int = 6
    max_tokens: int = 21
    # word vectors
    word_vector_std: float = 0.15       # entry scale of a word vector (GoogleNews-like norms ~2.6)
    synonym_noise: float = 0.35         # word-specific part of a synonym, relative to the concept vector


SIZES = {
    "clotho": {},
    "tiny": {"n_train": 64, "n_val": 32, "n_test": 32, "vggish_frames": (6, 12), "vggsound_frames": (12, 30)},
}


def spec_for(size: str, **overrides) -> SyntheticSpec:
    if size not in SIZES:
        raise UserError(f"--size: '{size}' is not a known size (choose from {', '.join(SIZES)})")
    return dataclasses.replace(SyntheticSpec(), **{**SIZES[size], **overrides})


# ----------------------------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------------------------
class _Generator:
    def __init__(self, spec: SyntheticSpec, seed: int):
        self.spec = spec
        self.events = _parse_events()
        self.n_events = len(self.events)
        # fixed "world": event prototypes and expert projections depend on the seed only
        world = np.random.default_rng([seed, 1])
        self.prototypes = world.standard_normal((self.n_events, spec.latent_dim))
        ranks = world.permutation(self.n_events) + 1
        pop = 1.0 / ranks ** spec.zipf_exponent
        self.popularity = pop / pop.sum()
        gain = np.full(spec.latent_dim, spec.vggish_hidden_gain)
        visible = world.permutation(spec.latent_dim)[: int(round(spec.vggish_visible_fraction * spec.latent_dim))]
        gain[visible] = 1.0
        scale = 1.0 / np.sqrt(spec.latent_dim)
        self.proj = {
            "audio": (gain[:, None] * world.standard_normal((spec.latent_dim, EXPERT_DIMS["audio"])) * scale),
            "vggsound": world.standard_normal((spec.latent_dim, EXPERT_DIMS["vggsound"])) * scale,
        }
        self.bias = {k: world.standard_normal(d) * 0.5 for k, d in EXPERT_DIMS.items()}
        self.noise = {"audio": spec.vggish_noise, "vggsound": spec.vggsound_noise}
        self.frames = {"audio": spec.vggish_frames, "vggsound": spec.vggsound_frames}
        self.by_category: dict[str, list[int]] = {}
        for i, (cat, _) in enumerate(self.events):
            self.by_category.setdefault(cat, []).append(i)

    # -- audio -----------------------------------------------------------------------------------------------
    def clip(self, rng: np.random.Generator) -> dict:
        spec = self.spec
        k = int(rng.choice(len(spec.events_per_clip), p=np.asarray(spec.events_per_clip) / sum(spec.events_per_clip))) + 1
        types = rng.choice(self.n_events, size=k, replace=False, p=self.popularity)
        amps = rng.uniform(*spec.amplitude_range, size=k)
        instances = self.prototypes[types] + spec.instance_std * rng.standard_normal((k, spec.latent_dim))
        segments = []  # per event: list of (start, end) in clip fractions
        for _ in range(k):
            if rng.random() < spec.p_background:
                segments.append([(0.0, 1.0)])
            else:
                segs = []
                for _ in range(int(rng.integers(1, 4))):
                    length = rng.uniform(*spec.burst_fraction)
                    start = rng.uniform(0.0, 1.0 - length)
                    segs.append((start, start + length))
                segments.append(segs)
        coverage = np.array([min(1.0, sum(e - s for s, e in segs)) for segs in segments])
        salience = amps * coverage
        condition = spec.condition_std * rng.standard_normal(spec.latent_dim)
        feats = {}
        for expert in ("audio", "vggsound"):
            lo, hi = self.frames[expert]
            t = int(rng.integers(lo, hi + 1))
            centres = (np.arange(t) + 0.5) / t
            act = np.zeros((t, k))
            for j, segs in enumerate(segments):
                for s, e in segs:
                    act[(centres >= s) & (centres < e), j] = 1.0
            latent = act @ (amps[:, None] * instances) + condition
            latent += spec.frame_latent_noise * rng.standard_normal(latent.shape)
            x = latent @ self.proj[expert] + self.bias[expert]
            x += self.noise[expert] * rng.standard_normal(x.shape)
            feats[expert] = x.astype(np.float32)
        return {"types": types, "salience": salience, "feats": feats}

    # -- captions --------------------------------------------------------------------------------------------
    def _event_phrase(self, etype: int, rng: np.random.Generator) -> tuple[str, tuple[str, int | str]]:
        """A phrase for one event and what it describes: ``("event", type)`` or ``("category", name)``."""
        spec = self.spec
        cat = self.events[etype][0]
        if rng.random() < spec.p_wrong_event and len(self.by_category[cat]) > 1:
            etype = int(rng.choice([e for e in self.by_category[cat] if e != etype]))
        if rng.random() < spec.p_vague:
            return str(rng.choice(VAGUE[cat])), ("category", cat)
        return str(rng.choice(self.events[etype][1])), ("event", etype)

    def caption(self, clip: dict, rng: np.random.Generator) -> list[str]:
        return self.caption_and_content(clip, rng)[0]

    def caption_and_content(self, clip: dict, rng: np.random.Generator) -> tuple[list[str], list | None]:
        """Tokens of one caption and what it describes (``None`` for a generic caption). The content is a
        by-product: the random draws are exactly those of :meth:`caption` (the data set does not change)."""
        spec = self.spec
        content = None
        if rng.random() < spec.p_generic:
            text = str(rng.choice(GENERIC))
        else:
            order = np.argsort(-clip["salience"])
            chosen = [int(clip["types"][order[0]])] if rng.random() < spec.p_mention_primary else []
            chosen += [int(clip["types"][j]) for j in order[1:] if rng.random() < spec.p_mention_other]
            if not chosen:
                chosen = [int(clip["types"][rng.choice(order)])]
            rng.shuffle(chosen)
            described = [self._event_phrase(e, rng) for e in chosen[:3]]
            phrases = [phrase for phrase, _ in described]
            content = [what for _, what in described]
            text = phrases[0]
            for p in phrases[1:]:
                text = str(rng.choice(TEMPLATES_2)).format(a=text, b=p)
        if rng.random() < spec.p_filler:
            text = f"{text} {rng.choice(FILLERS)}"
        tokens = _tokenize(text)
        while len(tokens) < spec.min_tokens:
            tokens += _tokenize(str(rng.choice(FILLERS)))
        return tokens[: spec.max_tokens], content
