"""Word lists and word vectors of the synthetic CLOTHO-format set (data.synthetic).

Kept apart from the generator so the ~150 lines of English phrasings do not bury its logic, and so readers that
only need the words (model.query's tokeniser and word table, bench/search_quality.py) need not load the writers.
"""
from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # a type hint only: the spec module imports this one
    from data.synthetic_generator import SyntheticSpec

W2V_DIM = 300


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
