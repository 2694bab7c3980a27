"""The search benchmark's texts: chat-like sentences from word lists of twenty topics, a
fixed seed, messages composed of two or three sentences, and queries as people type them.

Pure generation (no servers); bench/search_bench.py embeds the sentences and caches them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

#: Share of a conversation's messages about its own topic; the rest are about any topic.
ON_TOPIC = 0.8


@dataclass(frozen=True)
class Topic:
    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]


def _topic(nouns: str, verbs: str, adjectives: str) -> Topic:
    def split(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    return Topic(split(nouns), split(verbs), split(adjectives))


TOPICS_OF_TALK: dict[str, Topic] = {
    "cooking": _topic(
        "sourdough starter, cast iron pan, risotto, lemon cake, chicken stock, bread dough, tomato sauce, "
        "oven, spice rack, fresh pasta, chocolate mousse, chef's knife",
        "bake, season, simmer, knead, marinate, chop, freeze, roast",
        "crispy, soggy, salty, fluffy, burnt, creamy",
    ),
    "cars": _topic(
        "brake pads, engine, gearbox, tyre pressure, car battery, windscreen wipers, oil filter, clutch, "
        "exhaust, spark plugs, dashboard light, radiator",
        "replace, check, repair, tighten, drain, charge, inspect, tune",
        "noisy, worn, leaking, rusty, overheated, squeaky",
    ),
    "programming": _topic(
        "Python script, database query, unit test, git branch, memory leak, API endpoint, regular "
        "expression, Docker image, build pipeline, config file, stack trace, async function",
        "debug, refactor, deploy, profile, rewrite, document, merge, optimise",
        "slow, flaky, broken, legacy, readable, nested",
    ),
    "gardening": _topic(
        "tomato plants, rose bush, compost heap, lawn, seedlings, raised bed, hedge, apple tree, herb "
        "garden, greenhouse, potting soil, sunflowers",
        "water, prune, fertilise, plant, repot, mulch, weed, harvest",
        "wilted, yellow, overgrown, dry, thriving, muddy",
    ),
    "travel": _topic(
        "train ticket, passport, hotel booking, backpack, flight, itinerary, rental car, travel "
        "insurance, museum pass, hostel, luggage, visa",
        "book, pack, cancel, plan, renew, upgrade, confirm, explore",
        "delayed, expensive, crowded, last-minute, cosy, remote",
    ),
    "money": _topic(
        "savings account, mortgage, tax return, monthly budget, credit card, pension, invoice, stock "
        "portfolio, student loan, receipts, interest rate, emergency fund",
        "save, invest, file, refinance, track, pay off, split, negotiate",
        "overdue, risky, fixed, high, tax-free, confusing",
    ),
    "fitness": _topic(
        "running shoes, knee injury, sleep schedule, protein shake, yoga mat, marathon training, blood "
        "pressure, gym routine, back pain, stretching plan, heart rate, vitamin supplements",
        "stretch, train, rest, measure, improve, track, walk, lift",
        "sore, intense, gentle, daily, stiff, healthy",
    ),
    "music": _topic(
        "guitar strings, piano lessons, drum kit, sheet music, amplifier, choir rehearsal, vinyl record, "
        "headphones, chord progression, metronome, violin bow, playlist",
        "tune, practise, record, play, compose, mix, rehearse, restring",
        "out of tune, loud, acoustic, catchy, slow, vintage",
    ),
    "pets": _topic(
        "puppy, cat litter, fish tank, dog leash, vet appointment, hamster cage, bird feeder, flea "
        "treatment, kitten, dog food, scratching post, aquarium filter",
        "feed, groom, train, walk, clean, adopt, bathe, vaccinate",
        "shy, hungry, playful, nervous, cloudy, grumpy",
    ),
    "home repair": _topic(
        "leaking tap, bathroom tiles, kitchen cabinet, wall paint, door hinge, light switch, washing "
        "machine, roof gutter, window frame, floorboards, boiler, shower drain",
        "fix, paint, unclog, seal, sand, install, replace, drill",
        "cracked, damp, loose, blocked, mouldy, creaky",
    ),
    "photography": _topic(
        "camera lens, tripod, portrait shot, night sky photo, memory card, flash, shutter speed, photo "
        "album, drone footage, light meter, film camera, editing software",
        "shoot, edit, frame, focus, print, crop, expose, back up",
        "blurry, grainy, overexposed, sharp, dark, wide",
    ),
    "work": _topic(
        "quarterly report, team meeting, project deadline, job interview, performance review, slide "
        "deck, client email, spreadsheet, onboarding plan, budget proposal, status update, contract",
        "prepare, present, reschedule, review, draft, send, finish, discuss",
        "urgent, tedious, late, detailed, formal, messy",
    ),
    "school": _topic(
        "history essay, maths homework, chemistry exam, reading list, science project, group "
        "presentation, lab report, vocabulary test, study schedule, thesis, lecture notes, grammar "
        "exercise",
        "study, write, revise, memorise, submit, outline, research, correct",
        "difficult, unfinished, boring, long, graded, tricky",
    ),
    "outdoors": _topic(
        "hiking trail, tent, rain jacket, mountain bike, camping stove, sleeping bag, kayak, snow boots, "
        "trail map, campfire, climbing rope, picnic",
        "hike, camp, paddle, climb, cycle, pitch, pack, navigate",
        "steep, wet, windy, muddy, lightweight, cold",
    ),
    "books and films": _topic(
        "science fiction novel, film soundtrack, detective series, book club, documentary, audiobook, "
        "comic book, screenplay, horror movie, poetry collection, film festival, biography",
        "watch, read, review, recommend, finish, discuss, borrow, rewatch",
        "gripping, predictable, long, funny, dark, award-winning",
    ),
    "sports": _topic(
        "football match, tennis racket, swimming lessons, basketball team, cycling race, ski trip, golf "
        "clubs, chess tournament, volleyball net, boxing gloves, rowing machine, cricket bat",
        "coach, practise, win, watch, join, score, referee, warm up",
        "competitive, tiring, close, amateur, fast, rainy",
    ),
    "moving house": _topic(
        "moving boxes, new flat, furniture, rental contract, internet router, sofa, curtains, bookshelf, "
        "garage, storage unit, wardrobe, doorbell",
        "assemble, move, rearrange, clean, sell, measure, decorate, unpack",
        "heavy, cramped, spacious, second-hand, bright, noisy",
    ),
    "gadgets": _topic(
        "laptop battery, phone screen, wireless earbuds, smart speaker, printer, mechanical keyboard, "
        "monitor, charger cable, router firmware, graphics card, tablet, smartwatch",
        "update, reset, charge, repair, connect, upgrade, configure, replace",
        "cracked, laggy, overheating, new, refurbished, dead",
    ),
    "languages": _topic(
        "Spanish verbs, French pronunciation, Japanese kanji, German grammar, flashcards, language "
        "exchange, Italian podcast, vocabulary list, accent, dictionary, conversation class, "
        "Portuguese song",
        "learn, practise, translate, pronounce, memorise, review, repeat, understand",
        "irregular, difficult, fluent, formal, strange, useful",
    ),
    "family events": _topic(
        "birthday party, wedding speech, baby shower, family dinner, anniversary gift, school play, "
        "holiday card, guest list, barbecue, graduation, reunion, surprise cake",
        "organise, plan, invite, cook, write, host, decorate, celebrate",
        "small, formal, chaotic, lovely, expensive, last-minute",
    ),
}

TIMES = (
    "yesterday", "last weekend", "this morning", "all week", "for two hours", "since Monday",
    "every evening", "last night", "on Sunday", "after work", "twice this month", "before lunch",
)  # fmt: skip
PEOPLE = (
    "my sister", "my neighbour", "a colleague", "my dad", "our team lead", "a friend from school",
    "my partner", "the kids", "my landlord", "a customer", "my grandmother", "the new intern",
)  # fmt: skip
FEELINGS = ("frustrated", "excited", "confused", "relieved", "worried", "curious", "tired", "happy")

#: Never "a {slot}" (a plural noun or a vowel would read wrong): "the", "my", "this".
TEMPLATES = (
    "How do I {verb} the {noun} without ruining the {noun2}?",
    "I spent {time} trying to {verb} my {noun}, and it still does not work.",
    "Can you explain why the {noun} gets {adj} after a while?",
    "What is the best way to {verb} the {adj} {noun}?",
    "{person} recommended this {noun}, is it worth it?",
    "My {noun} started acting weird {time}, any idea what happened?",
    "Is it normal for the {noun} to need attention so often?",
    "I finally managed to {verb} the {noun} {time}.",
    "Could you give me a checklist to {verb} the {noun} and the {noun2}?",
    "We argued {time} about whether the {noun} or the {noun2} matters more.",
    "Please summarise the pros and cons of the {adj} {noun}.",
    "I feel {feeling} because the {noun} keeps letting me down.",
    "Thanks, that tip about the {noun} really helped.",
    "Which {noun} would you pick for a beginner on a small budget?",
    "Write a short note to {person} about the {noun}.",
    "Remind me how long it takes to {verb} the {noun}.",
    "Why does everyone say the {noun} is the hardest part?",
    "Compare the {adj} {noun} with the cheap {noun2}.",
    "I am {feeling} about the {noun}; should I {verb} it myself or ask {person}?",
    "The {noun} looked {adj}, so I decided to {verb} it {time}.",
    "Is there a quick way to {verb} the {noun} before {person} arrives?",
    "Tell me three mistakes people make when they {verb} the {noun}.",
    "Does the {noun} affect the {noun2} in any way?",
    "My budget for the {noun} is tight, what can I skip?",
    "Explain the {noun} to me like I am ten years old.",
    "I read that the {adj} {noun} lasts longer, is that true?",
    "Every time I {verb} the {noun}, the {noun2} gets {adj}.",
    "Let's plan how to {verb} the {noun} {time}.",
    "{person} keeps asking me to {verb} the {noun}, but I have no idea where to start.",
    "Honestly the {noun} was {adj} {time} and I am not sure why.",
)

_SLOT = re.compile(r"\{(\w+)\}")


def _sentence(rng: random.Random, topic: Topic) -> str:
    noun, noun2 = rng.sample(topic.nouns, 2)
    values = {
        "noun": noun,
        "noun2": noun2,
        "verb": rng.choice(topic.verbs),
        "adj": rng.choice(topic.adjectives),
        "time": rng.choice(TIMES),
        "person": rng.choice(PEOPLE),
        "feeling": rng.choice(FEELINGS),
    }
    text = _SLOT.sub(lambda match: values[match.group(1)], rng.choice(TEMPLATES))
    return text[0].upper() + text[1:]


def generate_sentences(count: int, seed: int) -> tuple[list[str], list[int]]:
    """`count` distinct sentences, the topics in turn; each sentence's topic index."""
    rng = random.Random(seed)
    topics = list(TOPICS_OF_TALK.values())
    seen: set[str] = set()
    sentences: list[str] = []
    topic_of: list[int] = []
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > count * 50:
            raise RuntimeError(f"the word lists make fewer than {count} distinct sentences")
        index = len(sentences) % len(topics)
        text = _sentence(rng, topics[index])
        if text not in seen:
            seen.add(text)
            sentences.append(text)
            topic_of.append(index)
    return sentences, topic_of


@dataclass(frozen=True)
class Corpus:
    """The sentences with their model vectors ([len(sentences), 384], unit length)."""

    sentences: list[str]
    topics: list[int]
    vectors: Vectors

    def by_topic(self) -> list[list[int]]:
        grouped: list[list[int]] = [[] for _ in TOPICS_OF_TALK]
        for index, topic in enumerate(self.topics):
            grouped[topic].append(index)
        return grouped

    def text(self, parts: Sequence[int]) -> str:
        return " ".join(self.sentences[i] for i in parts)

    def composed(self, parts_of: Sequence[Sequence[int]]) -> Vectors:
        """Each message's vector: the normalised sum of its sentences' vectors."""
        summed = np.zeros((len(parts_of), self.vectors.shape[1]), dtype=np.float32)
        for row, parts in enumerate(parts_of):
            summed[row] = self.vectors[list(parts)].sum(axis=0)
        summed /= np.linalg.norm(summed, axis=1, keepdims=True)
        return summed


def compose_messages(
    corpus: Corpus, conversations: int, count: int, rng: random.Random
) -> list[tuple[int, tuple[int, ...]]]:
    """`count` messages as (conversation index, sentence indices), round-robin over the
    conversations; conversation i is about topic i mod the topics, ON_TOPIC of the time."""
    grouped = corpus.by_topic()
    messages = []
    for index in range(count):
        conversation = index % conversations
        topic = conversation % len(grouped) if rng.random() < ON_TOPIC else rng.randrange(len(grouped))
        parts = tuple(rng.sample(grouped[topic], rng.choice((2, 3))))
        messages.append((conversation, parts))
    return messages


def make_queries(count: int, rng: random.Random) -> list[str]:
    """Queries of one to three words from one topic's lists, as people type them."""
    topics = list(TOPICS_OF_TALK.values())
    found = []
    for _ in range(count):
        topic = rng.choice(topics)
        shape = rng.randrange(4)
        if shape == 0:
            query = rng.choice(topic.nouns)
        elif shape == 1:
            query = f"{rng.choice(topic.verbs)} {rng.choice(topic.nouns)}"
        elif shape == 2:
            query = f"{rng.choice(topic.adjectives)} {rng.choice(topic.nouns)}"
        else:
            query = " ".join(rng.sample(topic.nouns, 2))
        found.append(query)
    return found
