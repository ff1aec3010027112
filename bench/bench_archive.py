"""Benchmark archived months (issue 12): the codec choice, the archive ratio, and `stats` over
an archived year against the same rows uncompressed.

Usage: .venv/bin/python bench/bench_archive.py [--repeat 5] [--data DIR] [--codecs]

- `--codecs`: gzip (stdlib) against zstd on a realistic 100,000-row month: ratio, compress
  and decompress time, whole-buffer and streamed in 1 MiB pieces (what decided zstd).
- Otherwise: a 1,000,000-row year (12 months, 50 workflows, `mantisd.sample.generate`, made
  once under bench/data/), copied and archived with `mantis runs archive --keep-months 1`;
  bytes before and after; then `mantis runs stats` of the most popular workflow with
  `--last 1000000` (every month read) as the installed console script (process start
  included), over the plain copy and over the archived one, best of `--repeat`, after
  checking both print the same thing. Goal: archived at most 1.3x the plain time. The log
  itself is read (`MANTIS_CACHE=off`); the same queries through the columnar cache
  (`MANTIS_CACHE=auto`, built by a first query) are shown beside.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

from benchlib import best_of

from mantisd.paths import list_log_files
from mantisd.sample import generate, workflow_ids

HERE = Path(__file__).resolve().parent
MANTIS = Path(sys.executable).parent / "mantis"
END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
WORKFLOW = workflow_ids(50)[0]


def dataset(root: Path, name: str, rows: int, months: int) -> Path:
    data_dir = root / name
    if not (data_dir / "complete").exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        generate(data_dir, rows=rows, months=months, workflows=50, seed=1, end=END)
        (data_dir / "complete").touch()
    return data_dir


def size(data_dir: Path) -> int:
    return sum(f.path.stat().st_size for f in list_log_files(data_dir))


def codecs(root: Path, repeat: int) -> None:
    import zstandard

    (month,) = list_log_files(dataset(root, "archive-100000", 100_000, 1))
    data = month.path.read_bytes()
    rows = data.count(b"\n")
    print(f"{len(data):,} bytes, {rows:,} rows\n")
    print("| codec | ratio | compress ms | decompress ms | streamed ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for level in (1, 6, 9):
        started = time.perf_counter()
        packed = gzip.compress(data, compresslevel=level, mtime=0)
        took = time.perf_counter() - started

        def gunzip_streamed(packed: bytes = packed) -> None:
            stream = zlib.decompressobj(31)
            for k in range(0, len(packed), 1 << 20):
                stream.decompress(packed[k : k + (1 << 20)])

        whole = best_of(repeat, lambda packed=packed: zlib.decompress(packed, 31))
        streamed = best_of(repeat, gunzip_streamed)
        print(
            f"| gzip -{level} | {len(data) / len(packed):.1f}x | {took * 1e3:,.0f} | "
            f"{whole * 1e3:,.0f} | {streamed * 1e3:,.0f} |"
        )
    for level in (3, 9):
        compressor = zstandard.ZstdCompressor(level=level)
        started = time.perf_counter()
        packed = compressor.compress(data)
        took = time.perf_counter() - started
        decompressor = zstandard.ZstdDecompressor()

        def unzstd_streamed(packed: bytes = packed, unzstd: object = decompressor) -> None:
            reader = unzstd.stream_reader(packed)  # type: ignore[attr-defined]
            while reader.read(1 << 20):
                pass

        whole = best_of(
            repeat, lambda packed=packed, unzstd=decompressor: unzstd.decompress(packed)
        )
        streamed = best_of(repeat, unzstd_streamed)
        print(
            f"| zstd -{level} | {len(data) / len(packed):.1f}x | {took * 1e3:,.0f} | "
            f"{whole * 1e3:,.0f} | {streamed * 1e3:,.0f} |"
        )


def stats(data_dir: Path, cache: str = "off") -> str:
    """`mantis runs stats` as a process; `cache`: `MANTIS_CACHE` (off: read the log itself)."""
    argv = [MANTIS, "runs", "stats", WORKFLOW, "--last", "1000000", "--json"]
    result = subprocess.run(
        [*argv, "--data-dir", data_dir],
        capture_output=True,
        text=True,
        env={**os.environ, "MANTIS_CACHE": cache},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def year(root: Path, repeat: int) -> None:
    plain = dataset(root, "archive-year-1000000", 1_000_000, 12)
    archived = root / "archive-year-1000000-zst"
    if not (archived / "complete").exists():
        shutil.rmtree(archived, ignore_errors=True)
        shutil.copytree(plain, archived)
        started = time.perf_counter()
        subprocess.run(
            [MANTIS, "runs", "archive", "--keep-months", "1", "--data-dir", archived],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"mantis runs archive: {time.perf_counter() - started:.1f} s for 12 months")
    before, after = size(plain), size(archived)
    assert all(f.compressed for f in list_log_files(archived))
    assert stats(plain) == stats(archived), "the archive must answer as the shards do"
    runs = stats(plain).split('"run_count":')[1].split(",")[0]
    cases = {
        "plain": (plain, "off"),
        "archived": (archived, "off"),
        "plain, columnar cache": (plain, "auto"),
        "archived, columnar cache": (archived, "auto"),
    }
    for where, cache in cases.values():
        stats(where, cache)  # the cache is built on a first query
    times = dict.fromkeys(cases, 0.0)
    for _ in range(repeat):  # interleaved, best of each
        for name, (where, cache) in cases.items():
            took = best_of(1, lambda where=where, cache=cache: stats(where, cache))
            times[name] = min(times[name] or took, took)
    print(f"\nbytes: {before:,} plain, {after:,} archived: {before / after:.1f}x smaller")
    print(f"stats {WORKFLOW} --last 1000000 ({runs} runs, 12 months):")
    print("| log | mantis stats | vs plain |")
    print("| --- | ---: | ---: |")
    for name, took in times.items():
        print(f"| {name} | {took * 1e3:,.0f} ms | {took / times['plain']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--codecs", action="store_true", help="compare gzip and zstd only")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    if args.codecs:
        codecs(args.data, args.repeat)
    else:
        year(args.data, args.repeat)


if __name__ == "__main__":
    main()
