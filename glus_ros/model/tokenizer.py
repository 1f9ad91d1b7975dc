"""Tokenizers: the built-in byte-level BPE (no hub) or one read from a checkpoint directory.

The built-in one is trained, deterministically, on the project's own small vocabulary so that the
words of referring expressions are single tokens, while byte-level fallback still encodes any text.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SEG_TOKEN = "[SEG]"
IMAGE_TOKEN = "<image>"
# Reserved now so that later abilities (grounded phrases, region prompts, key-frame scores, points)
# do not change the vocabulary of models already trained.
EXTRA_SPECIAL_TOKENS = ["<p>", "</p>", "<region>", "[KEY]", "<point>", "</point>"]
BASE_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
SPECIAL_TOKENS = [*BASE_SPECIAL_TOKENS, IMAGE_TOKEN, SEG_TOKEN, *EXTRA_SPECIAL_TOKENS]

_WORDS = """
the a an this that these those it its one ones two three four five six seven eight nine ten
is are was were be been being has have had do does did can will would should could of in on at to
from by with without into onto over under above below behind between near next left right up down
top bottom middle center centre front back first last then after before while when where which who
what how many much some all both each other another same different only also and or not no yes
moves moving moved move stops stopped stop stays still static stationary turns turning turned
enters entering leaves leaving appears disappears goes going comes coming runs running walks
jumps falls rises slides rolls rotates spins bounces faster slower fast slow quickly slowly
object objects thing things item items shape shapes circle circles square squares triangle
triangles ring rings diamond diamonds star stars cross crosses bar bars disk ball box cube
red green blue yellow orange purple pink white black gray grey brown cyan magenta dark light
big bigger biggest small smaller smallest large larger largest tiny little huge long short tall
leftmost rightmost topmost upper lower closest farthest nearest furthest largest
person people man woman hand robot arm gripper cup mug bottle bowl plate spoon fork knife phone
table chair door window shelf drawer floor wall box bag book pen laptop keyboard
segment track find point show please sure count number answer question expression context query
frame frames video image scene picture camera view end start beginning finally later earlier
""".split()


def _corpus() -> list[str]:
    words = sorted(set(_WORDS))
    sentences = [" ".join(words[i:i + 8]) for i in range(0, len(words), 8)]
    return words + sentences


def build_builtin_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the project's vocabulary, special tokens first (ids 0..N-1)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=1,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )


def load_tokenizer(spec: str, checkpoint_dir: Path | None = None) -> PreTrainedTokenizerBase:
    """``builtin``, ``checkpoint`` (the tokenizer files next to the weights), ``llama_sentencepiece`` (the slow
    LLaMA tokenizer of the GLUS releases, read from the checkpoint folder as it is, nothing added) or a directory."""
    if spec == "builtin":
        return build_builtin_tokenizer()
    if spec == "llama_sentencepiece":
        from glus_ros.model.llama_tokenizer import LlamaSentencePieceTokenizer

        if checkpoint_dir is None:
            raise ValueError("this model reads the LLaMA tokenizer of its release folder: pass the checkpoint "
                             "directory (--checkpoint DIR, holding tokenizer.model and added_tokens.json)")
        return LlamaSentencePieceTokenizer(checkpoint_dir)  # type: ignore[return-value]
    folder = checkpoint_dir if spec == "checkpoint" else Path(spec)
    if folder is None:
        raise ValueError("this model reads its tokenizer from the checkpoint: pass the checkpoint directory")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"tokenizer directory {folder} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"no usable tokenizer files in {folder}: {exc}") from exc
    return ensure_special_tokens(tokenizer)


def ensure_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add [SEG], <image> and the reserved tokens when a checkpoint's tokenizer lacks them (LISA adds [SEG])."""
    missing = [t for t in [IMAGE_TOKEN, SEG_TOKEN, *EXTRA_SPECIAL_TOKENS]
               if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer
