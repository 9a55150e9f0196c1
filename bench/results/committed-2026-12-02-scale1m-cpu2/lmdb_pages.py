"""How LMDB lays out one value per face: bytes per face for a value size, with keys
written in order plainly and with `append` (10 transactions of 1,000 faces).

    python bench/results/committed-2026-12-02-scale1m-cpu2/lmdb_pages.py
"""

import os
import shutil
import struct
import tempfile

import lmdb

print("| value bytes | append | leaf pages | overflow pages | bytes per face |\n| --- | --- | --- | --- | --- |")
for size in (1068, 2020, 2022, 2023, 2092):
    for append in (False, True):
        path = tempfile.mkdtemp()
        env = lmdb.open(path, map_size=2**32, max_dbs=2)
        db = env.open_db(b"e")
        for chunk in range(10):
            with env.begin(write=True) as t:
                for i in range(chunk * 1000, chunk * 1000 + 1000):
                    t.put(struct.pack(">Q", i), os.urandom(size), db=db, append=append)
        with env.begin() as t:
            st = t.stat(db)
        env.close()
        shutil.rmtree(path)
        pages = st["leaf_pages"] + st["branch_pages"] + st["overflow_pages"]
        print(f"| {size} | {append} | {st['leaf_pages']} | {st['overflow_pages']} | {round(pages * st['psize'] / 10000)} |")
