"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2 and its successors, from scratch.

Taught in chapter 11 (language models the way large-model companies build them). Text becomes
UTF-8 bytes, so the 256 byte values are the first 256 token ids and any string can be encoded:
English, Chinese, emoji, code. Training then adds one token per *merge*: the most frequent pair of
adjacent tokens becomes a new token, 256 + k for the k-th merge, until the vocabulary has the
size asked for.

- :data:`SPLIT_PATTERN` and :func:`pretokenize` cut a text into chunks (words, numbers, runs of
  punctuation, spaces) before any counting, as GPT-2 does: merges never cross a chunk boundary.
- :func:`merge_pair` replaces every occurrence of one pair in a list of ids.
- :func:`train_bpe` learns the merges; :class:`ByteBPE` encodes, decodes and shows tokens.

The Hugging Face ``tokenizers`` library reproduces the same chunks with
``pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")`` followed by
``pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)``; chapter 11 trains both on
the same text and compares them.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict

# GPT-2's pre-tokenisation, written for Python's `re` (which has no \p{L}): "letters" are the word
# characters that are not digits, [^\W\d] (so `_` counts as a letter). Alternatives, tried in order:
#   's 't 're 've 'm 'll 'd    English contractions
#    ?[^\W\d]+                 a word, with the one space before it
#    ?\d+                      a number, with the one space before it
#    ?[^\s\w]+                 a run of punctuation or symbols (emoji too), with the one space before it
#   \s+(?!\S)                  spaces, except the last one before a word (which joins the word)
#   \s+                        the remaining spaces
# Every character is a space (\s), a word character (\w: digit or not) or neither, so the chunks
# always add up to the whole text.
SPLIT_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+"


def pretokenize(text: str, pattern: str = SPLIT_PATTERN) -> list[str]:
    """Cut ``text`` into the chunks that BPE works inside: ``"".join(chunks) == text``.

    With :data:`SPLIT_PATTERN`, English gives words with their leading space
    (``"Hello world!"`` -> ``["Hello", " world", "!"]``). Chinese has no spaces and Python's
    ``\\w`` matches Han characters, so a chunk of Chinese is a run of characters between two
    punctuation marks, a clause: ``"床前明月光，疑是地上霜。"`` -> ``["床前明月光", "，", "疑是地上霜", "。"]``.
    Merges can then join the bytes of a character, and characters into words, but never a
    character with the punctuation after it.

    Defined in chapter 11.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}; decode bytes first, "
                        f"e.g. data.decode('utf-8')")
    return re.findall(pattern, text)


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair`` replaced by ``new_id``, scanning left to right.

    Occurrences do not overlap: with ``pair = (a, a)``, ``[a, a, a]`` becomes ``[new_id, a]``.

    Defined in chapter 11.
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2  # both ids of the pair are used up
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(text: str, vocab_size: int, pattern: str = SPLIT_PATTERN) -> list[tuple[int, int]]:
    """Learn ``vocab_size - 256`` merges on ``text``: the ordered list of merged pairs of ids.

    The text is cut into chunks (:func:`pretokenize`) and each distinct chunk w, with frequency
    f(w), starts as its UTF-8 bytes. The count of a pair of ids (a, b) is the number of adjacent
    positions where it occurs, over all chunks:

        c(a, b) = sum_w f(w) * #{i : w_i = a and w_(i+1) = b}

    (overlaps count: the chunk ``"aaa"`` counts (a, a) twice). Merge k (k = 0, 1, ...) takes the
    pair with the largest count, and among equal counts the smallest pair, comparing a first and
    then b; it becomes token 256 + k and replaces the pair in every chunk (:func:`merge_pair`).
    So the result depends on the text only, never on dictionary order or on the run.

    The chunks are counted once; after each merge only the chunks that contain the merged pair
    are updated, and the pair counts with them, and a heap finds the most frequent pair without
    looking at all of them, so training on tiny Shakespeare (1.1 MB) to ``vocab_size=768`` takes
    seconds, not hours. Raises ``ValueError`` when ``vocab_size < 256`` or when the text runs out
    of pairs before the vocabulary is full.

    Defined in chapter 11.
    """
    if not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"vocab_size must be an int of at least 256 (the byte tokens), got {vocab_size!r}; "
                         f"ask for 256 + the number of merges you want")
    chunk_freq = Counter(pretokenize(text, pattern))  # distinct chunk -> f(w), counted once
    words = [list(chunk.encode("utf-8")) for chunk in chunk_freq]  # each chunk as its byte ids
    freqs = list(chunk_freq.values())
    counts: Counter[tuple[int, int]] = Counter()  # c(a, b)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunks that may hold it
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            counts[pair] += f
            where[pair].add(w)

    # A heap of (-count, pair): its smallest entry is the largest count, and among equal counts the
    # smallest pair. Entries are not updated in place; a count can only fall (or a pair appear), so an
    # entry whose count is out of date is filed again under its true count when it reaches the top.
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    merges = []
    for k in range(vocab_size - 256):
        best = None
        while heap and best is None:
            neg_count, pair = heapq.heappop(heap)
            if counts.get(pair) == -neg_count:
                best = pair  # up to date: the most frequent pair
            elif pair in counts:
                heapq.heappush(heap, (-counts[pair], pair))  # out of date: file it under its true count
        if best is None:
            raise ValueError(f"the text gives only {k} merges (every chunk is a single token by then); "
                             f"ask for vocab_size <= {256 + k} or train on more text")
        new_id = 256 + k
        merges.append(best)
        new_pairs = set()  # pairs with new_id: they did not exist before this merge
        for w in where.pop(best):
            word, f = words[w], freqs[w]
            new_word = merge_pair(word, best, new_id)
            # Take the chunk's old pairs out of the counts and put its new pairs in: exact counts,
            # touching only the chunks that held `best`.
            for pair in zip(word, word[1:]):
                counts[pair] -= f
                if counts[pair] == 0:
                    del counts[pair]  # the pair no longer occurs anywhere
            for pair in zip(new_word, new_word[1:]):
                counts[pair] += f
                where[pair].add(w)  # stale entries (pairs merged away) only cost a wasted look
                if new_id in pair:
                    new_pairs.add(pair)
            words[w] = new_word
        for pair in new_pairs:
            heapq.heappush(heap, (-counts[pair], pair))
    return merges


class ByteBPE:
    """A byte-level BPE tokenizer: ``merges`` (learned by :func:`train_bpe`) and a split pattern.

    Token ids 0..255 are the bytes; id 256 + k is merge k, ``merges[k] = (a, b)``, whose bytes are
    ``vocab[a] + vocab[b]``. Encoding cuts the text into chunks like training did, and in each
    chunk applies the merges in the order they were learned (always the learned pair with the
    smallest k first), so a chunk seen in training gets the tokens training gave it. Every str
    that UTF-8 can encode round-trips: ``decode(encode(s)) == s``. Decoding joins the tokens'
    bytes and decodes them with ``errors="replace"``: a sequence that cuts a character's bytes
    apart (a model's sample may) gives U+FFFD characters instead of an error.

    ``len(tok)`` is the vocabulary size V = 256 + ``len(merges)``.

    Defined in chapter 11.
    """

    def __init__(self, merges: list[tuple[int, int]], pattern: str = SPLIT_PATTERN) -> None:
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self.vocab = {i: bytes([i]) for i in range(256)}  # id -> bytes
        for k, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(f"merge {k} = {(a, b)} uses an id that does not exist yet (ids 0 to {255 + k} do): "
                                 f"merges must come in the order they were learned")
            self.vocab[256 + k] = self.vocab[a] + self.vocab[b]
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}  # pair -> k, the merge's rank
        self.cache: dict[str, list[int]] = {}  # chunk -> ids, filled by encode

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = SPLIT_PATTERN) -> ByteBPE:
        """The tokenizer of :func:`train_bpe`'s merges on ``text``, with ``vocab_size`` tokens."""
        return cls(train_bpe(text, vocab_size, pattern), pattern)

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"ByteBPE({len(self)} tokens: 256 bytes + {len(self.merges)} merges)"

    def encode_chunk(self, chunk: str) -> list[int]:
        """The ids of one chunk: its bytes, merged by rank until no learned pair is left."""
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            # The adjacent pair learned first (smallest rank); unknown pairs rank last.
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, len(self.ranks)))
            if pair not in self.ranks:
                break  # no adjacent pair was ever merged: done
            ids = merge_pair(ids, pair, 256 + self.ranks[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, a list of ints in ``range(len(self))``.

        Each distinct chunk is encoded once and kept in ``self.cache``: a text repeats its words.
        """
        ids = []
        for chunk in pretokenize(text, self.pattern):
            if chunk not in self.cache:
                self.cache[chunk] = self.encode_chunk(chunk)
            ids.extend(self.cache[chunk])
        return ids

    def decode(self, ids) -> str:
        """The text of a sequence of ids (list, NumPy array, CPU tensor); bad UTF-8 becomes U+FFFD."""
        try:
            data = b"".join(self.vocab[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(f"id {err.args[0]} is not a token: ids run from 0 to {len(self) - 1}") from None
        return data.decode("utf-8", errors="replace")

    def token_strings(self, ids) -> list[str]:
        """Each token as text, to show a tokenization side by side with its ids.

        A token that holds only part of a character's bytes (Chinese characters take 3, emoji 4)
        shows those bytes as escapes: ``'\\xe5\\xba'``.
        """
        return [self.vocab[int(i)].decode("utf-8", errors="backslashreplace") for i in ids]

    def bytes_per_token(self, text: str) -> float:
        """UTF-8 bytes of ``text`` per token: 1.0 with no merges, higher means better compression."""
        ids = self.encode(text)
        if not ids:
            raise ValueError("bytes_per_token of an empty text is undefined: pass some text")
        return len(text.encode("utf-8")) / len(ids)
