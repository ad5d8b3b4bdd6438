"""An in-memory Cloud Storage emulator that every client of a `gs://` workdir can talk to.

Each client is pointed at it by its own variable (`environment`): gcsfs, behind etils.epath (JSON,
TFDS metadata, figures, logs); TensorStore (Orbax's arrays); google-cloud-cpp (ArrayRecord's
reader). To try a bucket workdir by hand:

  python -m tests.gcs_emulator --port=9023   # prints the variables to export, serves until Ctrl-C
"""

import socket
from http import HTTPStatus
import sys

from gcp_storage_emulator import server as emulator

BUCKET = "semrec-test"


def _with_generation_headers():
  """Media downloads from Cloud Storage carry the object's `x-goog-generation` header, which
  TensorStore reads (OCDBT's conditional manifest writes); the emulator leaves it out."""
  from gcp_storage_emulator.handlers import objects  # pylint: disable=import-outside-toplevel
  original = objects.download
  if getattr(original, "adds_generation", False):
    return

  def download(request, response, storage, *args, **kwargs):
    original(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # pylint: disable=broad-except  (not found: the 404 is already set)
      return
    response["x-goog-generation"] = obj["generation"]
    response["x-goog-metageneration"] = obj["metageneration"]

  download.adds_generation = True
  objects.download = download  # objects.get (alt=media) calls it by this name
  emulator.HANDLERS = tuple(
      (route, {method: download if fn is original else fn for method, fn in fns.items()})
      for route, fns in emulator.HANDLERS)


def _with_move_to():
  """Same-bucket moves (`.../o/SRC/moveTo/o/DEST`), which gcsfs tries before copy + delete; the
  emulator answers 501 and gcsfs retries with backoff, ~30 s per move (each TFDS folder rename)."""
  # pylint: disable=import-outside-toplevel,protected-access
  from gcp_storage_emulator import settings
  from gcp_storage_emulator.exceptions import Conflict, NotFound
  from gcp_storage_emulator.handlers import objects
  if any("moveTo" in route for route, _ in emulator.HANDLERS):
    return

  def move(request, response, storage, *args, **kwargs):
    bucket, source = request.params["bucket_name"], request.params["object_id"]
    dest = request.params["dest_object_id"]
    if dest == source:  # copy + delete would lose the object
      response.status = HTTPStatus.BAD_REQUEST
      return
    try:
      moved = objects._copy(request.base_url, storage, bucket, source, bucket, dest)
      storage.delete_file(bucket, source)
    except NotFound:
      response.status = HTTPStatus.NOT_FOUND
      return
    except Conflict as err:
      objects._handle_conflict(response, err)
      return
    response.json(moved)

  routes = tuple((rf"^{prefix}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/"
                  r"(?P<dest_object_id>.*[^/]+)$", {"POST": move})
                 for prefix in (settings.API_ENDPOINT, ""))
  emulator.HANDLERS = routes + tuple(emulator.HANDLERS)


def _quiet_on_hang_ups(httpd):
  """A client that closes its connection before the whole reply is written (a reader that stops
  once it has the bytes it needs) is no fault of the emulator's: skip the traceback that
  socketserver prints for it, and print every other one as before."""
  loud = httpd.handle_error

  def handle_error(request, client_address):
    if not isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe, ConnectionReset
      loud(request, client_address)

  httpd.handle_error = handle_error


def start(port: int = 0):
  """Starts the emulator (a free port when 0) with an empty bucket BUCKET; returns (server,
  environment variables that send every client to it)."""
  _with_generation_headers()
  _with_move_to()
  if not port:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
  server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  _quiet_on_hang_ups(server._api._httpd)  # pylint: disable=protected-access
  url = f"http://127.0.0.1:{port}"
  # gcsfs's default filesystem first asks Cloud Storage's control plane (gRPC, which the emulator
  # lacks) for the bucket's layout, and google-auth's credential search pings the GCE metadata
  # server on the way: both time out here, again on every call, as an unknown layout is not cached.
  return server, {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
                  "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
                  "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
                  "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true"}


if __name__ == "__main__":
  wanted = next((int(a.split("=")[1]) for a in sys.argv[1:] if a.startswith("--port=")), 9023)
  running, variables = start(wanted)
  print("export " + " ".join(f"{k}={v}" for k, v in variables.items()))
  print(f"bucket: gs://{BUCKET}/  (Ctrl-C stops it; everything is in memory)", flush=True)
  try:
    import threading  # pylint: disable=import-outside-toplevel
    threading.Event().wait()
  except KeyboardInterrupt:
    running.stop()
