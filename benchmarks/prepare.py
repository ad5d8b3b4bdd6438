r"""Wall time, rows/s and peak memory of the `prepare` stage; prints one JSON line.

  python benchmarks/prepare.py --path=/path/to/amazon18_games [--format=games_tsv]

Target (issue 2): under 60 s for the Games data on a 2-core CPU machine.
"""

import json
import os
import platform
import resource
import tempfile
import time

from absl import app, flags

from semrec_jax import backend, defaults
from semrec_jax.data.prepare import prepare

_PATH = flags.DEFINE_string("path", None, "Raw data folder (e.g. the Games files, README 'Real data').",
                            required=True)
_FORMAT = flags.DEFINE_string("format", "games_tsv", "config.data.format")


def main(argv):
  del argv
  config = defaults.base_config()
  config.data.format, config.data.path = _FORMAT.value, os.path.abspath(_PATH.value)
  with tempfile.TemporaryDirectory() as out_dir:
    start = time.perf_counter()
    stats = prepare(config, out_dir)
    seconds = time.perf_counter() - start
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({
      "benchmark": "prepare", "format": _FORMAT.value, "data": os.path.basename(_PATH.value),
      "interactions": stats["num_interactions"], "users": stats["num_users"],
      "items": stats["num_items"], "seconds": round(seconds, 2),
      "rows_per_s": round(stats["num_interactions"] / seconds),
      "peak_rss_mb": round(peak_mb), "device": f"cpu ({os.cpu_count()} cores, "
                                              f"{platform.processor() or platform.machine()})",
  }))


if __name__ == "__main__":
  backend.choose()
  app.run(main)
