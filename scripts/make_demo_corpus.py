#!/usr/bin/env python3
"""Regenerate the embedded demo corpus under ``data/demo/``.

Run by hand only (tests use the committed ``.zst`` files)::

    python scripts/make_demo_corpus.py                 # downloads the pinned .debs
    python scripts/make_demo_corpus.py --workdir /tmp/x  # keep/reuse downloads

Every input comes from a pinned Debian (bookworm) package, fetched with
``apt-get download NAME=VERSION`` and unpacked with ``dpkg-deb -x`` into a work
directory; nothing on the host system is read.  The selection, ordering,
formatting and part split are fully deterministic, so with the same package
versions and the same ``zstandard`` version the output is byte-identical.

Sources (one folder each, SlimPajama-like JSONL, one document per line)::

    books  Jane Austen novels (r-cran-janeaustenr) + King James Bible books (bible-kjv-text)
    code   Python 3.11 standard library modules (libpython3.11-minimal/-stdlib)
    docs   Python 3.11 documentation reST sources (python3.11-doc)
    web    fortune cookies (fortunes, fortunes-min) + FOLDOC entries (dict-foldoc)

Needs: apt-get, dpkg-deb, network access to a Debian mirror, the
``zstandard`` Python package.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "data" / "demo"

# Pinned Debian package versions (bookworm / bookworm-security).
PACKAGES = {
    "r-cran-janeaustenr": "1.0.0-1",
    "bible-kjv": "4.38",  # the `bible` retrieval program
    "bible-kjv-text": "4.38",  # the compressed KJV text it reads
    "libpython3.11-minimal": "3.11.2-6+deb12u9",
    "libpython3.11-stdlib": "3.11.2-6+deb12u9",
    "python3.11-doc": "3.11.2-6+deb12u9",
    "fortunes": "1:1.99.1-7.3",
    "fortunes-min": "1:1.99.1-7.3",
    "dict-foldoc": "20230119-1",
}

LICENSES = {
    "austen": "Public domain (text); MIT packaging (r-cran-janeaustenr)",
    "kjv": "Public domain (King James Version, 1611)",
    "python": "PSF-2.0 (Python Software Foundation License)",
    "fortunes": "BSD-4-Clause-UC (fortune-mod data files, Debian 'fortunes')",
    "foldoc": "GFDL-1.1-or-later (FOLDOC, Editor Denis Howe, https://foldoc.org/)",
}

N_PARTS = {"books": 3, "code": 3, "docs": 3, "web": 2}

# ----------------------------------------------------------------- selection
AUSTEN = [  # (R object name, title); 4 of the 6 novels to stay in budget
    ("sensesensibility", "Sense and Sensibility"),
    ("prideprejudice", "Pride and Prejudice"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
]

# (abbreviation printed by `bible -f`, full name) in canonical order.
KJV_BOOKS = [
    ("Ge", "Genesis"),
    ("Exo", "Exodus"),
    ("Lev", "Leviticus"),
    ("Num", "Numbers"),
    ("Deu", "Deuteronomy"),
    ("Josh", "Joshua"),
    ("Jdgs", "Judges"),
    ("Ruth", "Ruth"),
    ("1Sm", "1 Samuel"),
    ("2Sm", "2 Samuel"),
    ("1Ki", "1 Kings"),
    ("2Ki", "2 Kings"),
    ("1Chr", "1 Chronicles"),
    ("2Chr", "2 Chronicles"),
    ("Ezra", "Ezra"),
    ("Neh", "Nehemiah"),
    ("Est", "Esther"),
    ("Job", "Job"),
    ("Psa", "Psalms"),
    ("Prv", "Proverbs"),
    ("Eccl", "Ecclesiastes"),
    ("SSol", "Song of Solomon"),
    ("Isa", "Isaiah"),
    ("Jer", "Jeremiah"),
    ("Lam", "Lamentations"),
    ("Eze", "Ezekiel"),
    ("Dan", "Daniel"),
    ("Hos", "Hosea"),
    ("Joel", "Joel"),
    ("Amos", "Amos"),
    ("Obad", "Obadiah"),
    ("Jonah", "Jonah"),
    ("Mic", "Micah"),
    ("Nahum", "Nahum"),
    ("Hab", "Habakkuk"),
    ("Zep", "Zephaniah"),
    ("Hag", "Haggai"),
    ("Zec", "Zechariah"),
    ("Mal", "Malachi"),
    ("Mat", "Matthew"),
    ("Mark", "Mark"),
    ("Luke", "Luke"),
    ("John", "John"),
    ("Acts", "Acts"),
    ("Rom", "Romans"),
    ("1Cor", "1 Corinthians"),
    ("2Cor", "2 Corinthians"),
    ("Gal", "Galatians"),
    ("Eph", "Ephesians"),
    ("Phi", "Philippians"),
    ("Col", "Colossians"),
    ("1Th", "1 Thessalonians"),
    ("2Th", "2 Thessalonians"),
    ("1Tim", "1 Timothy"),
    ("2Tim", "2 Timothy"),
    ("Titus", "Titus"),
    ("Phmn", "Philemon"),
    ("Heb", "Hebrews"),
    ("Jas", "James"),
    ("1Pet", "1 Peter"),
    ("2Pet", "2 Peter"),
    ("1Jn", "1 John"),
    ("2Jn", "2 John"),
    ("3Jn", "3 John"),
    ("Jude", "Jude"),
    ("Rev", "Revelation"),
]
KJV_EVERY = 3  # books 0, 3, 6, ... of the 66 -> 22 books

CODE_EVERY = 3  # every 3rd eligible stdlib module (sorted by path)
CODE_MAX_BYTES = 300_000
DOCS_EVERY = 3  # every 3rd documentation page (sorted by path)
FORTUNE_EVERY = 2  # every 2nd fortune (files sorted by name)
FORTUNE_SKIP_FILES = {"ethnic"}
FOLDOC_EVERY = 6  # every 6th distinct FOLDOC entry (index order)


# ----------------------------------------------------------------- packages
def fetch_packages(workdir: Path) -> dict[str, Path]:
    """apt-get download + dpkg-deb -x each pinned package; return unpack roots."""
    debs = workdir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    roots = {}
    for name, version in PACKAGES.items():
        fname_version = version.replace(":", "%3a")
        have = sorted(debs.glob(f"{name}_{fname_version}_*.deb"))
        if not have:
            subprocess.run(
                ["apt-get", "download", f"{name}={version}"], cwd=debs, check=True
            )
            have = sorted(debs.glob(f"{name}_{fname_version}_*.deb"))
        if len(have) != 1:
            raise SystemExit(
                f"expected exactly one .deb for {name}={version}, got {have}"
            )
        root = workdir / "root" / name
        if not root.exists():
            root.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(have[0]), str(root)], check=True)
        roots[name] = root
    return roots


# ----------------------------------------------------- R serialization (XDR)
class RList(list):
    """An R vector as a Python list, with its R attributes (e.g. ``names``)."""

    attrs: dict


class RReader:
    """Minimal reader for R's XDR serialization format (versions 2 and 3).

    Covers what R data files of character vectors / lists / data frames use:
    NULL, symbols, pairlists, CHARSXP, logical/int/real/raw/string/generic
    vectors, attributes, references and environments.  Vectors come back as
    ``RList`` (a list with an ``attrs`` dict), strings as ``str`` (NA -> None).
    """

    NILVALUE, REFSXP, GLOBALENV, UNBOUND, MISSINGARG = 254, 255, 253, 252, 251
    BASENAMESPACE, NAMESPACE, PACKAGE, PERSIST = 250, 249, 248, 247
    EMPTYENV, BASEENV, ATTRLANG, ATTRLIST, ALTREP = 242, 241, 240, 239, 238
    PAIRLISTS = (
        2,
        3,
        5,
        6,
        17,
        240,
        239,
    )  # LIST, CLO, PROM, LANG, DOT, ATTRLANG, ATTRLIST

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("only XDR ('X\\n') R serialization is supported")
        self.d, self.p, self.refs = data, 2, []
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            n = self.int()
            self.p += n  # skip the native encoding name
        elif version != 2:
            raise ValueError(f"unsupported R serialization version {version}")

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.d, self.p)
        self.p += 4
        return v

    def length(self) -> int:
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def item(self):
        flags = self.int()
        typ = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if typ in (
            self.NILVALUE,
            self.GLOBALENV,
            self.UNBOUND,
            self.MISSINGARG,
            self.BASENAMESPACE,
            self.EMPTYENV,
            self.BASEENV,
        ):
            return None
        if typ == self.REFSXP:
            idx = flags >> 8
            return self.refs[(idx or self.int()) - 1]
        if typ in (self.PERSIST, self.PACKAGE, self.NAMESPACE):
            self.int()
            val = ("<env>", [self.item() for _ in range(self.int())])
            self.refs.append(val)
            return val
        if typ == 1:  # SYMSXP
            val = ("<sym>", self.item())
            self.refs.append(val)
            return val
        if typ == 4:  # ENVSXP
            self.int()  # locked
            val = ("<env>",)
            self.refs.append(val)
            for _ in range(4):  # enclos, frame, hashtab, attrib
                self.item()
            return val
        if typ in self.PAIRLISTS:  # returned as a list of (tag, value)
            out = []
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out.append((tag[1] if isinstance(tag, tuple) else tag, self.item()))
                nflags = struct.unpack_from(">i", self.d, self.p)[0]
                if nflags & 0xFF not in self.PAIRLISTS:
                    self.item()  # terminating CDR (normally NULL)
                    return out
                self.p += 4
                has_attr, has_tag = bool(nflags & (1 << 9)), bool(nflags & (1 << 10))
        if typ == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.d[self.p : self.p + n]
            self.p += n
            levels = flags >> 12
            return raw.decode("latin-1" if levels & 4 else "utf-8")
        if typ in (10, 13):  # LGLSXP, INTSXP
            n = self.length()
            val = RList(struct.unpack_from(f">{n}i", self.d, self.p))
            self.p += 4 * n
        elif typ == 14:  # REALSXP
            n = self.length()
            val = RList(struct.unpack_from(f">{n}d", self.d, self.p))
            self.p += 8 * n
        elif typ == 24:  # RAWSXP
            n = self.length()
            val = RList(self.d[self.p : self.p + n])
            self.p += n
        elif typ in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            val = RList(self.item() for _ in range(self.length()))
        else:
            raise ValueError(f"unsupported SEXP type {typ} at offset {self.p}")
        val.attrs = dict(self.item()) if has_attr else {}
        return val


def read_lazyload_db(data_dir: Path, stem: str = "Rdata") -> dict:
    """Read an R lazy-load database (``<stem>.rdx`` index + ``<stem>.rdb`` blobs)."""
    rdx = RReader(gzip.decompress((data_dir / f"{stem}.rdx").read_bytes())).item()
    index = dict(zip(rdx.attrs["names"], rdx))
    variables = index["variables"]
    rdb = (data_dir / f"{stem}.rdb").read_bytes()
    out = {}
    for name, (off, length) in zip(variables.attrs["names"], variables):
        blob = rdb[int(off) : int(off) + int(length)]
        (ulen,) = struct.unpack(">I", blob[:4])
        body = zlib.decompress(blob[4:])  # compression type 1 (zlib)
        if len(body) != ulen:
            raise ValueError(f"bad lazy-load blob for {name}")
        out[name] = RReader(body).item()
    return out


# ----------------------------------------------------------------- sources
def doc(source: str, text: str, title: str, origin: str, license_: str) -> dict:
    return {
        "text": text,
        "meta": {
            "redpajama_set_name": source,
            "title": title,
            "origin": origin,
            "license": license_,
        },
    }


def pkg_origin(name: str, path: str) -> str:
    return f"debian:{name}={PACKAGES[name]}:{path}"


def make_books(roots) -> list[dict]:
    docs = []
    jdir = roots["r-cran-janeaustenr"] / "usr/lib/R/site-library/janeaustenr/data"
    objs = read_lazyload_db(jdir)
    for rname, title in AUSTEN:
        lines = objs[rname]
        assert isinstance(lines, list) and all(isinstance(x, str) for x in lines), rname
        text = "\n".join(lines).strip("\n") + "\n"
        docs.append(
            doc(
                "books",
                text,
                title,
                pkg_origin(
                    "r-cran-janeaustenr",
                    f"/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb#{rname}",
                ),
                LICENSES["austen"],
            )
        )

    bible = roots["bible-kjv"] / "usr/bin/bible"
    datadir = roots["bible-kjv-text"] / "usr/lib"
    out = subprocess.run(
        [str(bible), "-p", str(datadir), "-f", "gen1:1-rev22:21"],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
    ).stdout.decode("utf-8")
    verses: dict[str, list[tuple[int, int, str]]] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        ref, _, verse_text = line.partition(" ")
        book = ref.rstrip("0123456789:")
        chap, _, vnum = ref[len(book) :].partition(":")
        verses.setdefault(book, []).append((int(chap), int(vnum), verse_text.strip()))
    assert list(verses) == [a for a, _ in KJV_BOOKS], list(verses)
    for i, (abbr, name) in enumerate(KJV_BOOKS):
        if i % KJV_EVERY:
            continue
        parts, cur = [f"The Book of {name}" if name[0].isalpha() else name, ""], None
        for chap, vnum, vtext in verses[abbr]:
            if chap != cur:
                if cur is not None:
                    parts.append("")
                parts += [f"Chapter {chap}", ""]
                cur = chap
            parts.append(f"{vnum} {vtext}")
        docs.append(
            doc(
                "books",
                "\n".join(parts) + "\n",
                f"{name} (King James Version)",
                pkg_origin("bible-kjv-text", f"/usr/lib/bible.data#{abbr}"),
                LICENSES["kjv"],
            )
        )
    return docs


def make_code(roots) -> list[dict]:
    files = []
    for pkg in ("libpython3.11-minimal", "libpython3.11-stdlib"):
        base = roots[pkg] / "usr/lib/python3.11"
        for p in base.rglob("*.py"):
            rel = p.relative_to(base).as_posix()
            parts = rel.split("/")
            if any(
                x in ("test", "tests", "idle_test") or x.startswith("test_")
                for x in parts
            ):
                continue
            if (
                p.is_symlink()
                or p.stat().st_size > CODE_MAX_BYTES
                or p.stat().st_size == 0
            ):
                continue
            files.append((rel, pkg, p))
    files.sort()
    docs = []
    for i, (rel, pkg, p) in enumerate(files):
        if i % CODE_EVERY:
            continue
        text = p.read_bytes().decode("utf-8")
        if not text.strip():
            continue
        docs.append(
            doc(
                "code",
                text,
                rel,
                pkg_origin(pkg, f"/usr/lib/python3.11/{rel}"),
                LICENSES["python"],
            )
        )
    return docs


def make_docs(roots) -> list[dict]:
    base = roots["python3.11-doc"] / "usr/share/doc/python3.11/html/_sources"
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*.rst.txt"))
    docs = []
    for i, rel in enumerate(files):
        if i % DOCS_EVERY:
            continue
        text = (base / rel).read_bytes().decode("utf-8")
        if not text.strip():
            continue
        docs.append(
            doc(
                "docs",
                text,
                rel[: -len(".rst.txt")],
                pkg_origin(
                    "python3.11-doc", f"/usr/share/doc/python3.11/html/_sources/{rel}"
                ),
                LICENSES["python"],
            )
        )
    return docs


def _b64(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    v = 0
    for c in s:
        v = v * 64 + alphabet.index(c)
    return v


def make_web(roots) -> list[dict]:
    docs = []
    fortune_files = []
    for pkg in ("fortunes", "fortunes-min"):
        base = roots[pkg] / "usr/share/games/fortunes"
        for p in base.iterdir():
            if (
                p.is_file()
                and not p.is_symlink()
                and "." not in p.name
                and p.name not in FORTUNE_SKIP_FILES
            ):
                fortune_files.append((p.name, pkg, p))
    fortune_files.sort()
    k = 0
    for fname, pkg, p in fortune_files:
        text = p.read_bytes().decode("utf-8")
        for j, chunk in enumerate(text.split("\n%\n")):
            chunk = chunk.strip("\n").rstrip()
            if chunk in ("", "%"):
                continue
            if k % FORTUNE_EVERY == 0:
                docs.append(
                    doc(
                        "web",
                        chunk + "\n",
                        f"fortune {fname} #{j}",
                        pkg_origin(pkg, f"/usr/share/games/fortunes/{fname}#{j}"),
                        LICENSES["fortunes"],
                    )
                )
            k += 1

    ddir = roots["dict-foldoc"] / "usr/share/dictd"
    data = gzip.decompress((ddir / "foldoc.dict.dz").read_bytes())
    seen, entries = set(), []
    for line in (ddir / "foldoc.index").read_text(encoding="utf-8").splitlines():
        word, off, length = line.split("\t")[:3]
        if word.startswith(("00-database-", "00database")):
            continue
        key = (_b64(off), _b64(length))
        if key in seen:
            continue
        seen.add(key)
        entries.append((word, key))
    for i, (word, (off, length)) in enumerate(entries):
        if i % FOLDOC_EVERY:
            continue
        text = data[off : off + length].decode("utf-8").strip("\n").rstrip()
        if not text:
            continue
        docs.append(
            doc(
                "web",
                text + "\n",
                f"FOLDOC: {word}",
                pkg_origin("dict-foldoc", f"/usr/share/dictd/foldoc.dict.dz#{word}"),
                LICENSES["foldoc"],
            )
        )
    return docs


# ----------------------------------------------------------------- writing
def write_source(name: str, docs: list[dict], out_dir: Path) -> list[Path]:
    import zstandard

    n = N_PARTS[name]
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.jsonl.zst"):
        old.unlink()
    cctx = zstandard.ZstdCompressor(
        level=19, write_checksum=True, write_content_size=True
    )
    paths = []
    for part in range(n):  # round-robin: document i goes to part i % n
        lines = [json.dumps(d, ensure_ascii=False) + "\n" for d in docs[part::n]]
        raw = "".join(lines).encode("utf-8")
        path = folder / f"part-{part:03d}.jsonl.zst"
        path.write_bytes(cctx.compress(raw))
        paths.append(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, help="download/unpack dir (default: temp)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lcdata-demo-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    roots = fetch_packages(args.workdir.resolve())
    builders = {
        "books": make_books,
        "code": make_code,
        "docs": make_docs,
        "web": make_web,
    }
    for name, build in builders.items():
        docs = build(roots)
        paths = write_source(name, docs, args.out)
        raw = sum(len(d["text"].encode("utf-8")) for d in docs)
        zst = sum(p.stat().st_size for p in paths)
        print(
            f"{name:6s} docs={len(docs):6d} text={raw / 1e6:6.2f} MB "
            f"zst={zst / 1e6:5.2f} MB parts={len(paths)}",
            file=sys.stderr,
        )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
