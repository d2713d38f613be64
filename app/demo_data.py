"""Demo personas: deterministic users in a few interest clusters, written to S3 in the
documented insights layout (what the upstream chat analysis would have produced).

Clusters let the demo summary check the matcher's quality: pairs should mostly share
a cluster. Every user gets two chats so the trait aggregation has something to merge.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from profiles.insights import ChatInsights, InsightStore, ParticipantInsight

CLUSTERS: dict[str, dict[str, list[str]]] = {
    "outdoors": {
        "traits": ["adventurous", "energetic", "resilient", "spontaneous", "practical"],
        "interests": ["mountain hiking", "trail running", "rock climbing", "camping",
                      "kayaking", "bird watching", "alpine photography"],
        "values": ["freedom", "nature conservation", "physical health"],
        "style": ["short upbeat messages with trip photos", "plans weekend trips in chat"],
    },
    "gaming": {
        "traits": ["competitive", "strategic", "witty", "night owl", "loyal"],
        "interests": ["competitive video games", "speedrunning", "tabletop RPGs",
                      "game design", "esports tournaments", "retro consoles"],
        "values": ["teamwork", "fair play", "creativity"],
        "style": ["fast banter full of memes", "long strategy discussions"],
    },
    "arts": {
        "traits": ["introspective", "imaginative", "sensitive", "curious", "gentle"],
        "interests": ["poetry", "classic novels", "indie films", "watercolor painting",
                      "museum visits", "jazz records"],
        "values": ["authenticity", "beauty", "empathy"],
        "style": ["long reflective paragraphs", "shares quotes and book passages"],
    },
    "tech": {
        "traits": ["analytical", "methodical", "inventive", "direct", "patient"],
        "interests": ["open source software", "robotics", "machine learning",
                      "home automation", "math puzzles", "startups"],
        "values": ["learning", "precision", "building useful things"],
        "style": ["precise technical explanations", "links to papers and repos"],
    },
}


@dataclass(frozen=True)
class Persona:
    user_id: str
    name: str
    cluster: str


def make_personas(count: int, seed: int) -> list[Persona]:
    """``count`` users spread round-robin over the clusters, ids stable for a seed."""
    rng = random.Random(seed)
    names = list(CLUSTERS)
    out = []
    for i in range(count):
        cluster = names[i % len(names)]
        user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        out.append(Persona(user_id, f"{cluster}-{i:03d}", cluster))
    return out


def _insight(cluster: str, rng: random.Random) -> ParticipantInsight:
    vocab = CLUSTERS[cluster]
    # Mostly the cluster's vocabulary, with one item borrowed from another cluster.
    other = CLUSTERS[rng.choice([c for c in CLUSTERS if c != cluster])]
    return ParticipantInsight(
        traits=tuple(rng.sample(vocab["traits"], 3)),
        interests=tuple(rng.sample(vocab["interests"], 3) + rng.sample(other["interests"], 1)),
        values=tuple(rng.sample(vocab["values"], 2)),
        communication_style=rng.choice(vocab["style"]),
    )


def write_insights(store: InsightStore, personas: list[Persona], *, seed: int,
                   now: datetime, chats_per_user: int = 2) -> int:
    """Write each persona's chats (one participant each) and their chat indexes."""
    rng = random.Random(seed + 1)
    written = 0
    for persona in personas:
        for c in range(chats_per_user):
            digest = hashlib.sha256(f"{persona.user_id}/{c}".encode()).hexdigest()[:16]
            at = now - timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 600))
            doc = ChatInsights(chat_hash=digest, updated_at=at,
                               participants=(persona.user_id,),
                               insights={persona.user_id: _insight(persona.cluster, rng)})
            store.put_chat_insights(doc, at)
            written += 1
    return written
