"""The near-duplicate filter: embed a question's text + code, reject at cosine >= threshold to any accepted one.

GASP compares every new lemma/lift with every previously accepted question (a global buffer) and rejects
near-copies (cosine >= 0.95 in the paper); without it, question similarity rises sharply late in
training (mode collapse). The paper does not name its embedder, so the embedder is pluggable:

* :class:`HashedNgramEmbedder` (default, no dependencies): character 3/4/5-grams and word tokens hashed
  into ``dim`` signed buckets, sublinear term frequency (1 + log tf). No IDF: IDF weights would drift as
  the buffer grows and every stored vector would have to be recomputed.
* :class:`TransformerEmbedder` (neural, in JAX): mean-pooled final hidden states of a decoder from
  ``gasp_jax.models``: the policy's own weights (frozen at the first use, so embeddings of old and new
  questions stay comparable) or a local HF checkpoint.

:class:`DedupIndex` holds the L2-normalised vectors in one preallocated matrix that grows by doubling
(amortised O(1) appends), so a search for a batch of Q candidates is one ``[Q, dim] x [dim, N]`` matmul
over the filled rows. Candidates are also compared with each other (a teacher that writes the same task
twice in one step gets one of them flagged).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax import models

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.95


class Embedder(Protocol):
    """Texts -> ``[N, dim]`` float32 vectors (need not be normalised; zero rows mean "no content")."""

    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def question_text(record: Mapping[str, Any]) -> str:
    """What is embedded for a task: its message (the question) and its code, as the paper describes."""
    imports = "\n".join(record.get("imports") or [])
    return f"{record.get('message', '')}\n{imports}\n{record.get('snippet', '')}".strip()


# ----------------------------------------------------------------------------------------------
# Dependency-free default

_WORD = re.compile(r"[A-Za-z_]+|\d+|[^\sA-Za-z_\d]")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads a polynomial hash over all 64 bits (stable across processes)."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _ngram_hashes(codes: np.ndarray, n: int, salt: int) -> np.ndarray:
    """Hashes of every length-n window of an int array (vectorised polynomial hash + mix)."""
    if codes.size < n:
        return np.zeros(0, np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(codes, n)
    h = np.full(windows.shape[0], np.uint64(salt * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * np.uint64(1099511628211) + windows[:, j]
    return _mix64(h)


@dataclasses.dataclass
class HashedNgramEmbedder:
    """Signed feature hashing of char n-grams and word tokens, sublinear TF; deterministic everywhere.

    Whitespace runs are collapsed and text is lower-cased first, so re-indenting or re-spacing a copy
    does not hide it. Word tokens get ``word_weight`` relative to each n-gram order.
    """

    dim: int = 512
    ngram_sizes: tuple[int, ...] = (3, 4, 5)
    word_weight: float = 1.0

    def _features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        text = " ".join(text.lower().split())
        codes = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.uint64)
        hashes = [_ngram_hashes(codes, n, salt=n) for n in self.ngram_sizes]
        weights = [np.ones(h.size) for h in hashes]
        words = _WORD.findall(text)
        if words:
            # Whole-word features: crc32 of each word (stable across processes), mixed to 64 bits.
            word_h = np.fromiter((zlib.crc32(w.encode()) for w in words), np.uint64, len(words))
            hashes.append(_mix64(word_h + np.uint64(0x51ED270B27B4C5E3)))
            weights.append(np.full(len(words), self.word_weight))
        if not hashes:
            return np.zeros(0, np.int64), np.zeros(0)
        h = np.concatenate(hashes)
        w = np.concatenate(weights)
        bucket = (h % np.uint64(self.dim)).astype(np.int64)
        sign = np.where((h >> np.uint64(63)) == 1, -1.0, 1.0)
        return bucket, sign * w

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            bucket, value = self._features(text)
            if bucket.size == 0:
                continue
            # Sublinear TF per (feature hash): count collisions of the same feature, then 1 + log tf.
            tf = np.bincount(bucket, weights=value, minlength=self.dim)
            out[i] = np.sign(tf) * np.log1p(np.abs(tf))
        return out


# ----------------------------------------------------------------------------------------------
# Neural embedder (JAX)


class TransformerEmbedder:
    """Mean-pooled final hidden states of a ``gasp_jax.models`` decoder (one jitted forward per batch).

    Texts are tokenised, cut to ``max_tokens`` and right-padded to a bucket; causal attention means the
    padding never changes the hidden states of real tokens, so pooling over the real positions is exact.
    The params are whatever is passed in: pass a frozen copy (``frozen_copy``) of the policy, not the live
    params, so that embeddings stay comparable as the policy trains.
    """

    def __init__(self, model: Any, params: Any, tokenizer: Any, *, max_tokens: int = 512, batch_size: int = 16):
        self.model = model
        self.params = params
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.dim = int(model.config.hidden_size)

        def pooled(params, tokens, mask):
            hidden = model.apply({"params": params}, tokens, return_hidden=True).astype(jnp.float32)
            weights = mask[..., None].astype(jnp.float32)
            return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)

        self._pooled = jax.jit(pooled)

    @staticmethod
    def frozen_copy(params: Any) -> Any:
        """A device copy of ``params`` that later (donating) updates of the policy cannot touch."""
        return jax.tree.map(jnp.copy, params)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            ids = [list(self.tokenizer.encode(t, add_special_tokens=False))[: self.max_tokens] or [0] for t in chunk]
            length = max(len(x) for x in ids)
            bucket = min(self.max_tokens, 1 << max(5, (length - 1).bit_length()))  # few compiled shapes
            tokens = np.zeros((self.batch_size, bucket), np.int32)
            mask = np.zeros((self.batch_size, bucket), np.int32)
            for row, x in enumerate(ids):
                tokens[row, : len(x)] = x
                mask[row, : len(x)] = 1
            pooled = np.asarray(self._pooled(self.params, tokens, mask))
            out[start : start + len(chunk)] = pooled[: len(chunk)]
        return out


# ----------------------------------------------------------------------------------------------
# The index


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class DedupResult:
    """Per candidate: the best cosine to the index (or to an earlier candidate) and whom it matched."""

    duplicate: np.ndarray  # bool [Q]
    similarity: np.ndarray  # float32 [Q]: max cosine over the index and earlier kept candidates
    match: list[str | None]  # the id of the closest accepted question (or "batch:<j>" for candidate j)


class DedupIndex:
    """Unit vectors of every accepted question in one preallocated ``[capacity, dim]`` matrix.

    ``search`` is one matmul over the filled rows; ``add`` writes rows in place and doubles the capacity
    when full (rounded to ``block_rows``), so appends cost amortised O(dim).
    """

    def __init__(self, dim: int, *, threshold: float = DEFAULT_THRESHOLD, block_rows: int = 4096):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"dedup threshold must be in (0, 1], got {threshold}")
        self.dim = int(dim)
        self.threshold = float(threshold)
        self.block_rows = int(block_rows)
        self._matrix = np.zeros((self.block_rows, self.dim), np.float32)
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def capacity(self) -> int:
        return self._matrix.shape[0]

    def _reserve(self, rows: int) -> None:
        need = len(self._ids) + rows
        if need <= self.capacity:
            return
        new_cap = max(need, 2 * self.capacity)
        new_cap = -(-new_cap // self.block_rows) * self.block_rows
        grown = np.zeros((new_cap, self.dim), np.float32)
        grown[: len(self._ids)] = self._matrix[: len(self._ids)]
        self._matrix = grown

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        vectors = normalize_rows(np.atleast_2d(vectors))
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected {len(ids)} vectors of dim {self.dim}, got {vectors.shape}")
        self._reserve(len(ids))
        n = len(self._ids)
        self._matrix[n : n + len(ids)] = vectors
        self._ids.extend(str(i) for i in ids)

    def remove(self, ids: Sequence[str]) -> None:
        """Drops the rows of `ids` (ids not in the index are ignored); the others keep their order."""
        gone = set(map(str, ids))
        if not gone.intersection(self._ids):
            return
        keep = [i for i, qid in enumerate(self._ids) if qid not in gone]
        self._matrix[: len(keep)] = self._matrix[keep]
        self._matrix[len(keep): len(self._ids)] = 0.0
        self._ids = [self._ids[i] for i in keep]

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """Cosine ``[Q, N]`` between (normalised) queries and every indexed vector: one matmul."""
        q = normalize_rows(np.atleast_2d(queries))
        return q @ self._matrix[: len(self._ids)].T

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(max cosine ``[Q]``, argmax row ``[Q]`` or -1 when the index is empty)."""
        q = np.atleast_2d(queries)
        if not self._ids:
            return np.full(q.shape[0], -1.0, np.float32), np.full(q.shape[0], -1, np.int64)
        sims = self.similarities(q)
        best = sims.argmax(axis=1)
        return sims[np.arange(sims.shape[0]), best].astype(np.float32), best

    def check(self, queries: np.ndarray, *, usable: Sequence[bool] | None = None) -> DedupResult:
        """Flag candidates at cosine >= threshold to the index or to an earlier usable candidate.

        ``usable[i] = False`` (e.g. a proposal that failed validation) takes no part in the in-batch
        comparison, so an invalid proposal never makes a later valid one a "duplicate".
        """
        q = normalize_rows(np.atleast_2d(queries))
        n = q.shape[0]
        usable = np.ones(n, bool) if usable is None else np.asarray(usable, bool)
        sim, row = self.search(q)
        match: list[str | None] = [self._ids[r] if r >= 0 else None for r in row]
        dup = sim >= self.threshold
        within = q @ q.T
        kept: list[int] = []
        for i in range(n):
            if usable[i] and not dup[i] and kept:
                j = max(kept, key=lambda k: within[i, k])
                if within[i, j] > sim[i]:
                    sim[i], match[i] = within[i, j], f"batch:{j}"
                dup[i] = within[i, j] >= self.threshold
            if usable[i] and not dup[i]:
                kept.append(i)
        # A zero vector (no content) has cosine 0 to everything: never a duplicate by similarity.
        return DedupResult(dup & usable, sim, match)


# ----------------------------------------------------------------------------------------------
# Copies of the goalpost statement

_WORDS_ONLY = re.compile(r"[a-z0-9]+")


def _shingles(text: str, size: int) -> set[tuple[str, ...]]:
    words = _WORDS_ONLY.findall(text.lower())
    return {tuple(words[i : i + size]) for i in range(max(0, len(words) - size + 1))}


def copied_fraction(proposal_text: str, statement: str, *, shingle_words: int = 8) -> float:
    """The fraction of the statement's word ``shingle_words``-grams that reappear in the proposal.

    1.0 for a verbatim copy (whatever the surrounding text and spacing), ~0 for an original task.
    """
    reference = _shingles(statement, shingle_words)
    if not reference:
        return 0.0
    return len(reference & _shingles(proposal_text, shingle_words)) / len(reference)


def build_embedder(cfg: Any, *, model: Any = None, params: Any = None, tokenizer: Any = None) -> Embedder:
    """The embedder named by ``config.dedup.embedder`` ("hashed" | "policy" | "encoder")."""
    kind = cfg.get("embedder", "hashed")
    if kind == "hashed":
        return HashedNgramEmbedder(dim=int(cfg.get("dim", 512)))
    if kind == "policy":
        if model is None or params is None or tokenizer is None:
            raise ValueError("dedup.embedder='policy' needs the policy's model, params and tokenizer")
        return TransformerEmbedder(model, TransformerEmbedder.frozen_copy(params), tokenizer,
                                   max_tokens=int(cfg.get("max_tokens", 512)), batch_size=int(cfg.get("batch_size", 16)))
    if kind == "encoder":
        path = cfg.get("encoder_path", "")
        if not path:
            raise ValueError("dedup.embedder='encoder' needs dedup.encoder_path (a local HF checkpoint directory)")
        enc_model, enc_params = models.load_hf(path, dtype=cfg.get("encoder_dtype", "float32"))
        return TransformerEmbedder(enc_model, enc_params, models.load_tokenizer(path),
                                   max_tokens=int(cfg.get("max_tokens", 512)), batch_size=int(cfg.get("batch_size", 16)))
    raise ValueError(f"unknown dedup.embedder {kind!r}; expected 'hashed', 'policy' or 'encoder'")
