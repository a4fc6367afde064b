"""Synthetic CLOTHO-format data set: same files, formats and sizes as the original feature archive.

    python -m data.synthetic --out data/CLOTHO-synthetic [--size clotho|tiny] [--seed 0] [--force]

writes ``<out>/structured-symlinks/`` exactly like the real archive (see docs/DATA.md):
``aggregated_audio/vggish-raw.hickle`` (clip -> (T,128) float32, T in 15..31),
``aggregated_vggsound/vggsound-raw.hickle`` (clip -> (T,512), T in 47..95),
``structured-symlinks/raw-captions.pkl`` (clip -> 5 token lists), ``text_embeddings/w2v.pkl`` (clip -> 5 arrays
(n_tokens,300)), ``train_list.txt`` / ``val_list.txt`` / ``test_list.txt`` (2314 / 579 / 1045 clips), plus
``synthetic-meta.json`` (the spec, the seed and the latent events of every clip, for analysis).

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

Generation is deterministic given (size, seed, spec) and atomic: the set is written into a temporary folder that is
renamed into place at the end, so an interrupted run leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.errors import UserError, run_cli

SPLITS = ("train", "val", "test")
CAPTIONS_PER_CLIP = 5
W2V_DIM = 300
EXPERT_FILES = {"audio": "aggregated_audio/vggish-raw.hickle", "vggsound": "aggregated_vggsound/vggsound-raw.hickle"}
EXPERT_DIMS = {"audio": 128, "vggsound": 512}
QRELS_FILE = "qrels-{split}.trec"  # multi-relevance judgements (TREC qrels, graded), one file per split


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
# vocabulary: "category|phrasing;phrasing;..."
# ----------------------------------------------------------------------------------------------------------------
EVENTS = """
animal|a dog barks;a dog is barking loudly;a hound barks;a puppy yaps
animal|a cat meows;a kitten is meowing;a cat mews softly
animal|a cow moos;cattle are mooing;a cow lows
animal|a horse neighs;a horse is trotting on a road;hooves clop
animal|sheep bleat;a goat is bleating
animal|a rooster crows;a cockerel is crowing;chickens cluck
animal|frogs croak;a frog is croaking;toads are croaking
animal|insects buzz;a bee is buzzing;flies are buzzing around
animal|crickets chirp;crickets are chirping at night;cicadas buzz loudly
animal|ducks quack;a duck is quacking;geese honk
bird|birds chirp;birds are chirping;birds tweet;small birds twitter
bird|a bird sings;a songbird is singing;a bird whistles a melody
bird|crows caw;a crow is cawing;ravens croak
bird|seagulls cry;gulls are squawking;seagulls call
bird|an owl hoots;an owl is hooting
bird|pigeons coo;doves are cooing
weather|rain falls;it is raining;rain pours down;rain is pattering
weather|rain falls on a tin roof;rain drums on a metal roof;raindrops hit a roof
weather|thunder rumbles;thunder is rolling in the distance;thunder cracks
weather|wind blows;the wind is howling;a strong wind gusts;wind whistles
weather|a storm rages;a heavy storm is raging;a storm roars
water|water flows;a stream is flowing;a brook babbles;a river rushes
water|waves crash;ocean waves are crashing on the shore;the surf breaks;waves lap the beach
water|water drips;water is dripping;a faucet drips slowly
water|water splashes;someone is splashing in water;water sloshes
water|a faucet runs;water runs from a tap;a sink is filling with water
water|a toilet flushes;a toilet is flushing
water|water boils;boiling water is bubbling;a kettle bubbles
water|a fountain gurgles;a fountain is splashing
vehicle|a car engine idles;an engine is idling;a motor is running
vehicle|a car drives by;cars are passing;a car passes on a wet road;a vehicle drives past
vehicle|a car engine revs;an engine is revving loudly;a car accelerates
vehicle|a train passes;a train is rolling on the tracks;a train rumbles by
vehicle|a train horn blows;a train whistle sounds
vehicle|an airplane flies overhead;a plane is passing above;a jet roars overhead
vehicle|a motorcycle roars;a motorbike is speeding by;a motorcycle revs
vehicle|a bus pulls up;a bus is idling at a stop;bus brakes hiss
vehicle|a truck beeps while reversing;a lorry backs up beeping
vehicle|a helicopter flies;a helicopter is hovering;rotor blades thump
vehicle|a boat motor hums;a motorboat is moving;a boat engine chugs
vehicle|a bicycle bell rings;a bike rattles past
voice|people talk;people are talking;a group of people chat;voices murmur
voice|a crowd cheers;a crowd is cheering;people applaud and cheer
voice|a child laughs;children are laughing;kids are playing and shouting
voice|a baby cries;an infant is crying;a baby wails
voice|a man speaks;a man is talking;a male voice speaks
voice|a woman sings;a woman is singing;a female voice sings
voice|people whisper;someone is whispering quietly
voice|someone coughs;a person is coughing;a man clears his throat
voice|someone whistles;a person is whistling a tune
voice|a woman talks;a woman is speaking;a female voice talks
action|footsteps crunch on gravel;someone is walking on gravel;a person walks on gravel
action|footsteps echo;someone is walking in a hallway;shoes tap on a hard floor
action|footsteps in snow;someone walks through snow;boots crunch on snow
action|someone runs;a person is running;people are jogging
action|hands clap;people are clapping;applause rings out
action|someone types on a keyboard;keys are being typed;a person is typing
action|a door opens and closes;a door slams;a door creaks open;a door shuts
action|someone knocks on a door;knocking on a wooden door;a person knocks
action|paper rustles;pages are turned;someone crumples paper;a person flips pages
action|keys jingle;someone jingles keys;coins jingle
action|a zipper is pulled;someone zips a bag;a zipper opens
action|someone eats;a person is chewing;someone munches on food
household|dishes clatter;plates are clanking;cutlery clinks;dishes are being washed
household|a microwave beeps;an appliance beeps;a timer beeps
household|a vacuum cleaner runs;someone is vacuuming;a vacuum whirs
household|a clock ticks;a clock is ticking;a clock chimes
household|a phone rings;a telephone is ringing;a cell phone rings
household|a washing machine spins;a washer is running;a dryer tumbles
household|a drawer slides;a drawer is opened;a cabinet closes
household|glass clinks;glasses are clinking;bottles rattle
machine|a machine whirs;a machine is humming;machinery runs;a motor whines
machine|a fan hums;an air conditioner hums;a fan is spinning
machine|a drill whines;someone is drilling;a power drill buzzes
machine|a saw cuts wood;someone is sawing;a chainsaw roars
machine|a hammer bangs;someone is hammering a nail;metal is being hammered
machine|a lawn mower runs;someone mows the lawn;a mower drones
machine|an alarm sounds;an alarm is ringing;a buzzer goes off
machine|static crackles;a radio hisses with static;electrical buzzing
music|a piano plays;someone is playing the piano;piano notes ring
music|a guitar strums;someone plays a guitar;a guitar is strummed
music|drums beat;someone is playing drums;a drum is pounding
music|a bell rings;a small bell jingles;a bell is being rung
music|church bells ring;bells toll;church bells are chiming
music|music plays;music is playing on a radio;a song plays in the background
nature|leaves rustle;leaves are rustling in the breeze;branches sway
nature|a fire crackles;wood is burning in a fire;a campfire pops
nature|branches snap;twigs are breaking;sticks crack
urban|traffic hums;traffic is passing on a busy street;city traffic roars
urban|a siren wails;a police siren is blaring;an ambulance siren sounds
urban|construction noise;workers are building something;heavy machinery at a construction site
urban|a horn honks;a car horn is honking;horns beep in traffic
"""

VAGUE = {
    "animal": ["an animal makes noise", "an animal is making sounds", "some creature is calling"],
    "bird": ["a bird makes noise", "birds are calling", "some birds make sounds"],
    "weather": ["the weather is bad", "weather sounds can be heard", "it is stormy outside"],
    "water": ["water makes noise", "water is moving", "there is water"],
    "vehicle": ["a vehicle makes noise", "a vehicle is moving", "some vehicle passes"],
    "voice": ["people make noise", "a person makes sounds", "someone is making noise"],
    "action": ["someone is doing something", "a person moves around", "someone is busy"],
    "household": ["something makes noise in a house", "household noises", "something is used in a kitchen"],
    "machine": ["a machine makes noise", "a device is running", "something mechanical is operating"],
    "music": ["music is heard", "something musical plays", "some sounds like music"],
    "nature": ["nature sounds", "sounds of nature outside", "something rustles outside"],
    "urban": ["city noises", "noise from a street", "urban sounds in the background"],
}
GENERIC = ["something makes noise outside", "a sound is heard in the background", "there is some noise",
           "various noises can be heard", "a loud noise happens", "something is making a sound nearby",
           "different sounds are occurring"]
TEMPLATES_2 = ["{a} while {b}", "{a} and {b}", "{a} as {b}", "{a} , then {b}", "{a} while in the background {b}",
               "{a} and in the distance {b}", "{b} while {a}"]
FILLERS = ["loudly", "softly", "in the distance", "in the background", "nearby", "outside", "repeatedly",
           "in a room", "on a street", "for a while", "far away", "close to the microphone", "in a park",
           "at night", "on a quiet day", "constantly"]

# words that share a concept vector (synonyms and inflections) — everything else gets its own vector
SYNONYMS = """
dog dogs hound puppy canine|bark barks barking yaps yap
cat cats kitten meows meowing mews meow|cow cows cattle moos mooing lows
horse horses neighs hooves clop trotting|sheep goat bleat bleating
rooster cockerel crows crowing chickens cluck|frog frogs toads croak croaks croaking
insects insect bee bees flies fly buzz buzzing buzzes|crickets cicadas chirp chirps chirping
duck ducks quack quacking geese honk|birds bird tweet twitter songbird
sings singing sing melody song|crow caw cawing ravens|seagulls gulls squawking cry
owl hoots hooting|pigeons doves coo cooing
rain raining raindrops pours pattering drums|roof tin metal
thunder rumbles rolling cracks|wind howling gusts whistles breeze
storm stormy rages raging|water stream brook river flowing flows babbles rushes
waves ocean surf shore beach lap crashing crash|drips dripping drip
splashes splashing sloshes|faucet tap sink|toilet flushes flushing|boils boiling bubbling kettle bubbles
fountain gurgles|car cars vehicle|engine motor idles idling revving revs accelerates
train tracks rumbles|horn whistle honks honking|airplane plane jet overhead
motorcycle motorbike|bus brakes hiss|truck lorry reversing beeps beeping|helicopter rotor hovering
boat motorboat chugs|bicycle bike|people group voices chat talking talk talks murmur speaks speaking talking
crowd cheers cheering applaud applause clapping clap|child children kids laughs laughing
baby infant cries crying wails|man male|woman female|whisper whispering
coughs coughing throat|whistling whistles tune
footsteps walking walks walk shoes boots steps|gravel crunch crunches|snow|runs running jogging
keyboard typing typed types|door creaks slams shuts opens|knocks knocking knock wooden
paper pages rustles rustling crumples flips|keys jingle jingles coins
zipper zips|eats chewing munches food|dishes plates cutlery clank clinks clatter clanking
microwave appliance timer|vacuum vacuuming cleaner|clock ticks ticking chimes
phone telephone rings ringing|washing washer dryer spins tumbles|drawer cabinet slides
glass glasses bottles clinking|machine machinery whirs humming hums whines mechanical device
fan conditioner spinning|drill drilling|saw sawing chainsaw cuts|hammer hammering bangs
mower mows lawn drones|alarm buzzer|static radio hisses crackles electrical
piano|guitar strums strummed|drums drum beat pounding|bell bells toll tolls chiming jingles
music musical|leaves branches sway|fire burning campfire pops|twigs sticks snap breaking
traffic street city urban busy|siren ambulance police blaring wails|construction workers building
"""


def _tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _parse_events() -> list[tuple[str, list[str]]]:
    out = []
    for line in EVENTS.strip().splitlines():
        cat, phrases = line.split("|")
        out.append((cat, [p.strip() for p in phrases.split(";")]))
    return out


def _concepts() -> dict[str, str]:
    word2concept = {}
    for group in SYNONYMS.replace("\n", "|").split("|"):
        words = group.split()
        for w in words:
            word2concept.setdefault(w, "concept:" + words[0])
    return word2concept


class WordVectors:
    """Deterministic pseudo word2vec table (300-d): hash-seeded per word, synonyms close together."""

    def __init__(self, spec: SyntheticSpec):
        self.spec = spec
        self.word2concept = _concepts()
        self.cache: dict[str, np.ndarray] = {}

    @staticmethod
    def _hashed(name: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(W2V_DIM)

    def __getitem__(self, word: str) -> np.ndarray:
        vec = self.cache.get(word)
        if vec is None:
            own = self._hashed("word:" + word)
            concept = self.word2concept.get(word)
            if concept is not None:
                own = self._hashed(concept) + self.spec.synonym_noise * own
            vec = (self.spec.word_vector_std * own).astype(np.float32)
            self.cache[word] = vec
        return vec

    def embed(self, tokens: Sequence[str]) -> np.ndarray:
        return np.stack([self[t] for t in tokens]).astype(np.float32)


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


def _split_sizes(spec: SyntheticSpec) -> dict[str, int]:
    return {"train": spec.n_train, "val": spec.n_val, "test": spec.n_test}


def generate(out_dir: str | os.PathLike, size: str = "clotho", seed: int = 0, spec: SyntheticSpec | None = None,
             root_feat_folder: str = "structured-symlinks", force: bool = False, quiet: bool = False) -> Path:
    """Write the synthetic set to ``out_dir/root_feat_folder`` atomically; return that folder.

    If the folder exists: with ``force`` it is replaced, otherwise a :class:`UserError` is raised. If another process
    finishes the same folder first, its result is kept and ours discarded.
    """
    spec = spec if spec is not None else spec_for(size)
    out_dir = Path(out_dir)
    final = out_dir / root_feat_folder
    from utils.outputs import recover
    recover(final)  # a killed earlier generation: remove its temporary folder, or finish its swap
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder (--out names the data_dir folder to write into)")
    if final.exists() and not force:
        raise UserError(f"{final}: already exists (use --force to replace it)")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{root_feat_folder}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    try:
        try:
            _write_all(tmp, spec, size, seed, quiet)
            from utils.testhooks import pause
            pause("synthetic-write")  # crash tests: the set is written in its temporary folder, not yet renamed
        except OSError as err:  # a write() on a full disk names no file: name the set being written
            if err.filename is None:
                raise OSError(err.errno, err.strerror, str(final)) from None
            raise
        if final.exists() and force:
            trash = out_dir / f".{root_feat_folder}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                # a concurrent generation won the race; keep its (identical) result
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if created and not final.exists():
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # a folder this call created for nothing
    if not quiet:
        print(f"wrote {final} in {time.time() - t0:.1f}s", file=sys.stderr)
    return final


def is_current(root: str | os.PathLike, size: str, seed: int, spec: SyntheticSpec | None = None) -> bool:
    """Whether ``root`` holds the set that ``generate(size, seed, spec)`` would write now.

    Judged from ``synthetic-meta.json``; a folder without it (e.g. real features) counts as current, so it is
    never overwritten.
    """
    meta_path = Path(root) / "synthetic-meta.json"
    if not meta_path.is_file():
        return True
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    want = json.loads(json.dumps(dataclasses.asdict(spec if spec is not None else spec_for(size))))
    if not all(qrels_path(root, split).is_file() for split in SPLITS):
        return False  # written before the generator wrote qrels: regenerating gives identical arrays plus qrels
    return meta.get("size") == size and meta.get("seed") == seed and meta.get("spec") == want


def _dump_hickle(obj: dict, path: Path) -> None:
    """hickle.dump through an in-memory HDF5 image, then plain file I/O.

    HDF5 writing straight to a full disk fails inside its metadata cache (``RuntimeError: Can't flush cache ...
    errno = 28``) and the half-closed file's ids then crash the interpreter (a segfault) when h5py frees them. In
    memory HDF5 cannot fail that way; the image is written with ordinary I/O, which raises a clean ``OSError``.
    Cost: the peak memory of a CLOTHO-size generation rises from about 1.0 to about 2 GB. ``obj`` is emptied.
    """
    import h5py
    import hickle

    with h5py.File(f"{path.name}-in-memory", "w", driver="core", backing_store=False) as h5:
        hickle.dump(obj, h5)
        obj.clear()  # the arrays now live in the in-memory file: free them before its image is copied out
        h5.flush()
        image = h5.id.get_file_image()
    with open(path, "wb") as fh:
        fh.write(image)


def _check_free_space(folder: Path, feats: dict, w2v: dict) -> None:
    """Fail early, with the folder named, when the set cannot fit (the writes below would fail anyway)."""
    import errno
    import shutil

    need = sum(np.asarray(v).nbytes + 512 for per in feats.values() for v in per.values())
    need += sum(np.asarray(v).nbytes + 256 for caps in w2v.values() for v in caps)
    free = shutil.disk_usage(folder).free
    if free < 1.1 * need:
        raise OSError(errno.ENOSPC, f"No space left on device (the synthetic set needs about {need / 2**20:.0f} "
                                    f"MiB, {free / 2**20:.0f} MiB free)", str(folder))


def _write_all(root: Path, spec: SyntheticSpec, size: str, seed: int, quiet: bool) -> None:
    gen = _Generator(spec, seed)
    words = WordVectors(spec)
    sizes = _split_sizes(spec)
    total = sum(sizes.values())
    ids = [f"synthetic_{i + 1:05d}.wav" for i in range(total)]
    feats: dict[str, dict] = {"audio": {}, "vggsound": {}}
    captions, w2v, meta_clips = {}, {}, {}
    contents, clip_types = [], []
    miss_rng = np.random.default_rng([seed, 3])
    for i, cid in enumerate(ids):
        rng = np.random.default_rng([seed, 2, i])
        clip = gen.clip(rng)
        for expert in feats:
            missing = miss_rng.random() < spec.p_missing.get(expert, 0.0)
            feats[expert][cid] = float("nan") if missing else clip["feats"][expert]
        caps_content = [gen.caption_and_content(clip, rng) for _ in range(CAPTIONS_PER_CLIP)]
        caps = [tokens for tokens, _ in caps_content]
        contents.append([content for _, content in caps_content])
        clip_types.append(clip["types"])
        captions[cid] = caps
        w2v[cid] = [words.embed(c) for c in caps]
        meta_clips[cid] = {"events": [gen.events[int(e)][1][0] for e in clip["types"]],
                           "salience": [round(float(s), 3) for s in clip["salience"]]}
    _check_free_space(root.parent, feats, w2v)
    root.mkdir(parents=True)
    start = 0
    for split in SPLITS:
        n = sizes[split]
        (root / f"{split}_list.txt").write_text("".join(f"{c}\n" for c in ids[start:start + n]))
        _write_split_qrels(root / QRELS_FILE.format(split=split), gen, ids[start:start + n],
                           clip_types[start:start + n], contents[start:start + n])
        start += n
    for expert, rel in EXPERT_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _dump_hickle(feats[expert], root / rel)
        feats[expert] = {}  # free memory early
    (root / "structured-symlinks").mkdir()
    with open(root / "structured-symlinks" / "raw-captions.pkl", "wb") as fh:
        pickle.dump(captions, fh, protocol=4)
    (root / "text_embeddings").mkdir()
    with open(root / "text_embeddings" / "w2v.pkl", "wb") as fh:
        pickle.dump(w2v, fh, protocol=4)
    meta = {"generator": "data.synthetic", "size": size, "seed": seed, "splits": sizes,
            "spec": dataclasses.asdict(spec), "clips": meta_clips}
    (root / "synthetic-meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _write_split_qrels(path: Path, gen: _Generator, clip_ids: list[str], clip_types: list, contents: list) -> None:
    """Graded TREC qrels of one split: a caption's own clip has grade 2; every other clip of the split whose
    latent events cover what the caption describes (each named event present, each vaguely named category
    present) has grade 1. A generic caption describes nothing checkable: only its own clip."""
    from retrieval.trec import write_trec_qrels

    n_events, categories = gen.n_events, sorted(gen.by_category)
    cat_index = {c: i for i, c in enumerate(categories)}
    event_cat = np.array([cat_index[gen.events[e][0]] for e in range(n_events)])
    has_event = np.zeros((len(clip_ids), n_events), dtype=np.float32)
    for i, types in enumerate(clip_types):
        has_event[i, types] = 1.0
    has_cat = np.zeros((len(clip_ids), len(categories)), dtype=np.float32)
    np.maximum.at(has_cat, (np.repeat(np.arange(len(clip_ids)), [len(t) for t in clip_types]),
                            event_cat[np.concatenate(clip_types)] if clip_types else []), 1.0)
    n_caps = len(clip_ids) * CAPTIONS_PER_CLIP
    need_event = np.zeros((n_caps, n_events), dtype=np.float32)
    need_cat = np.zeros((n_caps, len(categories)), dtype=np.float32)
    specific = np.zeros(n_caps, dtype=bool)
    for row, content in enumerate(c for caps in contents for c in caps):
        if content is None:
            continue
        specific[row] = True
        for kind, what in content:
            if kind == "event":
                need_event[row, what] = 1.0
            else:
                need_cat[row, cat_index[what]] = 1.0
    # missing[r, j] = required events / categories of caption r that clip j lacks
    missing = need_event @ (1.0 - has_event).T + need_cat @ (1.0 - has_cat).T
    covered = (missing == 0) & specific[:, None]
    qrels = {}
    for row in range(n_caps):
        own = row // CAPTIONS_PER_CLIP
        judged = {clip_ids[j]: 1 for j in np.flatnonzero(covered[row])}
        judged[clip_ids[own]] = 2
        qrels[f"{clip_ids[own]}#{row % CAPTIONS_PER_CLIP}"] = judged
    write_trec_qrels(path, qrels)


def qrels_path(root: str | os.PathLike, split: str) -> Path:
    """The multi-relevance qrels file of a split in a synthetic set (it may not exist for other data)."""
    return Path(root) / QRELS_FILE.format(split=split)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    from utils.cli import ArgumentParser, seed_int

    parser = ArgumentParser(
        prog="python -m data.synthetic",
        description="Write a synthetic data set in the exact layout and formats of the CLOTHO feature archive "
                    "(hickle VGGish/VGGSound features, raw-captions.pkl, text_embeddings/w2v.pkl, split lists) "
                    "into OUT/structured-symlinks. Deterministic given --size and --seed; written atomically. "
                    "See docs/DATA.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True,
                        help="data_dir to write (the set goes to OUT/structured-symlinks), e.g. data/CLOTHO-synthetic")
    parser.add_argument("--size", default="clotho",
                        help="clotho: 2314/579/1045 clips x 5 captions, like CLOTHO; tiny: 64/32/32 clips, short "
                             "features (tests, smoke runs)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (same seed = byte-identical features)")
    parser.add_argument("--root_feat_folder", default="structured-symlinks",
                        help="sub-folder of OUT to write (data_loader.args.root_feat_folder)")
    parser.add_argument("--force", action="store_true", help="replace the set if it already exists")
    args = parser.parse_args(argv)
    spec = spec_for(args.size)
    generate(args.out, args.size, args.seed, spec=spec, root_feat_folder=args.root_feat_folder, force=args.force)


if __name__ == "__main__":
    sys.exit(run_cli(main))
