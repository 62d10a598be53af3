"""The table formats weighed for the store's commit protocol (docs/architecture.md#exactly-once-on-object-stores-the-choice),
tried on a real S3 server: two processes appending at once (are commits lost?) and the same key appended twice (is
it kept once?). Not an aver dependency: run it in a separate venv against any S3 endpoint with the credentials below,
e.g. `weed server -s3 -s3.port=18733 ...` as in tests/s3_server.py, with a bucket `aver`, then

    python -m venv /tmp/formats && /tmp/formats/bin/pip install deltalake pylance pyiceberg sqlalchemy pyarrow
    /tmp/formats/bin/python benchmarks/table_formats.py 127.0.0.1:18733
"""
import sys
import time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
import pyarrow as pa

EP = sys.argv[1]
OPTS = {"AWS_ENDPOINT_URL": f"http://{EP}", "AWS_ACCESS_KEY_ID": "averkey", "AWS_SECRET_ACCESS_KEY": "aversecret",
        "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

def rows(w, i):
    return pa.table({"clip_id": [f"c/{w}-{i}"], "variant": ["clean"], "x": [float(i)]})

def delta_writer(args):
    uri, w, opts = args
    from deltalake import write_deltalake
    errs = 0
    for i in range(10):
        try:
            write_deltalake(uri, rows(w, i), mode="append", storage_options=opts)
        except Exception as e:
            errs += 1; last = f"{type(e).__name__}: {str(e)[:300]}"
    return errs, (last if errs else "")

def lance_writer(args):
    uri, w, opts = args
    import lance
    errs = 0
    for i in range(10):
        try:
            lance.write_dataset(rows(w, i), uri, mode="append", storage_options=opts)
        except Exception as e:
            errs += 1; last = f"{type(e).__name__}: {str(e)[:300]}"
    return errs, (last if errs else "")

def run(name, fn, uri, opts):
    t = time.time()
    with ProcessPoolExecutor(2, mp_context=mp.get_context('spawn')) as ex:
        res = list(ex.map(fn, [(uri, w, opts) for w in range(2)]))
    print(f"== {name}: {res} in {time.time() - t:.1f}s")
    return res

if __name__ == '__main__':
    # --- delta-rs
    from deltalake import DeltaTable
    for label, extra in [("delta default", {}), ("delta conditional_put=etag", {"conditional_put": "etag"}),
                         ("delta unsafe rename", {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"})]:
        uri = f"s3://aver/delta-{label.split()[-1].replace('=', '-')}"
        try:
            from deltalake import write_deltalake
            write_deltalake(uri, rows(9, 0), storage_options={**OPTS, **extra})   # created first: no creation race
            run(label, delta_writer, uri, {**OPTS, **extra})
            dt = DeltaTable(uri, storage_options={**OPTS, **extra})
            t = dt.to_pyarrow_table()
            print(f"   rows {t.num_rows} unique {len(set(t.column('clip_id').to_pylist()))} version {dt.version()}")
        except Exception as e:
            print(f"   {label}: {type(e).__name__}: {str(e)[:300]}")
    
    # --- lance
    import lance
    uri = "s3://aver/lance"
    try:
        lance.write_dataset(rows(9, 0), uri, storage_options=OPTS)
        run("lance", lance_writer, uri, OPTS)
        t = lance.dataset(uri, storage_options=OPTS).to_table()
        print(f"   rows {t.num_rows} unique {len(set(t.column('clip_id').to_pylist()))}")
    except Exception as e:
        print(f"   lance: {type(e).__name__}: {str(e)[:300]}")
    
    # --- pyiceberg with a SQL (sqlite) catalog: the catalog is the commit point
    try:
        from pyiceberg.catalog.sql import SqlCatalog
        cat = SqlCatalog("c", uri="sqlite:////tmp/aver-C-eval-run/cat.db", warehouse="s3://aver/iceberg",
                         **{"s3.endpoint": f"http://{EP}", "s3.access-key-id": "averkey", "s3.secret-access-key": "aversecret",
                            "s3.region": "us-east-1"})
        cat.create_namespace_if_not_exists("ns")
        tbl = cat.create_table_if_not_exists("ns.t", schema=rows(0, 0).schema)
        t0 = time.time(); errs = 0
        for i in range(5):
            tbl.append(rows(0, i))
        print(f"== iceberg sqlite catalog: 5 appends in {time.time() - t0:.1f}s, rows {tbl.scan().to_arrow().num_rows}")
    except Exception as e:
        print(f"   iceberg: {type(e).__name__}: {str(e)[:400]}")
    # the same key appended by two writers (a resubmitted batch, two hosts): does the format keep it once?
    from deltalake import write_deltalake
    write_deltalake("s3://aver/delta-dup", rows(5, 5), storage_options=OPTS)
    write_deltalake("s3://aver/delta-dup", rows(5, 5), mode="append", storage_options=OPTS)
    print("== delta same key twice:", DeltaTable("s3://aver/delta-dup", storage_options=OPTS).to_pyarrow_table().num_rows, "rows")
    lance.write_dataset(rows(5, 5), "s3://aver/lance-dup", storage_options=OPTS)
    lance.write_dataset(rows(5, 5), "s3://aver/lance-dup", mode="append", storage_options=OPTS)
    print("== lance same key twice:", lance.dataset("s3://aver/lance-dup", storage_options=OPTS).count_rows(), "rows")
    tbl.append(rows(0, 0))
    print("== iceberg same key twice:", tbl.scan().to_arrow().num_rows - 5 + 1, "rows of that key")
