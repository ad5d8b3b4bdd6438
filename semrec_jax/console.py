"""What a person sees in the terminal: our own short lines and progress bars; third-party INFO and
warnings go to a log file instead (all of it stays on the terminal with --verbosity=0 or higher).

`setup()` is called once by each command after flags are parsed; `say()` prints a line (on the
primary process only); `Progress` is a bar with ETA on a terminal and a line every quarter or minute
when the output is a file or a pipe.
"""

import atexit
import difflib
import logging as py_logging
import os
import sys
import time

from absl import flags, logging

from semrec_jax import backend, multihost, storage

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class _OursOrSevere(py_logging.Filter):
  """Lets our own warnings and everyone's errors through to the terminal."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.ERROR:
      return True
    return record.levelno >= py_logging.WARNING and record.pathname.startswith(_PACKAGE)


def setup(log_path: str | None = None) -> None:
  """Quiets the terminal unless --verbosity was given; keeps every INFO line in `log_path`."""
  py_logging.captureWarnings(True)
  verbose = "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  if not verbose and not any(isinstance(f, _OursOrSevere) for f in handler.filters):
    handler.addFilter(_OursOrSevere())
  root = py_logging.getLogger()
  if handler not in root.handlers:  # outside app.run (tests, the Python API)
    root.addHandler(handler)
  if log_path:
    log_to(log_path)


def log_to(path: str) -> None:
  """Appends every INFO-or-higher record to `path` (one file per command under WORKDIR/logs). A
  log on a bucket is written locally and copied up when the command exits."""
  if storage.is_remote(path):
    mirror = storage.Mirror(os.path.dirname(path))
    atexit.register(mirror.close)
    path = os.path.join(mirror.local, os.path.basename(path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  root = py_logging.getLogger()
  if any(getattr(h, "baseFilename", None) == os.path.abspath(path) for h in root.handlers):
    return
  file_handler = py_logging.FileHandler(path, encoding="utf-8")
  file_handler.setLevel(py_logging.INFO)
  file_handler.setFormatter(py_logging.Formatter(
      "%(asctime)s %(levelname).1s %(filename)s:%(lineno)d] %(message)s"))
  root.addHandler(file_handler)


def say(message: str) -> None:
  """One line for the user (and the log file)."""
  logging.info("%s", message)
  if multihost.is_primary():
    print(message, flush=True)


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds} s"
  if seconds < 3600:
    return f"{seconds // 60} min {seconds % 60:02d} s"
  return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
  """A progress bar for a loop of `total` steps: `update(done, text)` after each step."""

  def __init__(self, label: str, total: int, start: int = 0, stream=None):
    self.label, self.total, self.start = label, max(1, total), start
    self.stream = stream or sys.stdout
    self.tty = self.stream.isatty()
    self.began = self.last = time.time()
    self.last_quarter = start * 4 // self.total
    self.shown = multihost.is_primary()

  def eta(self, done: int) -> str:
    rate = (done - self.start) / max(time.time() - self.began, 1e-9)
    return duration((self.total - done) / rate) if rate > 0 else "?"

  def update(self, done: int, text: str = "") -> None:
    if not self.shown:
      return
    now, quarter = time.time(), done * 4 // self.total
    line = (f"{self.label} {done}/{self.total} ({100 * done // self.total}%)"
            f"{', ' + text if text else ''}, {self.eta(done)} left")
    if self.tty:
      width = 24
      bar = "#" * (width * done // self.total) + "." * (width - width * done // self.total)
      self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total}"
                        f"{' ' + text if text else ''} ETA {self.eta(done)}\033[K")
      self.stream.flush()
    elif quarter > self.last_quarter or now - self.last >= 60:
      self.last_quarter, self.last = quarter, now
      print(line, file=self.stream, flush=True)
    logging.log_every_n_seconds(logging.INFO, "%s", 10, line)

  def close(self, text: str = "") -> None:
    if self.shown and self.tty:
      self.stream.write("\r\033[K")
      self.stream.flush()
    if text:
      say(text)


def _fields(config, prefix: str = "") -> dict:
  """Every leaf of a ConfigDict as {"section.field": value}."""
  out = {}
  for key, value in config.items():
    if hasattr(value, "items") and not isinstance(value, dict):
      out.update(_fields(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_help(config) -> str:
  """The config fields and their defaults, for --helpfull."""
  return "\n".join(f"  --config.{k}={v!r}" for k, v in _fields(config).items())


def flag_error(error: Exception, argv: list[str], config) -> str:
  """One or two lines for a command line that does not parse: an unknown --config field gets
  the nearest valid name."""
  fields = list(_fields(config))
  if isinstance(error, (AttributeError, KeyError)):
    for arg in argv:
      if arg.startswith("--config."):
        name = arg[len("--config."):].split("=", 1)[0]
        if name not in fields:
          near = difflib.get_close_matches(name, fields, n=1, cutoff=0.0)
          return (f"unknown config field --config.{name}" +
                  (f"; did you mean --config.{near[0]}?" if near else ""))
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  return " ".join(lines[:2]) or type(error).__name__


def parse_flags(argv: list[str], config=None) -> list[str]:
  """absl's flag parsing, with a one-line error (no traceback) for a bad command line. Every
  command parses its flags here first, so this is also where the JAX platform is chosen."""
  backend.choose()
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except: ml_collections raises several kinds
    if config is None:
      from semrec_jax import defaults  # pylint: disable=import-outside-toplevel
      config = defaults.base_config()
    sys.exit(f"error: {flag_error(e, argv, config)} (see --helpfull)")


def config_value(holder):
  """The parsed --config, or exit with one line when its file does not load."""
  try:
    value = holder.value
    value.to_dict()  # a file that failed to load raises here
    return value
  except (OSError, SyntaxError, AttributeError, ImportError) as e:
    detail = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
    sys.exit(f"error: cannot load --config={flags.FLAGS['config'].config_filename}: {detail}")
