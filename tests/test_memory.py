import gc
import tracemalloc
from pathlib import Path

import nbdl
from nbdl._worker import WorkItem


async def test_queued_urls_hold_only_their_records(tmp_path: Path) -> None:
    """A queued manifest keeps no per-entry objects beyond DownloadInfo (and under 1 KB each)."""
    count = 20_000
    urls = [f"http://127.0.0.1:1/data/f{i:06d}.bin" for i in range(count)]
    manager = nbdl.DownloadManager(dest=tmp_path, max_workers=16)
    gc.collect()
    tracemalloc.start()
    try:
        for url in urls:
            manager.add_to_queue(url)
        traced, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    gc.collect()
    live = [o for o in gc.get_objects() if isinstance(o, WorkItem | nbdl.FileConfig)]
    assert live == []
    assert sum(isinstance(o, nbdl.DownloadInfo) for o in gc.get_objects()) >= count
    assert traced / count < 1024
