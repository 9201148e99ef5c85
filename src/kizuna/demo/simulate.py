"""One demo customer's three-year history, simulated in plain Python (no database).

`simulate_customer` turns a seeded `random.Random` into a `Story` (kizuna.demo.plan): who the
customer is (.people), what they bought (.purchases), and everything around it (.engagement).
kizuna.demo.rows then turns the story into database rows. Keeping the two apart keeps the
assumptions readable and lets the story be checked without a database.
"""

from __future__ import annotations

import random

from kizuna.demo import engagement
from kizuna.demo.people import draw_profile
from kizuna.demo.plan import Calendar, Story
from kizuna.demo.purchases import simulate_purchases, year_end_campaigns

_MASK64 = (1 << 64) - 1


def customer_rng(seed: int, index: int) -> random.Random:
    """The random stream of the index-th customer (0-based) of a build.

    One stream per customer rather than one per chunk: a chunk is still a pure function of
    (seed, chunk index), and on top of that the data does not depend on chunk_size.
    """
    return random.Random(((seed & _MASK64) << 40) | index)


def simulate_customer(rng: random.Random, cal: Calendar, index: int, customer_id: int) -> Story:
    st = Story(profile=draw_profile(rng, cal, index, customer_id))
    simulate_purchases(rng, cal, st)
    year_end_campaigns(rng, cal, st)
    st.orders.sort(key=lambda order: order.at)
    engagement.membership(rng, cal, st)
    engagement.consents(rng, cal, st)
    engagement.inquiries(rng, cal, st)
    st.contacts.sort(key=lambda contact: contact.at)
    engagement.messages(rng, cal, st)
    engagement.behaviour(rng, cal, st)
    return st
