"""The `report` stage: what the run made, in one place.

Output in WORKDIR/report/: summary.txt (the lines `semrec_jax.main` prints at the end: data,
semantic-ID quality, every model's Recall@10 / NDCG@10, steering with and without a request, and
three live examples from the trained LM through the Python API), report.md (the same with
figures), report.html (figures inline) and the PNGs: LM loss curves, code usage per level, model
metrics, steering lift.
"""

import base64
import os
import re

from semrec_jax import storage
from semrec_jax.data import tfds_builders
from semrec_jax.lm import phrasing
from semrec_jax.report import plots, summary


def examples(workdir: str, config) -> list[str]:
  """Three real exchanges with the trained LM: a test user's history and the top 5, the same
  history with a request in words, and why the first pick was made."""
  from semrec_jax.chat import Recommender  # pylint: disable=import-outside-toplevel
  rec = Recommender.from_workdir(workdir)
  records = tfds_builders.read_all(tfds_builders.sequences_source(os.path.join(workdir, "data"), "test"))
  user = next((r for r in records if len(r["history"]) >= 3), records[0])
  history = [int(i) for i in user["history"]][-min(3, rec.max_history):]
  titles = lambda items: [f"  {n}. {item.line()}" for n, item in enumerate(items, 1)]
  top = rec.recommend(history, k=5)
  out = ["example 1  a test user's last items and the LM's top 5:",
         "  history: " + "; ".join(rec.catalog.titles[i] for i in history)] + titles(top)
  held = rec.catalog.values["platform"][history[-1]]
  wanted = next((v for v in rec.catalog.value_counts("platform") if v not in held), None)
  if wanted:
    request = phrasing.constraint("platform", wanted)
    out += [f'example 2  the same history, asked for "{request}":'] + titles(
        rec.recommend(history, text=request, k=5))
  n, pick = next(((n, item) for n, item in enumerate(top, 1)
                  if any(rec.true_reasons(item.index, h) for h in history)), (1, top[0]))
  e = rec.explain(history, pick.index)
  checks = ", ".join(f"{value} {'true' if ok else 'NOT true'}" for _, value, ok in e.claims)
  out += [f"example 3  why #{n}?", f"  {pick.title}: {e.text}" +
          (f" (checked: {checks})" if checks else "")]
  return out


def report(config, workdir: str, out_dir: str) -> list[str]:
  found = summary.collect(workdir)
  shown = summary.lines(workdir, found, examples(workdir, config) if found["eval"] else [])
  figures = {
      "LM loss": plots.loss_curves(found["lm"] or [], os.path.join(out_dir, "lm_loss.png")),
      "models": plots.model_bars(found, os.path.join(out_dir, "models.png")),
      "steering": plots.steering_bars(found["eval"], os.path.join(out_dir, "steering.png")),
  }
  usage = os.path.join(workdir, "ids", "code_usage.png")
  if storage.path(usage).is_file():
    copied = os.path.join(out_dir, "code_usage.png")
    storage.path(usage).copy(storage.path(copied), overwrite=True)
    figures["semantic-ID code usage per level"] = copied
  figures = {k: v for k, v in figures.items() if v}
  shown.append(f"report     {os.path.join(workdir, 'report', 'report.md')} (and report.html)")
  storage.write_text(os.path.join(out_dir, "summary.txt"), "\n".join(shown) + "\n")
  body = ["# semrec_jax run report", "", f"Workdir `{workdir}`.", "", "```", *shown[:-1], "```",
          ""]
  for title, path in figures.items():
    body += [f"## {title}", "", f"![{title}]({os.path.basename(path)})", ""]
  storage.write_text(os.path.join(out_dir, "report.md"), "\n".join(body))
  storage.write_text(os.path.join(out_dir, "report.html"), _html(body, out_dir))
  return shown


def _html(markdown: list[str], folder: str) -> str:
  """The report as one HTML file with the PNGs inline (base64)."""
  html, in_code = ["<!doctype html><meta charset='utf-8'><title>semrec_jax report</title>",
                   "<body style='font-family:sans-serif;max-width:60em;margin:auto'>"], False
  for line in markdown:
    escaped = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if line == "```":
      html.append("</pre>" if in_code else "<pre>")
      in_code = not in_code
    elif in_code:
      html.append(escaped)
    elif (m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line)):
      data = storage.path(os.path.join(folder, m.group(2))).read_bytes()
      data = base64.b64encode(data).decode()
      html.append(f"<img alt='{m.group(1)}' src='data:image/png;base64,{data}' width='100%'>")
    elif line.startswith("## "):
      html.append(f"<h2>{escaped[3:]}</h2>")
    elif line.startswith("# "):
      html.append(f"<h1>{escaped[2:]}</h1>")
    elif line:
      html.append(f"<p>{escaped}</p>")
  return "\n".join(html + ["</body>"])
