"""Tokenizers built locally (no hub), for tiny models, demos and tests.

* `build_byte_tokenizer()`: every UTF-8 byte is one token (ids 0..255) plus ChatML special tokens.
* `build_bpe_tokenizer(texts, vocab_size)`: byte-level BPE trained on `texts` (the warm start passes its
  own training rows: the shipped seed programs, LCB statements and the task prompts), so programs take
  about a third of the byte tokens; any text still encodes (the 256 bytes are in the base alphabet).
  Deterministic for the same texts and size.

Both are `transformers.PreTrainedTokenizerFast`, used exactly like a real checkpoint's tokenizer
(`encode`, `decode`, `apply_chat_template`, `save_pretrained`).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")

# ChatML, as used by Qwen2.5 instruct models.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """256 byte tokens + 4 specials (vocab 260). EOS is `<|im_end|>`, PAD is `<|pad|>`."""
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    # Order ids by byte value so id == byte for the 256 byte tokens.
    byte_to_char = {b: c for b, c in _bytes_to_unicode().items()}
    vocab = {byte_to_char[b]: b for b in range(256)}
    assert set(vocab) == set(byte_chars)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return _fast_tokenizer(core)


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with at most `vocab_size` ids (the 4 specials, the 256 bytes, then merges learnt
    from `texts`; GPT-2's pre-tokenization, so a newline and the indentation after it become one token).
    EOS, PAD and the chat template are the byte tokenizer's."""
    base = len(SPECIAL_TOKENS) + 256
    if int(vocab_size) < base:
        raise ValueError(f"bpe vocab_size must be >= {base} (specials + bytes), got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=2, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(list(texts), trainer=trainer)
    return _fast_tokenizer(core)


def _fast_tokenizer(core: Tokenizer) -> PreTrainedTokenizerFast:
    """`core` as a transformers tokenizer: EOS `<|im_end|>`, PAD `<|pad|>`, the ChatML template."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (what ByteLevel pre-tokenization emits)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars)}
