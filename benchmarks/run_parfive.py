"""Driver for the benchmark suite: one parfive batch (default settings but ``--conns``)."""

from __future__ import annotations

import argparse
import sys

from parfive import Downloader


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dest", required=True)
    parser.add_argument("--conns", type=int, default=None, help="max_conn (default: parfive's)")
    parser.add_argument("--list", default=None)
    parser.add_argument("urls", nargs="*")
    args = parser.parse_args()
    urls = list(args.urls)
    if args.list:
        with open(args.list, encoding="utf-8") as fh:
            urls.extend(line.strip() for line in fh if line.strip())
    kwargs = {"max_conn": args.conns} if args.conns else {}
    downloader = Downloader(progress=False, overwrite=True, **kwargs)
    for url in urls:
        downloader.enqueue_file(url, path=args.dest)
    results = downloader.download()
    for err in list(results.errors)[:5]:
        print(f"run_parfive: FAILED {err.url}: {err.exception}", file=sys.stderr)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
