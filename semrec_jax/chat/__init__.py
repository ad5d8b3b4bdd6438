"""Use a trained workdir: the Python API (Recommender) and the chat command (python -m
semrec_jax.chat)."""

from semrec_jax.chat.items import AmbiguousItem, Item, UnknownItem
from semrec_jax.chat.recommender import Bundle, Explanation, Recommender
from semrec_jax.chat.requests import NothingMatches
from semrec_jax.chat.session import Reply, Session
